"""Known selection functions S(x) and what they do to the scores.

A survey that keeps a star at position x with probability S(x) (independently of its
velocity) sees the phase-space density S(x) f(x, v). The DF learned from such a catalogue is
f_obs ∝ S f, so

    ∂ln f/∂x = ∂ln f_obs/∂x − ∂ln S/∂x,     ∂ln f/∂v = ∂ln f_obs/∂v,

and ln f = ln f_obs − ln S up to a constant. `deeppot.scores.correct_selection` applies
this to a `ScoreSample` (or `sample_scores(..., selection=S)` does it while sampling), and
`deeppot.mocks.select` draws a mock through the same S by acceptance.

Selections are Equinox modules: `AbstractSelection` is the interface (`log_selection`,
`probability`, `grad_log_selection`, for positions of shape (..., 3)); `DistanceSelection`
is a smooth magnitude limit in heliocentric distance and `GridSelection` interpolates S given
on a regular grid smoothly. Positions are in the selection's unit system (`units=`, as for
potentials: astropy quantities are converted, and put it in `galactic` units by default).
"""

import abc
import math
from collections.abc import Mapping
from typing import Any, final

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._custom_types import Position, Positions, Scalar
from ._params import check_positions, to_model_units, vector3
from .units import UnitSystem, get_units, is_quantity, resolve_units

__all__ = [
    "AbstractSelection",
    "DistanceSelection",
    "GridSelection",
    "selection_from_description",
]

_TINY_DISTANCE2 = 1e-30  # keeps ln d and its gradient finite at the observer


@eqx.filter_jit
def _log_and_grad(selection: "AbstractSelection", x: Float[Array, "n 3"]):
    return jax.vmap(jax.value_and_grad(selection._log_selection))(x)


class AbstractSelection(eqx.Module):
    """A selection function 0 < S(x) ≤ 1 that depends on position only.

    Subclasses implement `_log_selection` (ln S at one position, differentiable) and
    `describe` (a JSON description that `selection_from_description` inverts).
    """

    units: eqx.AbstractVar[UnitSystem]

    @abc.abstractmethod
    def _log_selection(self, x: Position) -> Scalar:
        """ln S at one position."""

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """A JSON-able description, e.g. for a catalogue's `meta["selection"]`."""

    def _points(self, x) -> Float[Array, "n 3"]:
        if is_quantity(x):
            x = self.units.to_value(x, "length", "positions")
        x = check_positions(x)
        return x.reshape(-1, 3)

    def log_selection_and_gradient(
        self, x: Positions
    ) -> tuple[Float[Array, "*batch"], Float[Array, "*batch 3"]]:
        """ln S and ∂ln S/∂x together.

        **Arguments:**

        - `x`: positions, shape (..., 3), in the selection's units (or a length `Quantity`).

        **Returns:** `(ln S, ∂ln S/∂x)` with shapes (...) and (..., 3).
        """
        batch = jnp.shape(x)[:-1]
        log_s, grad = _log_and_grad(self, self._points(x))
        return log_s.reshape(batch), grad.reshape(*batch, 3)

    def log_selection(self, x: Positions) -> Float[Array, "*batch"]:
        """ln S at positions of shape (..., 3)."""
        return self.log_selection_and_gradient(x)[0]

    def grad_log_selection(self, x: Positions) -> Float[Array, "*batch 3"]:
        """∂ln S/∂x at positions of shape (..., 3)."""
        return self.log_selection_and_gradient(x)[1]

    def probability(self, x: Positions) -> Float[Array, "*batch"]:
        """S at positions of shape (..., 3)."""
        return jnp.exp(self.log_selection(x))


def _positive(name: str, value, dimension: str, units: UnitSystem) -> float:
    value = to_model_units(name, value, dimension, units)
    if not (np.ndim(value) == 0 and math.isfinite(float(value)) and float(value) > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


@final
class DistanceSelection(AbstractSelection):
    """A smooth magnitude limit in heliocentric distance.

    For stars of one absolute magnitude M seen with a detection probability that falls off
    as a logistic function of apparent magnitude, 1 / (1 + exp((m − m_lim) / σ_m)), with
    m − m_lim = 5 log10(d / d_half):

        S(d) = 1 / (1 + (d / d_half)^k),   k = 5 / (σ_m ln 10),

    where d = |x − observer| and d_half is the distance at which S = 1/2 (where m = m_lim).
    `from_magnitudes` builds it from M and m_lim.

    **Arguments:**

    - `observer`: the observer's position, shape (3,) (the Sun's Galactocentric position
      for a survey: `deeppot.survey.Sun().position(units)`).
    - `d_half`: the half-completeness distance (a length).
    - `sigma_mag`: the width of the magnitude limit in magnitudes (> 0); smaller is sharper.
    - `units`: the unit system of positions and `d_half`.
    """

    observer: Float[Array, "3"]
    d_half: float
    sigma_mag: float
    units: UnitSystem = eqx.field(static=True)

    def __init__(self, observer, d_half, sigma_mag: float = 0.3, *, units=None):
        self.units = resolve_units(units, None, observer, d_half)
        self.observer = vector3("observer", observer, "length", self.units)
        self.d_half = _positive("d_half", d_half, "length", self.units)
        self.sigma_mag = _positive("sigma_mag", sigma_mag, "dimensionless", self.units)

    @classmethod
    def from_magnitudes(
        cls, observer, absolute_magnitude: float, magnitude_limit: float,
        sigma_mag: float = 0.3, *, units="galactic",
    ) -> "DistanceSelection":
        """The selection of stars of absolute magnitude M down to apparent magnitude m_lim.

        **Arguments:**

        - `observer`: the observer's position, shape (3,).
        - `absolute_magnitude`, `magnitude_limit`: M and m_lim; d_half = 10 pc ·
          10^((m_lim − M) / 5).
        - `sigma_mag`: width of the limit in magnitudes.
        - `units`: a physical unit system (default `galactic`).

        **Returns:** the `DistanceSelection`.
        """
        import astropy.units as u

        system = get_units(units)
        d_half = 10 ** ((float(magnitude_limit) - float(absolute_magnitude)) / 5 + 1) * u.pc
        return cls(observer, d_half, sigma_mag, units=system)

    @property
    def exponent(self) -> float:
        """k = 5 / (σ_m ln 10), the power of d in S."""
        return 5.0 / (self.sigma_mag * math.log(10.0))

    def _log_selection(self, x: Position) -> Scalar:
        d2 = jnp.maximum(jnp.sum((x - self.observer) ** 2), _TINY_DISTANCE2)
        log_ratio = 0.5 * jnp.log(d2) - math.log(self.d_half)
        return -jax.nn.softplus(self.exponent * log_ratio)

    def describe(self) -> dict[str, Any]:
        return {"type": "distance", "observer": np.asarray(self.observer).tolist(),
                "d_half": self.d_half, "sigma_mag": self.sigma_mag,
                "units": self.units.to_dict()}


def _catmull_rom(t: Scalar) -> Float[Array, "4"]:
    """Cubic convolution (Catmull–Rom) weights of the 4 nodes around fraction t ∈ [0, 1]."""
    t2, t3 = t * t, t * t * t
    return 0.5 * jnp.stack([-t3 + 2 * t2 - t, 3 * t3 - 5 * t2 + 2, -3 * t3 + 4 * t2 + t, t3 - t2])


@final
class GridSelection(AbstractSelection):
    """A selection function given on a regular Cartesian grid, interpolated smoothly.

    ln S is interpolated with tricubic Catmull–Rom (cubic convolution) splines, which pass
    through the grid values and have continuous first derivatives, so ∂ln S/∂x is
    continuous. Outside the grid the nearest edge value is used (constant extrapolation:
    give the grid a margin around the data).

    **Arguments:**

    - `lower`, `upper`: the first and last node along x, y and z, shape (3,) each.
    - `values`: S at the nodes, shape (n_x, n_y, n_z) with every n ≥ 2; node (i, j, k) sits
      at lower + (i, j, k) · (upper − lower) / (n − 1).
    - `floor`: values below it are raised to it before taking the logarithm (S = 0 has no
      logarithm; the correction is only meaningful where stars are seen).
    - `units`: the unit system of the grid's coordinates.
    """

    lower: Float[Array, "3"]
    upper: Float[Array, "3"]
    log_values: Float[Array, "nx ny nz"]
    units: UnitSystem = eqx.field(static=True)

    def __init__(self, lower, upper, values, *, floor: float = 1e-12, units=None):
        self.units = resolve_units(units, None, lower, upper)
        lower = vector3("lower", lower, "length", self.units)
        upper = vector3("upper", upper, "length", self.units)
        if not bool(jnp.all(upper > lower)):
            raise ValueError(f"upper must exceed lower on every axis, got {lower} and {upper}")
        values = np.asarray(to_model_units("values", values, "dimensionless", self.units),
                            dtype=np.float64)
        if values.ndim != 3 or min(values.shape) < 2:
            raise ValueError(f"values must have shape (n_x, n_y, n_z) with n ≥ 2, "
                             f"got {values.shape}")
        if not np.all(np.isfinite(values)) or np.any(values < 0) or np.any(values > 1):
            raise ValueError("values must be selection probabilities in [0, 1]")
        if not floor > 0:
            raise ValueError(f"floor must be positive, got {floor}")
        self.lower, self.upper = lower, upper
        self.log_values = jnp.log(jnp.maximum(jnp.asarray(values), floor))

    def _log_selection(self, x: Position) -> Scalar:
        shape = jnp.array(self.log_values.shape)
        u = (x - self.lower) / (self.upper - self.lower) * (shape - 1)
        u = jnp.clip(u, 0.0, (shape - 1).astype(u.dtype))
        i0 = jnp.minimum(jnp.floor(u), (shape - 2).astype(u.dtype))
        t = u - i0
        offsets = jnp.arange(-1, 3)
        idx = [jnp.clip(i0[a].astype(int) + offsets, 0, self.log_values.shape[a] - 1)
               for a in range(3)]
        block = self.log_values[jnp.ix_(idx[0], idx[1], idx[2])]
        wx, wy, wz = (_catmull_rom(t[a]) for a in range(3))
        return jnp.einsum("i,j,k,ijk->", wx, wy, wz, block)

    def describe(self) -> dict[str, Any]:
        return {"type": "grid", "lower": np.asarray(self.lower).tolist(),
                "upper": np.asarray(self.upper).tolist(),
                "values": np.exp(np.asarray(self.log_values)).tolist(),
                "units": self.units.to_dict()}


def selection_from_description(desc: Mapping[str, Any]) -> AbstractSelection:
    """Rebuild a selection from its `describe()` output.

    **Arguments:**

    - `desc`: `{"type": "distance", ...}` or `{"type": "grid", ...}`.

    **Returns:** the selection module.
    """
    if not isinstance(desc, Mapping) or "type" not in desc:
        raise ValueError(f"not a selection description: {desc!r}")
    units = desc.get("units")
    if desc["type"] == "distance":
        return DistanceSelection(desc["observer"], desc["d_half"], desc["sigma_mag"],
                                 units=units)
    if desc["type"] == "grid":
        return GridSelection(desc["lower"], desc["upper"], desc["values"], units=units)
    raise ValueError(f"unknown selection type {desc['type']!r}; known: 'distance', 'grid'")
