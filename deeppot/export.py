"""What exporters to other libraries (galpy, gala, agama) share: compiled float64 fields.

Other dynamics libraries call a potential with NumPy arrays of positions of any length,
often one point at a time inside their orbit integrators. `FieldEvaluator` compiles each of
Φ, ∇Φ, the Hessian and ∇²Φ of a deeppot potential once, as one jitted, vectorised function
of (parameters, positions) in float64, and calls it on arrays padded to a power of two (so a
new array length rarely means a new compilation) in chunks (so any number of points fits in
memory).

`symmetry(potential)` says whether a potential is spherical, axisymmetric about ẑ or neither
(exporters use it for galpy's `isNonAxi` and agama's `symmetry=`), `mirror_symmetric_z`
whether it is even in z (agama's axisymmetry assumes it), and `unit_system` reads
the physical unit system a potential carries, if any (`None` for a dimensionless model).
"""

from __future__ import annotations

import functools
from typing import Any, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .potentials import (
    NFW,
    AbstractPotential,
    Axisymmetric,
    CompositePotential,
    Hernquist,
    Isochrone,
    Kepler,
    Logarithmic,
    LongMuraliBar,
    MiyamotoNagai,
    Plummer,
    PowerLawCutoff,
    Spherical,
    WithTail,
)
from .validity import ValidityRegion

__all__ = ["FieldEvaluator", "Symmetry", "as_float64", "for_export", "mirror_symmetric_z",
           "symmetry", "unit_system"]

Symmetry = Literal["spherical", "axisymmetric", "none"]
_ORDER: dict[str, int] = {"spherical": 2, "axisymmetric": 1, "none": 0}
_SPHERICAL = (Plummer, Hernquist, NFW, Isochrone, Kepler, PowerLawCutoff, Spherical)
_AXISYMMETRIC = (MiyamotoNagai, Logarithmic)
_EVEN_IN_Z = (*_SPHERICAL, *_AXISYMMETRIC, LongMuraliBar)  # a bar in the plane z = 0


def as_float64(tree):
    """A copy of a pytree (e.g. a potential) with its floating arrays cast to float64.

    Call it inside `jax.enable_x64(True)` (outside it JAX keeps float32).
    """
    return jax.tree.map(lambda a: a.astype(jnp.float64) if eqx.is_inexact_array(a) else a, tree)


def symmetry(potential: AbstractPotential) -> Symmetry:
    """The symmetry of a potential about the origin: spherical, axisymmetric about ẑ, or none.

    Analytic families and the `Spherical`/`Axisymmetric` networks are known; a
    `CompositePotential` has the lowest symmetry of its components; an `Axisymmetric`
    network with a tilted (learned) axis, a free-form `NeuralPotential` and any family that
    does not declare a class attribute `symmetry` (a plugin's) are `"none"`.

    **Arguments:**

    - `potential`: a deeppot potential.

    **Returns:** `"spherical"`, `"axisymmetric"` or `"none"`.
    """
    if isinstance(potential, CompositePotential):
        return min((symmetry(p) for p in potential.values()), key=_ORDER.__getitem__)
    if isinstance(potential, WithTail):
        return min(symmetry(potential.inner), symmetry(potential.tail), key=_ORDER.__getitem__)
    if isinstance(potential, _SPHERICAL):
        return "spherical"
    if isinstance(potential, _AXISYMMETRIC):
        return "axisymmetric"
    if isinstance(potential, Axisymmetric):
        axis = np.asarray(potential.unit_axis)
        return "axisymmetric" if axis[0] == 0 and axis[1] == 0 and axis[2] > 0 else "none"
    declared = getattr(type(potential), "symmetry", None)
    return declared if declared in _ORDER else "none"


def mirror_symmetric_z(potential: AbstractPotential) -> bool:
    """Whether Φ(x, y, −z) = Φ(x, y, z) is known to hold.

    True for the spherical families and networks, the axisymmetric analytic families and a
    `LongMuraliBar` (in the plane z = 0); a `CompositePotential` is mirror-symmetric when
    all its components are; an `Axisymmetric` network (a function of R² and z) and a
    free-form network are not, and neither is a family that does not declare
    `symmetry = "spherical"`.

    **Arguments:**

    - `potential`: a deeppot potential.

    **Returns:** a bool.
    """
    if isinstance(potential, CompositePotential):
        return all(mirror_symmetric_z(p) for p in potential.values())
    if isinstance(potential, WithTail):
        return mirror_symmetric_z(potential.inner) and mirror_symmetric_z(potential.tail)
    if isinstance(potential, _EVEN_IN_Z):
        return True
    return getattr(type(potential), "symmetry", None) == "spherical"


def unit_system(potential: AbstractPotential) -> Any | None:
    """The physical unit system a potential carries, or `None` for a dimensionless one.

    A potential with physical units has an attribute `units` (a `deeppot.units.UnitSystem`)
    whose `is_physical` is true; its `to_value(quantity, dimension)` converts astropy
    quantities to the model's numbers. Dimensionless models (and models from before unit
    systems existed) give `None`: their numbers are in whatever units the user chose, with
    the gravitational constant `potential.G`.
    """
    units = getattr(potential, "units", None)
    return units if units is not None and getattr(units, "is_physical", False) else None


def for_export(model, *, tail: bool | AbstractPotential | str = True,
               region: ValidityRegion | None = None
               ) -> tuple[AbstractPotential, ValidityRegion | None]:
    """The potential an exporter evaluates, and the validity region it carries.

    Every exporter (galpy, gala, agama) reads its argument through this one function.

    **Arguments:**

    - `model`: a deeppot potential, a `PotentialModel` (its potential, and the validity
      region recorded when it was fitted) or a `WithTail` potential (already continued).
    - `tail`: `True` (default): continue the potential beyond its region by a Keplerian
      tail (`WithTail`); a deeppot potential (the tail's shape) or `"kepler"`: that tail;
      `False`: export the potential as it is. Without a region there is nothing to
      continue from, and the potential is exported as it is.
    - `region`: the validity region, for a bare potential (overrides the model's).

    **Returns:** `(potential, region or None)`.
    """
    from .model import PotentialModel

    if isinstance(model, PotentialModel):
        region = model.region if region is None else region
        model = model.potential
    if not isinstance(model, AbstractPotential):
        raise TypeError(f"expected a deeppot potential or PotentialModel, got "
                        f"{type(model).__name__}")
    if isinstance(model, WithTail):
        return model, model.region if region is None else region
    if region is not None and not isinstance(region, ValidityRegion):
        raise TypeError(f"region must be a deeppot.validity.ValidityRegion, got "
                        f"{type(region).__name__}")
    if tail is False or region is None:
        return model, region
    return WithTail(model, region, tail="kepler" if tail is True else tail), region


def _bucket(n: int) -> int:
    """The padded length for n points: the next power of two (at least 1)."""
    return 1 << max(0, (n - 1).bit_length())


class FieldEvaluator:
    """Φ, ∇Φ, the Hessian and ∇²Φ of a potential on NumPy positions, compiled, in float64.

    Each field is one jitted function of (parameters, positions), vectorised over the
    positions; the potential's arrays are cast to float64 once and passed as arguments (not
    baked in as constants). Inputs of shape (..., 3) are flattened, padded to a power of two
    and evaluated in chunks of at most `chunk_size` points; results come back as float64
    NumPy arrays of shape (...), (..., 3) or (..., 3, 3).

    **Arguments:**

    - `potential`: any deeppot potential.
    - `chunk_size`: the most points evaluated in one call (a power of two).
    """

    def __init__(self, potential: AbstractPotential, *, chunk_size: int = 2**14):
        if not isinstance(potential, AbstractPotential):
            raise TypeError(f"expected a deeppot potential, got {type(potential).__name__}")
        if chunk_size < 1 or chunk_size & (chunk_size - 1):
            raise ValueError(f"chunk_size must be a power of two, got {chunk_size}")
        self.potential = potential
        self.chunk_size = chunk_size
        with jax.enable_x64(True):
            params, static = eqx.partition(as_float64(potential), eqx.is_array)
        self._params = params

        def compiled(verb):
            def field(params, x):
                return getattr(eqx.combine(params, static), verb)(x)

            return jax.jit(field)

        self._fns = {verb: compiled(verb) for verb in
                     ("potential", "gradient", "hessian", "laplacian")}

    def _evaluate(self, verb: str, x) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim == 0 or x.shape[-1] != 3:
            raise ValueError(f"positions must have shape (..., 3), got {x.shape}")
        batch = x.shape[:-1]
        flat = x.reshape(-1, 3)
        fn = self._fns[verb]
        with jax.enable_x64(True):
            if len(flat) <= self.chunk_size:
                out = self._call(fn, flat)
            else:
                out = np.concatenate([self._call(fn, flat[i:i + self.chunk_size])
                                      for i in range(0, len(flat), self.chunk_size)])
        return out.reshape(batch + out.shape[1:])

    def _call(self, fn, chunk: np.ndarray) -> np.ndarray:
        m = len(chunk)
        size = _bucket(max(m, 1))
        if m == 0:
            chunk = np.zeros((1, 3))
        elif size > m:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], size - m, axis=0)])
        out = np.asarray(fn(self._params, chunk))
        return out if size == m else out[:m]

    def potential_at(self, x) -> np.ndarray:
        """Φ at positions `x` of shape (..., 3); returns shape (...)."""
        return self._evaluate("potential", x)

    def gradient_at(self, x) -> np.ndarray:
        """∇Φ at positions `x` of shape (..., 3); returns shape (..., 3)."""
        return self._evaluate("gradient", x)

    def hessian_at(self, x) -> np.ndarray:
        """∂²Φ/∂x_i∂x_j at positions `x` of shape (..., 3); returns shape (..., 3, 3)."""
        return self._evaluate("hessian", x)

    def laplacian_at(self, x) -> np.ndarray:
        """∇²Φ at positions `x` of shape (..., 3); returns shape (...)."""
        return self._evaluate("laplacian", x)

    @functools.cached_property
    def symmetry(self) -> Symmetry:
        """`symmetry(potential)` of the wrapped potential."""
        return symmetry(self.potential)
