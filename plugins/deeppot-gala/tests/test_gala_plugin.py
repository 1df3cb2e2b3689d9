"""deeppot-gala: exported potentials equal deeppot's; gala's analytic potentials import."""

import warnings

import astropy.units as u
import numpy as np
import pytest

import deeppot as dp
from tests.models import ANALYTIC, assert_close, exported_model, exported_params

gp = pytest.importorskip("gala.potential")
deeppot_gala = pytest.importorskip("deeppot_gala")
import gala.dynamics as gd  # noqa: E402
import gala.integrate as gi  # noqa: E402
from gala.units import dimensionless, galactic  # noqa: E402

from deeppot_gala import from_gala, to_gala  # noqa: E402


@pytest.fixture
def q():
    """Positions as gala takes them, shape (3, n)."""
    rng = np.random.default_rng(5)
    x = rng.uniform(-4, 4, size=(3, 48))
    return x[:, np.linalg.norm(x, axis=0) > 0.1]


@pytest.mark.parametrize("name", exported_params())
def test_exported_fields_equal_deeppot(name, q, x64):
    pot = exported_model(name)
    g = to_gala(pot)
    x = q.T
    assert_close(g.energy(q).value, pot.potential(x))
    assert_close(g.gradient(q).value, np.asarray(pot.gradient(x)).T)
    assert_close(g.acceleration(q).value, np.asarray(pot.acceleration(x)).T)
    assert_close(g.density(q).value, np.asarray(pot.density(x)) * pot.G)
    assert_close(g.hessian(q).value, np.moveaxis(np.asarray(pot.hessian(x)), 0, -1))
    assert_close(g.energy(q[:, 0]).value, pot.potential(x[:1]))  # one point


def test_exported_potential_uses_gala_coordinates_for_symmetric_models(x64):
    pot = ANALYTIC["miyamoto_nagai"]()
    R = np.array([0.5, 1.0, 2.0])
    assert_close(to_gala(pot).energy(R=R, z=0.1).value,
                 pot.potential(np.stack([R, 0 * R, 0.1 + 0 * R], axis=-1)))
    sph = ANALYTIC["plummer"]()
    assert_close(to_gala(sph).energy(r=R).value,
                 sph.potential(np.stack([R, 0 * R, 0 * R], axis=-1)))


@pytest.mark.parametrize("name", [
    "miyamoto_nagai", pytest.param("trained_axisymmetric", marks=pytest.mark.slow)])
def test_gala_orbits_match_deeppot_integrator(name, x64):
    """Several orbits at once through gala's Python integrator, 2 orbital periods."""
    pot = exported_model(name)
    g = to_gala(pot)
    x0 = np.array([[1.0, 0.0, 0.05], [0.0, 1.5, -0.02], [0.8, 0.3, 0.0]])
    vc = np.asarray(pot.circular_velocity(x0 * np.array([1.0, 1.0, 0.0])))
    v0 = np.stack([-x0[:, 1], x0[:, 0], 0 * vc], -1) / np.linalg.norm(x0[:, :2], axis=-1)[:, None]
    v0 = 0.95 * vc[:, None] * v0 + np.array([0.03, -0.02, 0.02])
    period = 2 * np.pi * 1.0 / float(vc[0])
    n_steps, dt = 800, 2 * period / 800
    w0 = gd.PhaseSpacePosition(pos=x0.T, vel=v0.T)
    orbit = g.integrate_orbit(w0, dt=dt, n_steps=n_steps, Integrator=gi.DOPRI853Integrator,
                              Integrator_kwargs=dict(rtol=1e-13, atol=1e-13))
    ours, _ = dp.orbits.integrate_orbits(pot, x0, v0, dt / 4, 4 * n_steps)
    np.testing.assert_allclose(ours, orbit.xyz.value[:, -1].T, atol=1e-8, rtol=0)


def test_dimensionless_models_refuse_physical_gala_units():
    with pytest.raises(ValueError, match="dimensionless"):
        to_gala(ANALYTIC["plummer"](), units=galactic)


def test_hessian_shape_follows_gala(x64):
    g = to_gala(ANALYTIC["plummer"]())
    assert g.hessian(np.ones((3, 4))).shape == (3, 3, 4)


GALA = {
    "KeplerPotential": lambda: gp.KeplerPotential(m=0.9, units=dimensionless),
    "PlummerPotential": lambda: gp.PlummerPotential(m=1.3, b=0.7, units=dimensionless),
    "HernquistPotential": lambda: gp.HernquistPotential(m=2.0, c=0.5, units=dimensionless),
    "NFWPotential": lambda: gp.NFWPotential(m=3.0, r_s=1.7, units=dimensionless),
    "IsochronePotential": lambda: gp.IsochronePotential(m=1.5, b=0.6, units=dimensionless),
    "MiyamotoNagaiPotential": lambda: gp.MiyamotoNagaiPotential(m=1.1, a=0.9, b=0.15,
                                                                units=dimensionless),
    "LogarithmicPotential": lambda: gp.LogarithmicPotential(v_c=0.8, r_h=0.4, q1=1.0, q2=1.0,
                                                            q3=0.7, units=dimensionless),
    "PowerLawCutoffPotential": lambda: gp.PowerLawCutoffPotential(m=1.3, alpha=1.8, r_c=1.9,
                                                                  units=dimensionless),
    "NFW_galactic": lambda: gp.NFWPotential(m=5e11, r_s=15.0, units=galactic),
    "composite": lambda: gp.CompositePotential(
        disk=gp.MiyamotoNagaiPotential(m=1.0, a=1.0, b=0.1, units=dimensionless),
        halo=gp.NFWPotential(m=5.0, r_s=10.0, units=dimensionless)),
}


def _milky_way():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # gala's notice about a future MilkyWayPotential
        return gp.MilkyWayPotential()


@pytest.mark.parametrize("name", sorted(GALA) + ["MilkyWayPotential"])
def test_from_gala_reproduces_gala(name, q, x64):
    ref = _milky_way() if name == "MilkyWayPotential" else GALA[name]()
    pot = from_gala(ref)
    if name in ("NFW_galactic", "MilkyWayPotential"):
        q = q * 5.0  # kpc
    x = q.T
    assert_close(pot.potential(x), ref.energy(q).value)
    assert_close(np.asarray(pot.gradient(x)).T, ref.gradient(q).value)
    if name != "KeplerPotential":  # gala's point mass has no density
        assert_close(pot.density(x), ref.density(q).value)


def test_from_gala_keeps_component_names():
    assert list(from_gala(_milky_way())) == ["disk", "bulge", "nucleus", "halo"]


def test_from_gala_returns_the_model_inside_an_export():
    pot = ANALYTIC["plummer"]()
    assert from_gala(to_gala(pot)) is pot


@pytest.mark.parametrize(("bad", "error", "match"), [
    (lambda: gp.JaffePotential(m=1.0, c=1.0, units=dimensionless), ValueError,
     "JaffePotential has no deeppot family"),
    (lambda: gp.NFWPotential(m=1.0, r_s=1.0, c=0.8, units=dimensionless), ValueError,
     "triaxial"),
    (lambda: gp.LogarithmicPotential(v_c=1.0, r_h=1.0, q1=0.9, q2=1.0, q3=1.0,
                                     units=dimensionless), ValueError, "q1, q2"),
    (lambda: gp.PlummerPotential(m=1.0, b=1.0, origin=[1.0, 0.0, 0.0], units=dimensionless),
     ValueError, "centred"),
    (lambda: "plummer", TypeError, "gala potential"),
])
def test_from_gala_refuses_what_deeppot_cannot_represent(bad, error, match):
    with pytest.raises(error, match=match):
        from_gala(bad())



def test_physical_unit_system_converts_to_gala_units(x64):
    import astropy.units as u

    pot = dp.MiyamotoNagai(m_tot=6.8e10 * u.Msun, a=3.0 * u.kpc, b=0.28 * u.kpc)  # galactic
    g = to_gala(pot)  # gala's galactic: kpc, Myr, Msun
    q = np.array([[8.0, 1.0, -3.0], [0.0, 2.0, 0.5], [0.1, -0.5, 1.0]])
    x = q.T * u.kpc
    np.testing.assert_allclose(g.energy(q).to_value(u.km**2 / u.s**2),
                               pot.potential(x).to_value(u.km**2 / u.s**2), rtol=1e-12)
    np.testing.assert_allclose(g.acceleration(q).to_value(u.km / u.s**2),
                               pot.acceleration(x).to_value(u.km / u.s**2).T, rtol=1e-12)
    np.testing.assert_allclose(g.density(q).to_value(u.Msun / u.kpc**3),
                               pot.density(x).to_value(u.Msun / u.kpc**3), rtol=1e-10)


def test_a_model_exports_with_its_region_and_a_keplerian_tail(x64):
    rng = np.random.default_rng(7)
    d = rng.normal(size=(4000, 3))
    x = 3.0 * rng.uniform(size=4000)[:, None] ** (1 / 3) * d / np.linalg.norm(d, axis=-1)[:, None]
    model = dp.PotentialModel(ANALYTIC["plummer"]()).with_region(x)
    g = to_gala(model)
    assert isinstance(g.potential, dp.WithTail) and g.region == model.region
    tailed = model.with_tail().potential
    q = np.array([[0.5, 0.0, 0.0], [0.0, 2.0, 1.0], [30.0, 0.0, 0.0], [0.0, 0.0, 300.0]]).T
    assert_close(g.energy(q).value, tailed.potential(q.T))
    # beyond the region the force is Kepler's, G M x / r³
    far = q[:, 2:]
    r = np.linalg.norm(far, axis=0)
    np.testing.assert_allclose(g.gradient(far).value, float(tailed.amplitude) * far / r**3,
                               rtol=1e-10)
    np.testing.assert_array_equal(g.validity(q), model.validity(q.T))
    np.testing.assert_array_equal(g.validity(q * u.dimensionless_unscaled), g.validity(q))
    assert g.replicate().region == model.region
    assert to_gala(model, tail=False).potential is model.potential
