"""Diagnostics of a fit that need no truth: how stationary it makes the sampled DF, the
loss over a grid of potential parameters, and maps of ∂ln f/∂t."""

import math
from collections.abc import Callable, Mapping, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..laplacian import value_grad_laplacian
from ..model import PotentialModel
from ..scores import ScoreSample


def loss_landscape(
    model: PotentialModel,
    scores: ScoreSample,
    loss: Callable,
    grid: Mapping[str, Sequence[float]],
    *,
    max_points: int = 2**16,
) -> dict[str, np.ndarray]:
    """The loss on a grid of two (or more) potential parameters (paper Fig. 8).

    **Arguments:**

    - `model`: a `PotentialModel` with an analytic potential.
    - `scores`: the score sample; the first `max_points` rows are used.
    - `loss`: a loss term, `loss(model, batch) -> scalar`.
    - `grid`: `{parameter name: values}`, e.g. `{"a": np.linspace(0.9, 1.1, 21), "b": ...}`;
      names are the potential's physical parameters (set through their `log_` fields).

    **Returns:** `{name: values..., "loss": array of shape (len(v1), len(v2), ...)}`.
    """
    batch = scores[: min(max_points, len(scores))]
    names = list(grid)
    for name in names:
        if not hasattr(model.potential, f"log_{name}"):
            raise ValueError(f"the potential {type(model.potential).__name__} has no parameter "
                             f"{name!r}")
    axes = [np.asarray(grid[k], dtype=float) for k in names]
    mesh = np.stack([m.ravel() for m in np.meshgrid(*axes, indexing="ij")], axis=-1)

    def at(values):
        m = model
        for i, name in enumerate(names):
            m = eqx.tree_at(lambda mm: getattr(mm.potential, f"log_{name}"), m, jnp.log(values[i]))
        return loss(m, batch)

    values = jax.lax.map(eqx.filter_jit(at), jnp.asarray(mesh))
    out = {k: a for k, a in zip(names, axes)}
    out["loss"] = np.asarray(values).reshape([len(a) for a in axes])
    return out


def dfdt_map(model: PotentialModel, scores: ScoreSample, dims=(0, 3), bins: int = 48):
    """Mean ∂ln f/∂t over samples in bins of two phase-space coordinates (paper Fig. 12).

    Samples are drawn from f, so the bin mean is the f-weighted average over the other
    four dimensions.

    **Arguments:**

    - `dims`: two indices into (x, y, z, vx, vy, vz).

    **Returns:** `(mean residual per bin, edges_1, edges_2)`; empty bins are NaN.
    """
    _, grad, _ = value_grad_laplacian(model.potential, scores.x, method=model.laplacian_method)
    r = np.asarray(model.frame.residual(grad, scores.x, scores.v, scores.dlnf_dx, scores.dlnf_dv))
    w = np.concatenate([np.asarray(scores.x), np.asarray(scores.v)], axis=-1)
    a, b = w[:, dims[0]], w[:, dims[1]]
    total, e1, e2 = np.histogram2d(a, b, bins=bins, weights=r)
    count, _, _ = np.histogram2d(a, b, bins=[e1, e2])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan), e1, e2



def fit_quality(model: PotentialModel, scores: ScoreSample, *,
                max_points: int = 2**14) -> dict[str, float]:
    """How well a fitted model makes the sampled DF stationary, without knowing the truth.

    The relative residual at a point is |∂ln f/∂t| divided by the sum of the sizes of its
    two terms, |(∇Φ + Ω × (v − u0)) · ∂ln f/∂v| + |(v − u0 − Ω × (x − x0)) · ∂ln f/∂x|: 0
    when they cancel, about 1 when they are unrelated (an untrained or diverged potential).
    Score errors of 10% leave medians of about 0.1.

    **Arguments:**

    - `model`: the fitted `PotentialModel`.
    - `scores`: the sample it was fitted to (the first `max_points` rows are used); a
      `VelocityScoreSample` (a selection-free fit) is read as
      `deeppot.terms.profiled_scores` of it.

    **Returns:** `{"median_relative_residual", "p84_relative_residual",
    "negative_density_fraction"}`.
    """
    from ..scores import VelocityScoreSample

    if isinstance(scores, VelocityScoreSample):  # a selection-free fit's: ∇ln ν profiled
        from ..terms import profiled_scores

        k = scores.v.shape[1]
        scores = profiled_scores(model, scores[: max(1, max_points // k)])
    batch = scores[: min(max_points, len(scores))]
    _, grad, lap = value_grad_laplacian(model.potential, batch.x, method=model.laplacian_method)
    frame = model.frame
    acc = grad + frame.fictitious_acceleration(batch.x, batch.v)
    term_v = jnp.sum(acc * batch.dlnf_dv, -1)
    term_x = jnp.sum(frame.relative_velocity(batch.x, batch.v) * batch.dlnf_dx, -1)
    rel = np.asarray(jnp.abs(term_v - term_x) / (jnp.abs(term_v) + jnp.abs(term_x)))
    rel = rel[np.isfinite(rel)]
    return {"median_relative_residual": float(np.median(rel)) if rel.size else math.nan,
            "p84_relative_residual": float(np.percentile(rel, 84)) if rel.size else math.nan,
            "negative_density_fraction": float(np.mean(np.asarray(lap) < 0))}
