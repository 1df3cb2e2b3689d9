"""Every analytic family agrees with galpy and gala (Φ, forces, density) to 1e-10."""

import numpy as np
import pytest
from scipy.special import gamma

import deeppot as dp
from tests.models import ANALYTIC

galpy_potential = pytest.importorskip("galpy.potential")
gala_potential = pytest.importorskip("gala.potential")
from gala.units import dimensionless  # noqa: E402

RTOL = 1e-10


def _galpy(name, p):
    gp = galpy_potential
    return {
        "plummer": lambda: gp.PlummerPotential(amp=float(p.m_tot), b=float(p.r_s)),
        "miyamoto_nagai": lambda: gp.MiyamotoNagaiPotential(
            amp=float(p.m_tot), a=float(p.a), b=float(p.b)
        ),
        # galpy's Hernquist amplitude is 2M.
        "hernquist": lambda: gp.HernquistPotential(amp=2 * float(p.m_tot), a=float(p.r_s)),
        "nfw": lambda: gp.NFWPotential(amp=float(p.m_s), a=float(p.r_s)),
        "logarithmic": lambda: gp.LogarithmicHaloPotential(
            amp=float(p.v_c) ** 2, core=float(p.r_c), q=float(p.q)
        ),
        "isochrone": lambda: gp.IsochronePotential(amp=float(p.m_tot), b=float(p.b)),
        "kepler": lambda: gp.KeplerPotential(amp=float(p.m_tot)),
        "long_murali_bar": lambda: gp.SoftenedNeedleBarPotential(
            amp=float(p.m_tot), a=float(p.a), b=float(p.b), c=float(p.c), pa=float(p.angle),
            omegab=0.0,
        ),
        # galpy's amplitude is the density normalisation ρ = amp r^−α exp(−r²/r_c²).
        "power_law_cutoff": lambda: gp.PowerSphericalPotentialwCutoff(
            amp=float(p.m_tot) / (2 * np.pi * float(p.r_c) ** (3 - float(p.alpha))
                                  * gamma(1.5 - float(p.alpha) / 2)),
            alpha=float(p.alpha), rc=float(p.r_c)),
    }[name]()


def _gala(name, p):
    gp = gala_potential
    u = dimensionless
    return {
        "plummer": lambda: gp.PlummerPotential(m=float(p.m_tot), b=float(p.r_s), units=u),
        "miyamoto_nagai": lambda: gp.MiyamotoNagaiPotential(
            m=float(p.m_tot), a=float(p.a), b=float(p.b), units=u
        ),
        "hernquist": lambda: gp.HernquistPotential(m=float(p.m_tot), c=float(p.r_s), units=u),
        "nfw": lambda: gp.NFWPotential(m=float(p.m_s), r_s=float(p.r_s), units=u),
        "logarithmic": lambda: gp.LogarithmicPotential(
            v_c=float(p.v_c), r_h=float(p.r_c), q1=1.0, q2=1.0, q3=float(p.q), units=u
        ),
        "isochrone": lambda: gp.IsochronePotential(m=float(p.m_tot), b=float(p.b), units=u),
        "kepler": lambda: gp.KeplerPotential(m=float(p.m_tot), units=u),
        "long_murali_bar": lambda: gp.LongMuraliBarPotential(
            m=float(p.m_tot), a=float(p.a), b=float(p.b), c=float(p.c), alpha=float(p.angle),
            units=u,
        ),
        "power_law_cutoff": lambda: gp.PowerLawCutoffPotential(
            m=float(p.m_tot), alpha=float(p.alpha), r_c=float(p.r_c), units=u),
    }[name]()


@pytest.fixture
def points():
    rng = np.random.default_rng(7)
    x = rng.uniform(-4, 4, size=(64, 3))
    return x[np.linalg.norm(x, axis=1) > 0.05]


def _compare(ours, theirs, scale):
    np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=RTOL * scale)


@pytest.mark.parametrize("name", sorted(ANALYTIC))
def test_agrees_with_galpy(name, points, x64):
    pot = ANALYTIC[name]()
    ref = _galpy(name, pot)
    x, y, z = points.T
    R, phi = np.hypot(x, y), np.arctan2(y, x)
    kw = dict(phi=phi, use_physical=False)
    gp = galpy_potential

    def each(fn):  # point by point: some galpy forces (the needle bar's) take scalars only
        return np.array([fn(ref, R[i], z[i], phi=phi[i], use_physical=False)
                         for i in range(len(R))])

    pot_phi, pot_phi_galpy = pot.potential(points), gp.evaluatePotentials(ref, R, z, **kw)
    if name == "power_law_cutoff":  # galpy's Φ of this family is not zero at infinity
        pot_phi_galpy = pot_phi_galpy - (pot_phi_galpy[0] - pot_phi[0])
    _compare(pot_phi, pot_phi_galpy, 1.0)
    acc = np.asarray(pot.acceleration(points))
    a_R = (acc[:, 0] * x + acc[:, 1] * y) / R
    _compare(a_R, each(gp.evaluateRforces), np.max(np.abs(a_R)))
    _compare(acc[:, 2], each(gp.evaluatezforces), np.max(np.abs(acc[:, 2])))
    torque = x * acc[:, 1] - y * acc[:, 0]  # −∂Φ/∂φ, zero for axisymmetric families
    _compare(torque, each(gp.evaluatephitorques), np.max(np.abs(a_R)))
    rho = np.asarray(pot.density(points))
    _compare(rho, gp.evaluateDensities(ref, R, z, **kw), np.max(np.abs(rho)) + 1e-300)


@pytest.mark.parametrize("name", sorted(ANALYTIC))
def test_agrees_with_gala(name, points, x64):
    pot = ANALYTIC[name]()
    ref = _gala(name, pot)
    q = points.T
    _compare(pot.potential(points), ref.energy(q).value, 1.0)
    grad = np.asarray(pot.gradient(points))
    _compare(grad, ref.gradient(q).value.T, np.max(np.abs(grad)))
    if name == "kepler":  # gala's point mass has no density method
        np.testing.assert_array_equal(pot.density(points), 0.0)
        return
    rho = np.asarray(pot.density(points))
    _compare(rho, ref.density(q).value, np.max(np.abs(rho)))


def test_hernquist_amplitude_convention(x64):
    """galpy's HernquistPotential(amp=2M) is the M-mass sphere; amp=M is half of it."""
    pot = dp.Hernquist(m_tot=1.0, r_s=1.0)
    half = galpy_potential.HernquistPotential(amp=1.0, a=1.0)
    val = galpy_potential.evaluatePotentials(half, 1.0, 0.0, use_physical=False)
    np.testing.assert_allclose(2 * val, pot.potential(np.array([1.0, 0.0, 0.0])), rtol=1e-12)


@pytest.mark.parametrize("r_a", [None, 1.0, 0.5])
def test_hernquist_df_agrees_with_galpy(r_a, x64):
    """deeppot's closed-form `HernquistDF` is galpy's isotropic / Osipkov–Merritt Hernquist
    DF up to its normalisation: ln p − ln f_galpy is one constant over phase space (the
    exact scores of the galpy halo in benchmarks/bench_df_systems.py rest on this)."""
    import warnings

    import jax

    with warnings.catch_warnings():  # galpy warns that an optional C extension is absent
        warnings.simplefilter("ignore")
        from galpy import df as galpy_df

    pot = galpy_potential.HernquistPotential(amp=2.0, a=1.0)
    ref = (galpy_df.isotropicHernquistdf(pot=pot) if r_a is None
           else galpy_df.osipkovmerrittHernquistdf(pot=pot, ra=r_a))
    ours = dp.flows.HernquistDF(m_tot=1.0, r_s=1.0, r_a=r_a)
    w = np.asarray(ours.sample(jax.random.key(0), 256))
    x, v = w[:, :3], w[:, 3:]
    r = np.linalg.norm(x, axis=-1)
    energy = 0.5 * np.sum(v**2, -1) - 1.0 / (1.0 + r)
    ang = np.linalg.norm(np.cross(x, v), axis=-1)
    theirs = np.log(ref((energy, ang), use_physical=False))
    diff = np.asarray(ours.log_prob(w)) - theirs
    np.testing.assert_allclose(diff, np.median(diff), rtol=0, atol=1e-8)
