"""`fit` applied: distribution functions (`fit_df`), potentials (`fit_potential`) and
the L-BFGS finish of a potential (`refine_potential`)."""

from __future__ import annotations

import typing
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, PRNGKeyArray

from ._loop import check_key, default_filter_spec, fit
from ._settings import DF_SETTINGS, POTENTIAL_SETTINGS, TrainSettings

if typing.TYPE_CHECKING:
    from ..objectives import AbstractObjective
else:
    AbstractObjective = typing.Any


def _as_points(catalog) -> Float[Array, "n 6"]:
    w = catalog.w if hasattr(catalog, "w") else catalog
    w = jnp.asarray(w)
    if w.ndim != 2 or w.shape[1] != 6:
        raise ValueError(f"expected a catalog or an (n, 6) array; got shape {w.shape}")
    if not jnp.issubdtype(w.dtype, jnp.inexact):
        w = w.astype(jnp.result_type(float))
    return w


def fit_df(
    df,
    catalog,
    *,
    key: PRNGKeyArray,
    settings: TrainSettings = DF_SETTINGS,
    objective: AbstractObjective | str | None = None,
    standardise: bool = True,
    return_history: bool = False,
    **kwargs,
):
    """Fit a trainable distribution function to phase-space points.

    Sets the DF's standardisation (`df.standardisation`: `loc` and `scale` of a flow) from
    the points, then trains everything except the standardisation with `fit`. The default
    settings, `DF_SETTINGS`, are the recommended recipe of `docs/results.md` (RAdam, 20000
    steps of 2048, a 500-step warm-up to 2e-3 and a cosine decay, an average of the weights
    with decay 0.998, 25% validation split, a validation batch every 50 steps). The paper's
    (§2.4) was batches of 8192, a warm-up over 2048 steps to 5e-3 and halving after 2048
    steps without a 0.01 improvement (`lr_schedule="plateau"`, `ema_decay=None`). A
    weighted catalogue (or `weights=`) is fitted as if each star were repeated in
    proportion to its weight: the standardisation uses weighted moments and batches draw
    stars ∝ weight, for every objective.

    **Arguments:**

    - `df`: an `AbstractTrainableDF` (`FFJORD`, `SplineFlow`, or a symmetry wrapper such as
      `SphericalDF` around one).
    - `catalog`: a `PhaseSpaceCatalog` (anything with `.w`; its `.weights` are used) or an
      `(n, 6)` array.
    - `key`: a typed key.
    - `settings`: the `TrainSettings` (default `DF_SETTINGS`).
    - `objective`: a training objective (`deeppot.objectives`, e.g.
      `MaximumLikelihood(trace="exact")`) or the registered name of one (with its default
      settings), of those `df.objectives` names (default: the first, the model's
      recommended one; flow matching for `FFJORD`).
    - `standardise`: set the standardisation from the data (turn off to keep the DF's own).
    - `return_history`: also return the `TrainHistory`.
    - `**kwargs`: passed to `fit`: fields of `TrainSettings` replacing those of `settings`
      (e.g. `max_steps`, `batch_size`, `learning_rate`, `lr_schedule`, `ema_decay`), and
      `checkpoint_path`, `progress`, `trainable`, `devices`, `weights` (to override the
      catalogue's).

    **Returns:**

    The trained DF (and the history if `return_history`).
    """
    from ..flows import AbstractTrainableDF
    from ..objectives import as_objective

    if not isinstance(df, AbstractTrainableDF):
        raise TypeError(f"fit_df trains AbstractTrainableDF models; got {type(df).__name__}")
    objective = as_objective(objective, df)
    w = _as_points(catalog)
    if kwargs.get("weights") is None:
        kwargs["weights"] = getattr(catalog, "weights", None)
    if standardise:
        df = df.standardise(w, kwargs["weights"])
    if kwargs.get("trainable") is None:
        spec = default_filter_spec(df)
        kwargs["trainable"] = eqx.tree_at(lambda d: d.standardisation, spec,
                                          replace_fn=lambda _: False)

    out, history = fit(df, _ObjectiveLoss(objective), w.astype(df.standardisation[0].dtype),
                       key=key, settings=settings, **kwargs)
    return (out, history) if return_history else out


@typing.final
class _ObjectiveLoss(eqx.Module):
    """`fit_df`'s `loss_fn`: a module, equal for equal objectives, so that fits of the same
    shapes (replicas, ensemble members) share the jitted step's compilation."""

    objective: AbstractObjective

    def __call__(self, model, batch, key):
        return self.objective(model, batch, key)


@typing.final
class _TermLoss(eqx.Module):
    """`fit_potential`'s `loss_fn` (see `_ObjectiveLoss`): the term, without the key."""

    term: typing.Any

    def __call__(self, model, batch, key):
        return self.term(model, batch)


def potential_loss_fn(loss=None) -> Callable:
    """The `loss_fn(model, batch, key)` that `fit_potential` gives `fit`.

    **Arguments:**

    - `loss`: a loss term, `loss(model, batch) -> scalar`; default
      `Log(Stationarity() + PositiveDensity())`, the paper's Eq. 13 without its ℓ2 penalty.
    """
    from ..terms import AbstractTerm, Log, PositiveDensity, Stationarity

    if loss is None:
        loss = Log(Stationarity() + PositiveDensity())
    if not isinstance(loss, AbstractTerm):
        raise TypeError(f"loss must be a deeppot loss term; got {type(loss).__name__}")
    return _TermLoss(loss)


def fit_potential(
    model,
    scores,
    loss=None,
    *,
    key: PRNGKeyArray,
    settings: TrainSettings = POTENTIAL_SETTINGS,
    trainable=None,
    return_history: bool = False,
    **kwargs,
):
    """Fit a potential (and frame) so that the sampled distribution function is stationary.

    Any pytree model trains: a neural, analytic, symmetric or composite potential, with the
    frame's Ω, u0 and centre. The default settings, `POTENTIAL_SETTINGS`, are the
    recommended recipe of `docs/results.md` (RAdam, 8000 steps of 2048, a 500-step warm-up
    to 2e-3 and a cosine decay, 25% validation split, a validation batch every 10 steps).
    The paper's (§2.4) was batches of 2^14, a warm-up over 2048 steps to 1e-3 and halving
    after 2048 steps without a 0.01 improvement (`lr_schedule="plateau"`).

    **Arguments:**

    - `model`: a `PotentialModel` (a bare potential is wrapped in an inertial frame).
    - `scores`: a `ScoreSample` (from `sample_scores`), or a `ScoreFile` to read batches
      from an HDF5 file that does not fit in memory (`load_scores` picks), or a
      `VelocityScoreSample` (from `sample_velocity_scores`) for the selection-free
      `ProfiledStationarity` term.
    - `loss`: a loss term, `loss(model, batch) -> scalar`; default
      `Log(Stationarity() + PositiveDensity())`, the paper's Eq. 13 without its ℓ2
      penalty (`+ L2Weights(0.1)`), which biases fits from accurate scores.
    - `key`: a typed key.
    - `settings`: the `TrainSettings` (default `POTENTIAL_SETTINGS`).
    - `trainable`: `None` trains every inexact array of the model; otherwise a function
      `model -> subtree or tuple of subtrees`, e.g. `lambda m: m.frame.omega`.
    - `return_history`: also return the `TrainHistory`.
    - `**kwargs`: passed to `fit`: fields of `TrainSettings` replacing those of `settings`
      (e.g. `max_steps`, `batch_size`, `learning_rate`, `lr_schedule`), and
      `checkpoint_path`, `progress`, `devices`, `weights`.

    **Returns:** the trained `PotentialModel` (and the history if `return_history`). It is
    not checked for physical sense, so that deliberately short or tiny fits (tests,
    benchmarks) return their model: `check_potential_fit(model, scores)` raises if the fit
    is dead (a zero or uniform force, a negative density, a residual no better than Φ = 0),
    as the pipeline's potential stage does after every fit.
    """
    from ..model import PotentialModel
    from ..potentials import AbstractPotential
    from ..scores import ScoreFile, ScoreSample, VelocityScoreSample

    if isinstance(model, AbstractPotential):
        model = PotentialModel(model)
    if not isinstance(model, PotentialModel):
        raise TypeError(f"fit_potential trains a PotentialModel; got {type(model).__name__}")
    if not isinstance(scores, (ScoreSample, ScoreFile, VelocityScoreSample)):
        raise TypeError(f"scores must be a ScoreSample or ScoreFile; got "
                        f"{type(scores).__name__}")
    out, history = fit(model, potential_loss_fn(loss), scores, key=key, settings=settings,
                       trainable=trainable, **kwargs)
    return (out, history) if return_history else out


def refine_potential(
    model,
    scores,
    loss=None,
    *,
    key: PRNGKeyArray,
    max_steps: int = 200,
    batch_size: int = 8192,
    memory_size: int = 20,
    tolerance: float = 0.0,
    trainable=None,
    return_history: bool = False,
    progress: bool = False,
):
    """Finish a potential fit with L-BFGS on one fixed batch (a second-order polish): `fit`
    with `optax.lbfgs` and `batch_size=None` on a batch drawn once.

    First-order training (`fit_potential`) stalls at a floor set by its learning rate and
    batch noise; on scores that a potential can match exactly (analytic DFs) L-BFGS with a
    line search then goes much further, because the loss is deterministic on a fixed
    batch. Use a smooth loss (e.g. `Stationarity(penalty="cauchy")`): the paper's asinh
    penalty is not differentiable at zero residual, where L-BFGS's curvature model fails.

    **Arguments:**

    - `model`: a `PotentialModel` (a bare potential is wrapped in an inertial frame),
      usually already fitted by `fit_potential`.
    - `scores`: a `ScoreSample`.
    - `loss`: a loss term; default `Stationarity(penalty="cauchy") + PositiveDensity()`.
    - `key`: a typed key choosing the fixed batch.
    - `max_steps`: L-BFGS iterations (each evaluates the loss and gradient once, plus the
      line search's extra evaluations when the first step is rejected).
    - `batch_size`: points in the fixed batch (all points if there are fewer).
    - `memory_size`: number of past updates in L-BFGS's inverse-Hessian estimate.
    - `tolerance`: stop when the gradient's global norm falls below this.
    - `trainable`: as in `fit_potential`.
    - `return_history`: also return a `TrainHistory` (loss per iteration).
    - `progress`: show a progress bar.

    **Returns:** the refined `PotentialModel` (and the history if `return_history`).

    **Raises:** `TrainingError` (a `FloatingPointError`) naming the iteration if the loss
    or gradient is not finite; the parameters are never updated with it.
    """
    from ..model import PotentialModel
    from ..potentials import AbstractPotential
    from ..scores import ScoreSample
    from ..terms import PositiveDensity, Stationarity

    check_key(key)
    if isinstance(model, AbstractPotential):
        model = PotentialModel(model)
    if not isinstance(model, PotentialModel):
        raise TypeError(f"refine_potential trains a PotentialModel; got {type(model).__name__}")
    if not isinstance(scores, ScoreSample):
        raise TypeError(f"scores must be a ScoreSample; got {type(scores).__name__}")
    if loss is None:
        loss = Stationarity(penalty="cauchy") + PositiveDensity()
    if max_steps < 0 or batch_size < 1 or memory_size < 1:
        raise ValueError("max_steps must be >= 0 and batch_size, memory_size positive")
    n = len(scores)
    batch = scores[jax.random.permutation(key, n)[: min(batch_size, n)]]
    settings = TrainSettings(max_steps=max_steps, batch_size=None, validation_fraction=0.0,
                             optimizer=optax.lbfgs(memory_size=memory_size), clip_norm=None,
                             divergence_tolerance=None, grad_tolerance=tolerance)
    out, history = fit(model, potential_loss_fn(loss), batch, key=key, settings=settings,
                       trainable=trainable, progress=progress)
    return (out, history) if return_history else out
