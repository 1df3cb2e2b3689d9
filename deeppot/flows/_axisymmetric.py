"""`AxisymmetricDF`: an axisymmetric DF, a flow on (R, z, v_R, v_z, v_φ)."""

from __future__ import annotations

import math
import typing

import equinox as eqx
import jax
import jax.numpy as jnp

from ._base import AbstractDF
from ._geometry import safe_norm
from ._precondition import Precondition, as_precondition
from ._reduced import AbstractSymmetricDF

__all__ = ["AxisymmetricDF"]

_LOG_2PI = math.log(2.0 * math.pi)


@typing.final
class AxisymmetricDF(AbstractSymmetricDF):
    """An axisymmetric DF: a flow on (R, z, v_R, v_z, v_φ), exact in Cartesian phase space.

    Cylindrical coordinates about the z axis through the origin; the velocity rotation has
    unit Jacobian, so d³x d³v = 2π R dR dz dv_R dv_z dv_φ after integrating the azimuth and
    `p(x, v) = p_q(R, z, v_R, v_z, v_φ) / (2π R)`. The default preconditioning
    `("log", "asinh", "identity", "identity", "identity")` gives the flow ln R and
    asinh(z / z₀), with z₀ a small quantile of |z| (set from the data by `fit_df`), so a
    sharply peaked vertical profile is resolved.

    **Arguments:**

    - `inner`: a DF of dimension 5, e.g. `FFJORD(key, dim=5, ...)`.
    - `precondition`: a `Precondition`, or its kinds for (R, z, v_R, v_z, v_φ).
    - `quantile`: the asinh quantile when `precondition` is given as kinds (z₀ is this
      quantile of |z|).
    - `chunk_size`: points per evaluation chunk (default: the inner DF's).
    """

    inner: AbstractDF
    precondition: Precondition
    chunk_size: int = eqx.field(static=True)
    coordinates: typing.ClassVar[tuple[str, ...]] = ("R", "z", "v_R", "v_z", "v_phi")
    positive: typing.ClassVar[tuple[bool, ...]] = (True, False, False, False, False)

    def __init__(self, inner: AbstractDF, *,
                 precondition=("log", "asinh", "identity", "identity", "identity"),
                 quantile: float = 0.2, chunk_size: int | None = None):
        self.inner = inner
        self.precondition = as_precondition(precondition, quantile)
        self.chunk_size = int(inner.chunk_size if chunk_size is None else chunk_size)

    def __check_init__(self):
        self._check_reduction()

    def _reduce(self, w):
        x, y, z, vx, vy, vz = (w[i] for i in range(6))
        big_r = safe_norm(w[:2])
        c, s = x / big_r, y / big_r
        v_r = c * vx + s * vy
        v_phi = c * vy - s * vx
        return jnp.stack([big_r, z, v_r, vz, v_phi]), -_LOG_2PI - jnp.log(big_r)

    def _expand(self, key, q):
        phi = jax.random.uniform(key, (q.shape[0],), q.dtype, 0.0, 2.0 * math.pi)
        c, s = jnp.cos(phi), jnp.sin(phi)
        big_r, z, v_r, vz, v_phi = (q[:, i] for i in range(5))
        return jnp.stack([big_r * c, big_r * s, z, v_r * c - v_phi * s, v_r * s + v_phi * c,
                          vz], axis=-1)

