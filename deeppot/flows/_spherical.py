"""`SphericalDF`: a spherically symmetric DF, a flow on (r, v_r, v_t) or (r, v_r, v_t1, v_t2)."""

from __future__ import annotations

import math
import typing

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._base import AbstractDF
from ._ensemble import Ensemble
from ._geometry import radial_tangential, safe_norm, unit_vectors
from ._precondition import Precondition, as_precondition
from ._profile import VelocityProfile
from ._reduced import AbstractSymmetricDF

__all__ = ["SphericalDF"]

_LOG_8PI2 = math.log(8.0 * math.pi**2)
_LOG_4PI = math.log(4.0 * math.pi)


@typing.final
class SphericalDF(AbstractSymmetricDF):
    """A spherically symmetric DF: a flow on (r, v_r, v_t), exact in Cartesian phase space.

    `r = |x|`, `v_r = x·v / r`, `v_t = |x × v| / r`; the system is centred at the origin.
    Anisotropic DFs f(E, L) are covered (L = r v_t). The tangential velocity is represented
    in one of two ways:

    - `tangential="speed"`: its magnitude v_t, a 3-D inner flow. Integrating over the
      direction of x and the azimuth of the tangential velocity, d³x d³v = 4π r² dr ·
      2π v_t dv_t dv_r, so `p(x, v) = p_q(r, v_r, v_t) / (8π² r² v_t)`. The default
      preconditioning `("log", "identity", "log")` gives the flow (ln r, v_r, ln v_t).
      Where orbits are nearly radial (v_t ≪ |v|), the flow's error in ∂/∂ln v_t reaches
      the Cartesian velocity score multiplied by 1/v_t.
    - `tangential="vector"`: the tangential velocity as a 2-D vector (v_t, 0) in a frame of
      the tangent plane, a 4-D inner flow whose density is exactly invariant under rotations
      of that vector (an `FFJORD` built with `pair_invariant=True`), so the frame's
      orientation does not matter. d³x d³v = 4π r² dr · dv_r d²v_t, so
      `p(x, v) = p_q(r, v_r, v_t1, v_t2) / (4π r²)`: the density is smooth at v_t = 0 and
      no 1/v_t reaches the scores. The default preconditioning is
      `("log", "identity", "identity", "identity")`; the vector must stay unpreconditioned.

    **Arguments:**

    - `inner`: a DF of dimension 3 (`"speed"`), e.g. `FFJORD(key, dim=3, ...)`,
      `SplineFlow(key, dim=3)` or an `Ensemble` of them; or (`"vector"`) an
      `FFJORD(key, dim=4, pair_invariant=True, ...)` or an `Ensemble` of them.
    - `tangential`: `"speed"` or `"vector"`.
    - `scale_velocities`: divide v_r by σ_r(r) and the tangential velocity by σ_t(r), smooth
      dispersion profiles fitted to the data (`VelocityProfile`, set by `standardise`),
      so that the velocities have unit scale at every radius; the reduced coordinates
      are then those scaled velocities.
    - `precondition`: a `Precondition`, or its kinds for the reduced coordinates (default
      above).
    - `quantile`: the asinh quantile when `precondition` is given as kinds.
    - `chunk_size`: points per evaluation chunk (default: the inner DF's).
    """

    inner: AbstractDF
    precondition: Precondition
    profile: VelocityProfile | None
    tangential: str = eqx.field(static=True)
    chunk_size: int = eqx.field(static=True)

    def __init__(self, inner: AbstractDF, *, tangential: str = "speed",
                 scale_velocities: bool = False, precondition=None, quantile: float = 0.2,
                 chunk_size: int | None = None):
        self.inner = inner
        self.tangential = tangential
        self.profile = VelocityProfile() if scale_velocities else None
        if precondition is None:
            precondition = (("log", "identity", "log") if tangential == "speed"
                            else ("log", "identity", "identity", "identity"))
        self.precondition = as_precondition(precondition, quantile)
        self.chunk_size = int(inner.chunk_size if chunk_size is None else chunk_size)

    def __check_init__(self):
        if self.tangential not in _TANGENTIAL:
            raise ValueError(f"tangential must be one of {tuple(_TANGENTIAL)}; "
                             f"got {self.tangential!r}")
        self._check_reduction()
        if self.tangential == "vector":
            if self.precondition.kinds[2:] != ("identity", "identity"):
                raise ValueError("the tangential velocity vector must be unpreconditioned "
                                 "(a map per component breaks its rotation invariance); got "
                                 f"{self.precondition.kinds[2:]}")
            if not _pair_invariant(self.inner):
                raise ValueError("tangential='vector' needs an inner DF invariant under "
                                 "rotations of the tangential vector: FFJORD(..., "
                                 "pair_invariant=True) or an Ensemble of them")

    @property
    def coordinates(self) -> tuple[str, ...]:
        """Names of the reduced coordinates."""
        return _TANGENTIAL[self.tangential][0]

    @property
    def positive(self) -> tuple[bool, ...]:
        """Which reduced coordinates are positive."""
        return _TANGENTIAL[self.tangential][1]

    def _reduce(self, w):
        r, v_r, v_t = radial_tangential(w[:3], w[3:])
        if self.tangential == "vector":
            log_j = -_LOG_4PI - 2.0 * jnp.log(r)
        else:
            log_j = -_LOG_8PI2 - 2.0 * jnp.log(r) - jnp.log(v_t)
        if self.profile is not None:  # velocities in units of the local dispersions
            v_r, v_t, ln_sr, ln_st = self.profile.scaled(r, v_r, v_t)
            log_j = log_j - ln_sr - (len(self.coordinates) - 2) * ln_st
        if self.tangential == "vector":
            return jnp.stack([r, v_r, v_t, jnp.zeros_like(v_t)]), log_j
        return jnp.stack([r, v_r, v_t]), log_j

    def _canonical_score(self, u, s_u):
        if self.tangential == "speed":
            return s_u
        # the inner density is invariant under rotations of b = u[:, 2:], and `_reduce`
        # gives b = (|b|, 0): rotate the score of b with the rotation that takes b there
        b, s_b = u[:, 2:], s_u[:, 2:]
        b_hat = b / jnp.maximum(safe_norm(b), jnp.finfo(b.dtype).tiny)[:, None]
        rotated = jnp.stack([jnp.sum(b_hat * s_b, -1),
                             b_hat[:, 0] * s_b[:, 1] - b_hat[:, 1] * s_b[:, 0]], -1)
        return jnp.concatenate([s_u[:, :2], rotated], -1)

    def _expand(self, key, q):
        k_n, k_t = jax.random.split(key)
        m = q.shape[0]
        n = unit_vectors(k_n, m, q.dtype)
        g = jax.random.normal(k_t, (m, 3), q.dtype)
        e = g - jnp.sum(g * n, -1, keepdims=True) * n
        e = e / jnp.linalg.norm(e, axis=-1, keepdims=True)
        r, v_r = q[:, :1], q[:, 1:2]
        v_t = q[:, 2:3] * e
        if self.tangential == "vector":
            v_t = v_t + q[:, 3:] * jnp.cross(n, e)
        if self.profile is not None:
            v_r, v_t, _, _ = self.profile.scaled(r, v_r, v_t, inverse=True)
        return jnp.concatenate([r * n, v_r * n + v_t], axis=-1)

    @property
    def standardisation(self) -> tuple[Array, ...]:
        """The velocity profile's coefficients (if any), the precondition's scales and the
        inner flow's standardisation."""
        profile = () if self.profile is None else (self.profile.knots, self.profile.coef)
        return (*profile, *super().standardisation)

    def standardise(self, w: Float[Array, "n 6"], weights: Float[Array, " n"] | None = None):
        """Copy whose velocity profile (with `scale_velocities`), precondition scales and
        inner standardisation match the points `w` (see `AbstractSymmetricDF.standardise`).
        """
        new = self
        if self.profile is not None:
            new = eqx.tree_at(lambda d: d.profile, self, self.profile.fit_points(w, weights))
        return super(SphericalDF, new).standardise(w, weights)


# names and positivity of SphericalDF's reduced coordinates, per tangential representation
_TANGENTIAL = {"speed": (("r", "v_r", "v_t"), (True, False, True)),
               "vector": (("r", "v_r", "v_t1", "v_t2"), (True, False, False, False))}


def _pair_invariant(df: AbstractDF) -> bool:
    if isinstance(df, Ensemble):
        return all(_pair_invariant(m) for m in df.members)
    return bool(getattr(df, "pair_invariant", False))

