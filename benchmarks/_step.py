"""The potential training step the timing benchmarks share: `fit_potential`'s step on the
paper's 4×512 tanh `NeuralPotential`, and the matrix products of its matmul floor."""

import equinox as eqx
import jax
import jax.numpy as jnp

import deeppot as dp

WIDTH, DEPTH = 512, 4
ROWS = 5  # value, three Jacobian rows and the Laplacian go through every hidden layer


def scores(key, n):
    """`n` random score points (unit-normal positions and velocities)."""
    k = jax.random.split(key, 5)
    return dp.ScoreSample(
        jax.random.normal(k[0], (n, 3)),
        jax.random.normal(k[1], (n, 3)),
        1e-1 * jax.random.normal(k[2], (n, 3)),
        1e-1 * jax.random.normal(k[3], (n, 3)),
        jax.random.normal(k[4], (n,)),
    )


def fit_potential_step(model, data, batch_size, loss=None):
    """The step `fit_potential(model, data, loss)` runs, with its initial arguments."""
    step, tx = dp.train.make_train_step(dp.train.potential_loss_fn(loss), batch_size=batch_size)
    params, static = eqx.partition(model, eqx.is_inexact_array)
    args = (params, static, tx.init(params), None, data, jnp.asarray(0, jnp.int32),
            jnp.asarray(1e-3, jnp.float32), (jax.random.key(1), jax.random.key(2)))
    return step, args


def step_flops(batch):
    """Matmul FLOPs of the forward-Laplacian step: 5 row-sets through each layer, forward,
    input gradient and weight gradient (3 products); the first layer has 3 inputs."""
    hidden = (DEPTH - 1) * 2 * ROWS * batch * WIDTH * WIDTH
    first = 2 * ROWS * batch * 3 * WIDTH
    return 3 * (hidden + first)


def matmul_floor_fns(batch):
    """The forward (and input-gradient) and weight-gradient products of one hidden layer."""
    a = jax.random.normal(jax.random.key(3), (ROWS * batch, WIDTH))
    w = jax.random.normal(jax.random.key(4), (WIDTH, WIDTH))
    forward = jax.jit(lambda a, w: a @ w.T)
    weight_grad = jax.jit(lambda a, b: a.T @ b)
    return {"matmul_fwd": (forward, (a, w)), "matmul_wgrad": (weight_grad, (a, a))}
