"""Properties every potential model must satisfy, checked on hypothesis-drawn positions."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import deeppot as dp
from tests.models import ALL, ANALYTIC, NEURAL, autodiff_reference, build

N = 8
coords = st.floats(-3.0, 3.0, allow_nan=False, width=64)
# Keep away from the centre, where Kepler/Hernquist/NFW are singular.
positions = arrays(np.float64, (N, 3), elements=coords).filter(
    lambda x: np.all(np.linalg.norm(x, axis=-1) > 0.05)
)


def _rotation(angles):
    a, b, c = angles
    Rz = lambda t: np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    Ry = lambda t: np.array([[np.cos(t), 0, np.sin(t)], [0, 1, 0], [-np.sin(t), 0, np.cos(t)]])
    return Rz(a) @ Ry(b) @ Rz(c)


def _rotation_about(axis, angle):
    n = axis / np.linalg.norm(axis)
    K = np.array([[0, -n[2], n[1]], [n[2], 0, -n[0]], [-n[1], n[0], 0]])
    return np.eye(3) + np.sin(angle) * K + (1 - np.cos(angle)) * K @ K


@pytest.mark.parametrize("name", sorted(ALL))
@given(x=positions)
def test_gradient_and_hessian_equal_autodiff(name, x, x64):
    pot = build(name)
    x = jnp.asarray(x)
    auto_phi, auto_grad, auto_hess = autodiff_reference(pot, x)
    np.testing.assert_allclose(pot.gradient(x), auto_grad, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(pot.acceleration(x), -auto_grad, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(pot.hessian(x), auto_hess, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(pot.potential(x), auto_phi, rtol=1e-12, atol=1e-15)


# The generic rules ("hessian", "hvp") do not depend on the family: `make test` checks them
# on two models and the module rule ("forward") on every model; `make test-all` on all.
LAPLACIAN_CASES = [
    pytest.param(name, method, marks=() if method == "forward" or name in ("plummer", "neural")
                 else pytest.mark.slow)
    for name in sorted(ALL) for method in ("forward", "hessian", "hvp")
]


@pytest.mark.parametrize("name, method", LAPLACIAN_CASES)
@given(x=positions)
def test_laplacian_methods_equal_reference_float64(name, method, x, x64):
    """Module rules and the generic function rules all match the reference to 1e-9."""
    pot = build(name)
    x = jnp.asarray(x)
    # Reference: closed form for analytic families, Hessian trace for networks. Round-off
    # is relative to the Hessian's entries (Kepler's Laplacian is an exact zero).
    hess = autodiff_reference(pot, x)[2]
    ref = pot.laplacian(x) if name in ANALYTIC else jnp.trace(hess, axis1=-2, axis2=-1)
    scale = jnp.max(jnp.abs(hess))
    for fn in (pot, pot._potential):  # the module's own rule, and the rule for a function
        phi, grad, lap = dp.value_grad_laplacian(fn, x, method=method)
        # atol: a composite's Φ can cancel to ~1e-5 between O(0.1) components
        np.testing.assert_allclose(phi, pot.potential(x), rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(grad, pot.gradient(x), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(lap, ref, rtol=1e-9, atol=1e-12 * scale)


def _lengths(pot):
    """The family's length parameters (b, c, r_s, ...): where |z| or r equals one of them,
    a scaled norm's largest component ties with another."""
    return [float(getattr(pot, k)) for k in ("a", "b", "c", "r_s", "r_c")
            if isinstance(getattr(type(pot), k, None), property)]


@pytest.mark.parametrize("name", sorted(ANALYTIC))
@given(t=st.floats(0.05, 2.0), which=st.integers(0, 3), sign=st.sampled_from([-1.0, 1.0]))
def test_function_laplacian_at_ties(name, t, which, sign, x64):
    """The generic rules differentiate Φ's own code twice: where two lengths inside one
    norm are equal (|z| = c, |x| = |y|, r = b), or a series branch is taken, they must
    still match the closed form."""
    pot = build(name)
    lengths = _lengths(pot)
    z = lengths[which % len(lengths)] if lengths and which < 3 else t
    r = np.linalg.norm(np.array([t, sign * t, z]))
    # the last row sits just inside the length: series branches taken near r = r_c
    x = jnp.array([[t, sign * t, z], [t, t, t], [z, 0.0, sign * z], [r / 2, r / 2, r / 2],
                   [0.0, 0.0, z * (1 - 2e-3 * t)]])
    ref = pot.laplacian(x)
    # round-off relative to each point's Hessian entries (Kepler's Laplacian is exactly 0)
    scale = jnp.max(jnp.abs(autodiff_reference(pot, x)[2]), axis=(-2, -1))
    for method in ("forward", "hessian"):
        lap = dp.value_grad_laplacian(pot._potential, x, method=method)[2]
        np.testing.assert_array_less(jnp.abs(lap - ref), 1e-9 * jnp.abs(ref) + 1e-12 * scale)


@pytest.mark.parametrize("name", sorted(NEURAL))
@given(x=positions)
def test_laplacian_methods_agree_float32(name, x):
    pot = build(name)
    x = jnp.asarray(x, jnp.float32)
    laps = [dp.value_grad_laplacian(pot, x, method=m)[2] for m in ("forward", "hessian", "hvp")]
    # Compare on the scale of the second derivatives: a near-zero Laplacian is a sum of
    # Hessian terms of size |H|, so float32 round-off is relative to |H|, not to ∇²Φ.
    hess_scale = float(jnp.max(jnp.abs(pot.hessian(x))))
    for lap in laps[1:]:
        np.testing.assert_allclose(laps[0], lap, rtol=1e-5, atol=1e-5 * hess_scale)


# Textbook densities, written independently of the code's Laplacians.
def _density(name, pot, x):
    r = np.linalg.norm(x, axis=-1)
    R2 = x[..., 0] ** 2 + x[..., 1] ** 2
    z = x[..., 2]
    if name == "plummer":
        M, b = float(pot.m_tot), float(pot.r_s)
        return 3 * M / (4 * math.pi * b**3) * (1 + r**2 / b**2) ** -2.5
    if name == "hernquist":
        M, a = float(pot.m_tot), float(pot.r_s)
        return M * a / (2 * math.pi * r * (r + a) ** 3)
    if name == "nfw":
        m, rs = float(pot.m_s), float(pot.r_s)
        rho0 = m / (4 * math.pi * rs**3)
        return rho0 / ((r / rs) * (1 + r / rs) ** 2)
    if name == "isochrone":
        M, b = float(pot.m_tot), float(pot.b)
        a = np.sqrt(r**2 + b**2)
        return M * (3 * (b + a) * a**2 - r**2 * (b + 3 * a)) / (4 * math.pi * (b + a) ** 3 * a**3)
    if name == "miyamoto_nagai":
        M, a, b = float(pot.m_tot), float(pot.a), float(pot.b)
        zeta = np.sqrt(z**2 + b**2)
        num = a * R2 + (a + 3 * zeta) * (a + zeta) ** 2
        return b**2 * M / (4 * math.pi) * num / ((R2 + (a + zeta) ** 2) ** 2.5 * zeta**3)
    if name == "logarithmic":  # Binney & Tremaine eq. (2.71b)
        v0, Rc, q = float(pot.v_c), float(pot.r_c), float(pot.q)
        num = (2 * q**2 + 1) * Rc**2 + R2 + (2 - q**-2) * z**2
        return v0**2 / (4 * math.pi * q**2) * num / (Rc**2 + R2 + z**2 / q**2) ** 2
    if name == "kepler":
        return np.zeros_like(r)
    if name == "long_murali_bar":  # a needle of Miyamoto–Nagai disks, integrated numerically
        from scipy.integrate import quad

        M, a, b, c, t = (float(getattr(pot, k)) for k in ("m_tot", "a", "b", "c", "angle"))
        xb = np.cos(t) * x[..., 0] + np.sin(t) * x[..., 1]
        yb = -np.sin(t) * x[..., 0] + np.cos(t) * x[..., 1]
        zeta = np.sqrt(z**2 + c**2)

        def mn(s, i):
            R2 = (xb[i] - s) ** 2 + yb[i] ** 2
            num = b * R2 + (b + 3 * zeta[i]) * (b + zeta[i]) ** 2
            return c**2 * M / (4 * math.pi) * num / ((R2 + (b + zeta[i]) ** 2) ** 2.5
                                                      * zeta[i] ** 3)

        return np.array([quad(mn, -a, a, args=(i,), epsabs=0, epsrel=1e-13, limit=200)[0]
                         / (2 * a) for i in range(len(xb))])
    if name == "power_law_cutoff":
        M, alpha, rc = float(pot.m_tot), float(pot.alpha), float(pot.r_c)
        norm = M / (2 * math.pi * rc ** (3 - alpha) * math.gamma(1.5 - alpha / 2))
        return norm * r**-alpha * np.exp(-((r / rc) ** 2))
    raise KeyError(name)


@pytest.mark.parametrize("name", sorted(ANALYTIC))
@given(x=positions, G=st.sampled_from([1.0, 4.3e-6]))
def test_density_equals_closed_form(name, x, G, x64):
    pot = build(name)
    np.testing.assert_allclose(pot.density(x), _density(name, pot, x), rtol=1e-10, atol=1e-14)
    # Φ of a mass model scales with G and the density does not; Logarithmic's amplitude is
    # v_c², so there Φ is unchanged and the density scales as 1/G.
    other = ANALYTIC[name](G=G)
    if name == "logarithmic":
        np.testing.assert_allclose(other.potential(x), pot.potential(x), rtol=1e-14)
        np.testing.assert_allclose(other.density(x) * G, pot.density(x), rtol=1e-12, atol=1e-14)
    else:
        np.testing.assert_allclose(other.potential(x), G * pot.potential(x), rtol=1e-12)
        np.testing.assert_allclose(other.density(x), pot.density(x), rtol=1e-10, atol=1e-14)


# Addition does not depend on the family: `make test` checks three pairs, test-all all.
PAIRS = [pytest.param(a, "plummer", marks=() if a in ("miyamoto_nagai", "neural")
                      else pytest.mark.slow) for a in sorted(ALL)]
PAIRS.append(("neural", "axisymmetric_tilted"))


@pytest.mark.parametrize("a,b", PAIRS)
@given(x=positions)
def test_composites_are_additive(a, b, x, x64):
    pa, pb = build(a), build(b)
    both = pa + pb
    assert isinstance(both, dp.CompositePotential)
    for verb in ("potential", "gradient", "hessian", "laplacian", "density"):
        expected = getattr(pa, verb)(x) + getattr(pb, verb)(x)
        np.testing.assert_allclose(getattr(both, verb)(x), expected, rtol=1e-10, atol=1e-13)


@given(x=positions, angles=arrays(np.float64, 3, elements=st.floats(-np.pi, np.pi)))
def test_spherical_is_rotation_invariant(x, angles, x64):
    pot = build("spherical")
    Rm = jnp.asarray(_rotation(angles))
    xr = x @ Rm.T
    np.testing.assert_allclose(pot.potential(xr), pot.potential(x), rtol=1e-12)
    np.testing.assert_allclose(pot.gradient(xr), pot.gradient(x) @ Rm.T, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(pot.laplacian(xr), pot.laplacian(x), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", ["axisymmetric", "axisymmetric_tilted"])
@given(x=positions, angle=st.floats(-np.pi, np.pi))
def test_axisymmetric_is_invariant_about_its_axis(name, x, angle, x64):
    pot = build(name)
    axis = np.asarray(pot.unit_axis)
    Rm = jnp.asarray(_rotation_about(axis, angle))
    xr = x @ Rm.T
    np.testing.assert_allclose(pot.potential(xr), pot.potential(x), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(pot.gradient(xr), pot.gradient(x) @ Rm.T, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(pot.laplacian(xr), pot.laplacian(x), rtol=1e-9, atol=1e-12)
    if name == "axisymmetric_tilted":
        # A tilted axis is a real symmetry axis: rotating about ẑ instead changes Φ.
        Rz = jnp.asarray(_rotation_about(np.array([0.0, 0.0, 1.0]), 1.0))
        off_axis = jnp.array([[1.0, 0.5, 0.3], [-0.7, 1.2, -0.4]])
        assert not np.allclose(pot.potential(off_axis @ Rz.T), pot.potential(off_axis), rtol=1e-6)


@given(scale=st.floats(0.1, 10.0))
def test_axis_parametrisation_stays_unit(scale, x64):
    """Any non-zero raw axis acts as the unit vector along it."""
    raw = jnp.array([0.3, -0.2, 1.0])
    a = dp.Axisymmetric.mlp(key=jax.random.key(3), width=8, depth=2, axis=raw)
    b = dp.Axisymmetric.mlp(key=jax.random.key(3), width=8, depth=2, axis=scale * raw)
    np.testing.assert_allclose(jnp.linalg.norm(b.unit_axis), 1.0, rtol=1e-14)
    x = jnp.array([[0.5, 1.0, -0.2], [2.0, -1.0, 0.7]])
    np.testing.assert_allclose(a.potential(x), b.potential(x), rtol=1e-12)
