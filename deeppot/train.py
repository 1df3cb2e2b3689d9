"""One training loop for distribution functions and potentials.

`fit` trains any Equinox model on any loss `loss_fn(model, batch, key) -> scalar` with
optax (RAdam or Adam), a linear learning-rate warm-up, halving on plateaus, early stopping,
gradient clipping, a shuffled validation split, atomic checkpoints that resume bit-for-bit,
a progress bar and detection of non-finite losses or gradients. `fit_df` applies it to the
DF models of `deeppot.flows`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
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
import optax
import paramax
from jaxtyping import Array, Float, PRNGKeyArray, PyTree
from tqdm.auto import tqdm

from ._errors import CheckpointError, TrainingError
from ._framed import read_framed, write_framed
from .hostdata import AbstractHostData, HostBatches, batch_indices
from .sharding import (
    Devices,
    batch_sharding,
    data_mesh,
    is_main_process,
    replicate,
    same_on_all_processes,
)

if typing.TYPE_CHECKING:
    from .objectives import AbstractObjective

__all__ = [
    "TrainHistory",
    "default_filter_spec",
    "fit",
    "fit_df",
    "fit_potential",
    "make_train_step",
    "potential_loss_fn",
    "refine_potential",
]

LR_SCHEDULES = ("plateau", "cosine")  # the values of fit's `lr_schedule`
_CHECKPOINT_VERSION = 4  # 4: a framed file (deeppot._framed), the checksum covers the header


@dataclasses.dataclass
class TrainHistory:
    """What happened during `fit`.

    **Attributes:**

    - `step`, `train_loss`, `learning_rate`: one entry per completed step.
    - `val_step`, `val_loss`: one entry per validation evaluation.
    - `lr_drops`: steps at which the learning rate was reduced.
    - `stop_reason`: `"max_steps"` or `"early_stop"`.
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
class _Scheduler:
    """Plateau scheduler state (plain Python numbers so checkpoints round-trip exactly)."""

    lr_scale: float = 1.0
    best: float = math.inf
    since_best: int = 0
    drops_since_improvement: int = 0
    smoothed: float = 0.0
    n_smoothed: int = 0


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


def _leading_size(data) -> int:
    leaves = jax.tree.leaves(data)
    if not leaves:
        raise ValueError("data has no arrays")
    sizes = {int(jnp.shape(a)[0]) for a in leaves}
    if len(sizes) != 1:
        raise ValueError(f"all arrays in data must share their leading axis; got sizes {sizes}")
    return sizes.pop()


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


def _check_key(key):
    if not jnp.issubdtype(jnp.asarray(key).dtype, jax.dtypes.prng_key):
        raise TypeError("use a typed key from jax.random.key, not jax.random.PRNGKey")


def _all_finite(tree) -> Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if eqx.is_inexact_array(x)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def _gather(data, idx):
    return jax.tree.map(lambda a: jnp.asarray(a)[idx], data)


def _shard(tree, sharding):
    """Split `tree`'s leading axis over the devices (inside jit; `None`: leave it)."""
    if sharding is None:
        return tree
    return jax.tree.map(lambda a: jax.lax.with_sharding_constraint(a, sharding), tree)


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


@eqx.filter_jit
def _train_step(
    params, static, opt_state, ema, data, step, lr, keys, cdf=None, *, loss_fn, tx, batch_size,
    ema_decay, batch_sharding=None, gathered=False,
):
    # `batch_sharding`: split the batch over devices (params stay replicated); `gathered`:
    # `data` is already this step's batch (gathered on the host)
    k_batch, k_loss = keys
    if gathered:
        batch = _shard(data, batch_sharding)
    else:
        idx = _shard(batch_indices(k_batch, step, batch_size, _leading_size(data), cdf),
                     batch_sharding)
        batch = _shard(_gather(data, idx), batch_sharding)

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
    grads_ok = grads_ok & _all_finite(new_params)
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


def make_train_step(
    loss_fn: Callable[[PyTree, PyTree, PRNGKeyArray], Float[Array, ""]],
    *,
    batch_size: int,
    optimizer: str = "radam",
    clip_norm: float | None = 1.0,
    ema_decay: float | None = None,
    batch_sharding: jax.sharding.NamedSharding | None = None,
    gathered: bool = False,
) -> tuple[Callable, optax.GradientTransformation]:
    """The jitted training step that `fit` runs, and the optax transformation it applies.

    For benchmarks and custom loops that must run exactly `fit`'s step.

    **Arguments:**

    - `loss_fn`, `batch_size`, `optimizer`, `clip_norm`, `ema_decay`: as for `fit`.
    - `batch_sharding`: split each batch over devices along its leading axis
      (`deeppot.sharding.batch_sharding(mesh)`; parameters and data are then expected
      replicated on the mesh); `None` for one device.
    - `gathered`: `data` is already the step's batch (gathered on the host, as `fit` does
      for an `AbstractHostData`) rather than the rows to draw it from.

    **Returns:**

    `(step, tx)`. `step(params, static, opt_state, ema, data, step, lr, keys, cdf=None)`
    draws `batch_size` rows of `data` with replacement (from `keys[0]` folded with `step`;
    ∝ weight when `cdf`, the cumulative sum of the rows' weights, is given),
    evaluates `loss_fn(eqx.combine(params, static), batch, key)` and its gradient, applies
    `tx` (global-norm clipping, then RAdam or Adam) scaled by `-lr` and the EMA, and returns
    `(params, opt_state, ema, loss, loss_ok, grads_ok)`, keeping the old state wherever the
    loss or a gradient is not finite. `params, static = eqx.partition(model, spec)` and
    `opt_state = tx.init(params)` as in `fit`; `ema` is `None` or a copy of `params`.
    """
    if optimizer not in ("radam", "adam"):
        raise ValueError(f"optimizer must be 'radam' or 'adam'; got {optimizer!r}")
    scale = optax.scale_by_radam() if optimizer == "radam" else optax.scale_by_adam()
    tx = optax.chain(optax.clip_by_global_norm(clip_norm), scale) if clip_norm else scale
    step = functools.partial(
        _train_step, loss_fn=loss_fn, tx=tx, batch_size=batch_size, ema_decay=ema_decay,
        batch_sharding=batch_sharding, gathered=gathered,
    )
    return step, tx


@eqx.filter_jit
def _val_loss(params, static, data, step, key, cdf=None, *, loss_fn, batch_size,
              batch_sharding=None):
    k_batch, k_loss = jax.random.split(key)
    n = _leading_size(data)
    if n <= batch_size and cdf is None:
        batch = data
    else:
        idx = _shard(batch_indices(k_batch, step, batch_size, n, cdf), batch_sharding)
        batch = _gather(data, idx)
    batch = _shard(batch, batch_sharding)
    return loss_fn(eqx.combine(params, static), batch, jax.random.fold_in(k_loss, step))


def _save_checkpoint(path, arrays, header: dict):
    buffer = io.BytesIO()
    eqx.tree_serialise_leaves(buffer, arrays)
    write_framed(path, header, buffer.getvalue())


def _load_checkpoint(path, like):
    """The arrays and header of a checkpoint, or `CheckpointError` naming the file."""
    what = f"checkpoint '{os.fspath(path)}'"
    fix = "; delete it (or its run directory's stage) to start this training over"
    try:
        header, body = read_framed(path, kind="checkpoint", versions=(_CHECKPOINT_VERSION,),
                                   fix=fix)
    except OSError as err:
        raise CheckpointError(f"cannot read {what}: {err}") from None
    try:
        arrays = eqx.tree_deserialise_leaves(io.BytesIO(body), like)
    except Exception as err:  # a checkpoint of another model
        raise CheckpointError(f"{what} does not fit this model ({type(err).__name__})"
                              f"{fix}") from None
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
    keep_best: bool = False,
    divergence_tolerance: float | None = 3.0,
    checkpoint_path: str | os.PathLike | None = None,
    checkpoint_every: int = 1000,
    progress: bool = True,
    weights: Float[Any, " n"] | None = None,
    devices: Devices = None,
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
    checkpoints atomically, each with a checksum of its header and arrays, and, if the file
    exists, resumes from it and reproduces an uninterrupted run bit-for-bit.

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
    - `keep_best`: return the weights with the lowest validation loss instead of the last
      ones (needs a validation split). The validation loss is then measured on the weights
      that would be returned (the average with `ema_decay`), on one fixed validation batch
      and key, so that evaluations differ only by the weights: held-out data decide which
      weights to keep, which guards against over-fitting.
    - `divergence_tolerance`: stop when the running mean of the training loss rises above
      its value after the first 20 steps by more than this many times the larger of its
      best improvement on that value and its noise (`None`: never).
    - `checkpoint_path`: file for atomic checkpoints (resumed from if it exists).
    - `checkpoint_every`: steps between checkpoints (one is always written at the end).
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

    **Returns:**

    `(model, history)`: the trained model (non-trainable leaves unchanged) and a
    `TrainHistory`.

    **Raises:**

    `TrainingError` (a `FloatingPointError`) naming the step, as above; `CheckpointError`
    naming the file if `checkpoint_path` exists but is corrupt, truncated, of another model
    or written with other settings.
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
    if not (math.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"learning_rate must be positive and finite; got {learning_rate}")
    if keep_best and validation_fraction == 0:
        raise ValueError("keep_best needs a validation split (validation_fraction > 0)")

    mesh = data_mesh(devices)
    shard = None if mesh is None else batch_sharding(mesh)
    host = isinstance(data, AbstractHostData)
    n = len(data) if host else _leading_size(data)
    k_split, k_batch, k_loss, k_val = jax.random.split(key, 4)
    n_val = int(round(n * validation_fraction)) if validation_fraction > 0 else 0
    if validation_fraction > 0:
        if n < 2:
            raise ValueError(f"a validation split needs at least 2 points; data has {n}")
        n_val = min(max(n_val, 1), n - 1)
    perm = jax.random.permutation(k_split, n)
    if host:  # row numbers now; HostBatches below read the rows
        perm = np.asarray(perm)
        val_data, train_data = perm[:n_val] if n_val else None, perm[n_val:]
    else:
        val_data = _gather(data, perm[:n_val]) if n_val else None
        train_data = _gather(data, perm[n_val:])
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

    spec = _filter_spec(model, trainable)
    params, static = eqx.partition(model, spec)
    train_step, tx = make_train_step(
        loss_fn, batch_size=batch_size, optimizer=optimizer, clip_norm=clip_norm,
        ema_decay=ema_decay, batch_sharding=shard, gathered=host,
    )
    opt_state = tx.init(params)
    ema = params if ema_decay is not None else None
    best = params if keep_best else None
    sched = _Scheduler()
    health = _Health()
    history = TrainHistory()
    start = 0
    config = {"n": n, "batch_size": batch_size, "validation_fraction": validation_fraction,
              "optimizer": optimizer, "ema": ema_decay is not None,
              "learning_rate": learning_rate, "warmup_steps": warmup_steps,
              "lr_schedule": lr_schedule, "keep_best": keep_best}
    if lr_schedule == "cosine":  # the rate at every step depends on the run's length
        config["max_steps"] = max_steps
    if weights is not None:
        config["weights_sha1"] = hashlib.sha1(np.asarray(weights, np.float64).tobytes()).hexdigest()
    key_data = np.asarray(jax.random.key_data(key)).tolist()

    if checkpoint_path is not None and os.path.exists(checkpoint_path):
        (params, opt_state, ema, best), header = _load_checkpoint(
            checkpoint_path, (params, opt_state, ema, best)
        )
        if header["key"] != key_data or header["config"] != config:
            raise CheckpointError(
                f"checkpoint {os.fspath(checkpoint_path)!r} was written by a run with a "
                f"different key or settings ({header['config']} vs {config}); delete it or "
                "use another path"
            )
        start = header["step"]
        sched = _Scheduler(**header["scheduler"])
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
                                   place, whole=True, stride=validate_every, cdf=val_cdf)

    def checkpoint(step_done: int):
        if checkpoint_path is None or not is_main_process():
            return
        header = {
            "version": _CHECKPOINT_VERSION,
            "step": step_done,
            "key": key_data,
            "config": config,
            "scheduler": dataclasses.asdict(sched),
            "health": dataclasses.asdict(health),
            "history": dataclasses.asdict(history),
        }
        _save_checkpoint(checkpoint_path, (params, opt_state, ema, best), header)

    def validation_loss(step_arr):
        if keep_best:  # the returned weights, one fixed batch and key
            weights = ema if ema is not None else params
            step_arr = jnp.asarray(0, jnp.int32)
        else:
            weights = params
        if host:  # a batch read on the host, drawn ∝ weight there
            batch, cdf = val_data(int(step_arr)), None
        else:
            batch, cdf = val_data, val_cdf
        return _val_loss(weights, static, batch, step_arr, k_val, cdf, loss_fn=loss_fn,
                         batch_size=batch_size, batch_sharding=shard)

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
                v = float(validation_loss(step_arr))
                if not math.isfinite(v):
                    raise TrainingError(f"non-finite validation loss ({v}) at step {step}")
                history.val_step.append(step)
                history.val_loss.append(v)
                last_val = v
                if keep_best and (history.best_val_loss is None or v < history.best_val_loss):
                    best = ema if ema is not None else params
                    history.best_step, history.best_val_loss = step, v
            else:
                v = None
            params, opt_state, ema, loss, loss_ok, grads_ok = train_step(
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
            if divergence_tolerance is not None:
                problem = health.diverged(divergence_tolerance)
                if problem is not None:
                    raise TrainingError(
                        f"{problem} at step {step}; lower the learning rate (it was "
                        f"{learning_rate:g}); no checkpoint was written after the divergence"
                    )

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
        if host:
            train_data.close()
            if val_data is not None:
                val_data.close()
    if keep_best:  # the last steps' weights were not validated yet
        v = float(validation_loss(jnp.asarray(max_steps, jnp.int32)))
        if math.isfinite(v) and (history.best_val_loss is None or v < history.best_val_loss):
            best = ema if ema is not None else params
            history.best_step, history.best_val_loss = step + 1, v
    final = best if keep_best else (ema if ema is not None else params)
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
    max_steps: int = 20000,
    batch_size: int = 2048,
    learning_rate: float = 2e-3,
    objective: AbstractObjective | str | None = None,
    warmup_steps: int = 500,
    lr_schedule: str = "cosine",
    ema_decay: float | None = 0.998,
    validate_every: int = 50,
    patience: int = 2048,
    min_delta: float = 0.01,
    standardise: bool = True,
    return_history: bool = False,
    **kwargs,
):
    """Fit a trainable distribution function to phase-space points.

    Sets the DF's standardisation (`df.standardisation`: `loc` and `scale` of a flow) from
    the points, then trains everything except the standardisation with `fit`. The defaults
    are the recommended recipe of `docs/results.md` (RAdam, 20000 steps of 2048, a 500-step
    warm-up to 2e-3 and a cosine decay, an average of the weights with decay 0.998, 25%
    validation split). The paper's (§2.4) was batches of 8192, a warm-up over 2048 steps to
    5e-3 and halving after 2048 steps without a 0.01 improvement
    (`lr_schedule="plateau"`, `ema_decay=None`). A weighted catalogue (or `weights=`) is
    fitted as if each star were repeated in proportion to its weight: the standardisation
    uses weighted moments and batches draw stars ∝ weight, for every objective.

    **Arguments:**

    - `df`: an `AbstractTrainableDF` (`FFJORD`, `SplineFlow`, or a symmetry wrapper such as
      `SphericalDF` around one).
    - `catalog`: a `PhaseSpaceCatalog` (anything with `.w`; its `.weights` are used) or an
      `(n, 6)` array.
    - `key`: a typed key.
    - `max_steps`, `batch_size`, `learning_rate`, `warmup_steps`, `lr_schedule`,
      `ema_decay`, `validate_every`, `patience`, `min_delta`: see `fit`.
    - `objective`: a training objective (`deeppot.objectives`, e.g.
      `MaximumLikelihood(trace="exact")`) or the registered name of one (with its default
      settings), of those `df.objectives` names (default: the first, the model's
      recommended one; flow matching for `FFJORD`).
    - `standardise`: set the standardisation from the data (turn off to keep the DF's own).
    - `return_history`: also return the `TrainHistory`.
    - `**kwargs`: passed to `fit` (e.g. `optimizer`, `clip_norm`, `checkpoint_path`,
      `ema_decay`, `progress`, `trainable`, `weights` to override the catalogue's).

    **Returns:**

    The trained DF (and the history if `return_history`).
    """
    from .flows import AbstractTrainableDF
    from .objectives import as_objective

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

    def loss_fn(model, batch, k):
        return objective(model, batch, k)

    out, history = fit(
        df, loss_fn, w.astype(df.standardisation[0].dtype), key=key, max_steps=max_steps,
        batch_size=batch_size, learning_rate=learning_rate, warmup_steps=warmup_steps,
        lr_schedule=lr_schedule, ema_decay=ema_decay, validate_every=validate_every,
        patience=patience, min_delta=min_delta, **kwargs,
    )
    return (out, history) if return_history else out


def potential_loss_fn(loss=None) -> Callable:
    """The `loss_fn(model, batch, key)` that `fit_potential` gives `fit`.

    **Arguments:**

    - `loss`: a loss term, `loss(model, batch) -> scalar`; default
      `Log(Stationarity() + PositiveDensity())`, the paper's Eq. 13 without its ℓ2 penalty.
    """
    from .terms import AbstractTerm, Log, PositiveDensity, Stationarity

    if loss is None:
        loss = Log(Stationarity() + PositiveDensity())
    if not isinstance(loss, AbstractTerm):
        raise TypeError(f"loss must be a deeppot loss term; got {type(loss).__name__}")
    return lambda model, batch, key: loss(model, batch)


def fit_potential(
    model,
    scores,
    loss=None,
    *,
    key: PRNGKeyArray,
    max_steps: int = 8000,
    batch_size: int = 2048,
    learning_rate: float = 2e-3,
    warmup_steps: int = 500,
    lr_schedule: str = "cosine",
    validate_every: int = 10,
    patience: int = 2048,
    min_delta: float = 0.01,
    trainable=None,
    return_history: bool = False,
    **kwargs,
):
    """Fit a potential (and frame) so that the sampled distribution function is stationary.

    Any pytree model trains: a neural, analytic, symmetric or composite potential, with the
    frame's Ω, u0 and centre. The defaults are the recommended recipe of `docs/results.md`
    (RAdam, 8000 steps of 2048, a 500-step warm-up to 2e-3 and a cosine decay, 25%
    validation split). The paper's (§2.4) was batches of 2^14, a warm-up over 2048 steps to
    1e-3 and halving after 2048 steps without a 0.01 improvement (`lr_schedule="plateau"`).

    **Arguments:**

    - `model`: a `PotentialModel` (a bare potential is wrapped in an inertial frame).
    - `scores`: a `ScoreSample` (from `sample_scores`), or a `ScoreFile` to read batches
      from an HDF5 file that does not fit in memory (`load_scores` picks).
    - `loss`: a loss term, `loss(model, batch) -> scalar`; default
      `Log(Stationarity() + PositiveDensity())`, the paper's Eq. 13 without its ℓ2
      penalty (`+ L2Weights(0.1)`), which biases fits from accurate scores.
    - `key`: a typed key.
    - `trainable`: `None` trains every inexact array of the model; otherwise a function
      `model -> subtree or tuple of subtrees`, e.g. `lambda m: m.frame.omega`.
    - `return_history`: also return the `TrainHistory`.
    - `**kwargs`: passed to `fit` (e.g. `checkpoint_path`, `clip_norm`, `progress`,
      `devices`).

    **Returns:** the trained `PotentialModel` (and the history if `return_history`). It is
    not checked for physical sense, so that deliberately short or tiny fits (tests,
    benchmarks) return their model: `check_potential_fit(model, scores)` raises if the fit
    is dead (a zero or uniform force, a negative density, a residual no better than Φ = 0),
    as the pipeline's potential stage does after every fit.
    """
    from .model import PotentialModel
    from .potentials import AbstractPotential
    from .scores import ScoreFile, ScoreSample

    if isinstance(model, AbstractPotential):
        model = PotentialModel(model)
    if not isinstance(model, PotentialModel):
        raise TypeError(f"fit_potential trains a PotentialModel; got {type(model).__name__}")
    if not isinstance(scores, (ScoreSample, ScoreFile)):
        raise TypeError(f"scores must be a ScoreSample or ScoreFile; got "
                        f"{type(scores).__name__}")
    out, history = fit(
        model, potential_loss_fn(loss), scores, key=key, max_steps=max_steps,
        batch_size=batch_size, learning_rate=learning_rate, warmup_steps=warmup_steps,
        lr_schedule=lr_schedule, validate_every=validate_every, patience=patience,
        min_delta=min_delta, trainable=trainable, **kwargs,
    )
    return (out, history) if return_history else out


# --------------------------------------------------------------------------------------
# Second-order finish for potential fits (L-BFGS on a fixed batch). Separate from `fit`.
# --------------------------------------------------------------------------------------


@eqx.filter_jit
def _lbfgs_step(params, static, opt_state, batch, *, loss, tx):
    def value_fn(p):
        return loss(eqx.combine(p, static), batch)

    value, grad = optax.value_and_grad_from_state(value_fn)(params, state=opt_state)
    updates, new_state = tx.update(
        grad, opt_state, params, value=value, grad=grad, value_fn=value_fn
    )
    new_params = eqx.apply_updates(params, updates)
    ok = jnp.isfinite(value) & _all_finite(grad) & _all_finite(new_params)
    return new_params, new_state, value, optax.tree.norm(grad), ok


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
    """Finish a potential fit with L-BFGS on one fixed batch (a second-order polish).

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

    **Raises:** `FloatingPointError` naming the iteration if the loss or gradient is not
    finite; the parameters are never updated with it.
    """
    from .model import PotentialModel
    from .potentials import AbstractPotential
    from .scores import ScoreSample
    from .terms import AbstractTerm, PositiveDensity, Stationarity

    _check_key(key)
    if isinstance(model, AbstractPotential):
        model = PotentialModel(model)
    if not isinstance(model, PotentialModel):
        raise TypeError(f"refine_potential trains a PotentialModel; got {type(model).__name__}")
    if not isinstance(scores, ScoreSample):
        raise TypeError(f"scores must be a ScoreSample; got {type(scores).__name__}")
    if loss is None:
        loss = Stationarity(penalty="cauchy") + PositiveDensity()
    if not isinstance(loss, AbstractTerm):
        raise TypeError(f"loss must be a deeppot loss term; got {type(loss).__name__}")
    if max_steps < 0 or batch_size < 1 or memory_size < 1:
        raise ValueError("max_steps must be >= 0 and batch_size, memory_size positive")
    n = len(scores)
    idx = jax.random.permutation(key, n)[: min(batch_size, n)]
    batch = scores[idx]
    params, static = eqx.partition(model, _filter_spec(model, trainable))
    tx = optax.lbfgs(memory_size=memory_size)
    opt_state = tx.init(params)
    history = TrainHistory()
    t_start = time.perf_counter()
    bar = tqdm(total=max_steps, disable=not progress, dynamic_ncols=True)
    try:
        for step in range(max_steps):
            new_params, new_state, value, gnorm, ok = _lbfgs_step(
                params, static, opt_state, batch, loss=loss, tx=tx
            )
            if not bool(ok):
                raise FloatingPointError(
                    f"non-finite loss or gradient at L-BFGS iteration {step} (loss = "
                    f"{float(value)}); the update was not applied"
                )
            params, opt_state = new_params, new_state
            history.step.append(step)
            history.train_loss.append(float(value))
            history.learning_rate.append(math.nan)
            bar.update(1)
            if float(gnorm) <= tolerance:
                history.stop_reason = "tolerance"
                break
    finally:
        bar.close()
    history.wall_time = time.perf_counter() - t_start
    out = eqx.combine(params, static)
    return (out, history) if return_history else out
