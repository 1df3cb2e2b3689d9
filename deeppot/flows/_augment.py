"""Data augmentation by a symmetry group: `symmetry_transform` and the `Augmented` wrapper,
which trains a general DF on batches transformed by random group elements."""

from __future__ import annotations

import math
import typing

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ._base import AbstractTrainableDF

__all__ = ["Augmented", "symmetry_transform"]

SYMMETRY_GROUPS = ("spherical", "axisymmetric", "mirror_z", "axisymmetric_mirror_z")


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

    Evaluation and sampling are the inner DF's; only `objective_loss` (each batch gets fresh
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

    def objective_loss(self, objective, w, key):
        """The inner DF's objective on `w` transformed by random group elements."""
        k_group, k_loss = jax.random.split(key)
        return self.inner.objective_loss(objective, symmetry_transform(k_group, w, self.group),
                                         k_loss)
