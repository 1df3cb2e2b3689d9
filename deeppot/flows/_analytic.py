"""Analytic distribution functions with exact log-densities and scores (test oracles)."""

from __future__ import annotations

import math
import typing

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._base import AbstractDF

__all__ = ["PlummerDF"]

# f(E) = C (-E)^{7/2} with C = 24 sqrt(2) / (7 pi^3) for G = M = b = 1 (Binney & Tremaine
# Eq. 4.83 with the mass normalisation ∫ f d^3x d^3v = M).
_LOG_C = math.log(24.0 * math.sqrt(2.0) / (7.0 * math.pi**3))


def _enclosed_mass(r):
    return r**3 / (1.0 + r**2) ** 1.5


@typing.final
class PlummerDF(AbstractDF):
    """The isotropic Plummer sphere (G = M = b = 1), f(E) ∝ (−E)^{7/2}.

    With `r_max` the density is truncated at radius `r_max` and normalised over the
    truncated region, `p = f / M(< r_max)`, which is the distribution that
    `dp.mocks.plummer(key, n, r_max)` samples. Log-density, scores and samples are exact.

    **Arguments:**

    - `r_max`: truncation radius, or `None` for the untruncated sphere.
    - `chunk_size`: points per evaluation chunk.
    """

    r_max: float | None = eqx.field(static=True, default=10.0)
    chunk_size: int = eqx.field(static=True, default=65536)

    def __check_init__(self):
        if self.r_max is not None and not self.r_max > 0:
            raise ValueError(f"r_max must be positive; got {self.r_max}")
        if self.chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")

    @property
    def log_mass(self) -> float:
        """Log of the mass inside `r_max` (0 when untruncated)."""
        return 0.0 if self.r_max is None else math.log(_enclosed_mass(self.r_max))

    def energy(self, w: Float[Array, "... 6"]) -> Float[Array, "..."]:
        """Specific energy E = v²/2 + Φ(r) with Φ = −(1 + r²)^{−1/2}.

        **Arguments:**

        - `w`: phase-space points, shape `(..., 6)`.

        **Returns:**

        The energy, shape `(...)`.
        """
        x, v = w[..., :3], w[..., 3:]
        return 0.5 * jnp.sum(v**2, -1) - (1.0 + jnp.sum(x**2, -1)) ** -0.5

    def _log_prob_chunk(self, w):
        e = self.energy(w)
        r2 = jnp.sum(w[..., :3] ** 2, -1)
        inside = e < 0
        if self.r_max is not None:
            inside = inside & (r2 < self.r_max**2)
        safe = jnp.where(inside, -e, 1.0)
        return jnp.where(inside, _LOG_C + 3.5 * jnp.log(safe) - self.log_mass, -jnp.inf)

    def _score_chunk(self, w):
        x, v = w[..., :3], w[..., 3:]
        e = self.energy(w)
        grad_phi = x * (1.0 + jnp.sum(x**2, -1, keepdims=True)) ** -1.5
        k = 3.5 / e[..., None]
        return jnp.concatenate([k * grad_phi, k * v], axis=-1)

    def _sample_chunk(self, key, m):
        k_r, k_dir_x, k_q, k_dir_v = jax.random.split(key, 4)
        dtype = jnp.result_type(float)
        m_max = 1.0 if self.r_max is None else _enclosed_mass(self.r_max)
        # inverse CDF of M(r) = r^3 / (1 + r^2)^{3/2}; keep u away from 0
        u = jax.random.uniform(k_r, (m,), dtype, minval=jnp.finfo(dtype).tiny, maxval=m_max)
        r = (u ** (-2.0 / 3.0) - 1.0) ** -0.5
        # q = v / v_esc has density ∝ q^2 (1 - q^2)^{7/2}, i.e. q^2 ~ Beta(3/2, 9/2)
        q = jnp.sqrt(jax.random.beta(k_q, 1.5, 4.5, (m,), dtype))
        v = q * jnp.sqrt(2.0) * (1.0 + r**2) ** -0.25
        x = r[:, None] * _unit_vectors(k_dir_x, m, dtype)
        vel = v[:, None] * _unit_vectors(k_dir_v, m, dtype)
        w = jnp.concatenate([x, vel], axis=-1)
        return w, self._log_prob_chunk(w)


def _unit_vectors(key, m, dtype):
    g = jax.random.normal(key, (m, 3), dtype)
    return g / jnp.linalg.norm(g, axis=-1, keepdims=True)
