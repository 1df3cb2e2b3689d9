"""The abstract potential: per-point physics, broadcast public verbs."""

import abc
import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._custom_types import Position, Positions, Scalar
from .._params import check_positions
from ..units import UnitSystem, is_quantity


@eqx.filter_jit
def _broadcast(fn: Callable, x: Positions) -> Array:
    """Apply a per-point function to positions of shape (..., 3)."""
    batch = x.shape[:-1]
    out = jax.vmap(fn)(x.reshape(-1, 3))
    return jax.tree.map(lambda o: o.reshape(batch + o.shape[1:]), out)


def batched_value_grad_laplacian(
    pot: "AbstractPotential", x: Float[Array, "n 3"]
) -> tuple[Float[Array, " n"], Float[Array, "n 3"], Float[Array, " n"]]:
    """(Φ, ∇Φ, ∇²Φ) of a potential at n positions, by its batched rule if it has one.

    Networks (and sums containing them) define `_value_grad_laplacian_batch`, one pass
    over the whole batch with a hand-derived backward pass; every other potential maps its
    per-point `_value_grad_laplacian` over the batch. Reverse-mode differentiable.
    """
    rule = getattr(pot, "_value_grad_laplacian_batch", None)
    return rule(x) if rule is not None else jax.vmap(pot._value_grad_laplacian)(x)


class AbstractPotential(eqx.Module):
    """A gravitational potential Φ(x).

    Subclasses implement the physics for one position of shape (3,): `_potential` and
    `_value_grad_laplacian` (Φ, ∇Φ, ∇²Φ in one pass: closed forms for analytic families, a
    forward Laplacian for networks). The public verbs accept positions of shape (..., 3) and
    broadcast over the leading axes.

    Every potential carries its unit system `units` (`deeppot.units.UnitSystem`, a static
    field; dimensionless with G = 1 by default) and reads `G` from it. The verbs take plain
    numbers in those units and return plain numbers; given positions as an astropy
    `Quantity` (any length unit) they return a `Quantity` (Φ in velocity², ∇Φ in
    velocity²/length, ∇²Φ in velocity²/length², ρ in mass/length³, v_c in velocity).
    A family declares its parameters' dimensions when it converts them
    (`deeppot._params.positive_log(name, value, dimension, units)`), so constructors accept
    quantities as well. A minimal custom potential declares
    `units: UnitSystem = eqx.field(default=deeppot.units.dimensionless, static=True)`.
    """

    units: eqx.AbstractVar[UnitSystem]

    def __check_init__(self):
        try:
            G = float(self.G)
        except (TypeError, jax.errors.ConcretizationTypeError):
            return  # traced: checked where it was made
        if not (math.isfinite(G) and G > 0):
            raise ValueError(f"G must be positive and finite, got {self.G!r}")

    @abc.abstractmethod
    def _potential(self, x: Position) -> Scalar:
        """Φ at one position."""

    @abc.abstractmethod
    def _value_grad_laplacian(self, x: Position) -> tuple[Scalar, Position, Scalar]:
        """(Φ, ∇Φ, ∇²Φ) at one position."""

    def _gradient(self, x: Position) -> Position:
        return self._value_grad_laplacian(x)[1]

    def _laplacian(self, x: Position) -> Scalar:
        return self._value_grad_laplacian(x)[2]

    def _hessian(self, x: Position) -> Float[Array, "3 3"]:
        return jax.jacfwd(self._gradient)(x)

    @property
    def G(self) -> float:
        """The gravitational constant in the model's units (it only enters `density`)."""
        return self.units.G

    def _positions(self, x) -> tuple[Positions, bool]:
        """Plain positions in the model's units, and whether a `Quantity` came in."""
        if is_quantity(x):
            return check_positions(self.units.to_value(x, "length", "positions")), True
        return check_positions(x), False

    def _result(self, value, dimension: str, as_quantity: bool):
        return self.units.quantity(value, dimension) if as_quantity else value

    def potential(self, x: Positions) -> Float[Array, "*batch"]:
        """The potential Φ.

        **Arguments:**

        - `x`: positions, shape (..., 3): plain numbers in the model's units, or a length
          `Quantity`.

        **Returns:** Φ, shape (...) (a `Quantity` in velocity² if `x` is one).
        """
        x, q = self._positions(x)
        return self._result(_broadcast(self._potential, x), "potential", q)

    def gradient(self, x: Positions) -> Float[Array, "*batch 3"]:
        """The gradient ∇Φ, shape (..., 3) (a `Quantity` if `x` is one)."""
        x, q = self._positions(x)
        return self._result(_broadcast(self._gradient, x), "acceleration", q)

    def acceleration(self, x: Positions) -> Float[Array, "*batch 3"]:
        """The gravitational acceleration −∇Φ, shape (..., 3) (a `Quantity` if `x` is one)."""
        return -self.gradient(x)

    def hessian(self, x: Positions) -> Float[Array, "*batch 3 3"]:
        """The Hessian ∂²Φ/∂x_i∂x_j, shape (..., 3, 3) (a `Quantity` if `x` is one)."""
        x, q = self._positions(x)
        return self._result(_broadcast(self._hessian, x), "hessian", q)

    def laplacian(self, x: Positions) -> Float[Array, "*batch"]:
        """The Laplacian ∇²Φ, shape (...) (a `Quantity` if `x` is one)."""
        x, q = self._positions(x)
        return self._result(_broadcast(self._laplacian, x), "hessian", q)

    def density(self, x: Positions) -> Float[Array, "*batch"]:
        """The mass density ρ = ∇²Φ / 4πG implied by Poisson's equation, shape (...).

        A `Quantity` in mass/length³ if `x` is one.
        """
        x, q = self._positions(x)
        rho = _broadcast(self._laplacian, x) / (4 * math.pi * self.G)
        return self._result(rho, "density", q)

    def circular_velocity(self, x: Positions) -> Float[Array, "*batch"]:
        """The circular speed sqrt(x · ∇Φ), shape (...) (a `Quantity` if `x` is one).

        In the plane z = 0 this is sqrt(R ∂Φ/∂R); for a spherical potential it is
        sqrt(r dΦ/dr) everywhere. NaN where the force points outwards.
        """
        x, q = self._positions(x)
        v_c = jnp.sqrt(jnp.sum(x * _broadcast(self._gradient, x), axis=-1))
        return self._result(v_c, "velocity", q)

    def __add__(self, other: "AbstractPotential") -> "AbstractPotential":
        from ._composite import CompositePotential, component_items

        if not isinstance(other, AbstractPotential):
            return NotImplemented
        return CompositePotential.from_items(component_items(self) + component_items(other))
