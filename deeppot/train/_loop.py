"""The training loop, `fit`, and its history."""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
import typing
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import paramax
from jaxtyping import Array, Float, PRNGKeyArray, PyTree
from tqdm.auto import tqdm

from .._errors import CheckpointError, TrainingError
from ..hostdata import AbstractHostData, HostBatches
from ..sharding import (
    Devices,
    batch_sharding,
    data_mesh,
    is_main_process,
    replicate,
    same_on_all_processes,
)
from ._checkpoint import CHECKPOINT_VERSION, load_checkpoint, run_config, save_checkpoint
from ._settings import LR_SCHEDULES, Plateau, TrainSettings, resolve_settings, schedule_rates
from ._step import gather, has_line_search, leading_size, make_train_step, val_loss


@dataclasses.dataclass
class TrainHistory:
    """What happened during `fit`.

    **Attributes:**

    - `step`, `train_loss`, `learning_rate`: one entry per completed step (the rate is NaN
      where a line search chose the step).
    - `val_step`, `val_loss`: one entry per validation evaluation.
    - `lr_drops`: steps at which the learning rate was reduced.
    - `stop_reason`: `"max_steps"`, `"early_stop"` (plateaus) or `"tolerance"`
      (`grad_tolerance`).
    - `wall_time`: seconds spent in this call (excluding earlier, resumed runs).
    - `best_step`, `best_val_loss`: with `keep_best`, the step whose weights were returned
      and their validation loss.
    """

    step: list[int] = dataclasses.field(default_factory=list)
    train_loss: list[float] = dataclasses.field(default_factory=list)
    learning_rate: list[float] = dataclasses.field(default_factory=list)
    val_step: list[int] = dataclasses.field(default_factory=list)
    val_loss: list[float] = dataclasses.field(default_factory=list)
    lr_drops: list[int] = dataclasses.field(default_factory=list)
    stop_reason: str = "max_steps"
    wall_time: float = 0.0
    best_step: int | None = None
    best_val_loss: float | None = None


@dataclasses.dataclass
class _Health:
    """Divergence watch on the training loss (plain numbers so checkpoints round-trip).

    `mean` and `noise` are exponential averages of the loss and of its deviation from that
    mean (bias-corrected when read); `start` is the averaged loss after the first
    `START_STEPS` steps and `best` the lowest average seen. Training has diverged when the
    average climbs above `start` by more than `tolerance` times the larger of the
    improvement `start − best` and the noise: a loss that returns above where it started,
    and then several times as far again, is not noise.
    """

    START_STEPS: typing.ClassVar[int] = 20

    decay: float = 0.98
    mean: float = 0.0
    noise: float = 0.0
    n: int = 0
    start: float | None = None
    best: float = math.inf

    def update(self, loss: float) -> None:
        self.n += 1
        self.mean = self.decay * self.mean + (1 - self.decay) * loss
        avg = self.mean / (1 - self.decay**self.n)
        self.noise = self.decay * self.noise + (1 - self.decay) * abs(loss - avg)
        self.best = min(self.best, avg)
        if self.n == self.START_STEPS:
            self.start = avg

    def diverged(self, tolerance: float) -> str | None:
        """A message if the loss has diverged, else None."""
        if self.start is None:
            return None
        avg = self.mean / (1 - self.decay**self.n)
        noise = self.noise / (1 - self.decay**self.n)
        margin = tolerance * max(self.start - self.best, noise, 1e-12)
        if avg > self.start + margin:
            return (f"the training loss diverged: its running mean rose to {avg:.4g}, above "
                    f"{self.start:.4g} at the end of the warm-up (best {self.best:.4g})")
        return None


def default_filter_spec(model) -> PyTree[bool]:
    """The leaves of `model` that train by default (`trainable=None`): every inexact array
    not wrapped in `paramax.NonTrainable`. Start from it to freeze parts of a model."""

    def is_trainable(x):
        return False if isinstance(x, paramax.NonTrainable) else eqx.is_inexact_array(x)

    return jax.tree.map(
        is_trainable, model, is_leaf=lambda x: isinstance(x, paramax.NonTrainable)
    )


def _filter_spec(model, trainable) -> PyTree[bool]:
    """Boolean filter spec: which leaves of `model` train."""
    full = default_filter_spec(model)
    if trainable is None:
        return full
    if not callable(trainable):
        return trainable  # already a filter spec
    none = jax.tree.map(lambda _: False, full)
    return eqx.tree_at(trainable, none, replace=trainable(full))


def check_key(key):
    if not jnp.issubdtype(jnp.asarray(key).dtype, jax.dtypes.prng_key):
        raise TypeError("use a typed key from jax.random.key, not jax.random.PRNGKey")


def _weights_cdf(weights, n: int):
    """Normalised cumulative weights (for drawing rows ∝ weight), or None."""
    if weights is None:
        return None
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"weights must have shape ({n},) like the data, got {w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("weights must be finite and non-negative")
    total = w.sum()
    if not total > 0:
        raise ValueError("weights must not all be zero")
    return np.cumsum(w) / total


def _split(data, key: PRNGKeyArray, s: TrainSettings, weights, host: bool):
    """`(n, train_data, val_data, train_cdf, val_cdf)`: the data's shuffled validation split
    (`key`) and the cumulative weights of each part (None without weights); row numbers
    for host data, and the data as given when every step takes all of it."""
    if s.batch_size is None and (host or weights is not None):
        raise ValueError("batch_size=None (every row at every step) needs in-memory data "
                         "without weights")
    n = len(data) if host else leading_size(data)
    n_val = int(round(n * s.validation_fraction)) if s.validation_fraction > 0 else 0
    if s.validation_fraction > 0:
        if n < 2:
            raise ValueError(f"a validation split needs at least 2 points; data has {n}")
        n_val = min(max(n_val, 1), n - 1)
    perm = jax.random.permutation(key, n)
    if host:  # row numbers now; HostBatches below read the rows
        perm = np.asarray(perm)
        val_data, train_data = perm[:n_val] if n_val else None, perm[n_val:]
    elif s.batch_size is None and not n_val:  # every row, in the order given
        val_data, train_data = None, data
    else:
        val_data = gather(data, perm[:n_val]) if n_val else None
        train_data = gather(data, perm[n_val:])
    train_cdf = val_cdf = None
    if weights is not None:
        _weights_cdf(weights, n)  # validate all rows
        w_perm = np.asarray(weights, np.float64)[np.asarray(perm)]
        dtype_w = jnp.result_type(float)
        train_cdf = jnp.asarray(_weights_cdf(w_perm[n_val:], n - n_val), dtype_w)
        if n_val:
            if not w_perm[:n_val].sum() > 0:
                raise ValueError("the validation split has zero total weight")
            val_cdf = jnp.asarray(_weights_cdf(w_perm[:n_val], n_val), dtype_w)
    return n, train_data, val_data, train_cdf, val_cdf


def fit(
    model: PyTree,
    loss_fn: Callable[[PyTree, PyTree, PRNGKeyArray], Float[Array, ""]],
    data: PyTree,
    *,
    key: PRNGKeyArray,
    settings: TrainSettings | None = None,
    trainable: Callable[[PyTree], Any] | PyTree[bool] | None = None,
    checkpoint_path: str | os.PathLike | None = None,
    progress: bool = True,
    weights: Float[Any, " n"] | None = None,
    devices: Devices = None,
    **overrides,
) -> tuple[PyTree, TrainHistory]:
    """Train `model` by minimising `loss_fn` over random batches of `data`.

    The optimiser, schedule, validation, averaging and stopping rules are those of a
    `TrainSettings` (see there). The run is a deterministic function of `key`; with
    `checkpoint_path` it writes checkpoints atomically, each with a checksum of its header
    and arrays, and, if the file exists, resumes from it and reproduces an uninterrupted
    run bit-for-bit.

    Training stops with a `TrainingError` (a `FloatingPointError`) when a loss, a gradient
    or an updated parameter is not finite (that step is never applied nor checkpointed) and
    when the loss diverges (see `divergence_tolerance`); no checkpoint is written once the
    divergence is seen, so the file keeps the last periodic one.

    **Arguments:**

    - `model`: any pytree (usually an `eqx.Module`).
    - `loss_fn`: `loss_fn(model, batch, key) -> scalar`.
    - `data`: a pytree of arrays sharing their leading axis (e.g. an `(n, 6)` array, or a
      tuple/NamedTuple/Module of arrays); batches are drawn along that axis. Or an
      `AbstractHostData` (e.g. a `ScoreFile`) for data that do not fit in memory: the same
      rows are then read on the host a batch at a time, so the run is the same.
    - `key`: a typed key (`jax.random.key`).
    - `settings`: a `TrainSettings`; `None` builds one from the keywords.
    - `trainable`: `None` (every inexact array not wrapped in `paramax.NonTrainable`
      trains), a function `model -> subtree or tuple of subtrees` selecting the only parts
      that train (as `eqx.tree_at`'s `where`), or a boolean filter spec.
    - `checkpoint_path`: file for atomic checkpoints (resumed from if it exists).
    - `progress`: show a tqdm progress bar with the training and validation losses.
    - `weights`: optional non-negative per-row weights, shape (n,): training and validation
      batches then draw rows with probability ∝ weight (so every loss is the weighted mean
      in expectation: a row of weight 2 counts as that row twice).
    - `devices`: data parallelism (`deeppot.sharding.data_mesh`): `None` shards each batch
      over every device JAX sees (all processes' after `jax.distributed.initialize()`),
      an int `k` over the first `k`, or a sequence of devices or a `Mesh`; `1` (or a
      single visible device) trains on one device. Parameters and in-memory data are
      replicated, batches split along their leading axis (any batch size; a multiple of
      the device count splits evenly). The result equals one device's up to the order of
      floating-point sums, and checkpoints resume bit-for-bit with the same devices.
      With several processes only process 0 writes the checkpoint, so `checkpoint_path`
      must be on a file system every process reads.
    - `**overrides`: fields of `TrainSettings` (`max_steps`, `batch_size`,
      `learning_rate`, …), replacing those of `settings`.

    **Returns:**

    `(model, history)`: the trained model (non-trainable leaves unchanged) and a
    `TrainHistory`.

    **Raises:**

    `TrainingError` (a `FloatingPointError`) naming the step, as above; `CheckpointError`
    naming the file if `checkpoint_path` exists but is corrupt, truncated, of another model
    or written with other settings.
    """
    check_key(key)
    s = resolve_settings(settings, overrides)
    max_steps, batch_size, warmup_steps = s.max_steps, s.batch_size, s.warmup_steps

    mesh = data_mesh(devices)
    shard = None if mesh is None else batch_sharding(mesh)
    host = isinstance(data, AbstractHostData)
    k_split, k_batch, k_loss, k_val = jax.random.split(key, 4)
    n, train_data, val_data, train_cdf, val_cdf = _split(data, k_split, s, weights, host)

    spec = _filter_spec(model, trainable)
    params, static = eqx.partition(model, spec)
    train_step, tx = make_train_step(
        loss_fn, batch_size=batch_size, optimizer=s.optimizer, clip_norm=s.clip_norm,
        ema_decay=s.ema_decay, batch_sharding=shard, gathered=host or batch_size is None,
    )
    opt_state = tx.init(params)
    line_search = has_line_search(opt_state)
    if line_search and batch_size is not None:
        raise ValueError("an optimizer with a line search (L-BFGS) needs the same batch at "
                         "every step: set batch_size=None")
    ema = params if s.ema_decay is not None else None
    best = params if s.keep_best else None
    plateau = Plateau()
    health = _Health()
    history = TrainHistory()
    start = 0
    rates = schedule_rates(s.lr_schedule, max_steps) if callable(s.lr_schedule) else None
    config = run_config(s, n, weights, rates)
    key_data = np.asarray(jax.random.key_data(key)).tolist()

    if checkpoint_path is not None and os.path.exists(checkpoint_path):
        (params, opt_state, ema, best), header = load_checkpoint(
            checkpoint_path, (params, opt_state, ema, best)
        )
        if header["key"] != key_data or header["config"] != config:
            raise CheckpointError(
                f"checkpoint {os.fspath(checkpoint_path)!r} was written by a run with a "
                f"different key or settings ({header['config']} vs {config}); delete it or "
                "use another path"
            )
        start = header["step"]
        plateau = Plateau(**header["scheduler"])
        health = _Health(**header["health"])
        history = TrainHistory(**header["history"])
        history.wall_time = 0.0
    same_on_all_processes(start, "the step resumed from (checkpoint_path must be on a file "
                          "system every process shares)")

    if mesh is not None:  # parameters and in-memory data on every device
        params, static, opt_state, ema, best = replicate((params, static, opt_state, ema,
                                                          best), mesh)
        if not host:
            train_data, val_data, train_cdf, val_cdf = replicate(
                (train_data, val_data, train_cdf, val_cdf), mesh)
    if host:  # batches read on the host, the next while this step runs
        place = jax.device_put if mesh is None else functools.partial(replicate, mesh=mesh)
        train_data = HostBatches(data, train_data, k_batch, batch_size, place, cdf=train_cdf)
        if val_data is not None:
            val_data = HostBatches(data, val_data, jax.random.split(k_val)[0], batch_size,
                                   place, whole=True, stride=s.validate_every, cdf=val_cdf)

    def learning_rate(step: int) -> float:
        if line_search:  # the line search sets the step
            return math.nan
        if callable(s.lr_schedule):
            return float(rates[step])
        peak = s.learning_rate * plateau.lr_scale
        return LR_SCHEDULES[s.lr_schedule](peak, warmup_steps, max_steps)(step)

    def checkpoint(step_done: int):
        if checkpoint_path is None or not is_main_process():
            return
        header = {
            "version": CHECKPOINT_VERSION,
            "step": step_done,
            "key": key_data,
            "config": config,
            "scheduler": dataclasses.asdict(plateau),
            "health": dataclasses.asdict(health),
            "history": dataclasses.asdict(history),
        }
        save_checkpoint(checkpoint_path, (params, opt_state, ema, best), header)

    def validation_loss(step_arr):
        if s.keep_best:  # the returned weights, one fixed batch and key
            weights = ema if ema is not None else params
            step_arr = jnp.asarray(0, jnp.int32)
        else:
            weights = params
        if host:  # a batch read on the host, drawn ∝ weight there
            batch, cdf = val_data(int(step_arr)), None
        else:
            batch, cdf = val_data, val_cdf
        return val_loss(weights, static, batch, step_arr, k_val, cdf, loss_fn=loss_fn,
                         batch_size=batch_size, batch_sharding=shard)

    dtype = jnp.result_type(float)
    t_start = time.perf_counter()
    bar = tqdm(total=max_steps, initial=start, disable=not progress, dynamic_ncols=True)
    last_val = math.nan
    last_post = 0.0
    step = start
    try:
        for step in range(start, max_steps):
            lr = learning_rate(step)
            step_arr = jnp.asarray(step, jnp.int32)
            if val_data is not None and step % s.validate_every == 0:
                v = float(validation_loss(step_arr))
                if not math.isfinite(v):
                    raise TrainingError(f"non-finite validation loss ({v}) at step {step}")
                history.val_step.append(step)
                history.val_loss.append(v)
                last_val = v
                if s.keep_best and (history.best_val_loss is None
                                    or v < history.best_val_loss):
                    best = ema if ema is not None else params
                    history.best_step, history.best_val_loss = step, v
            else:
                v = None
            params, opt_state, ema, loss, loss_ok, grads_ok, grad_norm = train_step(
                params, static, opt_state, ema, train_data(step) if host else train_data,
                step_arr, jnp.asarray(lr, dtype), (k_batch, k_loss),
                None if host else train_cdf,
            )
            loss = float(loss)
            if not (bool(loss_ok) and bool(grads_ok)):
                what = "loss" if not bool(loss_ok) else "gradient or update"
                raise TrainingError(
                    f"non-finite {what} at step {step} (loss = {loss}); the step was not "
                    "applied and no checkpoint was written for it; lower the learning rate "
                    "or check the data"
                )
            history.step.append(step)
            history.train_loss.append(loss)
            history.learning_rate.append(lr)
            health.update(loss)
            if s.divergence_tolerance is not None:
                problem = health.diverged(s.divergence_tolerance)
                if problem is not None:
                    raise TrainingError(
                        f"{problem} at step {step}; lower the learning rate (it was "
                        f"{s.learning_rate:g}); no checkpoint was written after the divergence"
                    )

            monitored = v if val_data is not None else loss
            if (s.lr_schedule == "plateau" and not line_search and monitored is not None
                    and step + 1 >= warmup_steps
                    and plateau.update(monitored, s.validate_every if val_data is not None
                                       else 1, s)):
                history.lr_drops.append(step)
            bar.update(1)
            now = time.perf_counter()
            if progress and now - last_post > 0.5:
                bar.set_postfix(train=f"{loss:.4f}", val=f"{last_val:.4f}", lr=f"{lr:.2e}")
                last_post = now
            done = step + 1
            stop = ("early_stop" if plateau.drops_since_improvement > s.max_lr_drops else
                    "tolerance" if s.grad_tolerance is not None
                    and float(grad_norm) <= s.grad_tolerance else None)
            if stop is not None:
                history.stop_reason = stop
                history.wall_time = time.perf_counter() - t_start
                checkpoint(done)
                break
            if done % s.checkpoint_every == 0 and done < max_steps:
                history.wall_time = time.perf_counter() - t_start
                checkpoint(done)
        else:
            history.wall_time = time.perf_counter() - t_start
            if max_steps > start:
                checkpoint(max_steps)
    finally:
        bar.close()
        if host:
            train_data.close()
            if val_data is not None:
                val_data.close()
    if s.keep_best:  # the last steps' weights were not validated yet
        v = float(validation_loss(jnp.asarray(max_steps, jnp.int32)))
        if math.isfinite(v) and (history.best_val_loss is None or v < history.best_val_loss):
            best = ema if ema is not None else params
            history.best_step, history.best_val_loss = step + 1, v
    final = best if s.keep_best else (ema if ema is not None else params)
    return eqx.combine(final, static), history
