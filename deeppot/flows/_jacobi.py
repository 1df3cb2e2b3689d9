"""A distribution function of the Jacobi integral: exactly stationary in a rotating frame."""

from __future__ import annotations

import math
import typing

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .. import registry
from ..potentials import AbstractPotential
from ._base import AbstractDF

__all__ = ["JacobiDF"]


def _rotating_quantities(potential, omega, w):
    """E_J and its gradient for points w (m, 6); x, v inertial, Ω about z."""
    x, v = w[..., :3], w[..., 3:]
    phi, grad = jax.vmap(lambda p: (potential._potential(p), potential._gradient(p)))(x)
    l_z = x[..., 0] * v[..., 1] - x[..., 1] * v[..., 0]
    e_j = 0.5 * jnp.sum(v * v, -1) - omega * l_z + phi
    zeros = jnp.zeros_like(l_z)
    de_dx = grad + omega * jnp.stack([-v[..., 1], v[..., 0], zeros], -1)
    de_dv = v + omega * jnp.stack([x[..., 1], -x[..., 0], zeros], -1)
    return e_j, de_dx, de_dv


@registry.distribution_functions.register
@typing.final
class JacobiDF(AbstractDF):
    """f(x, v) ∝ (E₀ − E_J)^n for E_J < E₀, the stars bound inside corotation of a bar.

    E_J = ½|v|² − Ω (x v_y − y v_x) + Φ(x) is the Jacobi integral (the energy in the frame
    rotating at Ω about z in which Φ is static; x, v inertial). A DF of E_J alone is
    exactly stationary in that frame and in no other, unless Φ is axisymmetric. With E₀
    below the Jacobi energy of the bar's Lagrange points L1/L2 the stars with E_J < E₀ near
    the centre can never leave: the support is the part of {Φ_eff < E₀}, Φ_eff = Φ − ½Ω²R²,
    inside the cylinder R < `r_cut` (which must separate it from the outer part beyond
    corotation; `deeppot.mocks.jacobi_bar` chooses it).

    The density in space is ρ(x) = 4π √2 B(3/2, n+1) (E₀ − Φ_eff)^{n+3/2}; velocities in the
    rotating frame are isotropic with |u|² = 2 (E₀ − Φ_eff) q, q ~ Beta(3/2, n+1). Samples
    are exact (rejection in space from a box, then the velocity draw), scores are closed
    forms, and the log-density is normalised by a numerical quadrature of ρ on a grid
    (`log_norm`, relative accuracy ~1e-5; pass a stored value to skip it).

    **Arguments:**

    - `potential`: Φ, static in the rotating frame (e.g. disk + halo + `LongMuraliBar`).
    - `pattern_speed`: Ω about z.
    - `e_max`: E₀.
    - `r_cut`: the cylindrical radius bounding the support.
    - `index`: n ≥ 0 (larger is smoother at the edge of the support).
    - `z_max`: half-height of the sampling box (default: found from Φ_eff).
    - `log_norm`: ln ∫ (E₀ − E_J)^n d³x d³v (default: computed).
    - `log_rho_max`: an upper bound of ln (E₀ − Φ_eff)^{n+3/2} for the rejection sampler
      (default: computed). With `z_max`, `log_norm` and `log_rho_max` all given (a stored
      DF) nothing is computed.
    - `chunk_size`: points per evaluation chunk.
    """

    potential: AbstractPotential
    pattern_speed: float = eqx.field(static=True)
    e_max: float = eqx.field(static=True)
    r_cut: float = eqx.field(static=True)
    index: float = eqx.field(static=True)
    z_max: float = eqx.field(static=True)
    log_norm: float = eqx.field(static=True)
    log_rho_max: float = eqx.field(static=True)
    chunk_size: int = eqx.field(static=True)

    def __init__(
        self,
        potential: AbstractPotential,
        pattern_speed: float,
        e_max: float,
        r_cut: float,
        index: float = 3.0,
        *,
        z_max: float | None = None,
        log_norm: float | None = None,
        log_rho_max: float | None = None,
        chunk_size: int = 65536,
    ):
        if not isinstance(potential, AbstractPotential):
            raise TypeError(f"potential must be a deeppot potential, got {type(potential)}")
        for name, value in (("pattern_speed", pattern_speed), ("e_max", e_max)):
            if not math.isfinite(float(value)):
                raise ValueError(f"{name} must be finite, got {value}")
        if not (math.isfinite(float(r_cut)) and r_cut > 0):
            raise ValueError(f"r_cut must be positive and finite, got {r_cut}")
        if not (math.isfinite(float(index)) and index >= 0):
            raise ValueError(f"index must be non-negative, got {index}")
        self.potential = potential
        self.pattern_speed = float(pattern_speed)
        self.e_max = float(e_max)
        self.r_cut = float(r_cut)
        self.index = float(index)
        self.chunk_size = int(chunk_size)
        if z_max is None or log_norm is None or log_rho_max is None:
            grid = self._space_grid(z_max)
            z_max, log_rho_max = grid["z_max"], grid["log_rho_max"]
            log_norm = grid["log_norm"] if log_norm is None else log_norm
        self.z_max = float(z_max)
        self.log_rho_max = float(log_rho_max)
        self.log_norm = float(log_norm)

    def __check_init__(self):
        if self.chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")

    # -- geometry and normalisation ---------------------------------------------------------

    def effective_potential(self, x: Float[Array, "... 3"]) -> Float[Array, "..."]:
        """Φ_eff = Φ − ½Ω²R², the potential in the rotating frame (with the centrifugal one)."""
        x = jnp.asarray(x)
        R2 = x[..., 0] ** 2 + x[..., 1] ** 2
        return self.potential.potential(x) - 0.5 * self.pattern_speed**2 * R2

    def _log_space_density(self, x):
        """ln[(E₀ − Φ_eff)^{n+3/2}] inside the support, −inf outside (no constant)."""
        gap = self.e_max - self.effective_potential(x)
        R2 = x[..., 0] ** 2 + x[..., 1] ** 2
        inside = (gap > 0) & (R2 < self.r_cut**2)
        return jnp.where(inside, (self.index + 1.5) * jnp.log(jnp.where(inside, gap, 1.0)),
                         -jnp.inf)

    @property
    def log_velocity_constant(self) -> float:
        """ln[4π √2 B(3/2, n+1)]: ∫ (A − ½u²)^n d³u = e^{this} A^{n+3/2}."""
        n = self.index
        log_beta = math.lgamma(1.5) + math.lgamma(n + 1) - math.lgamma(n + 2.5)
        return math.log(4 * math.pi * math.sqrt(2.0)) + log_beta

    def _space_grid(self, z_max, n_grid: int = 160):
        """Sampling box height, the density's maximum and ln Z by a midpoint-rule quadrature
        over the box [−r_cut, r_cut]² × [−z_max, z_max] (all in float64)."""
        r = self.r_cut
        with jax.enable_x64(True):
            if z_max is None:
                # the support's height: scan Φ_eff on a coarse (x, y, z) grid
                u = np.linspace(-r, r, 41)
                zs = np.linspace(0, 4 * r, 161)
                X, Y, Z = np.meshgrid(u, u, zs, indexing="ij")
                pts = np.stack([X, Y, Z], -1).reshape(-1, 3)
                inside = np.isfinite(np.asarray(self._log_space_density(jnp.asarray(pts))))
                top = float(np.max(pts[inside, 2])) if inside.any() else 0.0
                if top >= zs[-1]:
                    raise ValueError("the support of the Jacobi DF is not bounded in z; lower "
                                     "e_max")
                if not inside.any():
                    raise ValueError("the Jacobi DF is empty: e_max is below Φ_eff everywhere "
                                     "inside r_cut")
                z_max = top + 2 * (zs[1] - zs[0])
            z_max = float(z_max)
            h = (2 * r / n_grid, 2 * r / n_grid, 2 * z_max / n_grid)
            cx = -r + h[0] * (np.arange(n_grid) + 0.5)
            cz = -z_max + h[2] * (np.arange(n_grid) + 0.5)
            total, peak = 0.0, -np.inf
            for xi in cx:  # one slab at a time
                Y, Z = np.meshgrid(cx, cz, indexing="ij")
                pts = np.stack([np.full_like(Y, xi), Y, Z], -1).reshape(-1, 3)
                lr = np.asarray(self._log_space_density(jnp.asarray(pts)))
                peak = max(peak, float(lr.max()))
                total += float(np.sum(np.exp(lr)))
            origin = jnp.zeros((1, 3))
            peak = max(peak, float(np.asarray(self._log_space_density(origin))[0]))
            if not total > 0:
                raise ValueError("the Jacobi DF is empty inside r_cut")
        log_z = math.log(total * h[0] * h[1] * h[2]) + self.log_velocity_constant
        # the rejection bound: the grid maximum raised by 1% (the peak lies between nodes)
        return {"z_max": z_max, "log_rho_max": peak + math.log(1.01), "log_norm": log_z}

    # -- the DF interface -------------------------------------------------------------------

    def jacobi_integral(self, w: Float[Array, "... 6"]) -> Float[Array, "..."]:
        """E_J at phase-space points `w` (inertial x, v), shape (...)."""
        w = jnp.asarray(w)
        x, v = w[..., :3], w[..., 3:]
        l_z = x[..., 0] * v[..., 1] - x[..., 1] * v[..., 0]
        return 0.5 * jnp.sum(v * v, -1) - self.pattern_speed * l_z + self.potential.potential(x)

    def _inside(self, w, e_j):
        R2 = w[..., 0] ** 2 + w[..., 1] ** 2
        return (e_j < self.e_max) & (R2 < self.r_cut**2)

    def _log_prob_chunk(self, w):
        e_j, _, _ = _rotating_quantities(self.potential, self.pattern_speed, w)
        inside = self._inside(w, e_j)
        gap = jnp.where(inside, self.e_max - e_j, 1.0)
        return jnp.where(inside, self.index * jnp.log(gap) - self.log_norm, -jnp.inf)

    def _score_chunk(self, w):
        e_j, de_dx, de_dv = _rotating_quantities(self.potential, self.pattern_speed, w)
        inside = self._inside(w, e_j)
        k = jnp.where(inside, -self.index / jnp.where(inside, self.e_max - e_j, 1.0), 0.0)
        return k[:, None] * jnp.concatenate([de_dx, de_dv], -1)

    def _sample_chunk(self, key: PRNGKeyArray, m: int):
        dtype = jnp.result_type(float)
        k_x, k_q, k_dir = jax.random.split(key, 3)
        x = self._sample_positions(k_x, m, dtype)
        gap = jnp.maximum(self.e_max - self.effective_potential(x), 0.0)
        q = jax.random.beta(k_q, 1.5, self.index + 1.0, (m,), dtype)
        g = jax.random.normal(k_dir, (m, 3), dtype)
        u = jnp.sqrt(2 * gap * q)[:, None] * g / jnp.linalg.norm(g, axis=-1, keepdims=True)
        v = u + self.pattern_speed * jnp.stack([-x[:, 1], x[:, 0], jnp.zeros(m, dtype)], -1)
        w = jnp.concatenate([x, v], -1)
        return w, self._log_prob_chunk(w)

    def _sample_positions(self, key, m: int, dtype):
        """m positions from ρ(x) by rejection from the box, filled batch by batch."""
        box = jnp.array([self.r_cut, self.r_cut, self.z_max], dtype)
        proposals = max(4 * m, 4096)

        def body(state):
            key, buf, count = state
            key, k_u, k_a = jax.random.split(key, 3)
            x = (2 * jax.random.uniform(k_u, (proposals, 3), dtype) - 1) * box
            log_accept = self._log_space_density(x) - self.log_rho_max
            ok = jnp.log(jax.random.uniform(k_a, (proposals,), dtype)) < log_accept
            slot = jnp.where(ok, count + jnp.cumsum(ok, dtype=count.dtype) - 1, m)  # m: dropped
            buf = buf.at[slot].set(x, mode="drop")
            return key, buf, count + jnp.sum(ok, dtype=count.dtype)

        state = (key, jnp.zeros((m, 3), dtype), jnp.zeros((), jnp.int32))
        _, buf, _ = jax.lax.while_loop(lambda s: s[2] < m, body, state)
        return buf
