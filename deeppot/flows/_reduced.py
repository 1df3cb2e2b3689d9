"""`AbstractSymmetricDF`: a DF modelled in reduced coordinates (the ignorable angles
integrated out), exact in Cartesian phase space through the Jacobian of the reduction."""

from __future__ import annotations

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ._base import AbstractDF, AbstractFlowDF, AbstractTrainableDF
from ._ensemble import Ensemble
from ._precondition import Precondition

__all__ = ["AbstractSymmetricDF"]


def _dim_of(df: AbstractDF) -> int | None:
    """The dimension a flow works in, where it can be read without tracing."""
    if isinstance(df, AbstractFlowDF):
        return int(df.loc.shape[-1])
    if isinstance(df, Ensemble):
        dims = {_dim_of(m) for m in df.members}
        return dims.pop() if len(dims) == 1 else None
    return None


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

    def objective_loss(self, objective, w, key):
        """The objective of the inner flow on the preconditioned reduced coordinates of `w`.

        A likelihood objective (`objective.likelihood`) is returned in physical units (the
        inner NLL minus the mean log-Jacobian of the batch), so it compares across models;
        the Jacobian does not depend on the parameters.
        """
        if not self._trainable_inner:
            raise TypeError(f"the inner DF ({type(self.inner).__name__}) is not trainable; "
                            "wrap each trainable flow and ensemble the wrappers instead")
        u, log_j = self._features_batch(w)
        loss = self.inner.objective_loss(objective, u, key)
        if objective.likelihood:
            loss = loss - jnp.mean(log_j)
        return loss
