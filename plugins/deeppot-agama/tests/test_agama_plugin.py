"""deeppot-agama: agama expansions of deeppot potentials reproduce deeppot's forces.

The checks of the arguments and of the missing-agama message run without agama; the
expansions themselves need agama (`make agama`) and skip without it.
"""

import sys

import numpy as np
import pytest

import deeppot as dp
from tests.models import ANALYTIC, exported_model

deeppot_agama = pytest.importorskip("deeppot_agama")
from deeppot_agama import to_agama  # noqa: E402

FORCE_RTOL = 1e-3  # the bar over the data region


def test_missing_agama_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "agama", None)  # makes `import agama` fail
    with pytest.raises(ImportError, match="make agama"):
        to_agama(ANALYTIC["plummer"](), r_min=0.1, r_max=3.0)


@pytest.mark.parametrize(("kwargs", "match"), [
    (dict(expansion="spline"), "expansion must be one of"),
    (dict(source="flow"), "source must be"),
    (dict(r_min=0.0), "r_min must be a positive number"),
    (dict(r_min=2.0, r_max=1.0), "r_min < r_max"),
    (dict(z_max=float("nan")), "z_max must be a positive number"),
    (dict(offset="zero"), "offset must be a finite number or 'kepler'"),
    (dict(source="density", offset=1.0), "offset applies to source='potential'"),
    (dict(symmetry="cubic"), "unknown agama symmetry 'cubic'"),
])
def test_bad_arguments_are_refused_before_agama_is_needed(kwargs, match):
    args = dict(r_min=0.1, r_max=3.0) | kwargs
    with pytest.raises(ValueError, match=match):
        to_agama(ANALYTIC["plummer"](), **args)


def _region(kind, n=400, seed=0):
    """Points of the data region: 0.1 < r < 3 (spherical) or 0.1 < R < 3, |z| < 1 (disc)."""
    rng = np.random.default_rng(seed)
    if kind == "multipole":
        r = np.exp(rng.uniform(np.log(0.1), np.log(3.0), n))
        u = rng.normal(size=(n, 3))
        return r[:, None] * u / np.linalg.norm(u, axis=-1, keepdims=True)
    R = np.exp(rng.uniform(np.log(0.1), np.log(3.0), n))
    phi = rng.uniform(0, 2 * np.pi, n)
    return np.stack([R * np.cos(phi), R * np.sin(phi), rng.uniform(-1.0, 1.0, n)], -1)


def max_relative_force_error(expansion, pot, x):
    """max |F_agama − F_deeppot| / |F_deeppot| over the points."""
    ours = np.asarray(pot.acceleration(x))
    theirs = np.asarray(expansion.force(x))
    return float(np.max(np.linalg.norm(theirs - ours, axis=-1) / np.linalg.norm(ours, axis=-1)))


@pytest.mark.parametrize(("name", "kind", "source"), [
    ("plummer", "multipole", "potential"),
    ("plummer", "multipole", "density"),
    ("trained_spherical", "multipole", "potential"),
    ("miyamoto_nagai", "cylspline", "potential"),
    ("trained_axisymmetric", "cylspline", "potential"),
])
def test_expansion_forces_match_deeppot_over_the_data_region(name, kind, source, x64):
    agama = pytest.importorskip("agama")
    agama.setUnits()
    pot = exported_model(name)
    # the grid reaches beyond the data region so the check is not at its edge
    expansion = to_agama(pot, kind, r_min=0.02, r_max=30.0, z_min=0.01, z_max=30.0,
                         source=source)
    assert max_relative_force_error(expansion, pot, _region(kind)) < FORCE_RTOL


def test_dimensionless_model_refuses_physical_agama_units():
    agama = pytest.importorskip("agama")
    agama.setUnits(length=1, velocity=1, mass=1)
    try:
        with pytest.raises(ValueError, match="dimensionless"):
            to_agama(ANALYTIC["plummer"](), r_min=0.1, r_max=3.0)
    finally:
        agama.setUnits()


def test_kepler_offset_fixes_the_constant_of_a_shifted_potential(x64):
    """A potential known up to a constant (Plummer + 5, positive everywhere) exports with
    `offset="kepler"` to Φ(r_max) = −r_max |F(r_max)|, negative at the centre, with its
    forces unchanged."""
    agama = pytest.importorskip("agama")
    agama.setUnits()

    class Shifted(dp.Plummer):
        def _potential(self, x):
            return super()._potential(x) + 5.0

    pot = Shifted(m_tot=1.0, r_s=1.0)
    expansion = to_agama(pot, r_min=0.02, r_max=30.0, offset="kepler")
    edge = np.array([[30.0, 0.0, 0.0]])
    np.testing.assert_allclose(expansion.potential(edge), -30.0 * np.linalg.norm(
        np.asarray(pot.acceleration(edge))), rtol=1e-6)
    assert expansion.potential(np.zeros((1, 3)))[0] < 0
    assert max_relative_force_error(expansion, pot, _region("multipole")) < FORCE_RTOL


def test_without_a_region_the_grid_must_be_given():
    with pytest.raises(ValueError, match="give r_min and r_max"):
        to_agama(ANALYTIC["plummer"]())


def test_a_model_exports_inside_its_region_with_a_keplerian_tail(x64, caplog):
    """A Plummer model with the region of points in a ball of radius 3: the default grid
    spans the region, the force difference inside it is measured and below the bar, and
    beyond the grid agama's Φ is the tail's, −G M / r (its constant removed)."""
    agama = pytest.importorskip("agama")
    agama.setUnits()
    rng = np.random.default_rng(7)
    u = rng.normal(size=(4000, 3))
    x = 3.0 * rng.uniform(size=4000)[:, None] ** (1 / 3) * u / np.linalg.norm(u, axis=-1)[:, None]
    model = dp.PotentialModel(ANALYTIC["plummer"]()).with_region(x)
    region = model.region
    with caplog.at_level("INFO", logger="deeppot_agama"):
        expansion, report = to_agama(model, return_report=True)
    assert "median relative force difference" in caplog.text
    assert report["grid"]["r_min"] == pytest.approx(region.radii[0] / 2)
    assert report["grid"]["r_max"] == pytest.approx(10 * region.radii[2])
    assert report["region"] == region.to_dict() and report["n_points"] == 2048
    assert report["median_force_difference"] < FORCE_RTOL
    inside = deeppot_agama.region_points(region, 256)
    assert np.all(np.asarray(region.classify(inside)) == 0)
    assert max_relative_force_error(expansion, model.with_tail().potential, inside) < FORCE_RTOL
    tailed = model.with_tail().potential
    far = np.array([[60.0, 0.0, 0.0], [0.0, 0.0, 200.0]])
    mass = float(tailed.amplitude)
    np.testing.assert_allclose(expansion.potential(far), -mass / np.linalg.norm(far, axis=-1),
                               rtol=1e-3)
    assert report["offset"] == pytest.approx(float(tailed.offset))
    # without the tail the model is expanded as it is, over the same default grid
    _, bare = to_agama(model, tail=False, return_report=True)
    assert bare["offset"] == 0.0 and bare["grid"] == report["grid"]


def test_a_disc_model_exports_on_a_grid_that_resolves_its_thickness(x64):
    """A Miyamoto–Nagai disc (b = 0.15) with the flat region of stars at R < 3, |z| < 0.3:
    the default CylSpline grid starts in z inside the disc (a sixteenth of its region's
    |z| extent), and the expansion's forces inside the region are within the bar."""
    agama = pytest.importorskip("agama")
    agama.setUnits()
    rng = np.random.default_rng(8)
    R, phi = 3.0 * np.sqrt(rng.uniform(size=4000)), rng.uniform(0, 2 * np.pi, 4000)
    x = np.stack([R * np.cos(phi), R * np.sin(phi), rng.uniform(-0.3, 0.3, 4000)], -1)
    model = dp.PotentialModel(ANALYTIC["miyamoto_nagai"]()).with_region(x)
    assert model.region.kind == "axisymmetric"
    _, report = to_agama(model, "cylspline", return_report=True)
    assert report["grid"]["z_min"] == pytest.approx(model.region.scales[1] / 16)
    assert report["median_force_difference"] < FORCE_RTOL


def test_default_expansion_and_orders_follow_the_regions_flattening():
    """A disc's flat region (|z| extent 0.06 of its R extent) gets a CylSpline by default,
    and a multipole of it l_max = 64 (the default 12 misses the force bar by 30× on the disk
    config); a round region keeps the multipole and its defaults (no agama needed)."""
    from deeppot.validity import ValidityRegion

    def region(kind, scales):
        return ValidityRegion(kind=kind, quantiles=(0.01, 0.9, 0.99), scales=scales,
                              bounds=(0.05, 0.7, 1.2), radii=(0.2, 3.5, 6.0), n=100)

    disc = region("axisymmetric", (6.0, 0.36))
    thick = region("axisymmetric", (6.0, 3.0))
    ball = region("spherical", ())
    bar = region("box", (4.0, 1.0, 0.5))
    assert deeppot_agama.default_expansion(disc) == "cylspline"
    for r in (thick, ball, bar, None):
        assert deeppot_agama.default_expansion(r) == "multipole"
    assert deeppot_agama.default_orders("multipole", disc)["l_max"] == 64
    assert deeppot_agama.default_orders("multipole", bar)["l_max"] == 32  # 2 ceil(2 / 0.125)
    for r in (thick, ball, None):
        assert deeppot_agama.default_orders("multipole", r) == deeppot_agama.DEFAULTS["multipole"]
    assert deeppot_agama.default_orders("cylspline", disc) == deeppot_agama.DEFAULTS["cylspline"]
    with pytest.raises(ValueError, match="expansion must be one of"):
        deeppot_agama.default_orders("spline", disc)
