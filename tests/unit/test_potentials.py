"""Construction, validation and API behaviour of potentials."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import deeppot as dp
from tests.models import ALL, ANALYTIC

PARAMS = {
    dp.Plummer: ("m_tot", "r_s"),
    dp.MiyamotoNagai: ("m_tot", "a", "b"),
    dp.Hernquist: ("m_tot", "r_s"),
    dp.NFW: ("m_s", "r_s"),
    dp.Logarithmic: ("v_c", "r_c", "q"),
    dp.Isochrone: ("m_tot", "b"),
    dp.Kepler: ("m_tot",),
    dp.LongMuraliBar: ("m_tot", "a", "b", "c"),
    dp.PowerLawCutoff: ("m_tot", "alpha", "r_c"),
}


@pytest.mark.parametrize("cls", list(PARAMS), ids=lambda c: c.__name__)
def test_parameters_read_back_physical_values(cls, x64):
    values = {name: 0.5 + i for i, name in enumerate(PARAMS[cls])}
    pot = cls(**values)
    for name, value in values.items():
        np.testing.assert_allclose(getattr(pot, name), value, rtol=1e-15)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), [1.0, 2.0]])
@pytest.mark.parametrize("cls", list(PARAMS), ids=lambda c: c.__name__)
def test_bad_parameters_raise_naming_the_parameter(cls, bad):
    for name in PARAMS[cls]:
        with pytest.raises(ValueError, match=rf"'{name}'"):
            cls(**{name: bad})


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), [1.0, 2.0]])
def test_bar_angle_is_any_finite_number(bad, x64):
    pot = dp.LongMuraliBar(angle=-2.5)
    np.testing.assert_allclose(pot.angle, -2.5, rtol=1e-15)
    with pytest.raises(ValueError, match="'angle'"):
        dp.LongMuraliBar(angle=bad)


def test_bar_angle_rotates_the_bar(x64):
    """Φ of a bar at angle θ at x equals Φ of the bar at 0 at x rotated by −θ."""
    theta = 0.9
    c, s = np.cos(theta), np.sin(theta)
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    x = np.array([[0.7, -0.3, 0.2], [1.5, 0.4, -0.1], [-2.0, 1.0, 0.5]])
    tilted = dp.LongMuraliBar(0.5, 1.0, 0.2, 0.3, angle=theta)
    aligned = dp.LongMuraliBar(0.5, 1.0, 0.2, 0.3, angle=0.0)
    np.testing.assert_allclose(tilted.potential(x @ rot.T), aligned.potential(x), rtol=1e-13)
    np.testing.assert_allclose(tilted.gradient(x @ rot.T), aligned.gradient(x) @ rot.T,
                               rtol=1e-12, atol=1e-14)
    # The bar's long axis is at θ: the potential is deepest along it.
    r = 1.0
    along = tilted.potential(np.array([r * c, r * s, 0.0]))
    across = tilted.potential(np.array([-r * s, r * c, 0.0]))
    assert along < across


def test_bad_positions_raise():
    pot = dp.Plummer()
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 3\)"):
        pot.potential(jnp.ones((4, 2)))
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 3\)"):
        pot.gradient(jnp.float32(1.0))


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=() if n in ("plummer", "neural", "composite") else pytest.mark.slow)
    for n in sorted(ALL)
])
def test_verbs_broadcast_over_leading_axes(name):
    pot = ALL[name]()
    x = jax.random.normal(jax.random.key(0), (2, 5, 3)) + 0.5
    assert pot.potential(x).shape == (2, 5)
    assert pot.gradient(x).shape == (2, 5, 3)
    assert pot.acceleration(x).shape == (2, 5, 3)
    assert pot.hessian(x).shape == (2, 5, 3, 3)
    assert pot.laplacian(x).shape == (2, 5)
    assert pot.density(x).shape == (2, 5)
    assert pot.circular_velocity(x).shape == (2, 5)
    single = pot.gradient(x[1, 3])
    assert single.shape == (3,)
    np.testing.assert_allclose(single, pot.gradient(x)[1, 3], rtol=1e-5, atol=1e-7)
    phi, grad, lap = dp.value_grad_laplacian(pot, x)
    assert phi.shape == (2, 5) and grad.shape == (2, 5, 3) and lap.shape == (2, 5)


def test_circular_velocity_kepler_and_logarithmic(x64):
    r = jnp.array([0.5, 1.0, 4.0])
    x = jnp.stack([r, jnp.zeros(3), jnp.zeros(3)], axis=-1)
    np.testing.assert_allclose(dp.Kepler(2.0).circular_velocity(x), jnp.sqrt(2.0 / r), rtol=1e-14)
    # A logarithmic potential with a tiny core is flat: v_c(R) → v_c.
    flat = dp.Logarithmic(v_c=0.7, r_c=1e-6, q=0.8)
    np.testing.assert_allclose(flat.circular_velocity(x), 0.7, rtol=1e-10)


def test_composite_behaves_as_mapping():
    disk = dp.MiyamotoNagai(1.0, 1.0, 0.1)
    both = disk + dp.Plummer(0.2, 0.3) + dp.Plummer(0.1, 2.0)
    assert list(both) == ["miyamoto_nagai", "plummer", "plummer_1"]
    assert len(both) == 3 and "plummer" in both
    np.testing.assert_allclose(both["plummer_1"].r_s, 2.0, rtol=1e-6)
    named = dp.CompositePotential(disk=disk, halo=dp.NFW(1.0, 5.0))
    assert dict(named.items())["disk"] is disk
    merged = named + dp.Kepler(0.01)
    assert list(merged.keys()) == ["disk", "halo", "kepler"]
    assert list((dp.NFW() + dp.MiyamotoNagai()).keys()) == ["nfw", "miyamoto_nagai"]
    with pytest.raises(ValueError, match="share one unit system"):
        dp.Plummer() + dp.Plummer(G=4.3e-6)
    with pytest.raises(TypeError, match="not a potential"):
        dp.CompositePotential(disk=1.0)


def test_neural_input_scale_is_not_trainable():
    nn = dp.NeuralPotential(key=jax.random.key(0), width=8, depth=2, input_scale=3.0)
    params, static = eqx.partition(nn, eqx.is_inexact_array)
    assert params.input_scale is None and static.input_scale == 3.0
    with pytest.raises(ValueError, match="input_scale"):
        dp.NeuralPotential(key=jax.random.key(0), input_scale=0.0)


def test_axisymmetric_axis_validation():
    with pytest.raises(ValueError, match="'axis'"):
        dp.Axisymmetric.mlp(key=jax.random.key(0), width=4, depth=1, axis=jnp.zeros(3))
    with pytest.raises(ValueError, match="'axis'"):
        dp.Axisymmetric.mlp(key=jax.random.key(0), width=4, depth=1, axis=jnp.ones(2))


def test_analytic_fit_is_differentiable_in_log_parameters(x64):
    """Parameters live in log space, so gradients w.r.t. them are finite and correct."""
    pot = ANALYTIC["miyamoto_nagai"]()
    x = jnp.array([[1.0, 0.2, 0.1]])

    def f(p):
        return jnp.sum(p.potential(x))

    g = eqx.filter_grad(f)(pot)
    eps = 1e-6
    bumped = eqx.tree_at(lambda p: p.log_a, pot, pot.log_a + eps)
    fd = (f(bumped) - f(pot)) / eps
    np.testing.assert_allclose(g.log_a, fd, rtol=1e-4)
