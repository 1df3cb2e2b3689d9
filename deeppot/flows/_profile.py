"""`VelocityProfile`: the fixed radial scaling of a spherical system's velocities by their
fitted dispersions."""

from __future__ import annotations

import typing

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._geometry import radial_tangential, safe_norm
from ._precondition import weighted_quantile

__all__ = ["VelocityProfile"]


@typing.final
class VelocityProfile(eqx.Module):
    """Smooth radial profiles of a spherical system's velocity dispersions, σ_r(r) for the
    radial velocity and σ_t(r) for each tangential component, by which `SphericalDF`
    divides the velocities before its flow sees them (`SphericalDF(..., scale_velocities=
    True)`).

    Where the dispersions change by orders of magnitude with radius (a cusped halo's
    stars over decades in r; radial orbits, σ_t ≪ σ_r, at large r), one global
    standardisation leaves the velocity distribution at some radii a spike far narrower
    than the flow resolves. Divided by the local dispersions, the velocities have unit
    scale at every radius. The map is fixed (fitted once from the data, never trained)
    and smooth, and its exact Jacobian enters `log_prob` and the scores.

    `ln σ(r) = c₀ + c₁ ln r + Σ_k a_k exp(−(ln r − s_k)² / 2h²)`: a power law plus
    Gaussian bumps at knots s_k in ln r (spacing h), least-squares fitted by `fit` to the
    logarithms of the binned rms velocities. Beyond the outermost knots (the first and
    last bins' centres) the profile goes on as the power law it has there, its value and
    slope continuous (`extrapolation = "edge"`), so a cored system's flat centre stays
    flat; profiles fitted before this choice existed continue with the global power law
    c₀ + c₁ ln r and bumps that fade (`"global"`), as they were trained.

    **Arguments:**

    - `n_knots`: number of Gaussian bumps (0: a pure power law per profile).
    - `n_bins`: number of radial bins (equal counts) whose rms velocities `fit` matches.
    - `ridge`: the bumps' ridge penalty, relative to the number of bins.
    - `extrapolation`: `"edge"` or `"global"`, the continuation beyond the outermost knots
      (above).

    The identity (σ = 1) until `fit` sets it.
    """

    knots: Float[Array, " k"]
    coef: Float[Array, "2 k2"]
    n_bins: int = eqx.field(static=True)
    ridge: float = eqx.field(static=True)
    # model files written before the field existed load with the continuation they had
    extrapolation: str = eqx.field(static=True, default="global")

    def __init__(self, n_knots: int = 8, *, n_bins: int = 32, ridge: float = 1e-3,
                 extrapolation: str = "edge"):
        dtype = jnp.result_type(float)
        self.knots = jnp.linspace(-1.0, 1.0, n_knots, dtype=dtype)
        self.coef = jnp.zeros((2, n_knots + 2), dtype)
        self.n_bins = int(n_bins)
        self.ridge = float(ridge)
        self.extrapolation = extrapolation

    def __check_init__(self):
        if self.n_bins < self.knots.shape[0] + 2:
            raise ValueError(f"n_bins ({self.n_bins}) must be at least n_knots + 2 "
                             f"({self.knots.shape[0] + 2})")
        if not self.ridge >= 0:
            raise ValueError(f"ridge must be non-negative; got {self.ridge}")
        if self.extrapolation not in ("edge", "global"):
            raise ValueError("extrapolation must be 'edge' or 'global'; got "
                             f"{self.extrapolation!r}")

    def _basis(self, s):
        knots = jax.lax.stop_gradient(self.knots).astype(s.dtype)
        k = knots.shape[0]
        h = (knots[-1] - knots[0]) / (k - 1) if k > 1 else 1.0  # the knots' spacing
        bumps = jnp.exp(-0.5 * ((s[..., None] - knots) / h) ** 2)
        return jnp.concatenate([jnp.ones_like(s)[..., None], s[..., None], bumps], -1)

    def log_sigma(self, r: Float[Array, "..."]) -> tuple[Float[Array, "..."], Float[Array, "..."]]:
        """`(ln σ_r(r), ln σ_t(r))`."""
        r = jnp.asarray(r, jnp.result_type(r, float))
        coef = jax.lax.stop_gradient(self.coef).astype(r.dtype)

        def profile(s):
            return self._basis(s) @ coef.T

        s = jnp.log(r)
        if self.extrapolation == "edge" and self.knots.shape[0] > 1:
            knots = jax.lax.stop_gradient(self.knots).astype(s.dtype)
            inside = jnp.clip(s, knots[0], knots[-1])
            # the value and slope at the nearer end, continued linearly in ln r
            at, slope = jax.jvp(profile, (inside,), (jnp.ones_like(inside),))
            out = at + slope * (s - inside)[..., None]
        else:
            out = profile(s)
        return out[..., 0], out[..., 1]

    def scaled(self, r: Float[Array, "..."], v_r: Float[Array, "..."], v_t: Float[Array, "..."],
               *, inverse: bool = False) -> tuple[Array, Array, Array, Array]:
        """`(v_r / σ_r(r), v_t / σ_t(r), ln σ_r(r), ln σ_t(r))`: velocities in units of the
        local dispersions (`inverse`: multiplied by them instead). `v_t` is the tangential
        speed or vector, broadcast against `ln σ_t(r)` (give `r` a trailing axis for a
        vector)."""
        ln_sr, ln_st = self.log_sigma(r)
        sign = 1.0 if inverse else -1.0
        return v_r * jnp.exp(sign * ln_sr), v_t * jnp.exp(sign * ln_st), ln_sr, ln_st

    def scaled_cartesian(self, x: Float[Array, "m 3"], v: Float[Array, "m 3"], *,
                         inverse: bool = False) -> tuple[Float[Array, "m 3"], Float[Array, " m"]]:
        """Cartesian velocities at `x` with their radial component divided by σ_r(|x|) and
        their tangential vector by σ_t(|x|) (`inverse`: multiplied), and the log-determinant
        of that linear map of v, `∓(ln σ_r + 2 ln σ_t)`."""
        r = safe_norm(x)[:, None]
        n = x / r
        v_r = jnp.sum(n * v, -1, keepdims=True)
        v_r, v_t, ln_sr, ln_st = self.scaled(r, v_r, v - v_r * n, inverse=inverse)
        log_det = ln_sr[:, 0] + 2.0 * ln_st[:, 0]
        return v_r * n + v_t, log_det if inverse else -log_det

    def fit_points(self, w: Float[Array, "n 6"], weights: Float[Array, " n"] | None = None
                   ) -> VelocityProfile:
        """Copy fitted to phase-space points `w` (see `fit`)."""
        w = jnp.asarray(w).reshape(-1, 6)
        return self.fit(*radial_tangential(w[:, :3], w[:, 3:]), weights)

    def fit(self, r: Float[Array, " n"], v_r: Float[Array, " n"], v_t: Float[Array, " n"],
            weights: Float[Array, " n"] | None = None) -> VelocityProfile:
        """Copy fitted to stars at radii `r` with radial velocities `v_r` and tangential
        speeds `v_t` (optionally weighted): the profiles through the rms v_r and v_t/√2 of
        `n_bins` equal-count bins in ln r, their knots evenly spaced from the first bin's
        centre to the last's (`extrapolation="edge"`) or at equal-count quantiles of ln r
        (`"global"`, older files)."""
        s = jnp.log(jnp.asarray(r))
        n = s.shape[0]
        if n < 4 * self.n_bins:
            raise ValueError(f"fitting a velocity profile with {self.n_bins} bins needs at "
                             f"least {4 * self.n_bins} stars; got {n}")
        p = jnp.ones_like(s) if weights is None else jnp.asarray(weights, s.dtype)
        # bin edges at the weighted quantiles of ln r; equal radii share a bin, so a weight
        # counts exactly like that many copies
        edges = weighted_quantile(s, p, jnp.arange(1, self.n_bins) / self.n_bins)
        which = jnp.searchsorted(edges, s, side="right")

        def binned(a):
            return jax.ops.segment_sum(p * a, which, self.n_bins) / \
                jax.ops.segment_sum(p, which, self.n_bins)

        centres = binned(s)
        y = jnp.stack([0.5 * jnp.log(binned(jnp.asarray(v_r) ** 2)),
                       0.5 * jnp.log(binned(0.5 * jnp.asarray(v_t) ** 2))])
        k = self.knots.shape[0]
        if self.extrapolation == "edge":  # from the first bin's centre to the last's
            knots = jnp.linspace(jnp.min(centres), jnp.max(centres), k)
        else:
            knots = jnp.quantile(centres, (jnp.arange(k) + 0.5) / k)
        knots = knots.astype(self.knots.dtype)
        new = eqx.tree_at(lambda m: m.knots, self, knots)
        basis = new._basis(centres)
        penalty = jnp.diag(jnp.concatenate([jnp.zeros(2), jnp.full(k, self.ridge * self.n_bins)]))
        if self.extrapolation == "edge" and k > 1:
            # straight at the end knots, as it goes on beyond them: the slope it continues
            # with is then the trend of the last few bins, not their noise
            ends = jnp.stack([knots[0], knots[-1]]).astype(centres.dtype)
            curvature = jax.vmap(jax.jacfwd(jax.jacfwd(new._basis)))(ends)
            penalty = penalty + self.n_bins * curvature.T @ curvature
        coef = jnp.linalg.solve(basis.T @ basis + penalty, basis.T @ y.T).T
        if not bool(jnp.all(jnp.isfinite(coef))):
            raise ValueError("the velocity profile's fit is not finite (stars with zero "
                             "velocity in a whole radial bin?)")
        return eqx.tree_at(lambda m: m.coef, new, coef.astype(self.coef.dtype))

