"""Analytic distribution functions with exact log-densities, scores and samples (oracles)."""

from __future__ import annotations

import math
import typing

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .. import registry
from ._base import AbstractDF
from ._geometry import unit_vectors

__all__ = ["HernquistDF", "PlummerDF"]

# f(E) = C (-E)^{7/2} with C = 24 sqrt(2) / (7 pi^3) for G = M = b = 1 (Binney & Tremaine
# Eq. 4.83 with the mass normalisation ∫ f d^3x d^3v = M).
_LOG_C = math.log(24.0 * math.sqrt(2.0) / (7.0 * math.pi**3))


def _enclosed_mass(r):
    return r**3 / (1.0 + r**2) ** 1.5


@registry.distribution_functions.register
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
        x = r[:, None] * unit_vectors(k_dir_x, m, dtype)
        vel = v[:, None] * unit_vectors(k_dir_v, m, dtype)
        w = jnp.concatenate([x, vel], axis=-1)
        return w, self._log_prob_chunk(w)


# --- Hernquist (1990) sphere, isotropic or Osipkov–Merritt, in units G = M = a = 1 --------
#
# With q² = Q (the binding energy ε = −E, or Osipkov–Merritt's Q = ε − L²/2r_a², in units
# of GM/a) and δ = 1 − q²,
#   f(Q) = N [S(q) δ^{−5/2} + 8 k q (1 − 2q²)],   N = 1 / (√2 (2π)³),   k = a² / r_a²,
#   S(q) = 3 arcsin q + q √(1 − q²) (1 − 2q²)(8q⁴ − 8q² − 3) = ∫₀^q 128 t⁴ (1 − t²)^{3/2} dt
# (Hernquist 1990 Eq. 17; the Osipkov–Merritt term as in galpy's osipkovmerrittHernquistdf),
# normalised so that ∫ f d³x d³v = 1. S rises monotonically from 0 to 3π/2.
_HQ_LOG_N = -0.5 * math.log(2.0) - 3.0 * math.log(2.0 * math.pi)
# S(q) = Σ_n c_n q^{2n+5} from the binomial series of (1 − t²)^{3/2}; used for q² < 0.1,
# where the closed form loses digits to cancellation (S ~ 128 q⁵ / 5 while its terms ~ 3q).
_HQ_SERIES_Q2 = 0.1
_HQ_SERIES = tuple(
    128.0 * (-1.0) ** n * math.prod((1.5 - j) / (j + 1) for j in range(n)) / (2 * n + 5)
    for n in range(24)
)


def _hernquist_s(q2):
    """S(q) at q² = `q2` ∈ [0, 1], accurate to round-off everywhere."""
    small = q2 < _HQ_SERIES_Q2
    x = jnp.where(small, q2, 0.0)
    series = jnp.zeros_like(x)
    for c in reversed(_HQ_SERIES):
        series = series * x + c
    q_small = jnp.sqrt(x)
    series = series * x * x * q_small
    y = jnp.where(small, 0.5, q2)
    q = jnp.sqrt(y)
    poly = (1.0 - 2.0 * y) * (8.0 * y * y - 8.0 * y - 3.0)
    closed = 3.0 * jnp.arcsin(q) + q * jnp.sqrt(1.0 - y) * poly
    return jnp.where(small, series, closed)


def _hernquist_g(q2, delta, k):
    """f δ^{5/2} / N and its derivative with respect to Q = q², for Q in (0, 1)."""
    s = _hernquist_s(q2)
    q = jnp.sqrt(q2)
    d52 = delta * delta * jnp.sqrt(delta)
    g = s + 8.0 * k * q * (1.0 - 2.0 * q2) * d52
    d32 = delta * jnp.sqrt(delta)
    dg = 64.0 * q2 * q * d32  # S'(q) dq/dQ, with S'(q) = 128 q⁴ δ^{3/2}
    dg = dg + 8.0 * k * ((1.0 - 6.0 * q2) * d52 / (2.0 * q) - 2.5 * q * (1.0 - 2.0 * q2) * d32)
    return g, dg


def _hernquist_om_minimum(k: float) -> float:
    """Smallest f(Q) / N over Q ∈ (0, 1) for anisotropy k = a²/r_a² (positive: valid DF)."""
    q = np.linspace(1e-4, 1.0 - 1e-6, 20001)
    d = 1.0 - q * q
    s = 3.0 * np.arcsin(q) + q * np.sqrt(d) * (1.0 - 2.0 * q * q) * (8.0 * q**4 - 8.0 * q * q - 3.0)
    return float(np.min(s * d**-2.5 + 8.0 * k * q * (1.0 - 2.0 * q * q)))


# max over q of q (1 − 2q²)(1 − q²)^{5/2}, with 1% margin: bounds the Osipkov–Merritt term
_q_grid = np.linspace(0.0, 1.0, 100001)
_HQ_OM_TERM_MAX = 1.01 * float(
    np.max(_q_grid * (1 - 2 * _q_grid**2) * (1 - _q_grid**2) ** 2.5)
)
del _q_grid


@typing.final
class HernquistDF(AbstractDF):
    """The Hernquist (1990) sphere's distribution function, isotropic or Osipkov–Merritt.

    The density ρ ∝ 1 / (r (r + r_s)³) has a 1/r cusp and falls as r⁻⁴: its stars span
    several decades in radius (a tenth of them inside 0.46 r_s, a tenth beyond 18 r_s), a
    test of the potential fit on cusps. With `r_a` the velocities are radially anisotropic
    outside `r_a` (Osipkov 1979, Merritt 1985): f = f(Q), Q = −E − L² / 2r_a², and
    β(r) = r² / (r² + r_a²). The potential is `Hernquist(m_tot, r_s)` (G = 1).

    Log-density (normalised to 1), scores and samples are exact: radii by inverting the
    enclosed mass M(r) ∝ r² / (r + r_s)², speeds by rejection from an envelope that bounds
    the DF (acceptance ≥ 5% for r_a ≥ 0.3 r_s, ~20–100% when isotropic), directions
    uniformly (for Osipkov–Merritt, uniformly in (v_r, v_t √(1 + r² / r_a²)), in which f(Q)
    is isotropic). With `r_max` the system is truncated at that radius and renormalised,
    as `PlummerDF` does.

    **Arguments:**

    - `m_tot`: total mass (G = 1).
    - `r_s`: scale radius a.
    - `r_a`: Osipkov–Merritt anisotropy radius, or `None` for the isotropic DF; it must be at
      least ~0.2 r_s (below that f(Q) turns negative somewhere).
    - `r_max`: truncation radius, or `None` for the untruncated sphere.
    - `chunk_size`: points per evaluation chunk.
    """

    m_tot: float = eqx.field(static=True, default=1.0)
    r_s: float = eqx.field(static=True, default=1.0)
    r_a: float | None = eqx.field(static=True, default=None)
    r_max: float | None = eqx.field(static=True, default=None)
    chunk_size: int = eqx.field(static=True, default=65536)

    def __check_init__(self):
        for name in ("m_tot", "r_s"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"{name} must be positive; got {getattr(self, name)}")
        if self.r_max is not None and not self.r_max > 0:
            raise ValueError(f"r_max must be positive; got {self.r_max}")
        if self.r_a is not None:
            if not self.r_a > 0:
                raise ValueError(f"r_a must be positive; got {self.r_a}")
            if not _hernquist_om_minimum(self._k) > 0:
                raise ValueError(
                    f"r_a = {self.r_a} is too small: the Osipkov–Merritt Hernquist DF is "
                    f"negative for r_a below ~0.2 r_s (r_s = {self.r_s})"
                )
        if self.chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")

    @property
    def _k(self) -> float:
        return 0.0 if self.r_a is None else (self.r_s / self.r_a) ** 2

    @property
    def _v_scale(self) -> float:
        return math.sqrt(self.m_tot / self.r_s)

    @property
    def potential(self):
        """The potential the DF is stationary in, `Hernquist(m_tot, r_s)`."""
        from ..potentials import Hernquist

        return Hernquist(m_tot=self.m_tot, r_s=self.r_s)

    @property
    def log_mass(self) -> float:
        """Log of the mass fraction inside `r_max` (0 when untruncated)."""
        if self.r_max is None:
            return 0.0
        r = self.r_max / self.r_s
        return 2.0 * math.log(r / (1.0 + r))

    def _dimensionless(self, w):
        return w[..., :3] / self.r_s, w[..., 3:] / self._v_scale

    def _q_terms(self, w):
        """Q̃ = q², δ = 1 − q² (without cancellation) and the support mask."""
        x, v = self._dimensionless(w)
        r = jnp.sqrt(jnp.sum(x * x, -1))
        half_v2 = 0.5 * jnp.sum(v * v, -1)
        half_kl2 = 0.5 * self._k * jnp.sum(jnp.cross(x, v) ** 2, -1)
        q2 = 1.0 / (1.0 + r) - half_v2 - half_kl2
        delta = r / (1.0 + r) + half_v2 + half_kl2
        inside = (q2 > 0) & (r > 0)
        if self.r_max is not None:
            inside = inside & (r < self.r_max / self.r_s)
        return x, v, r, jnp.where(inside, q2, 0.5), jnp.where(inside, delta, 0.5), inside

    def _log_norm(self) -> float:
        return _HQ_LOG_N - self.log_mass - 1.5 * math.log(self.r_s * self.m_tot)

    def _log_prob_from(self, g, delta, inside):
        lp = self._log_norm() + jnp.log(g) - 2.5 * jnp.log(delta)
        return jnp.where(inside, lp, -jnp.inf)

    def _log_prob_chunk(self, w):
        _, _, _, q2, delta, inside = self._q_terms(w)
        g, _ = _hernquist_g(q2, delta, self._k)
        return self._log_prob_from(g, delta, inside)

    def _log_prob_score_chunk(self, w):
        x, v, r, q2, delta, inside = self._q_terms(w)
        g, dg = _hernquist_g(q2, delta, self._k)
        # d ln f / dQ = d ln(g δ^{-5/2}) / dQ with dδ/dQ = −1
        dlnf = dg / g + 2.5 / delta
        r_safe = jnp.where(r > 0, r, 1.0)[..., None]
        dq_dx = -x / (r_safe * (1.0 + r_safe) ** 2)
        dq_dv = -v
        if self._k:
            xv = jnp.sum(x * v, -1, keepdims=True)
            dq_dx = dq_dx - self._k * (jnp.sum(v * v, -1, keepdims=True) * x - xv * v)
            dq_dv = dq_dv - self._k * (jnp.sum(x * x, -1, keepdims=True) * v - xv * x)
        score = jnp.concatenate(
            [dlnf[..., None] * dq_dx / self.r_s, dlnf[..., None] * dq_dv / self._v_scale], -1
        )
        score = jnp.where(inside[..., None], score, jnp.nan)
        return self._log_prob_from(g, delta, inside), score

    def _score_chunk(self, w):
        return self._log_prob_score_chunk(w)[1]

    def _sample_chunk(self, key, m):
        k_r, k_dir_x, k_dir_v, k_speed = jax.random.split(key, 4)
        dtype = jnp.result_type(float)
        m_max = math.exp(self.log_mass)
        # inverse CDF of the enclosed mass fraction M(r) = r² / (1 + r)²
        u = jax.random.uniform(k_r, (m,), dtype, minval=jnp.finfo(dtype).tiny, maxval=m_max)
        su = jnp.sqrt(u)
        r = su / (1.0 - su)
        psi = 1.0 / (1.0 + r)
        t = self._sample_t(k_speed, psi)
        # speed in the (v_r, v_t √(1 + k r²)) frame, in which f(Q) is isotropic
        speed = jnp.sqrt(2.0 * t * r / ((1.0 + r) * (1.0 - t)))
        n_x = unit_vectors(k_dir_x, m, dtype)
        vel = speed[:, None] * unit_vectors(k_dir_v, m, dtype)
        if self._k:
            radial = jnp.sum(vel * n_x, -1, keepdims=True) * n_x
            vel = radial + (vel - radial) / jnp.sqrt(1.0 + self._k * r * r)[:, None]
        w = jnp.concatenate([self.r_s * r[:, None] * n_x, self._v_scale * vel], axis=-1)
        return w, self._log_prob_chunk(w)

    def _sample_t(self, key, psi):
        """Rejection sampling of t ∈ (0, Ψ), where Q = (Ψ − t) / (1 − t).

        The proposal t = Ψ u^{2/3} is exact for the density ∝ δ^{−5/2} √(Ψ − Q) (δ = 1 − Q);
        the DF's remaining factor g = f δ^{5/2} / N is accepted with probability g / G, with
        G = S(√Ψ) + 8k min(√Ψ, max_q q (1 − 2q²) δ^{5/2}) ≥ g on Q ≤ Ψ (S rises with Q).
        """
        k = self._k
        bound = _hernquist_s(psi)
        if k:
            bound = bound + 8.0 * k * jnp.minimum(jnp.sqrt(psi), _HQ_OM_TERM_MAX)

        def propose(key):
            k_t, k_acc = jax.random.split(key)
            u = jax.random.uniform(k_t, psi.shape, psi.dtype)
            t = psi * u ** (2.0 / 3.0)
            q2 = psi * (1.0 - u ** (2.0 / 3.0)) / (1.0 - t)
            delta = (1.0 - psi) / (1.0 - t)
            g, _ = _hernquist_g(jnp.maximum(q2, jnp.finfo(psi.dtype).tiny), delta, k)
            accept = jax.random.uniform(k_acc, psi.shape, psi.dtype) * bound < g
            return t, accept

        def cond(state):
            return ~jnp.all(state[2])

        def body(state):
            key, t, done = state
            key, sub = jax.random.split(key)
            t_new, accept = propose(sub)
            take = accept & ~done
            return key, jnp.where(take, t_new, t), done | accept

        init = (key, jnp.zeros_like(psi), jnp.zeros(psi.shape, bool))
        return jax.lax.while_loop(cond, body, init)[1]
