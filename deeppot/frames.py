"""Reference frames in which a stellar system is stationary.

A system stationary in a frame moving with velocity u0 and rotating rigidly with angular
velocity Ω about x0 satisfies (docs/architecture.md, Frames; not the paper's Eq. 15)

    (∇Φ + Ω × (v − u0)) · ∇_v f − (v − u0 − Ω × (x − x0)) · ∇_x f = 0.

Each frame supplies the two pieces: `relative_velocity` (v − u0 − Ω × (x − x0)) and
`fictitious_acceleration` (Ω × (v − u0), added to ∇Φ). Frame parameters are ordinary
arrays: train or freeze them with a filter (`trainable=` in the fitting functions).
Frames with parameters carry a unit system like potentials do (`units=`; quantities such as
`omega=[0, 0, 30] * u.km / u.s / u.kpc` put the frame in `galactic` units), and
`PotentialModel` refuses a frame whose units differ from its potential's.
An axisymmetric system cannot identify Ω about its own axis: f(E, L_z) is stationary in
every frame rotating about z.
"""

import abc
from typing import final

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from ._custom_types import Position
from ._params import vector3
from .units import UnitSystem, resolve_units


class AbstractFrame(eqx.Module):
    """A frame in which the distribution function is assumed stationary.

    `units` is the frame's unit system, or `None` for a frame without parameters (valid
    in any units).
    """

    units: eqx.AbstractVar[UnitSystem | None]

    @abc.abstractmethod
    def relative_velocity(self, x: Position, v: Position) -> Position:
        """Phase-space velocity of positions in the frame: v − u0 − Ω × (x − x0)."""

    @abc.abstractmethod
    def fictitious_acceleration(self, x: Position, v: Position) -> Position:
        """The term added to ∇Φ in the velocity-space part: Ω × (v − u0)."""

    def residual(
        self,
        grad_phi: Float[Array, "*batch 3"],
        x: Float[Array, "*batch 3"],
        v: Float[Array, "*batch 3"],
        df_dx: Float[Array, "*batch 3"],
        df_dv: Float[Array, "*batch 3"],
    ) -> Float[Array, "*batch"]:
        """The stationarity residual ∂f/∂t in this frame (or ∂ln f/∂t given ln f's scores).

        **Arguments:**

        - `grad_phi`: ∇Φ at x.
        - `x`, `v`: phase-space positions.
        - `df_dx`, `df_dv`: ∂f/∂x and ∂f/∂v (or the scores ∂ln f/∂x, ∂ln f/∂v).

        **Returns:** (∇Φ + Ω × (v − u0)) · ∂f/∂v − (v − u0 − Ω × (x − x0)) · ∂f/∂x.
        """
        acc = grad_phi + self.fictitious_acceleration(x, v)
        return jnp.sum(acc * df_dv, axis=-1) - jnp.sum(self.relative_velocity(x, v) * df_dx, -1)


@final
class InertialFrame(AbstractFrame):
    """The observer's inertial frame: no motion, no rotation."""

    units: None = eqx.field(default=None, static=True)

    def relative_velocity(self, x, v):
        return v

    def fictitious_acceleration(self, x, v):
        return jnp.zeros_like(v)


@final
class MovingFrame(AbstractFrame):
    """A frame moving with constant velocity `u0` (a velocity; `units=` as for potentials)."""

    u0: Float[Array, "3"]
    units: UnitSystem = eqx.field(static=True)

    def __init__(self, u0: Float[ArrayLike, "3"] = (0.0, 0.0, 0.0), *, units=None):
        self.units = resolve_units(units, None, u0)
        self.u0 = vector3("u0", u0, "velocity", self.units)

    def relative_velocity(self, x, v):
        return v - self.u0

    def fictitious_acceleration(self, x, v):
        return jnp.zeros_like(v)


@final
class RotatingFrame(AbstractFrame):
    """A frame rotating with angular velocity `omega` about `center`, moving with `u0`.

    `omega` is a frequency (e.g. km/s/kpc), `center` a length, `u0` a velocity; `units=` as
    for potentials.
    """

    omega: Float[Array, "3"]
    center: Float[Array, "3"]
    u0: Float[Array, "3"]
    units: UnitSystem = eqx.field(static=True)

    def __init__(
        self,
        omega: Float[ArrayLike, "3"] = (0.0, 0.0, 0.0),
        center: Float[ArrayLike, "3"] = (0.0, 0.0, 0.0),
        u0: Float[ArrayLike, "3"] = (0.0, 0.0, 0.0),
        *,
        units=None,
    ):
        self.units = resolve_units(units, None, omega, center, u0)
        self.omega = vector3("omega", omega, "frequency", self.units)
        self.center = vector3("center", center, "length", self.units)
        self.u0 = vector3("u0", u0, "velocity", self.units)

    def relative_velocity(self, x, v):
        return v - self.u0 - jnp.cross(self.omega, x - self.center)

    def fictitious_acceleration(self, x, v):
        return jnp.cross(self.omega, v - self.u0)
