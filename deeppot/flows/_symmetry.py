"""Symmetry-reduced distribution functions, coordinate preconditioning and augmentation.

A spherical system's DF depends on (r, v_r, v_t) only and an axisymmetric one's on
(R, z, v_R, v_z, v_φ); `SphericalDF` and `AxisymmetricDF` model that reduced density with
any flow and keep the meaning of every `AbstractDF` method in Cartesian phase space through
the exact Jacobian of the reduction. `Precondition` is the fixed elementwise map (log r,
asinh(z/z₀), …) applied to the reduced coordinates before the flow sees them, and
`VelocityProfile` the fixed radial scaling of a spherical system's velocities by their
fitted dispersions. `Augmented` trains a general DF on batches transformed by random
elements of a symmetry group.
"""

from __future__ import annotations

import abc
import math
import typing
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
from flowjax.bijections import AbstractBijection
from jaxtyping import Array, Float, PRNGKeyArray

from ._base import AbstractDF, AbstractFlowDF, AbstractTrainableDF
from ._ensemble import Ensemble

__all__ = [
    "AbstractSymmetricDF",
    "Augmented",
    "AxisymmetricDF",
    "Precondition",
    "SphericalDF",
    "VelocityProfile",
    "symmetry_transform",
]

PRECONDITION_KINDS = ("identity", "log", "asinh")  # the kinds `Precondition` accepts
SYMMETRY_GROUPS = ("spherical", "axisymmetric", "mirror_z", "axisymmetric_mirror_z")


@typing.final
class Precondition(AbstractBijection):
    """A fixed elementwise map `u_i = g_i(q_i)` with its exact log-Jacobian (a flowjax
    bijection), applied to coordinates before a flow sees them, so that a cusp or a
    half-line boundary is smooth in the flow's coordinates.

    Kinds, per coordinate:

    - `"identity"`: `u = q`;
    - `"log"`: `u = ln q`, for a positive coordinate (r, v_t, R): maps the half line onto
      the line, and a power-law cusp at q → 0 onto an exponential tail;
    - `"asinh"`: `u = asinh(q / s)`, linear for |q| < s and logarithmic beyond, centred at 0
      (the system's centre or midplane). `fit` sets s to the `quantile` of |q| in the
      training data.

    **Arguments:**

    - `kinds`: one kind per coordinate.
    - `scale`: the asinh scales s, shape `(d,)` (ignored for other kinds; default ones,
      usually set by `fit`).
    - `quantile`: which quantile of |q| `fit` uses as the asinh scale.
    """

    kinds: tuple[str, ...] = eqx.field(static=True)
    scale: Float[Array, " d"]
    quantile: float = eqx.field(static=True)
    shape: tuple[int, ...] = eqx.field(static=True)
    cond_shape: None = eqx.field(static=True)

    def __init__(self, kinds: Sequence[str], *, scale=None, quantile: float = 0.2):
        self.kinds = tuple(kinds)
        d = len(self.kinds)
        dtype = jnp.result_type(float)
        self.scale = jnp.ones(d, dtype) if scale is None else jnp.asarray(scale, dtype)
        self.quantile = float(quantile)
        self.shape = (d,)
        self.cond_shape = None

    def __check_init__(self):
        bad = [k for k in self.kinds if k not in PRECONDITION_KINDS]
        if bad or not self.kinds:
            raise ValueError(f"precondition kinds must be a non-empty sequence of "
                             f"{PRECONDITION_KINDS}; got {self.kinds}")
        if self.scale.shape != self.shape:
            raise ValueError(f"scale must have shape {self.shape}; got {self.scale.shape}")
        if not 0.0 < self.quantile < 1.0:
            raise ValueError(f"quantile must be in (0, 1); got {self.quantile}")

    def _masks(self):
        return tuple(jnp.array([k == kind for k in self.kinds]) for kind in ("log", "asinh"))

    def transform_and_log_det(self, x, condition=None):
        """`q → u` and `ln |du/dq|` (summed over coordinates)."""
        is_log, is_asinh = self._masks()
        s = jax.lax.stop_gradient(self.scale).astype(x.dtype)
        safe = jnp.where(is_log, x, 1.0)
        u = jnp.where(is_log, jnp.log(safe), jnp.where(is_asinh, jnp.arcsinh(x / s), x))
        log_det = jnp.where(is_log, -jnp.log(safe),
                            jnp.where(is_asinh, -0.5 * jnp.log(s**2 + x**2), 0.0))
        return u, jnp.sum(log_det)

    def inverse_and_log_det(self, y, condition=None):
        """`u → q` and `ln |dq/du|` (summed over coordinates)."""
        is_log, is_asinh = self._masks()
        s = jax.lax.stop_gradient(self.scale).astype(y.dtype)
        x = jnp.where(is_log, jnp.exp(y), jnp.where(is_asinh, s * jnp.sinh(y), y))
        log_det = jnp.where(is_log, y, jnp.where(is_asinh, jnp.log(s * jnp.cosh(y)), 0.0))
        return x, jnp.sum(log_det)

    def fit(self, q: Float[Array, "n d"], weights: Float[Array, " n"] | None = None
            ) -> Precondition:
        """Copy whose asinh scales are the `quantile` of |q| per coordinate.

        **Arguments:**

        - `q`: training coordinates, shape `(n, d)`.
        - `weights`: optional non-negative per-point weights, shape `(n,)` (weighted
          quantile: a weighted point counts like that many copies of it).

        **Returns:**

        The same map with `scale` set from `q` (ones where the kind is not asinh).
        """
        q = jnp.asarray(q)
        if q.ndim != 2 or q.shape[1:] != self.shape:
            raise ValueError(f"expected coordinates of shape (n, {self.shape[0]}); got {q.shape}")
        if weights is None:
            s = jnp.quantile(jnp.abs(q), self.quantile, axis=0)
        else:
            p = jnp.asarray(weights, q.dtype)
            if p.shape != q.shape[:1]:
                raise ValueError(f"weights must have shape ({q.shape[0]},), got {p.shape}")
            s = jax.vmap(lambda a: _weighted_quantile(a, p, self.quantile), 1)(jnp.abs(q))
        is_asinh = jnp.array([k == "asinh" for k in self.kinds])
        if not bool(jnp.all(jnp.where(is_asinh, s > 0, True))):
            raise ValueError("an asinh coordinate of the training data is mostly zero")
        scale = jnp.where(is_asinh, s, 1.0).astype(self.scale.dtype)
        return eqx.tree_at(lambda p: p.scale, self, scale)


def _weighted_quantile(a: Float[Array, " n"], p: Float[Array, " n"], q):
    """The lower weighted quantile(s) `q` of `a`: the smallest value whose cumulative weight
    reaches the fraction q (a weighted point counts like that many copies of it)."""
    order = jnp.argsort(a)
    cdf = jnp.cumsum(p[order]) / jnp.sum(p)
    return a[order][jnp.searchsorted(cdf, q)]


def _dim_of(df: AbstractDF) -> int | None:
    """The dimension a flow works in, where it can be read without tracing."""
    if isinstance(df, AbstractFlowDF):
        return int(df.loc.shape[-1])
    if isinstance(df, Ensemble):
        dims = {_dim_of(m) for m in df.members}
        return dims.pop() if len(dims) == 1 else None
    return None


def _unit_vectors(key, m, dtype):
    g = jax.random.normal(key, (m, 3), dtype)
    return g / jnp.linalg.norm(g, axis=-1, keepdims=True)


class AbstractSymmetricDF(AbstractTrainableDF):
    """A DF modelled in reduced coordinates q (the ignorable angles integrated out).

    With `u = g(q(w))` the preconditioned reduced coordinates that the inner flow models,
    `ln p(w) = ln p_u(u) + ln |du/dq| + ln J(w)`, where `J(w)` turns the reduced density into
    the 6-D one (for instance `1 / (8π² r² v_t)` for a spherical system); the scores are the
    inner flow's scores pulled back through `w → u` plus the gradient of the log-Jacobians.
    Sampling draws u from the inner flow and the ignorable angles uniformly. Subclasses
    define the reduction (`_reduce`, one point) and its inverse with random angles
    (`_expand`).
    """

    inner: eqx.AbstractVar[AbstractDF]
    precondition: eqx.AbstractVar[Precondition]
    chunk_size: eqx.AbstractVar[int]

    @property
    @abc.abstractmethod
    def coordinates(self) -> tuple[str, ...]:
        """Names of the reduced coordinates."""

    @property
    @abc.abstractmethod
    def positive(self) -> tuple[bool, ...]:
        """Which reduced coordinates are positive."""

    @abc.abstractmethod
    def _reduce(self, w: Float[Array, " 6"]) -> tuple[Float[Array, " d"], Float[Array, ""]]:
        """Reduced coordinates q of one point and `ln J(w)` (ln p(w) = ln p_q(q) + ln J)."""

    @abc.abstractmethod
    def _expand(self, key: PRNGKeyArray, q: Float[Array, "m d"]) -> Float[Array, "m 6"]:
        """Phase-space points with reduced coordinates q and uniformly random angles."""

    def _canonical_score(self, u: Float[Array, "m d"], s_u: Float[Array, "m d"]
                         ) -> Float[Array, "m d"]:
        """The inner score at u carried to the point `_reduce` gives for `_expand(u)`
        (they differ where the inner density has a symmetry of its own)."""
        return s_u

    def _check_reduction(self):
        d = len(self.coordinates)
        if not isinstance(self.inner, AbstractDF):
            raise TypeError(f"inner must be a deeppot DF; got {type(self.inner).__name__}")
        if self.precondition.shape != (d,):
            raise ValueError(f"{type(self).__name__} needs {d} precondition kinds for "
                             f"{self.coordinates}; got {self.precondition.kinds}")
        for name, pos, kind in zip(self.coordinates, self.positive, self.precondition.kinds):
            if pos and kind != "log":
                raise ValueError(f"{name} is positive: precondition it with 'log' (which maps "
                                 f"it onto the whole line); got {kind!r}")
            if not pos and kind == "log":
                raise ValueError(f"{name} takes negative values: 'log' does not apply")
        dim = _dim_of(self.inner)
        if dim is not None and dim != d:
            raise ValueError(f"{type(self).__name__} models the {d} reduced coordinates "
                             f"{self.coordinates}; the inner flow has dimension {dim} "
                             f"(build it with dim={d})")
        if self.chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")

    # ------------------------------------------------------------------ coordinates

    def _features(self, w):
        """`(u, ln |du/dq| + ln J)` for one point."""
        q, log_j = self._reduce(w)
        u, log_det = self.precondition.transform_and_log_det(q)
        return u, log_j + log_det

    def _features_batch(self, w):
        return jax.vmap(self._features)(w)

    def reduced_coordinates(self, w: Float[Array, "... 6"]) -> Float[Array, "... d"]:
        """The reduced coordinates (named by `coordinates`) of phase-space points.

        **Arguments:**

        - `w`: phase-space points, shape `(..., 6)`.

        **Returns:**

        The reduced coordinates before preconditioning, shape `(..., d)`.
        """
        w = jnp.asarray(w)
        if w.ndim == 0 or w.shape[-1] != 6:
            raise ValueError(f"expected phase-space points of shape (..., 6); got {w.shape}")
        flat = w.reshape(-1, 6)
        q = jax.vmap(lambda p: self._reduce(p)[0])(flat)
        return q.reshape(*w.shape[:-1], q.shape[-1])

    # ------------------------------------------------------------------ evaluation

    def _log_prob_chunk(self, w):
        u, log_j = self._features_batch(w)
        return self.inner._log_prob_chunk(u) + log_j

    def _log_prob_score_chunk(self, w):
        (u, log_j), pullback = jax.vjp(self._features_batch, w)
        lp, s_u = self.inner._log_prob_score_chunk(u)
        (grad,) = pullback((s_u, jnp.ones_like(log_j)))
        return lp + log_j, grad

    def _score_chunk(self, w):
        return self._log_prob_score_chunk(w)[1]

    def _points(self, key, u):
        q = jax.vmap(self.precondition.inverse)(u)
        return self._expand(key, q)

    def _sample_chunk(self, key, m):
        k_inner, k_angles = jax.random.split(key)
        u, lp = self.inner._sample_chunk(k_inner, m)
        w = self._points(k_angles, u)
        return w, lp + self._features_batch(w)[1]

    def _sample_score_chunk(self, key, m):
        k_inner, k_angles = jax.random.split(key)
        u, lp, s_u = self.inner._sample_score_chunk(k_inner, m)
        w = self._points(k_angles, u)
        (_, log_j), pullback = jax.vjp(self._features_batch, w)
        (grad,) = pullback((self._canonical_score(u, s_u), jnp.ones_like(log_j)))
        return w, lp + log_j, grad

    # ------------------------------------------------------------------ training

    @property
    def _trainable_inner(self) -> bool:
        return isinstance(self.inner, AbstractTrainableDF)

    @property
    def objectives(self) -> tuple[str, ...]:
        """The inner flow's objectives (none if it is not trainable)."""
        return self.inner.objectives if self._trainable_inner else ()

    @property
    def standardisation(self) -> tuple[Array, ...]:
        """The precondition's scales and the inner flow's standardisation."""
        inner = self.inner.standardisation if self._trainable_inner else ()
        return (self.precondition.scale, *inner)

    def standardise(self, w: Float[Array, "n 6"], weights: Float[Array, " n"] | None = None):
        """Copy whose precondition scales and inner standardisation match the points `w`.

        **Arguments:**

        - `w`: training points, shape `(n, 6)`.
        - `weights`: optional non-negative per-point weights, shape `(n,)`.

        **Returns:**

        The same DF with `Precondition.fit` applied to the reduced coordinates of `w` and
        the inner flow standardised on the preconditioned ones.
        """
        q = self.reduced_coordinates(w).reshape(-1, len(self.coordinates))
        pre = self.precondition.fit(q, weights)
        new = eqx.tree_at(lambda d: d.precondition, self, pre)
        if not self._trainable_inner:
            return new
        u = jax.vmap(pre.transform)(q)
        return eqx.tree_at(lambda d: d.inner, new, self.inner.standardise(u, weights))

    def train_loss(self, w, key, objective):
        """The inner flow's objective on the preconditioned reduced coordinates of `w`.

        Likelihood objectives (names starting with `"nll"`) are returned in physical units
        (the inner NLL minus the mean log-Jacobian of the batch), so they compare across
        models; the Jacobian does not depend on the parameters.
        """
        if not self._trainable_inner:
            raise TypeError(f"the inner DF ({type(self.inner).__name__}) is not trainable; "
                            "wrap each trainable flow and ensemble the wrappers instead")
        u, log_j = self._features_batch(w)
        loss = self.inner.train_loss(u, key, objective)
        if objective.startswith("nll"):
            loss = loss - jnp.mean(log_j)
        return loss


def _safe_norm(a):
    """|a| with a zero gradient at a = 0 (instead of NaN)."""
    sq = jnp.sum(a**2, axis=-1)
    safe = jnp.where(sq > 0, sq, 1.0)
    return jnp.where(sq > 0, jnp.sqrt(safe), 0.0)


_LOG_8PI2 = math.log(8.0 * math.pi**2)
_LOG_4PI = math.log(4.0 * math.pi)
_LOG_2PI = math.log(2.0 * math.pi)


def _as_precondition(precondition, quantile) -> Precondition:
    if isinstance(precondition, Precondition):
        return precondition
    if isinstance(precondition, str):
        raise TypeError("precondition must be a Precondition or a sequence of kinds, "
                        f"one per reduced coordinate; got the string {precondition!r}")
    return Precondition(precondition, quantile=quantile)


def _radial_tangential(w):
    """(r, v_r, v_t) of one phase-space point."""
    x, v = w[:3], w[3:]
    r = _safe_norm(x)
    return r, jnp.dot(x, v) / r, _safe_norm(jnp.cross(x, v)) / r


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
    logarithms of the binned rms velocities; a power law beyond the data.

    **Arguments:**

    - `n_knots`: number of Gaussian bumps (0: a pure power law per profile).
    - `n_bins`: number of radial bins (equal counts) whose rms velocities `fit` matches.
    - `ridge`: the bumps' ridge penalty, relative to the number of bins.

    The identity (σ = 1) until `fit` sets it.
    """

    knots: Float[Array, " k"]
    coef: Float[Array, "2 k2"]
    n_bins: int = eqx.field(static=True)
    ridge: float = eqx.field(static=True)

    def __init__(self, n_knots: int = 8, *, n_bins: int = 32, ridge: float = 1e-3):
        dtype = jnp.result_type(float)
        self.knots = jnp.linspace(-1.0, 1.0, n_knots, dtype=dtype)
        self.coef = jnp.zeros((2, n_knots + 2), dtype)
        self.n_bins = int(n_bins)
        self.ridge = float(ridge)

    def __check_init__(self):
        if self.n_bins < self.knots.shape[0] + 2:
            raise ValueError(f"n_bins ({self.n_bins}) must be at least n_knots + 2 "
                             f"({self.knots.shape[0] + 2})")
        if not self.ridge >= 0:
            raise ValueError(f"ridge must be non-negative; got {self.ridge}")

    def _basis(self, s):
        knots = jax.lax.stop_gradient(self.knots).astype(s.dtype)
        k = knots.shape[0]
        h = (knots[-1] - knots[0]) / (k - 1) if k > 1 else 1.0  # the knots' spacing
        bumps = jnp.exp(-0.5 * ((s[..., None] - knots) / h) ** 2)
        return jnp.concatenate([jnp.ones_like(s)[..., None], s[..., None], bumps], -1)

    def log_sigma(self, r: Float[Array, "..."]) -> tuple[Float[Array, "..."], Float[Array, "..."]]:
        """`(ln σ_r(r), ln σ_t(r))`."""
        out = self._basis(jnp.log(r)) @ jax.lax.stop_gradient(self.coef).astype(r.dtype).T
        return out[..., 0], out[..., 1]

    def fit(self, r: Float[Array, " n"], v_r: Float[Array, " n"], v_t: Float[Array, " n"],
            weights: Float[Array, " n"] | None = None) -> VelocityProfile:
        """Copy fitted to stars at radii `r` with radial velocities `v_r` and tangential
        speeds `v_t` (optionally weighted): knots at equal-count quantiles of ln r, and
        the profiles through the rms v_r and v_t/√2 of `n_bins` equal-count bins."""
        s = jnp.log(jnp.asarray(r))
        n = s.shape[0]
        if n < 4 * self.n_bins:
            raise ValueError(f"fitting a velocity profile with {self.n_bins} bins needs at "
                             f"least {4 * self.n_bins} stars; got {n}")
        p = jnp.ones_like(s) if weights is None else jnp.asarray(weights, s.dtype)
        # bin edges at the weighted quantiles of ln r; equal radii share a bin, so a weight
        # counts exactly like that many copies
        edges = _weighted_quantile(s, p, jnp.arange(1, self.n_bins) / self.n_bins)
        which = jnp.searchsorted(edges, s, side="right")

        def binned(a):
            return jax.ops.segment_sum(p * a, which, self.n_bins) / \
                jax.ops.segment_sum(p, which, self.n_bins)

        centres = binned(s)
        y = jnp.stack([0.5 * jnp.log(binned(jnp.asarray(v_r) ** 2)),
                       0.5 * jnp.log(binned(0.5 * jnp.asarray(v_t) ** 2))])
        k = self.knots.shape[0]
        knots = jnp.quantile(centres, (jnp.arange(k) + 0.5) / k).astype(self.knots.dtype)
        new = eqx.tree_at(lambda m: m.knots, self, knots)
        basis = new._basis(centres)
        penalty = jnp.diag(jnp.concatenate([jnp.zeros(2), jnp.full(k, self.ridge * self.n_bins)]))
        coef = jnp.linalg.solve(basis.T @ basis + penalty, basis.T @ y.T).T
        if not bool(jnp.all(jnp.isfinite(coef))):
            raise ValueError("the velocity profile's fit is not finite (stars with zero "
                             "velocity in a whole radial bin?)")
        return eqx.tree_at(lambda m: m.coef, new, coef.astype(self.coef.dtype))


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
        self.precondition = _as_precondition(precondition, quantile)
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
        r, v_r, v_t = _radial_tangential(w)
        if self.tangential == "vector":
            log_j = -_LOG_4PI - 2.0 * jnp.log(r)
        else:
            log_j = -_LOG_8PI2 - 2.0 * jnp.log(r) - jnp.log(v_t)
        if self.profile is not None:  # velocities in units of the local dispersions
            ln_sr, ln_st = self.profile.log_sigma(r)
            v_r, v_t = v_r * jnp.exp(-ln_sr), v_t * jnp.exp(-ln_st)
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
        b_hat = b / jnp.maximum(_safe_norm(b), jnp.finfo(b.dtype).tiny)[:, None]
        rotated = jnp.stack([jnp.sum(b_hat * s_b, -1),
                             b_hat[:, 0] * s_b[:, 1] - b_hat[:, 1] * s_b[:, 0]], -1)
        return jnp.concatenate([s_u[:, :2], rotated], -1)

    def _expand(self, key, q):
        k_n, k_t = jax.random.split(key)
        m = q.shape[0]
        n = _unit_vectors(k_n, m, q.dtype)
        g = jax.random.normal(k_t, (m, 3), q.dtype)
        e = g - jnp.sum(g * n, -1, keepdims=True) * n
        e = e / jnp.linalg.norm(e, axis=-1, keepdims=True)
        r, v_r = q[:, :1], q[:, 1:2]
        v_t = q[:, 2:3] * e
        if self.tangential == "vector":
            v_t = v_t + q[:, 3:] * jnp.cross(n, e)
        if self.profile is not None:
            ln_sr, ln_st = self.profile.log_sigma(r)
            v_r, v_t = v_r * jnp.exp(ln_sr), v_t * jnp.exp(ln_st)
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
            r, v_r, v_t = jax.vmap(_radial_tangential)(jnp.asarray(w).reshape(-1, 6))
            new = eqx.tree_at(lambda d: d.profile, self, self.profile.fit(r, v_r, v_t, weights))
        return super(SphericalDF, new).standardise(w, weights)


# names and positivity of SphericalDF's reduced coordinates, per tangential representation
_TANGENTIAL = {"speed": (("r", "v_r", "v_t"), (True, False, True)),
               "vector": (("r", "v_r", "v_t1", "v_t2"), (True, False, False, False))}


def _pair_invariant(df: AbstractDF) -> bool:
    if isinstance(df, Ensemble):
        return all(_pair_invariant(m) for m in df.members)
    return bool(getattr(df, "pair_invariant", False))


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
        self.precondition = _as_precondition(precondition, quantile)
        self.chunk_size = int(inner.chunk_size if chunk_size is None else chunk_size)

    def __check_init__(self):
        self._check_reduction()

    def _reduce(self, w):
        x, y, z, vx, vy, vz = (w[i] for i in range(6))
        big_r = _safe_norm(w[:2])
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


# ---------------------------------------------------------------------------------------------
# Data augmentation by a symmetry group


def _random_orthogonal(key, m, dtype):
    """Haar-distributed 3×3 orthogonal matrices (rotations and reflections), shape (m, 3, 3)."""
    g = jax.random.normal(key, (m, 3, 3), dtype)
    q, r = jnp.linalg.qr(g)
    return q * jnp.sign(jnp.diagonal(r, axis1=-2, axis2=-1))[:, None, :]


def symmetry_transform(key: PRNGKeyArray, w: Float[Array, "m 6"], group: str
                       ) -> Float[Array, "m 6"]:
    """Apply an independent random element of a symmetry group to each phase-space point.

    **Arguments:**

    - `key`: a typed key.
    - `w`: points, shape `(m, 6)`.
    - `group`: `"spherical"` (O(3) about the origin, acting on x and v alike),
      `"axisymmetric"` (rotations about the z axis), `"mirror_z"` (z, v_z → −z, −v_z with
      probability ½) or `"axisymmetric_mirror_z"` (both).

    **Returns:**

    The transformed points, shape `(m, 6)`; a DF with that symmetry has the same density
    at them.
    """
    if group not in SYMMETRY_GROUPS:
        raise ValueError(f"group must be one of {SYMMETRY_GROUPS}; got {group!r}")
    w = jnp.asarray(w)
    m, dtype = w.shape[0], w.dtype
    k_rot, k_flip = jax.random.split(key)
    x, v = w[:, :3], w[:, 3:]
    if group == "spherical":
        o = _random_orthogonal(k_rot, m, dtype)
        return jnp.concatenate([jnp.einsum("nij,nj->ni", o, x),
                                jnp.einsum("nij,nj->ni", o, v)], axis=-1)
    if group in ("axisymmetric", "axisymmetric_mirror_z"):
        phi = jax.random.uniform(k_rot, (m, 1), dtype, 0.0, 2.0 * math.pi)
        c, s = jnp.cos(phi), jnp.sin(phi)

        def rot(a):
            return jnp.concatenate([c * a[:, :1] - s * a[:, 1:2], s * a[:, :1] + c * a[:, 1:2],
                                    a[:, 2:]], axis=-1)

        x, v = rot(x), rot(v)
    if group in ("mirror_z", "axisymmetric_mirror_z"):
        sign = jnp.where(jax.random.bernoulli(k_flip, 0.5, (m, 1)), -1.0, 1.0).astype(dtype)
        flip = jnp.concatenate([jnp.ones((m, 2), dtype), sign], axis=-1)
        x, v = x * flip, v * flip
    return jnp.concatenate([x, v], axis=-1)


@typing.final
class Augmented(AbstractTrainableDF):
    """A trainable DF trained on batches transformed by random elements of a symmetry group.

    Evaluation and sampling are the inner DF's; only `train_loss` (each batch gets fresh
    random group elements, see `symmetry_transform`) and `standardise` (on the data with one
    random element applied to each point) differ. Use it when the user asserts a symmetry
    but wants the general 6-D flow; `SphericalDF` / `AxisymmetricDF` build the symmetry in
    exactly instead.

    **Arguments:**

    - `inner`: a trainable 6-D DF (`FFJORD`, `SplineFlow`, or a symmetry wrapper for
      `"mirror_z"`).
    - `group`: a group name accepted by `symmetry_transform`.
    """

    inner: AbstractTrainableDF
    group: str = eqx.field(static=True)
    chunk_size: int = eqx.field(static=True)

    def __init__(self, inner: AbstractTrainableDF, group: str):
        self.inner = inner
        self.group = group
        self.chunk_size = inner.chunk_size

    def __check_init__(self):
        if not isinstance(self.inner, AbstractTrainableDF):
            raise TypeError(f"Augmented wraps a trainable DF; got {type(self.inner).__name__}")
        if self.group not in SYMMETRY_GROUPS:
            raise ValueError(f"group must be one of {SYMMETRY_GROUPS}; got {self.group!r}")

    def _log_prob_chunk(self, w):
        return self.inner._log_prob_chunk(w)

    def _score_chunk(self, w):
        return self.inner._score_chunk(w)

    def _log_prob_score_chunk(self, w):
        return self.inner._log_prob_score_chunk(w)

    def _sample_chunk(self, key, m):
        return self.inner._sample_chunk(key, m)

    def _sample_score_chunk(self, key, m):
        return self.inner._sample_score_chunk(key, m)

    @property
    def objectives(self) -> tuple[str, ...]:
        """The inner DF's objectives."""
        return self.inner.objectives if isinstance(self.inner, AbstractTrainableDF) else ()

    @property
    def standardisation(self) -> tuple[Array, ...]:
        """The inner DF's standardisation."""
        return self.inner.standardisation

    def standardise(self, w: Float[Array, "n 6"], weights: Float[Array, " n"] | None = None):
        """Standardise the inner DF on `w` with one random group element per point.

        **Arguments:**

        - `w`: training points, shape `(n, 6)`.
        - `weights`: optional non-negative per-point weights, shape `(n,)`.

        **Returns:**

        The same wrapper around the standardised inner DF.
        """
        w = symmetry_transform(jax.random.key(0), jnp.asarray(w), self.group)
        return eqx.tree_at(lambda d: d.inner, self, self.inner.standardise(w, weights))

    def train_loss(self, w, key, objective):
        """The inner objective on `w` transformed by random group elements."""
        k_group, k_loss = jax.random.split(key)
        return self.inner.train_loss(symmetry_transform(k_group, w, self.group), k_loss,
                                     objective)
