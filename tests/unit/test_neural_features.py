"""Input features of the neural potentials: every feature path is exact (Φ, ∇Φ, ∇²Φ equal
plain autodiff in float64) for several network sizes, including close to a cusp."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import deeppot as dp
from deeppot.potentials import FEATURES
from tests.models import autodiff_reference

AXIS = jnp.array([0.3, -0.2, 1.0])

# every feature appears in each class that accepts it, alone and combined
BUILDERS = {
    "neural_x_r": lambda k, w, d: dp.NeuralPotential(
        key=k, width=w, depth=d, input_scale=2.0, features=("x", "r")),
    "neural_x_log_r": lambda k, w, d: dp.NeuralPotential(
        key=k, width=w, depth=d, input_scale=0.5, features=("x", "log_r")),
    "neural_all": lambda k, w, d: dp.NeuralPotential(
        key=k, width=w, depth=d, input_scale=1.5, features=("log_r", "x", "r2", "r")),
    "spherical_r": lambda k, w, d: dp.Spherical.mlp(
        key=k, width=w, depth=d, input_scale=2.0, features=("r",)),
    "spherical_log_r": lambda k, w, d: dp.Spherical.mlp(
        key=k, width=w, depth=d, features=("log_r",)),
    "spherical_all": lambda k, w, d: dp.Spherical.mlp(
        key=k, width=w, depth=d, input_scale=0.7, features=("r2", "r", "log_r")),
    "axisymmetric_r": lambda k, w, d: dp.Axisymmetric.mlp(
        key=k, width=w, depth=d, features=("R2z", "r")),
    "axisymmetric_tilted_all": lambda k, w, d: dp.Axisymmetric.mlp(
        key=k, width=w, depth=d, axis=AXIS, input_scale=1.3, features=("R2z", "r2", "log_r", "r")),
}


def _points():
    rng = np.random.default_rng(11)
    direction = rng.normal(size=(24, 3))
    direction /= np.linalg.norm(direction, axis=-1, keepdims=True)
    radius = np.geomspace(1e-4, 30.0, 24)  # from deep in a cusp to far out
    return jnp.asarray(direction * radius[:, None])


@pytest.mark.parametrize("size", [(8, 1), (16, 3)], ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_feature_paths_equal_autodiff(name, size, x64):
    width, depth = size
    pot = BUILDERS[name](jax.random.key(width + depth), width, depth)
    x = _points()
    phi, grad, hess = autodiff_reference(pot, x)
    v, g, lap = dp.value_grad_laplacian(pot, x)
    np.testing.assert_allclose(v, phi, rtol=1e-13, atol=1e-14)
    # round-off is relative to each point's largest entry (∇²Φ sums Hessian entries)
    _assert_close(g, grad, 1e-10, 1e-12 * np.abs(grad).max(-1, keepdims=True))
    trace = jnp.trace(hess, axis1=-2, axis2=-1)
    _assert_close(lap, trace, 1e-9, 1e-11 * np.abs(hess).max((-2, -1)))


def _assert_close(actual, desired, rtol, atol):
    actual, desired = np.asarray(actual), np.asarray(desired)
    bad = np.abs(actual - desired) > rtol * np.abs(desired) + atol
    assert not bad.any(), (actual[bad], desired[bad])


def test_features_finite_at_the_centre(x64):
    """Radial features are softened at 1e-6 input scales: no NaN at r = 0."""
    x = jnp.zeros((1, 3))
    for name, build in BUILDERS.items():
        phi, grad, lap = dp.value_grad_laplacian(build(jax.random.key(0), 8, 2), x)
        assert bool(jnp.isfinite(phi).all() & jnp.isfinite(grad).all()
                    & jnp.isfinite(lap).all()), name


def test_r_feature_represents_a_cusp_exactly(x64):
    """With "r" a one-neuron network can be Φ₀ + c r near the centre, the Hernquist cusp:
    its force tends to a constant, which a network of x alone cannot produce."""
    pot = dp.Spherical.mlp(key=jax.random.key(0), width=1, depth=1, features=("r",))
    net = pot.net
    net = eqx.tree_at(lambda n: (n.weights[0], n.weights[1]), net,
                      (jnp.array([[1e-3]]), jnp.array([[1e3]])))
    pot = eqx.tree_at(lambda p: p.net, pot, net)
    x = jnp.array([[1e-3, 0.0, 0.0], [0.0, 2e-3, 0.0], [0.0, 0.0, 1e-2]])
    grad = pot.gradient(x)
    np.testing.assert_allclose(np.linalg.norm(grad, axis=-1), 1.0, rtol=1e-4)


def test_feature_validation():
    key = jax.random.key(0)
    assert set(FEATURES) == {"x", "R2z", "r2", "r", "log_r"}
    with pytest.raises(ValueError, match="must include 'x'"):
        dp.NeuralPotential(key=key, width=4, depth=1, features=("r", "log_r"))
    with pytest.raises(ValueError, match="distinct names"):
        dp.NeuralPotential(key=key, width=4, depth=1, features=("x", "x"))
    with pytest.raises(ValueError, match="distinct names"):
        dp.NeuralPotential(key=key, width=4, depth=1, features=("x", "R2z"))
    with pytest.raises(ValueError, match="distinct names"):
        dp.Spherical.mlp(key=key, width=4, depth=1, features=("x",))
    with pytest.raises(ValueError, match="must include 'R2z'"):
        dp.Axisymmetric.mlp(key=key, width=4, depth=1, features=("log_r",))
    with pytest.raises(ValueError, match="needs a network of 3 inputs"):
        dp.Spherical(dp.potentials.TanhMLP(1, 4, 1, key=key), features=("r2", "r", "log_r"))
    with pytest.raises(ValueError, match="needs a network of 2 inputs"):
        dp.Axisymmetric(dp.potentials.TanhMLP(1, 4, 1, key=key))
    nn = dp.NeuralPotential(key=key, width=4, depth=1, features=("x", "log_r"))
    assert nn.net.weights[0].shape == (4, 4)
    # features are static: never a leaf, so never trained or serialised as data
    assert not any(isinstance(leaf, str) for leaf in jax.tree.leaves(nn))
