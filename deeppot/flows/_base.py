"""Abstract distribution-function interface shared by every DF model."""

from __future__ import annotations

import abc
import copy
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

__all__ = ["AbstractContinuousFlowDF", "AbstractDF", "AbstractFlowDF", "AbstractTrainableDF"]


def _as_points(w) -> tuple[Float[Array, "n 6"], tuple[int, ...]]:
    w = jnp.asarray(w)
    if w.ndim == 0 or w.shape[-1] != 6:
        raise ValueError(f"expected phase-space points of shape (..., 6); got {w.shape}")
    if not jnp.issubdtype(w.dtype, jnp.inexact):
        w = w.astype(jnp.result_type(float))
    batch = w.shape[:-1]
    return w.reshape(-1, 6), batch


def _check_key(key) -> None:
    if not jnp.issubdtype(jnp.asarray(key).dtype, jax.dtypes.prng_key):
        raise TypeError("use a typed key from jax.random.key, not jax.random.PRNGKey")


def _chunked(fn: Callable, w: Float[Array, "n 6"], chunk_size: int):
    """Apply a batched ``fn`` (``(m, 6) -> pytree with leading m``) in fixed-size chunks.

    The input is padded (with copies of its first row) to a multiple of ``chunk_size`` and
    the chunks are evaluated sequentially with ``jax.lax.map``, bounding memory.
    """
    n = w.shape[0]
    if n == 0:
        return jax.eval_shape(fn, w)  # pragma: no cover - shapes only
    if n <= chunk_size:
        return fn(w)
    n_chunks = -(-n // chunk_size)
    pad = n_chunks * chunk_size - n
    w_pad = jnp.concatenate([w, jnp.broadcast_to(w[:1], (pad, w.shape[1]))], axis=0)
    out = jax.lax.map(fn, w_pad.reshape(n_chunks, chunk_size, w.shape[1]))
    return jax.tree.map(lambda a: a.reshape(n_chunks * chunk_size, *a.shape[2:])[:n], out)


@eqx.filter_jit
def _log_prob_impl(df: AbstractDF, w: Float[Array, "n 6"]) -> Float[Array, " n"]:
    return _chunked(df._log_prob_chunk, w, df.chunk_size)


@eqx.filter_jit
def _score_impl(df: AbstractDF, w: Float[Array, "n 6"]) -> Float[Array, "n 6"]:
    return _chunked(df._score_chunk, w, df.chunk_size)


@eqx.filter_jit
def _log_prob_score_impl(df: AbstractDF, w: Float[Array, "n 6"]):
    return _chunked(df._log_prob_score_chunk, w, df.chunk_size)


@eqx.filter_jit
def _sample_impl(df: AbstractDF, key: PRNGKeyArray, n: int, method: str = "_sample_chunk"):
    """Draw `n` points with the chunk method `method` (`(key, m) -> pytree with leading m`)."""
    draw = getattr(df, method)
    n_chunks = -(-n // df.chunk_size)
    size = min(n, df.chunk_size)
    keys = jax.random.split(key, n_chunks)
    if n_chunks == 1:
        return jax.tree.map(lambda a: a[:n], draw(keys[0], size))
    out = jax.lax.map(lambda k: draw(k, size), keys)
    return jax.tree.map(lambda a: a.reshape(-1, *a.shape[2:])[:n], out)


def autodiff_score(
    log_prob: Callable[[Float[Array, "m 6"]], Float[Array, " m"]], w: Float[Array, "m 6"]
) -> Float[Array, "m 6"]:
    """Score of a batched log-density by one reverse pass over the summed log-prob.

    Points are independent, so the gradient of the sum is the per-point gradient; this is
    several times faster than vmapping per-point gradients.

    **Arguments:**

    - `log_prob`: batched log-density, `(m, 6) -> (m,)`.
    - `w`: points, shape `(m, 6)`.

    **Returns:**

    The gradient of each point's log-density with respect to that point, shape `(m, 6)`.
    """
    return jax.grad(lambda u: jnp.sum(log_prob(u)))(w)


class AbstractDF(eqx.Module):
    """A normalised phase-space distribution function p(x, v).

    Every method takes points `w = (x, v)` of shape `(..., 6)` in physical units and
    evaluates them in chunks of `chunk_size` points so that memory stays bounded for 2^20+
    points. Subclasses implement the batched private methods `_log_prob_chunk`,
    `_score_chunk` and `_sample_chunk`.
    """

    chunk_size: eqx.AbstractVar[int]

    @abc.abstractmethod
    def _log_prob_chunk(self, w: Float[Array, "m 6"]) -> Float[Array, " m"]:
        """Log-density of a chunk of points."""

    @abc.abstractmethod
    def _score_chunk(self, w: Float[Array, "m 6"]) -> Float[Array, "m 6"]:
        """Gradient of the log-density of a chunk of points."""

    @abc.abstractmethod
    def _sample_chunk(
        self, key: PRNGKeyArray, m: int
    ) -> tuple[Float[Array, "m 6"], Float[Array, " m"]]:
        """Draw `m` points together with their log-density."""

    def _log_prob_score_chunk(
        self, w: Float[Array, "m 6"]
    ) -> tuple[Float[Array, " m"], Float[Array, "m 6"]]:
        """Log-density and score of a chunk of points (models may fuse the passes)."""
        return self._log_prob_chunk(w), self._score_chunk(w)

    def _sample_score_chunk(
        self, key: PRNGKeyArray, m: int
    ) -> tuple[Float[Array, "m 6"], Float[Array, " m"], Float[Array, "m 6"]]:
        """Draw `m` points with their log-density and score (models may fuse the passes)."""
        w, lp = self._sample_chunk(key, m)
        return w, lp, self._score_chunk(w)

    def with_chunk_size(self, chunk_size: int):
        """Copy of this DF that evaluates `chunk_size` points at a time.

        **Arguments:**

        - `chunk_size`: points per chunk (trade memory for speed).

        **Returns:**

        The same DF with the new chunk size.
        """
        if int(chunk_size) < 1:
            raise ValueError("chunk_size must be at least 1")
        return self._replace_static("chunk_size", int(chunk_size))

    def _replace_static(self, name: str, value):
        """Copy with a static (non-array) field replaced, re-running the checks."""
        new = copy.copy(self)
        object.__setattr__(new, name, value)
        if hasattr(new, "__check_init__"):
            new.__check_init__()
        return new

    def log_prob(self, w: Float[Array, "... 6"]) -> Float[Array, "..."]:
        """Log of the normalised phase-space density.

        **Arguments:**

        - `w`: phase-space points `(x, v)`, shape `(..., 6)`.

        **Returns:**

        `ln p(w)`, shape `(...)`; `-inf` outside the support.
        """
        pts, batch = _as_points(w)
        return _log_prob_impl(self, pts).reshape(batch)

    def score(
        self, w: Float[Array, "... 6"]
    ) -> tuple[Float[Array, "... 3"], Float[Array, "... 3"]]:
        """Scores of the distribution function, ∂ln f/∂x and ∂ln f/∂v.

        **Arguments:**

        - `w`: phase-space points `(x, v)`, shape `(..., 6)`.

        **Returns:**

        A tuple `(dlnf_dx, dlnf_dv)`, each of shape `(..., 3)`.
        """
        pts, batch = _as_points(w)
        g = _score_impl(self, pts).reshape(*batch, 6)
        return g[..., :3], g[..., 3:]

    def log_prob_and_score(
        self, w: Float[Array, "... 6"]
    ) -> tuple[Float[Array, "..."], Float[Array, "... 3"], Float[Array, "... 3"]]:
        """Log-density and scores together: `log_prob` and `score` in one pass where the
        model allows it (one reverse pass for flows differentiated by autodiff, the forward
        pass of the score ODE for `FFJORD`, whose ln p then equals `log_prob` up to the
        ODE solver's error).

        **Arguments:**

        - `w`: phase-space points `(x, v)`, shape `(..., 6)`.

        **Returns:**

        `(ln_f, dlnf_dx, dlnf_dv)` with shapes `(...)`, `(..., 3)`, `(..., 3)`.
        """
        pts, batch = _as_points(w)
        lp, g = _log_prob_score_impl(self, pts)
        g = g.reshape(*batch, 6)
        return lp.reshape(batch), g[..., :3], g[..., 3:]

    def sample(self, key: PRNGKeyArray, n: int) -> Float[Array, "n 6"]:
        """Draw `n` phase-space points.

        **Arguments:**

        - `key`: a typed key (`jax.random.key`).
        - `n`: number of points.

        **Returns:**

        Points of shape `(n, 6)`.
        """
        return self.sample_and_log_prob(key, n)[0]

    def sample_and_log_prob(
        self, key: PRNGKeyArray, n: int
    ) -> tuple[Float[Array, "n 6"], Float[Array, " n"]]:
        """Draw `n` points and their log-density in one pass.

        **Arguments:**

        - `key`: a typed key (`jax.random.key`).
        - `n`: number of points.

        **Returns:**

        `(w, log_prob)` with shapes `(n, 6)` and `(n,)`.
        """
        _check_key(key)
        return _sample_impl(self, key, int(n))

    def sample_and_score(
        self, key: PRNGKeyArray, n: int
    ) -> tuple[Float[Array, "n 6"], Float[Array, " n"], Float[Array, "n 3"], Float[Array, "n 3"]]:
        """Draw `n` points with their log-density and scores.

        What `sample_scores` calls. Equivalent to `sample_and_log_prob` followed by `score`;
        `FFJORD` does it in one forward pass of its score ODE.

        **Arguments:**

        - `key`: a typed key (`jax.random.key`).
        - `n`: number of points.

        **Returns:**

        `(w, log_prob, dlnf_dx, dlnf_dv)` with shapes `(n, 6)`, `(n,)`, `(n, 3)`, `(n, 3)`.
        """
        _check_key(key)
        w, lp, g = _sample_impl(self, key, int(n), "_sample_score_chunk")
        return w, lp, g[:, :3], g[:, 3:]


class AbstractAutodiffDF(AbstractDF):
    """A DF whose scores are the autodiff of its batched log-density: one reverse pass over
    a chunk, fused with the log-density where both are wanted."""

    def _score_chunk(self, w):
        return autodiff_score(self._log_prob_chunk, w)

    def _log_prob_score_chunk(self, w):
        lp, pullback = jax.vjp(self._log_prob_chunk, w)
        return lp, pullback(jnp.ones_like(lp))[0]


class AbstractTrainableDF(AbstractDF):
    """A DF that `fit_df` trains: the training objectives it supports, and a
    standardisation set from the training data (`standardise`) that is never trained.

    `AbstractFlowDF` (`FFJORD`, `SplineFlow`) standardises its own coordinates; the
    symmetry wrappers (`SphericalDF`, `AxisymmetricDF`) and `Augmented` delegate to the
    flow they wrap.
    """

    @property
    @abc.abstractmethod
    def objectives(self) -> tuple[str, ...]:
        """Names of the objectives it supports (in `deeppot.registry.objectives`); the first
        is `fit_df`'s default. (A class attribute on a flow, so a config can read it from the
        class; a property on a wrapper, which forwards its inner flow's. Not a field either
        way.)"""

    @property
    @abc.abstractmethod
    def standardisation(self) -> tuple[Array, ...]:
        """The arrays `standardise` sets from the data; `fit_df` never trains them."""

    @abc.abstractmethod
    def standardise(self, w: Float[Array, "n 6"], weights: Float[Array, " n"] | None = None
                    ) -> AbstractTrainableDF:
        """Copy of this DF whose standardisation matches the training points `w`.

        **Arguments:**

        - `w`: training points, shape `(n, 6)`.
        - `weights`: optional non-negative per-point weights, shape `(n,)` (a weighted point
          counts like that many copies of it).

        **Returns:**

        The same DF with its standardisation set from `w`.
        """

    @abc.abstractmethod
    def objective_loss(self, objective, w: Float[Array, "m 6"], key: PRNGKeyArray
                       ) -> Float[Array, ""]:
        """A training objective on a batch of physical points: what `objective(self, w,
        key)` returns. A wrapper carries the batch to its inner flow's coordinates and
        forwards it; a flow hands itself to `objective.flow_loss`.

        **Arguments:**

        - `objective`: a `deeppot.objectives.AbstractObjective`.
        - `w`: batch of physical phase-space points, shape `(m, 6)`.
        - `key`: a typed key for stochastic objectives.

        **Returns:**

        A scalar loss. A likelihood objective's is the mean negative log-likelihood in
        physical units, so it is comparable across models.
        """


class AbstractFlowDF(AbstractTrainableDF, AbstractAutodiffDF):
    """A trainable DF that works on standardised coordinates `u = (w - loc) / scale`.

    Subclasses implement the standardised-space methods `_log_prob_std` and `_sample_std`
    and name the objectives they support; `loc` and `scale` are set from the training data
    by `fit_df` (see `standardise`) and are never trained. Maximum likelihood trains every
    flow through `batch_log_prob`.
    """

    loc: eqx.AbstractVar[Float[Array, " 6"]]
    scale: eqx.AbstractVar[Float[Array, " 6"]]

    @abc.abstractmethod
    def _log_prob_std(self, u: Float[Array, "m 6"]) -> Float[Array, " m"]:
        """Log-density of standardised points."""

    @abc.abstractmethod
    def _sample_std(
        self, key: PRNGKeyArray, m: int
    ) -> tuple[Float[Array, "m 6"], Float[Array, " m"]]:
        """Standardised samples and their standardised log-density."""

    @property
    def standardisation(self) -> tuple[Array, ...]:
        """`(loc, scale)`, set by `standardise` and never trained."""
        return self.loc, self.scale

    def _std(self):
        return jax.lax.stop_gradient(self.loc), jax.lax.stop_gradient(self.scale)

    def to_standard(self, w: Float[Array, "m d"]) -> Float[Array, "m d"]:
        """Standardised coordinates `u = (w − loc) / scale` of points (the standardisation
        is held fixed: no gradient flows into it)."""
        loc, scale = self._std()
        return (w - loc) / scale

    def log_det_standard(self) -> Float[Array, ""]:
        """ln |du/dw| of the standardisation: ln p(w) = ln p_u(u) + this."""
        return -jnp.sum(jnp.log(self._std()[1]))

    def batch_log_prob(self, w: Float[Array, "m d"]) -> Float[Array, " m"]:
        """Log-density of a batch in one pass, without chunking (what training
        differentiates; `log_prob` evaluates any number of points)."""
        return self._log_prob_chunk(w)

    def objective_loss(self, objective, w, key):
        """`objective.flow_loss` of this flow on the batch (see
        `AbstractTrainableDF.objective_loss`)."""
        return objective.flow_loss(self, w, key)

    def _log_prob_chunk(self, w):
        return self._log_prob_std(self.to_standard(w)) + self.log_det_standard()

    def _from_std(self, u, lp):
        """Standardised points and log-densities → physical ones."""
        loc, scale = self._std()
        return u * scale + loc, lp + self.log_det_standard()

    def _sample_chunk(self, key, m):
        return self._from_std(*self._sample_std(key, m))

    def _moments(self, w: Float[Array, "n d"], p: Float[Array, " n"] | None):
        """`(loc, scale)` of points `w` with normalised weights `p` (None: equal): mean and
        standard deviation per axis."""
        if p is None:
            return jnp.mean(w, axis=0), jnp.std(w, axis=0)
        loc = jnp.sum(p[:, None] * w, axis=0)
        return loc, jnp.sqrt(jnp.sum(p[:, None] * (w - loc) ** 2, axis=0))

    def standardise(self, w: Float[Array, "n 6"], weights: Float[Array, " n"] | None = None):
        """Copy of this DF whose standardisation matches the points `w`.

        **Arguments:**

        - `w`: training points, shape `(n, 6)`.
        - `weights`: optional non-negative per-point weights, shape `(n,)`.

        **Returns:**

        The same DF with `loc` = mean and `scale` = standard deviation of `w` per axis
        (weighted moments when `weights` is given, so that a weighted point counts like
        that many copies of it).
        """
        w = jnp.asarray(w)
        p = None
        if weights is not None:
            p = jnp.asarray(weights, w.dtype)
            if p.shape != w.shape[:1]:
                raise ValueError(f"weights must have shape ({w.shape[0]},), got {p.shape}")
            p = p / jnp.sum(p)
        loc, scale = self._moments(w, p)
        loc = loc.astype(self.loc.dtype)
        scale = scale.astype(self.scale.dtype)
        if not bool(jnp.all(scale > 0)):
            raise ValueError("every coordinate of the training data must vary")
        return eqx.tree_at(lambda d: (d.loc, d.scale), self, (loc, scale))


class AbstractContinuousFlowDF(AbstractFlowDF):
    """A flow defined by ODEs: blocks carrying the standard-normal base (t = 0) to the
    standardised data (t = 1) along velocity fields.

    Subclasses offer the primitives of the objectives of continuous flows
    (`deeppot.objectives`): the velocity fields (flow matching) and the log-density
    integrated along the inverse solve with a stochastic or exact trace and the
    regularisers (maximum likelihood).
    """

    @property
    @abc.abstractmethod
    def velocity_fields(self) -> tuple[Callable, ...]:
        """The velocity field `(t, z) -> dz/dt` of each block (one point, block time t in
        [0, 1]); block k of K covers the global times [k/K, (k+1)/K]."""

    @abc.abstractmethod
    def regularised_log_prob_std(
        self, u: Float[Array, "m d"], probes: Float[Array, "m k d"] | None
    ) -> tuple[Float[Array, " m"], Float[Array, " m"], Float[Array, " m"]]:
        """Standardised log-density of a batch by one inverse solve per block, with the
        regularisers integrated along it.

        **Arguments:**

        - `u`: standardised points, shape `(m, d)`.
        - `probes`: one Hutchinson probe per point and block, shape `(m, K, d)`, or `None`
          for the exact trace.

        **Returns:**

        `(ln p_u, kinetic, frobenius)`, each of shape `(m,)`: the kinetic energy ∫ |f|² dt
        and the Jacobian's squared Frobenius norm ∫ |∂f/∂z|²_F dt summed over the blocks
        (Hutchinson estimates with probes).
        """
