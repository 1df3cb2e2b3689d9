"""The jitted training step and validation loss that `fit` runs."""

from __future__ import annotations

import functools
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from ..hostdata import batch_indices
from ._settings import OPTIMIZERS, check_name


def leading_size(data) -> int:
    leaves = jax.tree.leaves(data)
    if not leaves:
        raise ValueError("data has no arrays")
    sizes = {int(jnp.shape(a)[0]) for a in leaves}
    if len(sizes) != 1:
        raise ValueError(f"all arrays in data must share their leading axis; got sizes {sizes}")
    return sizes.pop()


def _all_finite(tree) -> Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if eqx.is_inexact_array(x)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def gather(data, idx):
    return jax.tree.map(lambda a: jnp.asarray(a)[idx], data)


def _shard(tree, sharding):
    """Split `tree`'s leading axis over the devices (inside jit; `None`: leave it)."""
    if sharding is None:
        return tree
    return jax.tree.map(lambda a: jax.lax.with_sharding_constraint(a, sharding), tree)


def has_line_search(opt_state) -> bool:
    """Whether an optimiser state keeps the loss (a line search's, e.g. L-BFGS's)."""
    return optax.tree.get(opt_state, "value") is not None


@eqx.filter_jit
def _train_step(
    params, static, opt_state, ema, data, step, lr, keys, cdf=None, *, loss_fn, tx, batch_size,
    ema_decay, batch_sharding=None, gathered=False,
):
    # `batch_sharding`: split the batch over devices (params stay replicated); `gathered`:
    # `data` is already this step's batch (gathered on the host, or the whole data)
    k_batch, k_loss = keys
    if gathered:
        batch = _shard(data, batch_sharding)
    else:
        idx = _shard(batch_indices(k_batch, step, batch_size, leading_size(data), cdf),
                     batch_sharding)
        batch = _shard(gather(data, idx), batch_sharding)

    def loss_of(p):
        return loss_fn(eqx.combine(p, static), batch, jax.random.fold_in(k_loss, step))

    line_search = has_line_search(opt_state)
    if line_search:  # the line search may have evaluated these parameters already
        loss, grads = optax.value_and_grad_from_state(loss_of)(params, state=opt_state)
    else:
        loss, grads = eqx.filter_value_and_grad(loss_of)(params)
    loss_ok = jnp.isfinite(loss)
    grads_ok = _all_finite(grads)
    if isinstance(tx, optax.GradientTransformationExtraArgs):
        updates, new_opt_state = tx.update(grads, opt_state, params, value=loss, grad=grads,
                                           value_fn=loss_of)
    else:
        updates, new_opt_state = tx.update(grads, opt_state, params)
    if not line_search:  # a line search has chosen the step, sign and length
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
        optax.tree.norm(grads),
    )


def _transformation(optimizer, clip_norm) -> optax.GradientTransformation:
    if isinstance(optimizer, optax.GradientTransformation):
        base = optimizer
        return optax.chain(optax.clip_by_global_norm(clip_norm), base) if clip_norm else base
    check_name(optimizer, OPTIMIZERS, "optimizer", "an optax.GradientTransformation")
    return _named_transformation(optimizer, clip_norm)


@functools.cache
def _named_transformation(optimizer: str, clip_norm) -> optax.GradientTransformation:
    """One transformation object per (name, clip): the jitted step takes it as a static
    argument, so fits with the same settings share the step's compilation."""
    base = OPTIMIZERS[optimizer]()
    return optax.chain(optax.clip_by_global_norm(clip_norm), base) if clip_norm else base


def make_train_step(
    loss_fn: Callable[[PyTree, PyTree, PRNGKeyArray], Float[Array, ""]],
    *,
    batch_size: int | None,
    optimizer: str | optax.GradientTransformation = "radam",
    clip_norm: float | None = 1.0,
    ema_decay: float | None = None,
    batch_sharding: jax.sharding.NamedSharding | None = None,
    gathered: bool = False,
) -> tuple[Callable, optax.GradientTransformation]:
    """The jitted training step that `fit` runs, and the optax transformation it applies.

    For benchmarks and custom loops that must run exactly `fit`'s step.

    **Arguments:**

    - `loss_fn`: as for `fit`.
    - `batch_size`, `optimizer`, `clip_norm`, `ema_decay`: as in `TrainSettings`.
    - `batch_sharding`: split each batch over devices along its leading axis
      (`deeppot.sharding.batch_sharding(mesh)`; parameters and data are then expected
      replicated on the mesh); `None` for one device.
    - `gathered`: `data` is already the step's batch (gathered on the host, as `fit` does
      for an `AbstractHostData`, or all the data with `batch_size=None`) rather than the
      rows to draw it from.

    **Returns:**

    `(step, tx)`. `step(params, static, opt_state, ema, data, step, lr, keys, cdf=None)`
    draws `batch_size` rows of `data` with replacement (from `keys[0]` folded with `step`;
    ∝ weight when `cdf`, the cumulative sum of the rows' weights, is given),
    evaluates `loss_fn(eqx.combine(params, static), batch, key)` and its gradient, applies
    `tx` (global-norm clipping, then the optimiser) scaled by `-lr` (unless the optimiser
    has a line search) and the EMA, and returns
    `(params, opt_state, ema, loss, loss_ok, grads_ok, grad_norm)`, keeping the old state
    wherever the loss or a gradient is not finite. `params, static = eqx.partition(model,
    spec)` and `opt_state = tx.init(params)` as in `fit`; `ema` is `None` or a copy of
    `params`.
    """
    tx = _transformation(optimizer, clip_norm)
    step = functools.partial(
        _train_step, loss_fn=loss_fn, tx=tx, batch_size=batch_size, ema_decay=ema_decay,
        batch_sharding=batch_sharding, gathered=gathered,
    )
    return step, tx


@eqx.filter_jit
def val_loss(params, static, data, step, key, cdf=None, *, loss_fn, batch_size,
              batch_sharding=None):
    k_batch, k_loss = jax.random.split(key)
    n = leading_size(data)
    if (batch_size is None or n <= batch_size) and cdf is None:
        batch = data
    else:
        idx = _shard(batch_indices(k_batch, step, batch_size, n, cdf), batch_sharding)
        batch = gather(data, idx)
    batch = _shard(batch, batch_sharding)
    return loss_fn(eqx.combine(params, static), batch, jax.random.fold_in(k_loss, step))
