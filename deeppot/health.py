"""Is a fitted potential alive? Physical checks of a potential fit on its score sample.

A fit can finish with finite weights and a low loss and still have learned nothing: a
network whose units all saturated at a huge learning rate has Φ constant, so its force is
exactly zero everywhere. `check_potential_fit` looks at the physics on the score points
rather than at the loss, and raises `FitFailed` when the fitted model

- has a force −∇Φ or a density ∇²Φ/4πG that is not finite at some point;
- has a force that is zero, or the same vector at every point (a uniform field);
- has a negative density almost everywhere;
- leaves the stationarity residual ∂ln f/∂t no smaller than Φ = 0 does (same frame):
  then the fit explains nothing the data say.

The pipeline's potential stage (and so `deeppot run` and `deeppot fit-potential`) runs it
after every fit; `fit_potential` does not, so that deliberately short or tiny fits (tests,
benchmarks, a first look) return their model: call it on the result when it matters.
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._errors import FitFailed
from .model import PotentialModel
from .potentials import AbstractPotential
from .scores import ScoreFile, ScoreSample, VelocityScoreSample

__all__ = ["FORCE_TOLERANCE", "NEGATIVE_DENSITY_LIMIT", "check_potential_fit"]

FORCE_TOLERANCE = 1e-3
"""A force is zero when its rms is below this fraction of the force the scores call for,
and constant when its extent over the points is below this fraction of its rms."""

NEGATIVE_DENSITY_LIMIT = 0.95
"""A density negative at more than this fraction of the score points fails the check."""


@eqx.filter_jit
def _chunk_stats(model: PotentialModel, batch: ScoreSample):
    """Sums, extremes and per-point residuals of one chunk of the score sample."""
    _, grad, lap = model.value_grad_laplacian(batch.x)
    frame = model.frame
    scores = (batch.x, batch.v, batch.dlnf_dx, batch.dlnf_dv)
    residual = frame.residual(grad, *scores)
    residual_zero = frame.residual(jnp.zeros_like(grad), *scores)
    finite = jnp.all(jnp.isfinite(grad), -1) & jnp.isfinite(lap)
    big = jnp.finfo(grad.dtype).max
    # the force the scores call for: |v · ∂ln f/∂x| / |∂ln f/∂v| = |∇Φ · ∂ln f/∂v| / |∂ln f/∂v|
    # where the DF is stationary (the component of the force along ∂ln f/∂v)
    need = (jnp.abs(jnp.sum(batch.v * batch.dlnf_dx, -1))
            / jnp.linalg.norm(batch.dlnf_dv, axis=-1))
    return {"nonfinite": jnp.sum(~finite),
            "force_sq": jnp.sum(jnp.where(finite[:, None], grad * grad, 0.0)),
            "force_min": jnp.min(jnp.where(finite[:, None], grad, big), 0),
            "force_max": jnp.max(jnp.where(finite[:, None], grad, -big), 0),
            "negative": jnp.sum(finite & (lap < 0)),
            "residual": jnp.where(finite, jnp.abs(residual), jnp.nan),
            "residual_zero": jnp.abs(residual_zero),
            "need": need}


def _profiled_zero_residuals(frame, sample: VelocityScoreSample, chunk_size: int):
    """|∂ln f/∂t| of a selection-free sample with no force, ∇ln ν profiled for Φ = 0 at each
    position (`deeppot.terms.profiled_residuals`): the baseline a fit must beat."""
    from .terms import profiled_residuals

    per = max(1, chunk_size // sample.v.shape[1])  # positions per chunk
    out = []
    for start in range(0, len(sample), per):
        part = sample[start : start + per]
        x = jnp.asarray(part.x)
        r, _ = profiled_residuals(frame, jnp.zeros_like(x), x, jnp.asarray(part.v),
                                  jnp.asarray(part.dlnp_dx), jnp.asarray(part.dlnp_dv))
        out.append(np.abs(np.asarray(r)).ravel())
    return np.concatenate(out)


def _rows(scores, start: int, stop: int) -> ScoreSample:
    if isinstance(scores, ScoreFile):
        return scores.take(np.arange(start, stop))
    return scores[start:stop]


def _median(a: np.ndarray) -> float:
    a = a[np.isfinite(a)]
    return float(np.median(a)) if a.size else math.nan


def check_potential_fit(
    model,
    scores,
    *,
    chunk_size: int = 2**14,
    advice: str = "lower the learning rate or train longer",
) -> dict[str, float]:
    """Check that a fitted potential is physical on its score sample; raise if it is dead.

    Every point of the sample is evaluated, `chunk_size` at a time. The fit fails when

    - the force or the density is not finite at any point;
    - the force is zero: its rms is below `FORCE_TOLERANCE` times the force the scores
      call for (the median of |v · ∂ln f/∂x| / |∂ln f/∂v|, the size of the force along
      ∂ln f/∂v that makes the DF stationary);
    - the force is constant: its extent over the points (the length of the vector of the
      per-component ranges) is below `FORCE_TOLERANCE` times its rms;
    - the density ∇²Φ/4πG is negative at more than `NEGATIVE_DENSITY_LIMIT` of the points;
    - the median |∂ln f/∂t| in the model's frame is not below its value with Φ = 0 in the
      same frame (the residual ratio is ≥ 1): the potential explains nothing.

    A healthy fit passes with a wide margin: even a poor one has a residual ratio well below
    1, a force of the size the scores call for and a density negative at a minority of the
    points; so does an exact potential in a slightly wrong frame or with a wrong scale.

    **Arguments:**

    - `model`: the fitted `PotentialModel` (a bare potential is taken in an inertial frame).
    - `scores`: the `ScoreSample` (or `ScoreFile`) it was fitted to, or the
      `VelocityScoreSample` of a selection-free fit (read as `deeppot.terms.profiled_scores`
      of it: the residuals are the profiled ones).
    - `chunk_size`: points evaluated at a time.
    - `advice`: what the error message tells the user to change.

    **Returns:**

    The diagnostics, JSON-able: `{"n_points", "rms_force", "force_scale", "force_spread",
    "negative_density_fraction", "median_residual", "median_residual_zero",
    "residual_ratio"}` (`force_spread` is the extent relative to the rms force,
    `residual_ratio` the median residual over that with Φ = 0).

    **Raises:**

    `FitFailed` (a `TrainingError`) naming what is wrong and ending with `advice`.
    """
    if isinstance(model, AbstractPotential):
        model = PotentialModel(model)
    if not isinstance(model, PotentialModel):
        raise TypeError(f"check_potential_fit checks a PotentialModel; got "
                        f"{type(model).__name__}")
    zero = None
    if isinstance(scores, VelocityScoreSample):  # a selection-free fit's: ∇ln ν profiled
        from .terms import profiled_scores

        # Φ = 0 is measured with ∇ln ν profiled for it, not for the fitted Φ
        zero = _profiled_zero_residuals(model.frame, scores, chunk_size)
        scores = profiled_scores(model, scores, chunk_size=chunk_size)
    if not isinstance(scores, (ScoreSample, ScoreFile)):
        raise TypeError(f"scores must be a ScoreSample, ScoreFile or VelocityScoreSample; "
                        f"got {type(scores).__name__}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    n = len(scores)
    parts = [jax.device_get(_chunk_stats(model, _rows(scores, i, min(i + chunk_size, n))))
             for i in range(0, n, chunk_size)]

    def total(name):
        return float(sum(np.sum(p[name], dtype=np.float64) for p in parts))

    def joined(name):
        return np.concatenate([p[name] for p in parts])

    nonfinite = int(total("nonfinite"))
    n_finite = n - nonfinite
    rms = math.sqrt(total("force_sq") / n_finite) if n_finite else math.nan
    extent = (np.max([p["force_max"] for p in parts], 0).astype(np.float64)
              - np.min([p["force_min"] for p in parts], 0))
    med = _median(joined("residual"))
    med_zero = _median(joined("residual_zero") if zero is None else zero)
    out = {"n_points": n, "rms_force": rms, "force_scale": _median(joined("need")),
           "force_spread": float(np.linalg.norm(extent)) / rms if rms > 0 else math.nan,
           "negative_density_fraction": total("negative") / n_finite if n_finite else math.nan,
           "median_residual": med, "median_residual_zero": med_zero,
           "residual_ratio": med / med_zero if med_zero > 0 else math.nan}

    def fail(problem):
        raise FitFailed(f"the fitted potential {problem}: the fit failed; {advice}")

    if nonfinite:
        fail(f"has a non-finite force or density at {nonfinite} of {n} score points")
    if rms == 0 or rms <= FORCE_TOLERANCE * out["force_scale"]:
        fail(f"has no force: rms |∇Φ| = {rms:.3g} at the score points, where the scores "
             f"call for about {out['force_scale']:.3g}")
    if out["force_spread"] <= FORCE_TOLERANCE:
        field = ", ".join(f"{c:.3g}" for c in parts[0]["force_max"])
        fail(f"has the same force at every score point (a uniform field, ∇Φ = [{field}])")
    if out["negative_density_fraction"] > NEGATIVE_DENSITY_LIMIT:
        fail(f"has a negative density ∇²Φ/4πG at "
             f"{100 * out['negative_density_fraction']:.1f}% of the score points")
    if out["residual_ratio"] >= 1:
        fail(f"explains the scores no better than Φ = 0: the median stationarity residual "
             f"|∂ln f/∂t| is {med:.3g}, against {med_zero:.3g} with no force")
    return out
