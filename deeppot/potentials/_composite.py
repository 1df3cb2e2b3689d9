"""Sums of potentials that behave as a mapping of named components."""

from collections.abc import Iterator, Mapping
from typing import final

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._custom_types import Position, Scalar
from ..registry import snake_case
from ..units import UnitSystem
from ._base import AbstractPotential, batched_value_grad_laplacian


def _default_name(pot: AbstractPotential) -> str:
    return snake_case(type(pot).__name__)


def component_items(pot: AbstractPotential) -> list[tuple[str | None, AbstractPotential]]:
    """The (name, potential) pairs a potential contributes to a sum; unnamed if single."""
    if isinstance(pot, CompositePotential):
        return list(pot.components.items())
    return [(None, pot)]


@final
class CompositePotential(AbstractPotential):
    """The sum of named component potentials.

    Built by `pot_a + pot_b` (components named after their classes, with `_1`, `_2`, …
    for repeats) or explicitly, `CompositePotential(disk=..., halo=...)`. It behaves as a
    read-only mapping: `comp["disk"]`, `len(comp)`, iteration over names, `.keys()`,
    `.items()`. All components must share one unit system (and G): mixing, e.g., a
    `galactic` disk with a dimensionless halo is refused.
    """

    components: dict[str, AbstractPotential]

    def __init__(self, components: Mapping[str, AbstractPotential] | None = None, /, **kwargs):
        merged = dict(components or {})
        for name, pot in kwargs.items():
            if name in merged:
                raise ValueError(f"component name {name!r} given twice")
            merged[name] = pot
        if not merged:
            raise ValueError("a CompositePotential needs at least one component")
        for name, pot in merged.items():
            if not isinstance(pot, AbstractPotential):
                raise TypeError(f"component {name!r} is not a potential: {type(pot).__name__}")
        self.components = merged

    def __check_init__(self):
        first_name, first = next(iter(self.components.items()))
        for name, pot in self.components.items():
            if pot.units != first.units:
                raise ValueError(
                    "components of a CompositePotential must share one unit system: "
                    f"{first_name!r} is in {first.units!r}, {name!r} in {pot.units!r}"
                )

    @classmethod
    def from_items(cls, items) -> "CompositePotential":
        """Build from (name or None, potential) pairs, naming unnamed ones by class."""
        named: dict[str, AbstractPotential] = {}
        for name, pot in items:
            base = name if name is not None else _default_name(pot)
            candidate, i = base, 1
            while candidate in named:
                candidate = f"{base}_{i}"
                i += 1
            named[candidate] = pot
        return cls(named)

    @property
    def units(self) -> UnitSystem:  # pyright: ignore[reportIncompatibleVariableOverride]
        """The components' common unit system."""
        return next(iter(self.components.values())).units

    def __getitem__(self, name: str) -> AbstractPotential:
        return self.components[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.components)

    def __len__(self) -> int:
        return len(self.components)

    def __contains__(self, name) -> bool:
        return name in self.components

    def keys(self):
        return self.components.keys()

    def values(self):
        return self.components.values()

    def items(self):
        return self.components.items()

    def _potential(self, x: Position) -> Scalar:
        return sum(pot._potential(x) for pot in self.components.values())  # type: ignore

    def _value_grad_laplacian(self, x: Position):
        parts = [pot._value_grad_laplacian(x) for pot in self.components.values()]
        return jax.tree.map(lambda *a: jnp.sum(jnp.stack(a), axis=0), *parts)

    def _value_grad_laplacian_batch(self, x: Float[Array, "n 3"]):
        """Each component's batched rule (`batched_value_grad_laplacian`), summed."""
        parts = [batched_value_grad_laplacian(pot, x) for pot in self.components.values()]
        return jax.tree.map(lambda *a: sum(a[1:], a[0]), *parts)
