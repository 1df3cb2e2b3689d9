"""deeppot-galpy: exported potentials equal deeppot's; galpy's analytic potentials import."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import deeppot as dp
from tests.models import ANALYTIC, assert_close, exported_model, exported_params

gp = pytest.importorskip("galpy.potential")
deeppot_galpy = pytest.importorskip("deeppot_galpy")
from galpy.orbit import Orbit  # noqa: E402

from deeppot_galpy import from_galpy, to_galpy  # noqa: E402

RTOL = 1e-10


@pytest.fixture
def cylindrical():
    rng = np.random.default_rng(3)
    n = 48
    return rng.uniform(0.1, 4.0, n), rng.uniform(-2.0, 2.0, n), rng.uniform(0, 2 * np.pi, n)


def _cartesian(R, z, phi):
    return np.stack([R * np.cos(phi), R * np.sin(phi), z], axis=-1)


@pytest.mark.parametrize("name", exported_params())
def test_exported_fields_equal_deeppot(name, cylindrical, x64):
    pot = exported_model(name)
    g = to_galpy(pot)
    R, z, phi = cylindrical
    x = _cartesian(R, z, phi)
    kw = dict(phi=phi, use_physical=False)
    assert_close(g(R, z, **kw), pot.potential(x))
    grad = np.asarray(pot.gradient(x))
    c, s = np.cos(phi), np.sin(phi)
    assert_close(g.Rforce(R, z, **kw), -(grad[:, 0] * c + grad[:, 1] * s))
    assert_close(g.zforce(R, z, **kw), -grad[:, 2])
    torque = -R * (-grad[:, 0] * s + grad[:, 1] * c)
    np.testing.assert_allclose(g.phitorque(R, z, **kw), torque,
                               atol=RTOL * np.max(np.abs(grad)) * 4)
    # galpy's natural units have G = 1: its density is ∇²Φ/4π = deeppot's density · G
    assert_close(g.dens(R, z, **kw), np.asarray(pot.density(x)) * pot.G)
    # one point at a time, as galpy's orbit integrators call it
    assert g.Rforce(float(R[0]), float(z[0]), phi=float(phi[0]), use_physical=False) \
        == pytest.approx(float(-(grad[0, 0] * c[0] + grad[0, 1] * s[0])), rel=1e-12)


@pytest.mark.parametrize("name", exported_params())
def test_second_derivatives_equal_autodiff_in_cylindrical_coordinates(name, cylindrical, x64):
    pot = exported_model(name)
    g = to_galpy(pot)
    R, z, phi = cylindrical

    def phi_cyl(q):  # Φ(R, z, φ), differentiated by JAX independently of the exporter
        return pot.potential(jnp.stack([q[0] * jnp.cos(q[2]), q[0] * jnp.sin(q[2]), q[1]]))

    H = np.asarray(jax.vmap(jax.hessian(phi_cyl))(jnp.stack([R, z, phi], axis=-1)))
    kw = dict(phi=phi, use_physical=False)
    assert_close(g.R2deriv(R, z, **kw), H[:, 0, 0])
    assert_close(g.z2deriv(R, z, **kw), H[:, 1, 1])
    assert_close(g.Rzderiv(R, z, **kw), H[:, 0, 1])
    scale = np.max(np.abs(H))
    for ours, ref in ((g.phi2deriv(R, z, **kw), H[:, 2, 2]), (g.Rphideriv(R, z, **kw), H[:, 0, 2]),
                      (g.phizderiv(R, z, **kw), H[:, 1, 2])):
        np.testing.assert_allclose(ours, ref, rtol=RTOL, atol=RTOL * scale)


@pytest.mark.parametrize(("name", "non_axi"), [
    ("plummer", False), ("miyamoto_nagai", False), ("trained_spherical", False),
    ("trained_axisymmetric", False), ("trained_neural", True), ("axisymmetric_tilted", True),
    ("composite", True),
])
def test_symmetry_sets_galpy_non_axisymmetric_flag(name, non_axi):
    assert to_galpy(exported_model(name)).isNonAxi is non_axi


def _orbit_pair(pot, n_periods, steps_per_period=400):
    """Positions of one disk orbit every period, by galpy (dop853) and by deeppot (yoshida6)."""
    g = to_galpy(pot)
    vc = float(g.vcirc(1.0, use_physical=False))
    period = 2 * np.pi / vc
    w0 = [1.0, 0.05, 0.95 * vc, 0.05, 0.02, 0.3]  # R, vR, vT, z, vz, φ
    ts = np.arange(n_periods + 1) * period
    o = Orbit(w0)
    o.integrate(ts, g, method="dop853", progressbar=False)
    galpy_x = np.stack([o.x(ts), o.y(ts), o.z(ts)], axis=-1)[1:]
    R, vR, vT, z, vz, phi = w0
    c, s = np.cos(phi), np.sin(phi)
    x0 = np.array([[R * c, R * s, z]])
    v0 = np.array([[vR * c - vT * s, vR * s + vT * c, vz]])
    k = np.arange(1, n_periods + 1)
    ours, _ = dp.orbits.integrate_orbits(pot, np.repeat(x0, n_periods, 0),
                                         np.repeat(v0, n_periods, 0),
                                         period / steps_per_period, k * steps_per_period)
    return galpy_x, ours


@pytest.mark.parametrize("name", [
    "miyamoto_nagai", pytest.param("trained_axisymmetric", marks=pytest.mark.slow)])
def test_galpy_orbit_matches_deeppot_integrator(name, x64):
    galpy_x, ours = _orbit_pair(exported_model(name), n_periods=5)
    np.testing.assert_allclose(ours, galpy_x, atol=1e-8, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["miyamoto_nagai", "trained_axisymmetric", "trained_spherical"])
def test_galpy_orbit_matches_deeppot_integrator_for_100_dynamical_times(name, x64):
    """100 orbital periods (the longest of a disk orbit's dynamical times) agree to 1e-8."""
    galpy_x, ours = _orbit_pair(exported_model(name), n_periods=100)
    np.testing.assert_allclose(ours, galpy_x, atol=1e-8, rtol=0)


def test_physical_scales_are_galpy_natural_units(x64):
    pot = ANALYTIC["miyamoto_nagai"]()
    natural, physical = to_galpy(pot), to_galpy(pot, ro=8.0, vo=220.0)
    assert physical.vcirc(1.0, use_physical=True) == pytest.approx(
        220.0 * natural.vcirc(1.0, use_physical=False), rel=1e-12)


GALPY = {
    "PlummerPotential": lambda: gp.PlummerPotential(amp=1.3, b=0.7),
    "HernquistPotential": lambda: gp.HernquistPotential(amp=2.0, a=0.5),
    "NFWPotential": lambda: gp.NFWPotential(amp=3.0, a=1.7),
    "TwoPowerSpherical_hernquist": lambda: gp.TwoPowerSphericalPotential(
        amp=2.0, a=0.6, alpha=1, beta=4),
    "TwoPowerSpherical_nfw": lambda: gp.TwoPowerSphericalPotential(
        amp=2.5, a=1.2, alpha=1, beta=3),
    "MiyamotoNagaiPotential": lambda: gp.MiyamotoNagaiPotential(amp=1.1, a=0.9, b=0.15),
    "IsochronePotential": lambda: gp.IsochronePotential(amp=1.5, b=0.6),
    "KeplerPotential": lambda: gp.KeplerPotential(amp=0.9),
    "LogarithmicHaloPotential": lambda: gp.LogarithmicHaloPotential(amp=0.64, core=0.4, q=0.7),
    "PowerSphericalPotentialwCutoff": lambda: gp.PowerSphericalPotentialwCutoff(
        amp=0.8, alpha=1.8, rc=1.9),
    "MWPotential2014": lambda: gp.MWPotential2014,
    "sum": lambda: gp.PlummerPotential(amp=1.0, b=0.5) + gp.NFWPotential(amp=2.0, a=3.0),
}


@pytest.mark.parametrize("name", sorted(GALPY))
def test_from_galpy_reproduces_galpy(name, cylindrical, x64):
    ref = GALPY[name]()
    pot = from_galpy(ref)
    R, z, phi = cylindrical
    x = _cartesian(R, z, phi)
    kw = dict(phi=phi, use_physical=False)
    acc = np.asarray(pot.acceleration(x))
    c, s = np.cos(phi), np.sin(phi)
    assert_close(acc[:, 0] * c + acc[:, 1] * s, gp.evaluateRforces(ref, R, z, **kw))
    assert_close(acc[:, 2], gp.evaluatezforces(ref, R, z, **kw))
    assert_close(pot.density(x), gp.evaluateDensities(ref, R, z, **kw))
    phi_ref = gp.evaluatePotentials(ref, R, z, **kw)
    ours = np.asarray(pot.potential(x))
    if "PowerSphericalPotentialwCutoff" in name or name == "MWPotential2014":
        phi_ref = phi_ref - (phi_ref[0] - ours[0])  # galpy's Φ of that family has an offset
    assert_close(ours, phi_ref)


def test_from_galpy_mwpotential2014_is_a_keyed_composite():
    mw = from_galpy(gp.MWPotential2014)
    assert list(mw) == ["power_law_cutoff", "miyamoto_nagai", "nfw"]
    assert float(mw["power_law_cutoff"].alpha) == pytest.approx(1.8)


def test_from_galpy_returns_the_model_inside_an_export():
    pot = ANALYTIC["plummer"]()
    assert from_galpy(to_galpy(pot)) is pot


@pytest.mark.parametrize(("bad", "error", "match"), [
    (lambda: gp.JaffePotential(), ValueError, "JaffePotential has no deeppot family"),
    (lambda: gp.LogarithmicHaloPotential(b=0.8), ValueError, "triaxial"),
    (lambda: gp.TwoPowerSphericalPotential(alpha=1.5, beta=3.5), ValueError, "alpha, beta"),
    (lambda: [], ValueError, "empty"),
    (lambda: [gp.PlummerPotential(), "x"], TypeError, "galpy potentials"),
])
def test_from_galpy_refuses_what_deeppot_cannot_represent(bad, error, match):
    with pytest.raises(error, match=match):
        from_galpy(bad())


def test_to_galpy_refuses_non_potentials():
    with pytest.raises(TypeError, match="deeppot potential"):
        to_galpy(gp.PlummerPotential())


def test_physical_unit_system_maps_to_ro_vo(x64):
    import astropy.units as u

    pot = dp.MiyamotoNagai(m_tot=6.8e10 * u.Msun, a=3.0 * u.kpc, b=0.28 * u.kpc)  # galactic
    g = to_galpy(pot, ro=8.0, vo=220.0)
    R = np.array([0.5, 1.0, 1.5])  # galpy's natural units: R · 8 kpc
    x = np.stack([R * 8.0, 0 * R, 0 * R + 0.1], -1) * u.kpc
    want_vc = pot.circular_velocity(x * np.array([1.0, 1.0, 0.0])).to_value(u.km / u.s)
    np.testing.assert_allclose(220.0 * g.vcirc(R, use_physical=False), want_vc, rtol=1e-12)
    want_fz = -pot.gradient(x)[:, 2].to_value(u.km**2 / u.s**2 / u.kpc) * 8.0 / 220.0**2
    np.testing.assert_allclose(g.zforce(R, 0.1 / 8.0, use_physical=False), want_fz, rtol=1e-12)
    # galpy converts its density with its own G (astropy's to ~1e-5)
    np.testing.assert_allclose(g.dens(R, 0.1 / 8.0, use_physical=True),
                               pot.density(x).to_value(u.Msun / u.pc**3), rtol=1e-4)


@pytest.mark.parametrize("ro, vo, name", [(-8.0, None, "ro"), (0.0, None, "ro"),
                                          (float("nan"), None, "ro"), (None, float("inf"), "vo"),
                                          (8.0, -220.0, "vo"), (None, "fast", "vo")])
def test_to_galpy_refuses_non_positive_or_non_finite_units(ro, vo, name):
    with pytest.raises(ValueError, match=f"^{name} must be positive") as err:
        to_galpy(dp.Plummer(), ro=ro, vo=vo)
    assert "\n" not in str(err.value)


def test_to_galpy_takes_units_as_quantities():
    import astropy.units as u

    with pytest.raises(ValueError, match="ro must be positive and finite"):
        to_galpy(dp.Plummer(), ro=-8.0 * u.kpc)
    g = to_galpy(dp.Plummer(units="galactic"), ro=8000.0 * u.pc, vo=220.0 * u.km / u.s)
    assert g._ro == pytest.approx(8.0) and g._vo == pytest.approx(220.0)


def _plummer_model():
    """A Plummer sphere as a fitted model: its region from points in a ball of radius 3."""
    rng = np.random.default_rng(7)
    u = rng.normal(size=(4000, 3))
    x = 3.0 * rng.uniform(size=4000)[:, None] ** (1 / 3) * u / np.linalg.norm(u, axis=-1)[:, None]
    return dp.PotentialModel(ANALYTIC["plummer"]()).with_region(x)


def test_a_model_exports_with_its_region_and_a_keplerian_tail(x64):
    model = _plummer_model()
    g = to_galpy(model)
    assert isinstance(g.potential, dp.WithTail) and g.region == model.region
    tailed = model.with_tail().potential
    R = np.array([0.5, 2.0, 4.0, 30.0, 300.0])
    x = _cartesian(R, 0 * R, 0 * R)
    assert_close(g(R, 0 * R, use_physical=False), tailed.potential(x))
    # beyond the region galpy's circular speed is Kepler's, sqrt(G M / R)
    far = R > model.region.outer_radius
    np.testing.assert_allclose(gp.vcirc(g, R[far], use_physical=False),
                               np.sqrt(float(tailed.amplitude) / R[far]), rtol=1e-10)
    np.testing.assert_array_equal(g.validity(R, 0 * R), model.validity(x))
    assert g.validity(0.5, 0.0) == 1.0 and g.validity(300.0, 0.0) == 0.0
    bare = to_galpy(model, tail=False)
    assert bare.potential is model.potential and bare.region == model.region
    assert to_galpy(ANALYTIC["plummer"]()).validity(1.0, 0.0) is None
