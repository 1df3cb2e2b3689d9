"""The batched forward Laplacian and its hand-derived backward pass equal plain autodiff."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import deeppot as dp
from deeppot.potentials import mlp_forward_laplacian
from tests.models import NEURAL, build

ACTIVATIONS = {"tanh": jnp.tanh, "silu": jax.nn.silu, "sin": jnp.sin}


def _mlp(key, k, width, depth):
    sizes = [k] + [width] * depth + [1]
    keys = jax.random.split(key, 2 * len(sizes))
    weights = [
        jax.random.normal(keys[2 * i], (o, n)) / np.sqrt(n) * 1.3
        for i, (n, o) in enumerate(zip(sizes[:-1], sizes[1:]))
    ]
    biases = [
        0.3 * jax.random.normal(keys[2 * i + 1], (o,)) for i, o in enumerate(sizes[1:])
    ]
    return weights, biases


def _reference(weights, biases, u, Ju, Lu, activation):
    """Φ, ∇Φ, ∇²Φ by the chain rule through the network's autodiff gradient and Hessian:
    ∇Φ = Ju ∇f, ∇²Φ = Σ_a Ju[a]ᵀ H Ju[a] + ∇f · Lu (exact for any features)."""

    def f(v):
        h = v
        for W, b in zip(weights[:-1], biases[:-1]):
            h = activation(W @ h + b)
        return (weights[-1] @ h + biases[-1])[0]

    def one(u1, J1, L1):
        g = jax.grad(f)(u1)
        H = jax.hessian(f)(u1)
        return f(u1), J1 @ g, jnp.einsum("ai,ij,aj->", J1, H, J1) + g @ L1

    return jax.vmap(one)(u, Ju, Lu)


SHAPES = [(3, 3, 16, 1), (2, 3, 7, 2), (1, 3, 9, 3), (3, 2, 5, 4)]  # (k, d, width, depth)
CASES = [("tanh", *shape) for shape in SHAPES] + [("silu", *SHAPES[1]), ("sin", *SHAPES[2])]


@pytest.mark.parametrize(("activation", "k", "d", "width", "depth"), CASES)
def test_values_and_all_vjps_equal_autodiff_float64(activation, k, d, width, depth, x64):
    act = ACTIVATIONS[activation]
    keys = jax.random.split(jax.random.key(width * 10 + depth), 5)
    weights, biases = _mlp(keys[0], k, width, depth)
    n = 6
    u = jax.random.normal(keys[1], (n, k))
    Ju = jax.random.normal(keys[2], (n, d, k))
    Lu = jax.random.normal(keys[3], (n, k))
    args = (weights, biases, u, Ju, Lu)
    ck = jax.random.split(keys[4], 3)
    cot = (jax.random.normal(ck[0], (n,)), jax.random.normal(ck[1], (n, d)),
           jax.random.normal(ck[2], (n,)))

    @jax.jit
    def values_and_vjps(args, cot):
        fast, fast_vjp = jax.vjp(lambda *a: mlp_forward_laplacian(*a, activation=act), *args)
        ref, ref_vjp = jax.vjp(lambda *a: _reference(*a, act), *args)
        return fast, ref, fast_vjp(cot), ref_vjp(cot)

    fast, ref, fast_bar, ref_bar = values_and_vjps(args, cot)
    for a, b in zip(fast, ref):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-12)
    for a, b in zip(jax.tree.leaves(fast_bar), jax.tree.leaves(ref_bar)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-11)


def test_per_point_and_batched_rules_agree_float32():
    net = dp.potentials.TanhMLP(3, 64, 3, key=jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (32, 3))
    eye = jnp.broadcast_to(jnp.eye(3), (32, 3, 3))
    zero = jnp.zeros((32, 3))
    batched = net.forward_laplacian_batch(x, eye, zero)
    per_point = jax.vmap(net.forward_laplacian)(x, eye, zero)
    for a, b in zip(batched, per_point):
        assert a.dtype == jnp.float32
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5)


def test_bad_shapes_raise():
    weights, biases = _mlp(jax.random.key(0), 3, 4, 2)
    u = jnp.zeros((5, 3))
    with pytest.raises(ValueError, match="features must have shapes"):
        mlp_forward_laplacian(weights, biases, u, jnp.zeros((5, 3, 2)), u)
    with pytest.raises(ValueError, match="output layer"):
        mlp_forward_laplacian(weights[:-1], biases[:-1], u, jnp.zeros((5, 3, 3)), u)


def _loss(fields, batch):
    """A loss using all three fields, like the training objective."""
    phi, grad, lap = fields
    residual = jnp.sum(grad * batch[1], -1) - jnp.sum(batch[0] * batch[2], -1)
    return jnp.mean(jnp.arcsinh(residual) ** 2) + jnp.mean(jnp.sin(lap)) + 0.1 * jnp.mean(phi**2)


@pytest.mark.parametrize("name", sorted(NEURAL))
def test_potential_fields_and_parameter_gradients_equal_hessian_autodiff(name, x64):
    """Every neural potential (free-form, spherical, axisymmetric with a learnable axis,
    composites): the batched forward Laplacian gives the Hessian-trace fields and the same
    gradient of a loss with respect to every parameter (weights, biases, axis)."""
    pot = build(name)
    keys = jax.random.split(jax.random.key(7), 3)
    x = jax.random.normal(keys[0], (10, 3)) + 0.2
    batch = (x, jax.random.normal(keys[1], (10, 3)), jax.random.normal(keys[2], (10, 3)))

    @eqx.filter_jit
    def fields_and_grads(p, method):
        def loss(p):
            return _loss(dp.value_grad_laplacian(p, batch[0], method=method), batch)

        return dp.value_grad_laplacian(p, x, method=method), eqx.filter_grad(loss)(p)

    fields, fast = fields_and_grads(pot, "forward")
    reference, slow = fields_and_grads(pot, "hessian")
    for a, b in zip(fields, reference):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-11)
    fast_leaves, slow_leaves = jax.tree.leaves(fast), jax.tree.leaves(slow)
    assert len(fast_leaves) == len(slow_leaves) > 0
    for a, b in zip(fast_leaves, slow_leaves):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11)


def test_position_gradient_through_fields_equals_autodiff(x64):
    """Cotangents also reach the positions (through the features' Jacobians)."""
    pot = build("axisymmetric_tilted")
    x = jax.random.normal(jax.random.key(3), (5, 3)) + 0.3

    def f(x, method):
        phi, grad, lap = dp.value_grad_laplacian(pot, x, method=method)
        return jnp.sum(phi) + jnp.sum(jnp.cos(grad)) + jnp.sum(lap**2)

    np.testing.assert_allclose(
        jax.grad(f)(x, "forward"), jax.grad(f)(x, "hessian"), rtol=1e-9, atol=1e-11
    )
