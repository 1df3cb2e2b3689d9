"""Frame algebra and the exact stationarity checks of DESIGN.md."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import deeppot as dp

vec = arrays(np.float64, 3, elements=st.floats(-2.0, 2.0, width=64))
batch = arrays(np.float64, (6, 3), elements=st.floats(-2.0, 2.0, width=64))


@given(x=batch, v=batch, g=batch, sx=batch, sv=batch, center=vec, u0=vec)
def test_zero_rotation_equals_inertial_and_moving(x, v, g, sx, sv, center, u0, x64):
    inertial = dp.InertialFrame().residual(g, x, v, sx, sv)
    still = dp.RotatingFrame(omega=jnp.zeros(3), center=center, u0=jnp.zeros(3))
    np.testing.assert_allclose(still.residual(g, x, v, sx, sv), inertial, rtol=1e-14)
    moving = dp.MovingFrame(u0).residual(g, x, v, sx, sv)
    rot = dp.RotatingFrame(omega=jnp.zeros(3), center=center, u0=u0)
    np.testing.assert_allclose(rot.residual(g, x, v, sx, sv), moving, rtol=1e-12, atol=1e-12)
    # Galilean shift: a moving frame is the inertial frame at the relative velocity.
    np.testing.assert_allclose(
        moving, dp.InertialFrame().residual(g, x, v - u0, sx, sv), rtol=1e-12, atol=1e-12
    )


@given(x=batch, v=batch, g=batch, sx=batch, sv=batch, omega=vec, center=vec, u0=vec,
       c=st.floats(-3.0, 3.0))
def test_residual_is_linear_in_scores(x, v, g, sx, sv, omega, center, u0, c, x64):
    frame = dp.RotatingFrame(omega=omega, center=center, u0=u0)
    r1 = frame.residual(g, x, v, sx, sv)
    np.testing.assert_allclose(frame.residual(g, x, v, c * sx, c * sv), c * r1, atol=1e-10)
    # Explicit formula, written out component by component.
    w = v - u0
    expected = np.sum((g + np.cross(omega, w)) * sv, -1) - np.sum(
        (w - np.cross(omega, x - center)) * sx, -1
    )
    np.testing.assert_allclose(r1, expected, rtol=1e-12, atol=1e-12)


def _triaxial_log(x):
    return 0.5 * jnp.log(0.3**2 + x[0] ** 2 + x[1] ** 2 / 0.8**2 + x[2] ** 2 / 0.6**2)


def _scores(ln_f, x, v):
    return jax.vmap(jax.grad(ln_f, argnums=(0, 1)))(x, v)


def _phase_points(n=256, seed=0):
    kx, kv = jax.random.split(jax.random.key(seed))
    return jax.random.normal(kx, (n, 3)), 0.7 * jax.random.normal(kv, (n, 3))


@pytest.mark.parametrize("omega_z", [0.1, 0.35])
def test_jacobi_df_is_stationary_only_at_the_true_pattern_speed(omega_z, x64):
    """f = g(E_J) in a triaxial potential: residual ~1e-16 at the true Ω only."""
    omega = jnp.array([0.0, 0.0, omega_z])
    sigma2 = 0.4

    def ln_f(x, v):
        e_j = 0.5 * jnp.sum(v * v) + _triaxial_log(x) - jnp.dot(omega, jnp.cross(x, v))
        return -e_j / sigma2

    x, v = _phase_points()
    dx, dv = _scores(ln_f, x, v)
    grad_phi = jax.vmap(jax.grad(_triaxial_log))(x)
    scale = jnp.sum(jnp.abs(grad_phi * dv), -1) + jnp.sum(jnp.abs(v * dx), -1)
    right = dp.RotatingFrame(omega=omega).residual(grad_phi, x, v, dx, dv)
    assert float(jnp.max(jnp.abs(right) / scale)) < 1e-14
    for wrong in (0.0, omega_z + 0.05, -omega_z):
        frame = dp.RotatingFrame(omega=jnp.array([0.0, 0.0, wrong]))
        res = frame.residual(grad_phi, x, v, dx, dv)
        assert float(jnp.median(jnp.abs(res) / scale)) > 1e-3


@pytest.mark.parametrize("omega_z", [0.0, 0.3, -1.2])
def test_axisymmetric_df_is_stationary_in_every_frame_about_z(omega_z, x64):
    """f = exp(−E/σ²) exp(tanh L_z) in a Miyamoto–Nagai disk: Ω about z is unidentifiable."""
    pot = dp.MiyamotoNagai(1.0, 1.0, 0.1)

    def ln_f(x, v):
        energy = 0.5 * jnp.sum(v * v) + pot._potential(x)
        return -energy / 0.3 + jnp.tanh(x[0] * v[1] - x[1] * v[0])

    x, v = _phase_points(seed=1)
    dx, dv = _scores(ln_f, x, v)
    grad_phi = pot.gradient(x)
    scale = jnp.sum(jnp.abs(grad_phi * dv), -1) + jnp.sum(jnp.abs(v * dx), -1)
    frame = dp.RotatingFrame(omega=jnp.array([0.0, 0.0, omega_z]))
    res = frame.residual(grad_phi, x, v, dx, dv)
    assert float(jnp.max(jnp.abs(res) / scale)) < 1e-14
    # ...but a rotation about another axis breaks it.
    tilted = dp.RotatingFrame(omega=jnp.array([0.3, 0.0, omega_z]))
    res = tilted.residual(grad_phi, x, v, dx, dv)
    assert float(jnp.median(jnp.abs(res) / scale)) > 1e-3


def test_frame_parameters_validate_and_train():
    with pytest.raises(ValueError, match="'omega'"):
        dp.RotatingFrame(omega=jnp.ones(2))
    with pytest.raises(ValueError, match="'u0'"):
        dp.MovingFrame(u0=[0.0, float("nan"), 0.0])
    import equinox as eqx

    frame = dp.RotatingFrame(omega=[0.0, 0.0, 0.2])
    params, _ = eqx.partition(frame, eqx.is_inexact_array)
    assert params.omega is not None and params.center is not None and params.u0 is not None
