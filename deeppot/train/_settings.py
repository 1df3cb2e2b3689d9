"""The settings of a training run (`TrainSettings`, the recommended recipes) and the
named learning-rate schedules and optimisers they choose from."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
import optax


def _warm(step: int, warmup_steps: int) -> float:
    return min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0


def _warmup_constant(peak: float, warmup_steps: int, max_steps: int) -> optax.Schedule:
    """A linear warm-up from `peak / warmup_steps` to `peak`, then `peak`."""
    return lambda step: peak * _warm(step, warmup_steps)


def _warmup_cosine(peak: float, warmup_steps: int, max_steps: int) -> optax.Schedule:
    """A linear warm-up to `peak`, then a half cosine down to 1% of it at `max_steps`."""

    def schedule(step):
        lr = peak * _warm(step, warmup_steps)
        if step >= warmup_steps:
            frac = (step - warmup_steps) / max(max_steps - warmup_steps, 1)
            lr *= 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * frac))
        return lr

    return schedule


# name -> `(peak, warmup_steps, max_steps) -> optax.Schedule`, evaluated on the host in
# double precision; "plateau" also multiplies the peak by `lr_factor` on plateaus
LR_SCHEDULES: dict[str, Callable[[float, int, int], optax.Schedule]] = {
    "plateau": _warmup_constant,
    "cosine": _warmup_cosine,
}
# name -> a factory of the optax transformation: the update direction that `fit` scales by
# −learning rate, or, for an optimiser with a line search (L-BFGS), the whole update
OPTIMIZERS: dict[str, Callable[[], optax.GradientTransformation]] = {
    "radam": optax.scale_by_radam,
    "adam": optax.scale_by_adam,
    "lbfgs": optax.lbfgs,
}


def check_name(value, table: dict, what: str, kind: str) -> None:
    """A ValueError unless `value` is a name in `table`."""
    if not isinstance(value, str) or value not in table:
        names = ", ".join(repr(k) for k in table)
        raise ValueError(f"{what} must be one of {names} or {kind}; got {value!r}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainSettings:
    """The settings of one training run of `fit`, shared by `fit_df`, `fit_potential` and
    the pipeline's `[df]` and `[fit]` sections.

    The defaults are `fit`'s generic ones; `DF_SETTINGS` and `POTENTIAL_SETTINGS` are the
    recommended recipes. Change a few with `dataclasses.replace(DF_SETTINGS, max_steps=…)`
    or by passing them as keywords to `fit`, `fit_df` or `fit_potential`.

    **Arguments:**

    - `max_steps`: total number of optimisation steps (including resumed ones).
    - `batch_size`: points per batch (drawn with replacement); `None`: every step uses
      all training points in their order (needed by an optimiser with a line search).
    - `learning_rate`: peak learning rate.
    - `optimizer`: a name of `OPTIMIZERS` (`"radam"`, the paper's; `"adam"`; `"lbfgs"`)
      or an `optax.GradientTransformation` giving the update direction, which `fit`
      scales by −learning rate (as optax's `scale_by_*`, e.g. `optax.scale_by_lion()`).
      A transformation with a line search (e.g. `optax.lbfgs()`) gives the whole update:
      no learning rate or schedule applies, and `batch_size` must be `None`.
    - `warmup_steps`: length of the linear warm-up.
    - `lr_schedule`: a name of `LR_SCHEDULES` or an `optax.Schedule` (a function of the
      step, vectorised as optax's are) giving the learning rate itself, warm-up included
      (`learning_rate` and `warmup_steps` then do not apply). With `"plateau"` (the
      paper's) the rate stays at its peak after the warm-up and is multiplied by
      `lr_factor` whenever the monitored loss (the validation loss if there is a
      validation split, else the training loss; optionally exponentially smoothed) has
      not fallen `min_delta` below its minimum for `patience` steps; training stops early
      after `max_lr_drops` consecutive reductions without improvement. With `"cosine"` it
      follows a half cosine from the peak down to 1% of it at `max_steps` and runs every
      step (the plateau settings are unused); fits that must converge tightly, such as
      potentials from exact scores, reach several times smaller errors this way in the
      same number of steps.
    - `patience`, `min_delta`, `lr_factor`, `max_lr_drops`, `smoothing`: the plateau
      schedule above (`smoothing`: EMA factor in [0, 1) of the monitored loss, 0 = raw).
    - `validation_fraction`: shuffled share of the data held out for validation (0: none).
    - `validate_every`: evaluate one validation batch every this many steps.
    - `clip_norm`: clip gradients to this global norm (`None`: no clipping).
    - `ema_decay`: if given, also keep an exponential moving average of the trained
      parameters and return it (decay `min(ema_decay, (1 + step) / (10 + step))`).
    - `keep_best`: return the weights with the lowest validation loss instead of the last
      ones (needs a validation split). The validation loss is then measured on the weights
      that would be returned (the average with `ema_decay`), on one fixed validation batch
      and key, so that evaluations differ only by the weights: held-out data decide which
      weights to keep, which guards against over-fitting.
    - `divergence_tolerance`: stop when the running mean of the training loss rises above
      its value after the first 20 steps by more than this many times the larger of its
      best improvement on that value and its noise (`None`: never).
    - `grad_tolerance`: stop when the gradient's global norm falls to this (`None`: never).
    - `checkpoint_every`: steps between checkpoints (one is always written at the end).
    """

    max_steps: int
    batch_size: int | None = 1024
    learning_rate: float = 1e-3
    optimizer: str | optax.GradientTransformation = "radam"
    warmup_steps: int = 0
    lr_schedule: str | optax.Schedule = "plateau"
    patience: int = 2048
    min_delta: float = 0.01
    lr_factor: float = 0.5
    max_lr_drops: int = 4
    smoothing: float = 0.0
    validation_fraction: float = 0.25
    validate_every: int = 1
    clip_norm: float | None = 1.0
    ema_decay: float | None = None
    keep_best: bool = False
    divergence_tolerance: float | None = 3.0
    grad_tolerance: float | None = None
    checkpoint_every: int = 1000

    def __post_init__(self):
        if not isinstance(self.optimizer, optax.GradientTransformation):
            check_name(self.optimizer, OPTIMIZERS, "optimizer",
                        "an optax.GradientTransformation")
        if not callable(self.lr_schedule):
            check_name(self.lr_schedule, LR_SCHEDULES, "lr_schedule", "an optax.Schedule")
        if not 0 <= self.validation_fraction < 1:
            raise ValueError("validation_fraction must be in [0, 1)")
        if not 0 <= self.smoothing < 1:
            raise ValueError("smoothing must be in [0, 1)")
        if (self.max_steps < 0 or self.validate_every < 1 or self.checkpoint_every < 1
                or self.batch_size is not None and self.batch_size < 1):
            raise ValueError("max_steps, batch_size, validate_every, checkpoint_every must be "
                             "> 0")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"learning_rate must be positive and finite; got "
                             f"{self.learning_rate}")
        if self.keep_best and self.validation_fraction == 0:
            raise ValueError("keep_best needs a validation split (validation_fraction > 0)")


# The recommended recipes of docs/results.md (the pipeline's [df] and [fit] defaults)
DF_SETTINGS = TrainSettings(max_steps=20000, batch_size=2048, learning_rate=2e-3,
                            warmup_steps=500, lr_schedule="cosine", ema_decay=0.998,
                            validate_every=50, checkpoint_every=500)
POTENTIAL_SETTINGS = TrainSettings(max_steps=8000, batch_size=2048, learning_rate=2e-3,
                                   warmup_steps=500, lr_schedule="cosine", validate_every=10,
                                   checkpoint_every=500)


def resolve_settings(settings: TrainSettings | None, overrides: dict) -> TrainSettings:
    """`settings` with `overrides` (fields of `TrainSettings`) applied."""
    unknown = set(overrides) - {f.name for f in dataclasses.fields(TrainSettings)}
    if unknown:
        raise TypeError(f"unknown training settings {sorted(unknown)}; see TrainSettings")
    if settings is None:
        if "max_steps" not in overrides:
            raise TypeError("give max_steps (or settings=TrainSettings(max_steps=…))")
        return TrainSettings(**overrides)
    return dataclasses.replace(settings, **overrides) if overrides else settings


@dataclasses.dataclass
class Plateau:
    """The plateau schedule's state (plain Python numbers so checkpoints round-trip
    exactly): the scale of the peak learning rate, and the monitored loss's record."""

    lr_scale: float = 1.0
    best: float = math.inf
    since_best: int = 0
    drops_since_improvement: int = 0
    smoothed: float = 0.0
    n_smoothed: int = 0

    def update(self, monitored: float, steps: int, s: TrainSettings) -> bool:
        """Record the monitored loss, `steps` steps after the last; True if the rate drops."""
        if s.smoothing > 0:
            self.smoothed = s.smoothing * self.smoothed + (1 - s.smoothing) * monitored
            self.n_smoothed += 1
            monitored = self.smoothed / (1 - s.smoothing**self.n_smoothed)
        if monitored < self.best - s.min_delta:
            self.since_best = 0
            self.drops_since_improvement = 0
        else:
            self.since_best += steps
        self.best = min(self.best, monitored)
        if self.since_best < s.patience:
            return False
        self.lr_scale *= s.lr_factor
        self.since_best = 0
        self.drops_since_improvement += 1
        return True


def schedule_rates(schedule: optax.Schedule, max_steps: int) -> np.ndarray:
    """The learning rate of every step (at once for a vectorised schedule, as optax's)."""
    try:
        rates = np.asarray(schedule(np.arange(max_steps)), np.float64)
    except (TypeError, ValueError):  # a schedule of one step at a time
        rates = None
    if rates is None or rates.shape != (max_steps,):
        rates = np.array([float(schedule(step)) for step in range(max_steps)], np.float64)
    if not np.all(np.isfinite(rates) & (rates >= 0)):
        raise ValueError("lr_schedule gives a negative or non-finite learning rate")
    return rates
