"""Every analytic family at the numeric edges: radii from 1e-12 to 1e30, float32 and float64.

Φ, ∇Φ and ρ are finite over that whole range in both precisions (no family is infinite there:
Kepler's Φ = −GM/r and the cusps' ρ only diverge at r = 0 itself), and float32 agrees with
float64 wherever the float64 value is well inside float32's range.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import deeppot as dp
from tests.models import ANALYTIC, build

N = 16
log_radii = arrays(np.float64, (N,), elements=st.floats(-12.0, 30.0, width=64))
directions = arrays(np.float64, (N, 3), elements=st.floats(-1.0, 1.0, width=64)).filter(
    lambda d: np.all(np.linalg.norm(d, axis=-1) > 1e-3))
RTOL32 = 2e-5  # float32 rounding of Φ, ∇Φ, ρ (PowerLawCutoff's r^−α costs a few ulps)
LO, HI = 1e-30, 1e30  # comfortably inside float32's normal range


def test_every_analytic_family_is_checked():
    analytic = {name for name, cls in dp.registry.potentials.items()
                if cls.__module__ == dp.Plummer.__module__}
    assert analytic == set(ANALYTIC)


def _evaluate(name, x):
    pot = build(name)
    x = jnp.asarray(x, jnp.zeros(()).dtype)
    return [np.asarray(v, np.float64) for v in (pot.potential(x), pot.gradient(x),
                                                pot.laplacian(x))]


@pytest.mark.parametrize("name", sorted(ANALYTIC))
@given(log_r=log_radii, d=directions)
def test_float32_and_float64_are_finite_and_agree(name, log_r, d):
    x = (10.0**log_r / np.linalg.norm(d, axis=-1))[:, None] * d
    x = x.astype(np.float32).astype(np.float64)  # the same points in both precisions
    phi32, grad32, lap32 = _evaluate(name, x)
    with jax.enable_x64(True):
        phi, grad, lap = _evaluate(name, x)
    for value in (phi32, grad32, lap32, phi, grad, lap):
        assert np.all(np.isfinite(value)), (name, x[~np.isfinite(value).reshape(N, -1).all(-1)])
    r = np.linalg.norm(x, axis=-1)
    g = np.linalg.norm(grad, axis=-1)
    # Scales for each quantity: |Φ| + |x·∇Φ| (Φ crosses zero for the logarithmic family),
    # |∇Φ|, and |∇²Φ| + |∇Φ|/r (a Hessian entry; Kepler's ∇²Φ is exactly zero).
    checks = ((phi32, phi, np.abs(phi) + np.abs(np.sum(x * grad, axis=-1))),
              (grad32, grad, g), (lap32, lap, np.abs(lap) + g / r))
    for got, want, scale in checks:
        keep = (scale > LO) & (scale < HI)
        err = np.abs(got - want).reshape(N, -1).max(-1)
        assert np.all(err[keep] <= RTOL32 * scale[keep]), (name, r[keep][err[keep] > RTOL32
                                                                         * scale[keep]])


# At r = 0 exactly: Kepler's Φ is −∞ (a point mass); the cusps' density is +∞; the force's
# direction is undefined there and ∇Φ is 0 for every family.
INFINITE_PHI = {"kepler"}
CUSPED = {"hernquist", "nfw", "power_law_cutoff"}


@pytest.mark.parametrize("name", sorted(ANALYTIC))
@pytest.mark.parametrize("x64", [False, True])
def test_the_centre_is_finite_where_the_physics_is(name, x64):
    with jax.enable_x64(x64):
        phi, grad, lap = _evaluate(name, np.zeros((1, 3)))
    assert np.all(grad == 0)
    assert phi[0] == -np.inf if name in INFINITE_PHI else np.isfinite(phi[0])
    assert lap[0] == np.inf if name in CUSPED else np.isfinite(lap[0])
