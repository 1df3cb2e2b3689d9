"""Ensembles of distribution functions: averaging several flows reduces score noise."""

from __future__ import annotations

import math
import typing
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp

from ._base import AbstractDF

__all__ = ["Ensemble"]


@typing.final
class Ensemble(AbstractDF):
    """An ensemble of K distribution functions.

    - `average="log_prob"` (default): `ln p = mean_k ln p_k` and the score is the mean of the
      members' scores. This is what reduces score noise; the density is a normalised-up-to-
      a-constant geometric mean, so `log_prob` is not exactly normalised, and `sample` draws
      from the equal-weight mixture as an approximation.
    - `average="prob"`: the equal-weight mixture, `p = mean_k p_k` (normalised, exact
      sampling); its score is the members' scores weighted by their posterior `p_k / Σ p_k`.

    **Arguments:**

    - `members`: the DFs to combine.
    - `average`: `"log_prob"` or `"prob"`.
    - `chunk_size`: points per evaluation chunk.
    """

    members: tuple[AbstractDF, ...]
    average: str = eqx.field(static=True)
    chunk_size: int = eqx.field(static=True)

    def __init__(
        self, members: Sequence[AbstractDF], *, average: str = "log_prob", chunk_size: int = 4096
    ):
        self.members = tuple(members)
        self.average = average
        self.chunk_size = int(chunk_size)

    def __check_init__(self):
        if self.average not in ("log_prob", "prob"):
            raise ValueError(f"average must be 'log_prob' or 'prob'; got {self.average!r}")
        if len(self.members) == 0:
            raise ValueError("an ensemble needs at least one member")

    def _member_log_probs(self, w):
        return jnp.stack([m._log_prob_chunk(w) for m in self.members])

    def _combine_log_probs(self, lps):
        if self.average == "log_prob":
            return jnp.mean(lps, axis=0)
        return jax.nn.logsumexp(lps, axis=0) - math.log(len(self.members))

    def _combine_scores(self, lps, scores):
        if self.average == "log_prob":
            return jnp.mean(scores, axis=0)
        return jnp.sum(jax.nn.softmax(lps, axis=0)[..., None] * scores, axis=0)

    def _log_prob_chunk(self, w):
        return self._combine_log_probs(self._member_log_probs(w))

    def _score_chunk(self, w):
        scores = jnp.stack([m._score_chunk(w) for m in self.members])
        lps = None if self.average == "log_prob" else self._member_log_probs(w)
        return self._combine_scores(lps, scores)

    def _log_prob_score_chunk(self, w):
        lps, scores = map(jnp.stack, zip(*(m._log_prob_score_chunk(w) for m in self.members)))
        return self._combine_log_probs(lps), self._combine_scores(lps, scores)

    def _sample_chunk(self, key, m):
        k_pick, k_draw = jax.random.split(key)
        n_members = len(self.members)
        pick = jax.random.randint(k_pick, (m,), 0, n_members)
        draws = jnp.stack(
            [mem._sample_chunk(k, m)[0] for mem, k in
             zip(self.members, jax.random.split(k_draw, n_members))]
        )
        w = jnp.take_along_axis(draws, pick[None, :, None], axis=0)[0]
        return w, self._log_prob_chunk(w)
