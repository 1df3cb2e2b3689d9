"""One training loop for distribution functions and potentials.

`fit` trains any Equinox model on any loss `loss_fn(model, batch, key) -> scalar` with
optax (RAdam or Adam), a linear learning-rate warm-up, halving on plateaus, early stopping,
gradient clipping, a shuffled validation split, atomic checkpoints that resume bit-for-bit,
a progress bar and detection of non-finite losses or gradients. `fit_df` applies it to the
DF models of `deeppot.flows`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import paramax
from jaxtyping import Array, Float, PRNGKeyArray, PyTree
from tqdm.auto import tqdm

__all__ = ["TrainHistory", "fit", "fit_df"]

LR_SCHEDULES = ("plateau", "cosine")  # the values of fit's `lr_schedule`
_CHECKPOINT_VERSION = 2  # 2: the settings fingerprint records the learning-rate schedule


@dataclasses.dataclass
class TrainHistory:
    """What happened during `fit`.

    **Attributes:**

    - `step`, `train_loss`, `learning_rate`: one entry per completed step.
    - `val_step`, `val_loss`: one entry per validation evaluation.
    - `lr_drops`: steps at which the learning rate was reduced.
    - `stop_reason`: `"max_steps"` or `"early_stop"`.
    - `wall_time`: seconds spent in this call (excluding earlier, resumed runs).
    """

    step: list[int] = dataclasses.field(default_factory=list)
    train_loss: list[float] = dataclasses.field(default_factory=list)
    learning_rate: list[float] = dataclasses.field(default_factory=list)
    val_step: list[int] = dataclasses.field(default_factory=list)
    val_loss: list[float] = dataclasses.field(default_factory=list)
    lr_drops: list[int] = dataclasses.field(default_factory=list)
    stop_reason: str = "max_steps"
    wall_time: float = 0.0


@dataclasses.dataclass
class _Scheduler:
    """Plateau scheduler state (plain Python numbers so checkpoints round-trip exactly)."""

    lr_scale: float = 1.0
    best: float = math.inf
    since_best: int = 0
    drops_since_improvement: int = 0
    smoothed: float = 0.0
    n_smoothed: int = 0


def _leading_size(data) -> int:
    leaves = jax.tree.leaves(data)
    if not leaves:
        raise ValueError("data has no arrays")
    sizes = {int(jnp.shape(a)[0]) for a in leaves}
    if len(sizes) != 1:
        raise ValueError(f"all arrays in data must share their leading axis; got sizes {sizes}")
    return sizes.pop()


def _default_spec(model) -> PyTree[bool]:
    def is_trainable(x):
        return False if isinstance(x, paramax.NonTrainable) else eqx.is_inexact_array(x)

    return jax.tree.map(
        is_trainable, model, is_leaf=lambda x: isinstance(x, paramax.NonTrainable)
    )


def _filter_spec(model, trainable) -> PyTree[bool]:
    """Boolean filter spec: which leaves of `model` train."""
    full = _default_spec(model)
    if trainable is None:
        return full
    if not callable(trainable):
        return trainable  # already a filter spec
    none = jax.tree.map(lambda _: False, full)
    return eqx.tree_at(trainable, none, replace=trainable(full))


def _check_key(key):
    if not jnp.issubdtype(jnp.asarray(key).dtype, jax.dtypes.prng_key):
        raise TypeError("use a typed key from jax.random.key, not jax.random.PRNGKey")


def _all_finite(tree) -> Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if eqx.is_inexact_array(x)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def _gather(data, idx):
    return jax.tree.map(lambda a: jnp.asarray(a)[idx], data)


@eqx.filter_jit
def _train_step(
    params, static, opt_state, ema, data, step, lr, keys, *, loss_fn, tx, batch_size, ema_decay
):
    k_batch, k_loss = keys
    n = _leading_size(data)
    idx = jax.random.randint(jax.random.fold_in(k_batch, step), (batch_size,), 0, n)
    batch = _gather(data, idx)

    def loss_of(p):
        return loss_fn(eqx.combine(p, static), batch, jax.random.fold_in(k_loss, step))

    loss, grads = eqx.filter_value_and_grad(loss_of)(params)
    loss_ok = jnp.isfinite(loss)
    grads_ok = _all_finite(grads)
    updates, new_opt_state = tx.update(grads, opt_state, params)
    updates = jax.tree.map(lambda u: -lr * u, updates)
    new_params = eqx.apply_updates(params, updates)
    if ema is None:
        new_ema = None
    else:
        # ramp the decay up so the random initialisation is forgotten quickly
        decay = jnp.minimum(ema_decay, (1.0 + step) / (10.0 + step)).astype(lr.dtype)
        new_ema = jax.tree.map(lambda e, p: decay * e + (1 - decay) * p, ema, new_params)
    ok = loss_ok & grads_ok

    def keep(new, old):
        return jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)

    return (
        keep(new_params, params),
        keep(new_opt_state, opt_state),
        None if ema is None else keep(new_ema, ema),
        loss,
        loss_ok,
        grads_ok,
    )


@eqx.filter_jit
def _val_loss(params, static, data, step, key, *, loss_fn, batch_size):
    k_batch, k_loss = jax.random.split(key)
    n = _leading_size(data)
    if n <= batch_size:
        batch = data
    else:
        idx = jax.random.randint(jax.random.fold_in(k_batch, step), (batch_size,), 0, n)
        batch = _gather(data, idx)
    return loss_fn(eqx.combine(params, static), batch, jax.random.fold_in(k_loss, step))


def _save_checkpoint(path, arrays, header: dict):
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        f.write(json.dumps(header).encode() + b"\n")
        eqx.tree_serialise_leaves(f, arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _load_checkpoint(path, like):
    with open(path, "rb") as f:
        header = json.loads(f.readline().decode())
        arrays = eqx.tree_deserialise_leaves(f, like)
    return arrays, header


def fit(
    model: PyTree,
    loss_fn: Callable[[PyTree, PyTree, PRNGKeyArray], Float[Array, ""]],
    data: PyTree,
    *,
    key: PRNGKeyArray,
    max_steps: int,
    batch_size: int = 1024,
    learning_rate: float = 1e-3,
    optimizer: str = "radam",
    warmup_steps: int = 0,
    lr_schedule: str = "plateau",
    patience: int = 2048,
    min_delta: float = 0.01,
    lr_factor: float = 0.5,
    max_lr_drops: int = 4,
    validation_fraction: float = 0.25,
    validate_every: int = 1,
    smoothing: float = 0.0,
    clip_norm: float | None = 1.0,
    trainable: Callable[[PyTree], Any] | PyTree[bool] | None = None,
    ema_decay: float | None = None,
    checkpoint_path: str | os.PathLike | None = None,
    checkpoint_every: int = 1000,
    progress: bool = True,
) -> tuple[PyTree, TrainHistory]:
    """Train `model` by minimising `loss_fn` over random batches of `data`.

    The learning rate rises linearly from 0 over `warmup_steps`. With
    `lr_schedule="plateau"` (the paper's) it then stays constant and is multiplied by
    `lr_factor` whenever the monitored loss (the validation loss if there is a validation
    split, else the training loss; optionally exponentially smoothed) has not fallen
    `min_delta` below its minimum for `patience` steps; training stops early after
    `max_lr_drops` consecutive reductions without improvement. With `"cosine"` it follows a
    half cosine from the peak down to 1% of it at `max_steps` and runs every step (the
    plateau settings are unused); fits that must converge tightly, such as potentials from
    exact scores, reach several times smaller errors this way in the same number of steps.
    The run is a deterministic function of `key`; with `checkpoint_path` it writes
    checkpoints atomically and, if the file exists, resumes from it and reproduces an
    uninterrupted run bit-for-bit.

    **Arguments:**

    - `model`: any pytree (usually an `eqx.Module`).
    - `loss_fn`: `loss_fn(model, batch, key) -> scalar`.
    - `data`: a pytree of arrays sharing their leading axis (e.g. an `(n, 6)` array, or a
      tuple/NamedTuple/Module of arrays); batches are drawn along that axis.
    - `key`: a typed key (`jax.random.key`).
    - `max_steps`: total number of optimisation steps (including resumed ones).
    - `batch_size`: points per batch (drawn with replacement).
    - `learning_rate`: peak learning rate.
    - `optimizer`: `"radam"` (paper) or `"adam"`.
    - `warmup_steps`: length of the linear warm-up.
    - `lr_schedule`: `"plateau"` or `"cosine"`, as above.
    - `patience`, `min_delta`, `lr_factor`, `max_lr_drops`: the plateau schedule above.
    - `validation_fraction`: shuffled share of `data` held out for validation (0 for none).
    - `validate_every`: evaluate one validation batch every this many steps.
    - `smoothing`: EMA factor in [0, 1) applied to the monitored loss (0 = raw values).
    - `clip_norm`: clip gradients to this global norm (`None`: no clipping).
    - `trainable`: `None` (every inexact array not wrapped in `paramax.NonTrainable`
      trains), a function `model -> subtree or tuple of subtrees` selecting the only parts
      that train (as `eqx.tree_at`'s `where`), or a boolean filter spec.
    - `ema_decay`: if given, also keep an exponential moving average of the trained
      parameters and return it (decay `min(ema_decay, (1 + step) / (10 + step))`).
    - `checkpoint_path`: file for atomic checkpoints (resumed from if it exists).
    - `checkpoint_every`: steps between checkpoints (one is always written at the end).
    - `progress`: show a tqdm progress bar with the training and validation losses.

    **Returns:**

    `(model, history)`: the trained model (non-trainable leaves unchanged) and a
    `TrainHistory`.

    **Raises:**

    `FloatingPointError` naming the step if a loss or gradient is not finite; the
    parameters are never updated with it and no checkpoint containing it is written.
    """
    _check_key(key)
    if optimizer not in ("radam", "adam"):
        raise ValueError(f"optimizer must be 'radam' or 'adam'; got {optimizer!r}")
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be 'plateau' or 'cosine'; got {lr_schedule!r}")
    if not 0 <= validation_fraction < 1:
        raise ValueError("validation_fraction must be in [0, 1)")
    if not 0 <= smoothing < 1:
        raise ValueError("smoothing must be in [0, 1)")
    if max_steps < 0 or batch_size < 1 or validate_every < 1 or checkpoint_every < 1:
        raise ValueError("max_steps, batch_size, validate_every, checkpoint_every must be > 0")

    n = _leading_size(data)
    k_split, k_batch, k_loss, k_val = jax.random.split(key, 4)
    n_val = int(round(n * validation_fraction)) if validation_fraction > 0 else 0
    if validation_fraction > 0:
        n_val = min(max(n_val, 1), n - 1)
    perm = jax.random.permutation(k_split, n)
    val_data = _gather(data, perm[:n_val]) if n_val else None
    train_data = _gather(data, perm[n_val:])

    spec = _filter_spec(model, trainable)
    params, static = eqx.partition(model, spec)
    scale = optax.scale_by_radam() if optimizer == "radam" else optax.scale_by_adam()
    tx = optax.chain(optax.clip_by_global_norm(clip_norm), scale) if clip_norm else scale
    opt_state = tx.init(params)
    ema = params if ema_decay is not None else None
    sched = _Scheduler()
    history = TrainHistory()
    start = 0
    config = {"n": n, "batch_size": batch_size, "validation_fraction": validation_fraction,
              "optimizer": optimizer, "ema": ema_decay is not None,
              "learning_rate": learning_rate, "warmup_steps": warmup_steps,
              "lr_schedule": lr_schedule}
    if lr_schedule == "cosine":  # the rate at every step depends on the run's length
        config["max_steps"] = max_steps
    key_data = np.asarray(jax.random.key_data(key)).tolist()

    if checkpoint_path is not None and os.path.exists(checkpoint_path):
        (params, opt_state, ema), header = _load_checkpoint(
            checkpoint_path, (params, opt_state, ema)
        )
        if header.get("version") != _CHECKPOINT_VERSION:
            raise ValueError(
                f"{checkpoint_path} has checkpoint version {header.get('version')}; this "
                f"deeppot reads version {_CHECKPOINT_VERSION}: delete it to start over"
            )
        if header["key"] != key_data or header["config"] != config:
            raise ValueError(
                f"{checkpoint_path} was written by a run with a different key or settings "
                f"({header['config']} vs {config}); delete it or use another path"
            )
        start = header["step"]
        sched = _Scheduler(**header["scheduler"])
        history = TrainHistory(**header["history"])
        history.wall_time = 0.0

    def checkpoint(step_done: int):
        if checkpoint_path is None:
            return
        header = {
            "version": _CHECKPOINT_VERSION,
            "step": step_done,
            "key": key_data,
            "config": config,
            "scheduler": dataclasses.asdict(sched),
            "history": dataclasses.asdict(history),
        }
        _save_checkpoint(checkpoint_path, (params, opt_state, ema), header)

    step_kwargs = dict(loss_fn=loss_fn, tx=tx, batch_size=batch_size, ema_decay=ema_decay)
    dtype = jnp.result_type(float)
    t_start = time.perf_counter()
    bar = tqdm(total=max_steps, initial=start, disable=not progress, dynamic_ncols=True)
    last_val = math.nan
    last_post = 0.0
    step = start
    try:
        for step in range(start, max_steps):
            warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
            lr = learning_rate * sched.lr_scale * warm
            if lr_schedule == "cosine" and step >= warmup_steps:
                frac = (step - warmup_steps) / max(max_steps - warmup_steps, 1)
                lr *= 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * frac))
            step_arr = jnp.asarray(step, jnp.int32)
            if val_data is not None and step % validate_every == 0:
                v = float(_val_loss(params, static, val_data, step_arr, k_val,
                                    loss_fn=loss_fn, batch_size=batch_size))
                if not math.isfinite(v):
                    raise FloatingPointError(f"non-finite validation loss ({v}) at step {step}")
                history.val_step.append(step)
                history.val_loss.append(v)
                last_val = v
            else:
                v = None
            params, opt_state, ema, loss, loss_ok, grads_ok = _train_step(
                params, static, opt_state, ema, train_data, step_arr,
                jnp.asarray(lr, dtype), (k_batch, k_loss), **step_kwargs,
            )
            loss = float(loss)
            if not (bool(loss_ok) and bool(grads_ok)):
                what = "loss" if not bool(loss_ok) else "gradient"
                raise FloatingPointError(
                    f"non-finite {what} at step {step} (loss = {loss}); the step was not "
                    "applied and no checkpoint was written for it"
                )
            history.step.append(step)
            history.train_loss.append(loss)
            history.learning_rate.append(lr)

            monitored = v if val_data is not None else loss
            if lr_schedule == "plateau" and monitored is not None and step + 1 >= warmup_steps:
                if smoothing > 0:
                    sched.smoothed = smoothing * sched.smoothed + (1 - smoothing) * monitored
                    sched.n_smoothed += 1
                    monitored = sched.smoothed / (1 - smoothing**sched.n_smoothed)
                if monitored < sched.best - min_delta:
                    sched.since_best = 0
                    sched.drops_since_improvement = 0
                else:
                    sched.since_best += validate_every if val_data is not None else 1
                sched.best = min(sched.best, monitored)
                if sched.since_best >= patience:
                    sched.lr_scale *= lr_factor
                    sched.since_best = 0
                    sched.drops_since_improvement += 1
                    history.lr_drops.append(step)
            bar.update(1)
            now = time.perf_counter()
            if progress and now - last_post > 0.5:
                bar.set_postfix(train=f"{loss:.4f}", val=f"{last_val:.4f}", lr=f"{lr:.2e}")
                last_post = now
            done = step + 1
            if sched.drops_since_improvement > max_lr_drops:
                history.stop_reason = "early_stop"
                history.wall_time = time.perf_counter() - t_start
                checkpoint(done)
                break
            if done % checkpoint_every == 0 and done < max_steps:
                history.wall_time = time.perf_counter() - t_start
                checkpoint(done)
        else:
            history.wall_time = time.perf_counter() - t_start
            if max_steps > start:
                checkpoint(max_steps)
    finally:
        bar.close()
    final = ema if ema is not None else params
    return eqx.combine(final, static), history


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
    max_steps: int,
    batch_size: int = 8192,
    learning_rate: float = 5e-3,
    objective: str | None = None,
    warmup_steps: int = 2048,
    patience: int = 2048,
    min_delta: float = 0.01,
    standardise: bool = True,
    return_history: bool = False,
    **kwargs,
):
    """Fit a trainable distribution function to phase-space points.

    Sets the DF's standardisation (`df.standardisation`: `loc` and `scale` of a flow) from
    the points, then trains everything except the standardisation with `fit`. Defaults
    follow the paper (§2.4): RAdam, batches of 8192, warm-up over 2048 steps to 5e-3,
    halving after 2048 steps without a 0.01 improvement, 25% validation split.

    **Arguments:**

    - `df`: an `AbstractTrainableDF` (`FFJORD`, `SplineFlow`, or a symmetry wrapper such as
      `SphericalDF` around one).
    - `catalog`: a `PhaseSpaceCatalog` (anything with `.w`) or an `(n, 6)` array.
    - `key`: a typed key.
    - `max_steps`, `batch_size`, `learning_rate`, `warmup_steps`, `patience`, `min_delta`:
      see `fit`.
    - `objective`: one of `df.objectives` (default: the first, maximum likelihood).
    - `standardise`: set `loc`/`scale` from the data (turn off to keep the DF's own).
    - `return_history`: also return the `TrainHistory`.
    - `**kwargs`: passed to `fit` (e.g. `optimizer`, `clip_norm`, `checkpoint_path`,
      `ema_decay`, `progress`, `trainable`).

    **Returns:**

    The trained DF (and the history if `return_history`).
    """
    from .flows import AbstractTrainableDF

    if not isinstance(df, AbstractTrainableDF):
        raise TypeError(f"fit_df trains AbstractTrainableDF models; got {type(df).__name__}")
    objective = df.objectives[0] if objective is None else objective
    if objective not in df.objectives:
        raise ValueError(f"{type(df).__name__} has objectives {df.objectives}; got {objective!r}")
    w = _as_points(catalog)
    if standardise:
        df = df.standardise(w)
    if kwargs.get("trainable") is None:
        spec = _default_spec(df)
        kwargs["trainable"] = eqx.tree_at(lambda d: d.standardisation, spec,
                                          replace_fn=lambda _: False)

    def loss_fn(model, batch, k):
        return model.train_loss(batch, k, objective)

    out, history = fit(
        df, loss_fn, w.astype(df.standardisation[0].dtype), key=key, max_steps=max_steps,
        batch_size=batch_size, learning_rate=learning_rate, warmup_steps=warmup_steps,
        patience=patience, min_delta=min_delta, **kwargs,
    )
    return (out, history) if return_history else out


def fit_potential(
    model,
    scores,
    loss=None,
    *,
    key: PRNGKeyArray,
    max_steps: int,
    batch_size: int = 2**14,
    learning_rate: float = 1e-3,
    warmup_steps: int = 2048,
    patience: int = 2048,
    min_delta: float = 0.01,
    trainable=None,
    return_history: bool = False,
    **kwargs,
):
    """Fit a potential (and frame) so that the sampled distribution function is stationary.

    Any pytree model trains: a neural, analytic, symmetric or composite potential, with the
    frame's Ω, u0 and centre. Defaults follow the paper (§2.4): RAdam, batches of 2^14,
    warm-up over 2048 steps to 1e-3, halving after 2048 steps without a 0.01 improvement,
    25% validation split.

    **Arguments:**

    - `model`: a `PotentialModel` (a bare potential is wrapped in an inertial frame).
    - `scores`: a `ScoreSample` (from `sample_scores`).
    - `loss`: a loss term, `loss(model, batch) -> scalar`; default
      `Log(Stationarity() + PositiveDensity()) + L2Weights(0.1)`, the paper's Eq. 13.
    - `key`: a typed key.
    - `trainable`: `None` trains every inexact array of the model; otherwise a function
      `model -> subtree or tuple of subtrees`, e.g. `lambda m: m.frame.omega`.
    - `return_history`: also return the `TrainHistory`.
    - `**kwargs`: passed to `fit` (e.g. `checkpoint_path`, `clip_norm`, `progress`).

    **Returns:** the trained `PotentialModel` (and the history if `return_history`).
    """
    from .model import PotentialModel
    from .potentials import AbstractPotential
    from .scores import ScoreSample
    from .terms import AbstractTerm, L2Weights, Log, PositiveDensity, Stationarity

    if isinstance(model, AbstractPotential):
        model = PotentialModel(model)
    if not isinstance(model, PotentialModel):
        raise TypeError(f"fit_potential trains a PotentialModel; got {type(model).__name__}")
    if not isinstance(scores, ScoreSample):
        raise TypeError(f"scores must be a ScoreSample; got {type(scores).__name__}")
    if loss is None:
        loss = Log(Stationarity() + PositiveDensity()) + L2Weights(0.1)
    if not isinstance(loss, AbstractTerm):
        raise TypeError(f"loss must be a deeppot loss term; got {type(loss).__name__}")
    out, history = fit(
        model, lambda m, batch, k: loss(m, batch), scores, key=key, max_steps=max_steps,
        batch_size=batch_size, learning_rate=learning_rate, warmup_steps=warmup_steps,
        patience=patience, min_delta=min_delta, trainable=trainable, **kwargs,
    )
    return (out, history) if return_history else out
