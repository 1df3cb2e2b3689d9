"""Rotating systems: the Jacobi integral along orbits in a rotating bar, and the frame
algebra, parametrised over every kind of frame."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import deeppot as dp
from deeppot import mocks
from deeppot.orbits import integrate_orbits, jacobi_integral

# Every kind of frame, with motion (a function of the pattern speed Ω about z).
FRAMES = {
    "inertial": lambda om: dp.InertialFrame(),
    "moving": lambda om: dp.MovingFrame(u0=[0.1, -0.05, 0.02]),
    "rotating": lambda om: dp.RotatingFrame(omega=[0.0, 0.0, om]),
    "rotating_off_centre": lambda om: dp.RotatingFrame(omega=[0.0, 0.0, om],
                                                       center=[0.3, -0.2, 0.0]),
    "rotating_moving": lambda om: dp.RotatingFrame(omega=[0.0, 0.0, om], u0=[0.05, 0.1, 0.0]),
    "rotating_tilted": lambda om: dp.RotatingFrame(omega=[0.25 * om, 0.0, om]),
}


def _motion(frame):
    """(Ω, x0, u0) of any frame."""
    zero = jnp.zeros(3)
    return (getattr(frame, "omega", zero), getattr(frame, "center", zero),
            getattr(frame, "u0", zero))


def _still(frame):
    """The same kind of frame with no motion (Ω = 0, u0 = 0; any centre)."""
    if isinstance(frame, dp.RotatingFrame):
        return dp.RotatingFrame(omega=jnp.zeros(3), center=frame.center, u0=jnp.zeros(3))
    if isinstance(frame, dp.MovingFrame):
        return dp.MovingFrame(u0=jnp.zeros(3))
    return frame


def _triaxial(x):
    return 0.5 * jnp.log(0.3**2 + x[0] ** 2 + x[1] ** 2 / 0.8**2 + x[2] ** 2 / 0.6**2)


def _frame_energy(phi, frame):
    """The energy conserved in `frame` for a potential static in it:
    E_F = ½|v − u0|² − Ω · ((x − x0) × (v − u0)) + Φ(x)."""
    omega, x0, u0 = _motion(frame)

    def energy(x, v):
        w = v - u0
        return 0.5 * jnp.sum(w * w) - jnp.dot(omega, jnp.cross(x - x0, w)) + phi(x)

    return energy


def _points(n=128, seed=0):
    kx, kv = jax.random.split(jax.random.key(seed))
    return jax.random.normal(kx, (n, 3)) * jnp.array([1.0, 1.0, 0.3]), \
        0.5 * jax.random.normal(kv, (n, 3))


def _relative_residual(frame, phi, ln_f, x, v):
    dx, dv = jax.vmap(jax.grad(ln_f, argnums=(0, 1)))(x, v)
    grad = jax.vmap(jax.grad(phi))(x)
    acc = grad + frame.fictitious_acceleration(x, v)
    size = jnp.abs(jnp.sum(acc * dv, -1)) + jnp.abs(jnp.sum(frame.relative_velocity(x, v)
                                                            * dx, -1))
    return jnp.abs(frame.residual(grad, x, v, dx, dv)) / size


@pytest.mark.parametrize("name", sorted(FRAMES))
@given(x=arrays(np.float64, (6, 3), elements=st.floats(-2, 2)),
       v=arrays(np.float64, (6, 3), elements=st.floats(-2, 2)),
       g=arrays(np.float64, (6, 3), elements=st.floats(-2, 2)),
       sx=arrays(np.float64, (6, 3), elements=st.floats(-2, 2)),
       sv=arrays(np.float64, (6, 3), elements=st.floats(-2, 2)))
def test_a_frame_without_motion_is_the_inertial_frame(name, x, v, g, sx, sv, x64):
    still = _still(FRAMES[name](0.4))
    np.testing.assert_allclose(still.residual(g, x, v, sx, sv),
                               dp.InertialFrame().residual(g, x, v, sx, sv), rtol=1e-12,
                               atol=1e-12)


@pytest.mark.parametrize("name", sorted(FRAMES))
@pytest.mark.parametrize("omega", [0.3, -0.7])
def test_each_frames_own_energy_is_stationary_there_only(name, omega, x64):
    """g(E_F) with E_F the frame's conserved energy, in a triaxial potential static in the
    frame: stationary (to round-off, ≤ 1e-10 relative) in that frame and in no other kind
    of frame."""
    frame = FRAMES[name](omega)
    energy = _frame_energy(_triaxial, frame)

    def ln_f(x, v):
        return -energy(x, v) / 0.4 + 0.3 * jnp.tanh(energy(x, v))

    x, v = _points()
    assert float(jnp.max(_relative_residual(frame, _triaxial, ln_f, x, v))) < 1e-10
    for other in sorted(FRAMES):
        if other != name:
            rel = _relative_residual(FRAMES[other](omega), _triaxial, ln_f, x, v)
            assert float(jnp.median(rel)) > 1e-4, other


AXISYMMETRIC_SYMMETRIES = {"inertial": True, "rotating": True, "moving": False,
                           "rotating_off_centre": False, "rotating_moving": False,
                           "rotating_tilted": False}


@pytest.mark.parametrize("name", sorted(FRAMES))
@pytest.mark.parametrize("omega", [0.3, -1.1])
def test_rotation_about_z_leaves_an_axisymmetric_df_stationary(name, omega, x64):
    """f(E, L_z) in a Miyamoto–Nagai disk is stationary in every frame rotating about the
    symmetry axis (Ω about z cannot be identified) and in no frame that moves otherwise."""
    pot = dp.MiyamotoNagai(1.0, 1.0, 0.2)

    def ln_f(x, v):
        energy = 0.5 * jnp.sum(v * v) + pot._potential(x)
        return -energy / 0.3 + jnp.tanh(x[0] * v[1] - x[1] * v[0])

    x, v = _points(seed=1)
    rel = _relative_residual(FRAMES[name](omega), pot._potential, ln_f, x, v)
    if AXISYMMETRIC_SYMMETRIES[name]:
        assert float(jnp.max(rel)) < 1e-10
    else:
        assert float(jnp.median(rel)) > 1e-4


@settings(max_examples=6)
@given(omega=st.floats(0.2, 1.0) | st.floats(-1.0, -0.2), angle=st.floats(-np.pi, np.pi),
       seed=st.integers(0, 2**16))
@example(omega=0.9375, angle=1.875, seed=0)  # close passages through the centre
@example(omega=-1.0, angle=0.0, seed=0)
def test_jacobi_integral_is_conserved_along_orbits_in_a_rotating_bar(omega, angle, seed):
    """The mock's stationarity rests on this: in the bar's frame the Jacobi integral is the
    Hamiltonian, conserved by the symplectic integrator to its accuracy at every speed and
    orientation of the bar (to 1e-6 over 10 time units at dt = 0.01; at dt = 0.02 close
    passages through the bar's centre reach ~7e-6, and Yoshida-6's error falls as dt⁶)."""
    with jax.enable_x64(True):
        pot = mocks.barred_potential(bar_angle=angle)
    rng = np.random.default_rng(seed)
    x0 = rng.normal(size=(8, 3)) * [0.8, 0.8, 0.1]
    v0 = rng.normal(size=(8, 3)) * 0.3
    x1, v1 = integrate_orbits(pot, x0, v0, 0.01, 1000, pattern_speed=omega)
    e0 = jacobi_integral(pot, x0, v0, omega)
    np.testing.assert_allclose(jacobi_integral(pot, x1, v1, omega), e0, rtol=1e-6)
