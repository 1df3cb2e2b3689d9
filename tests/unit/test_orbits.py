"""Symplectic orbit integration: exactness checks, per-particle steps, galpy agreement."""

import math
import warnings

import jax
import numpy as np
import pytest

import deeppot as dp
from deeppot import mocks
from deeppot.orbits import (
    LEAPFROG,
    YOSHIDA6,
    integrate_orbits,
    jacobi_integral,
    steps_for_duration,
)


def test_coefficients_are_consistent():
    for drifts, kicks in (LEAPFROG, YOSHIDA6):
        assert math.isclose(sum(drifts), 1.0, abs_tol=1e-14)
        assert math.isclose(sum(kicks), 1.0, abs_tol=1e-14)
    drifts, kicks = YOSHIDA6
    # each drift is the mean of its neighbouring kicks (a composition of leapfrogs)
    padded = (0.0, *kicks, 0.0)
    for i, c in enumerate(drifts):
        assert math.isclose(c, 0.5 * (padded[i] + padded[i + 1]), abs_tol=1e-14)
    # 6th-order conditions on the leapfrog weights: odd powers 3 and 5 cancel
    assert abs(sum(w**3 for w in kicks)) < 1e-13
    assert abs(sum(w**5 for w in kicks)) < 1e-13


@pytest.mark.parametrize(("method", "order"), [("yoshida6", 6), ("leapfrog", 2)])
def test_kepler_circular_orbit_convergence_order(method, order):
    """After one period a circular Kepler orbit returns; the error falls as dt^order."""
    with jax.enable_x64(True):
        pot = dp.Kepler(1.0)
    x0 = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    v0 = np.array([[0.0, 1.0, 0.0], [-np.sqrt(0.5), 0.0, 0.0]])
    period = 2 * np.pi * np.array([1.0, 2.0**1.5])
    errors = []
    for n in (32, 64):
        x1, _ = integrate_orbits(pot, x0, v0, period / n, n, method=method)
        errors.append(np.abs(x1 - x0).max())
    assert errors[1] < (2e-6 if order == 6 else 0.1)
    assert order - 0.5 < np.log2(errors[0] / errors[1]) < order + 0.7


def test_per_particle_steps_match_separate_runs_and_reverse():
    with jax.enable_x64(True):
        pot = dp.MiyamotoNagai(1.0, 1.0, 0.1)
    rng = np.random.default_rng(0)
    n = 10
    x0 = np.c_[rng.uniform(0.5, 2, n), np.zeros(n), rng.normal(0, 0.1, n)]
    v0 = np.c_[rng.normal(0, 0.03, n), rng.uniform(0.4, 0.5, n), rng.normal(0, 0.03, n)]
    dt = rng.uniform(0.01, 0.05, n)
    n_steps = rng.integers(0, 60, n)
    n_steps[0] = 0
    kw = {"method": "leapfrog"}  # cheap to compile; the masking is scheme-independent
    x1, v1 = integrate_orbits(pot, x0, v0, dt, n_steps, batch_size=4, **kw)
    np.testing.assert_array_equal(x1[0], x0[0])
    for i in (1, 5, 9):
        xi, vi = integrate_orbits(pot, x0[i : i + 1], v0[i : i + 1], dt[i], n_steps[i], **kw)
        np.testing.assert_allclose(x1[i], xi[0], rtol=0, atol=1e-13)
        np.testing.assert_allclose(v1[i], vi[0], rtol=0, atol=1e-13)
    # progress/blocks give the same answer; time reversal returns to the start
    done = []
    x2, v2 = integrate_orbits(
        pot, x0, v0, dt, n_steps, batch_size=2, block_size=4, callback=done.append, **kw
    )
    assert done == [4, 8, 10]
    x3, _ = integrate_orbits(pot, x0, v0, dt, n_steps, batch_size=2, block_size=4, workers=2, **kw)
    np.testing.assert_array_equal(x3, x2)
    np.testing.assert_allclose(x2, x1, atol=1e-13)
    xb, vb = integrate_orbits(pot, x1, v1, -dt, n_steps, batch_size=4, **kw)
    np.testing.assert_allclose(xb, x0, atol=1e-11)
    np.testing.assert_allclose(vb, v0, atol=1e-11)


def test_steps_for_duration():
    dt, n = steps_for_duration(np.array([1.0, 1.0, 0.0, 0.3]), np.array([0.1, 0.3, 0.1, 0.1]))
    np.testing.assert_array_equal(n, [10, 4, 0, 3])
    np.testing.assert_allclose(dt * n, [1.0, 1.0, 0.0, 0.3])
    assert np.all(dt <= [0.1, 0.3, 0.1, 0.1])
    with pytest.raises(ValueError, match="max_dt"):
        steps_for_duration(1.0, 0.0)


def test_bad_inputs():
    pot = dp.Kepler(1.0)
    with pytest.raises(ValueError, match="method"):
        integrate_orbits(pot, np.ones((1, 3)), np.ones((1, 3)), 0.1, 1, method="rk4")
    with pytest.raises(ValueError, match=r"shape \(n, 3\)"):
        integrate_orbits(pot, np.ones((2, 3)), np.ones((1, 3)), 0.1, 1)
    with pytest.raises(ValueError, match="non-negative"):
        integrate_orbits(pot, np.ones((1, 3)), np.ones((1, 3)), 0.1, -1)
    with pytest.raises(ValueError, match="integers"):
        integrate_orbits(pot, np.ones((1, 3)), np.ones((1, 3)), 0.1, 1.5)
    with pytest.raises(ValueError, match="pattern_speed"):
        integrate_orbits(pot, np.ones((1, 3)), np.ones((1, 3)), 0.1, 1, pattern_speed=np.nan)


def test_energy_conservation_at_the_papers_step():
    """≥ 99.9% of disk stars keep |ΔE/E| < 1e-4 at the paper's step; all at half of it."""
    pot, x0, v0, dt, n_steps, _ = mocks.disk_initial_conditions(jax.random.key(0), 1024, n_dyn=2)

    def energy(x, v):
        with jax.enable_x64(True):
            return 0.5 * np.sum(v**2, axis=1) + np.asarray(pot.potential(x))

    e0 = energy(x0, v0)
    x1, v1 = integrate_orbits(pot, x0, v0, dt, n_steps, batch_size=1024)
    err = np.abs(energy(x1, v1) / e0 - 1)
    assert np.mean(err < 1e-4) >= 0.999
    x2, v2 = integrate_orbits(pot, x0, v0, dt / 2, 2 * n_steps, batch_size=1024)
    assert np.all(np.abs(energy(x2, v2) / e0 - 1) < 1e-4)


def test_agrees_with_galpy_symplec6():
    pytest.importorskip("galpy")
    from galpy.orbit import Orbit
    from galpy.potential import MiyamotoNagaiPotential
    from galpy.util import galpyWarningVerbose

    with jax.enable_x64(True):
        pot = dp.MiyamotoNagai(1.0, 1.0, 0.1)
    gpot = MiyamotoNagaiPotential(amp=1.0, a=1.0, b=0.1)
    x0 = np.array([[1.0, 0.0, 0.05], [0.6, 0.0, -0.1], [2.0, 0.0, 0.02]])
    v0 = np.array([[0.03, 0.55, 0.02], [-0.02, 0.45, 0.05], [0.01, 0.48, -0.03]])
    dt, n = 0.02, 1500
    x1, v1 = integrate_orbits(pot, x0, v0, dt, n)
    t = np.arange(n + 1) * dt  # output every step, so galpy takes exactly the step dt
    for i in range(len(x0)):
        o = Orbit([x0[i, 0], v0[i, 0], v0[i, 1], x0[i, 2], v0[i, 2], 0.0])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", galpyWarningVerbose)  # "Using C implementation"
            o.integrate(t, gpot, method="symplec6_c", dt=dt, progressbar=False)
        kw = {"use_physical": False}
        ref = [getattr(o, c)(t[-1], **kw) for c in ("x", "y", "z", "vx", "vy", "vz")]
        np.testing.assert_allclose(np.r_[x1[i], v1[i]], ref, rtol=0, atol=1e-9)


def _barred():
    with jax.enable_x64(True):
        return dp.MiyamotoNagai(1.0, 1.0, 0.2) + dp.LongMuraliBar(0.3, 1.0, 0.3, 0.2, angle=0.4)


def _rotation_z(angle):
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


@pytest.mark.parametrize(("method", "order"), [("yoshida6", 6), ("leapfrog", 2)])
def test_rotating_frame_jacobi_error_converges_at_the_scheme_order(method, order):
    """In a rotating bar the Jacobi integral is the Hamiltonian: its error is bounded and
    falls as dt^order (the free flow in the rotating frame is exact)."""
    pot, omega = _barred(), 0.45
    rng = np.random.default_rng(1)
    x0 = np.c_[rng.uniform(0.3, 1.5, 8), rng.uniform(-0.5, 0.5, 8), rng.normal(0, 0.1, 8)]
    v0 = np.c_[rng.normal(0, 0.1, 8), rng.uniform(0.3, 0.7, 8), rng.normal(0, 0.05, 8)]
    e0 = jacobi_integral(pot, x0, v0, omega)
    errors = []
    for dt in (0.04, 0.02):
        x1, v1 = integrate_orbits(pot, x0, v0, dt, int(round(40 / dt)), method=method,
                                  pattern_speed=omega)
        errors.append(np.max(np.abs(jacobi_integral(pot, x1, v1, omega) / e0 - 1)))
    assert errors[1] < (1e-9 if order == 6 else 1e-4)
    assert order - 1 < np.log2(errors[0] / errors[1]) < order + 1


def test_rotating_frame_of_an_axisymmetric_potential_is_the_rotated_inertial_orbit():
    """Kicks by an axisymmetric potential commute with rotations, so integrating in a
    frame rotating at Ω is the inertial integration rotated by −Ωt, to round-off."""
    with jax.enable_x64(True):
        pot = dp.MiyamotoNagai(1.0, 1.0, 0.2)
    rng = np.random.default_rng(2)
    x0 = rng.normal(size=(6, 3)) * [1, 1, 0.2]
    v0 = rng.normal(size=(6, 3)) * 0.3
    dt, n, omega = 0.02, 700, -0.6
    xi, vi = integrate_orbits(pot, x0, v0, dt, n, method="leapfrog")
    xr, vr = integrate_orbits(pot, x0, v0, dt, n, method="leapfrog", pattern_speed=omega)
    rot = _rotation_z(-omega * dt * n)
    np.testing.assert_allclose(xr, xi @ rot.T, rtol=0, atol=1e-11)
    np.testing.assert_allclose(vr, vi @ rot.T, rtol=0, atol=1e-11)
    # Ω = 0 is the inertial integration, bit for bit
    x0_, v0_ = integrate_orbits(pot, x0, v0, dt, n, method="leapfrog", pattern_speed=0.0)
    np.testing.assert_array_equal(x0_, xi)


def test_rotating_bar_agrees_with_galpy():
    """A rotating needle bar integrated in its own frame matches galpy's inertial orbits
    in the time-dependent bar (SoftenedNeedleBarPotential with omegab), rotated back."""
    pytest.importorskip("galpy")
    from galpy.orbit import Orbit
    from galpy.potential import MiyamotoNagaiPotential, SoftenedNeedleBarPotential
    from galpy.util import galpyWarningVerbose

    pot, omega = _barred(), 0.45
    gpot = [MiyamotoNagaiPotential(amp=1.0, a=1.0, b=0.2),
            SoftenedNeedleBarPotential(amp=0.3, a=1.0, b=0.3, c=0.2, pa=0.4, omegab=omega)]
    x0 = np.array([[0.8, 0.0, 0.05], [0.0, 1.3, -0.1], [-0.5, 0.4, 0.02]])
    v0 = np.array([[0.05, 0.55, 0.02], [-0.5, 0.05, 0.05], [-0.3, -0.4, -0.03]])
    dt, n = 0.01, 2000
    x1, v1 = integrate_orbits(pot, x0, v0, dt, n, pattern_speed=omega)
    rot = _rotation_z(omega * dt * n)  # rotating axes → inertial axes at the end
    x1, v1 = x1 @ rot.T, v1 @ rot.T
    t = np.linspace(0, dt * n, 11)
    for i in range(len(x0)):
        R, phi = np.hypot(x0[i, 0], x0[i, 1]), np.arctan2(x0[i, 1], x0[i, 0])
        vR = (x0[i, 0] * v0[i, 0] + x0[i, 1] * v0[i, 1]) / R
        vT = (x0[i, 0] * v0[i, 1] - x0[i, 1] * v0[i, 0]) / R
        o = Orbit([R, vR, vT, x0[i, 2], v0[i, 2], phi])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", galpyWarningVerbose)
            o.integrate(t, gpot, method="dop853_c", progressbar=False)
        kw = {"use_physical": False}
        ref = [getattr(o, c)(t[-1], **kw) for c in ("x", "y", "z", "vx", "vy", "vz")]
        np.testing.assert_allclose(np.r_[x1[i], v1[i]], ref, rtol=0, atol=1e-7)
