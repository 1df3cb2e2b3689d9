"""Replica sets: band arithmetic, coverage and z-scores against exact cases, the bootstrap,
and the `ReplicaSet` model (its bands, units and model file)."""

import math

import astropy.units as u
import jax
import numpy as np
import pytest

import deeppot as dp
from deeppot.pipeline.replicas import bootstrap, full_data, replica_catalog, replica_salt
from deeppot.replicas import band, calibrate, coverage, t_quantile, z_scores


def test_percentile_band_of_0_to_100_is_exact():
    values = np.arange(101.0)[:, None] * np.array([1.0, -2.0])  # two points, replicas on axis 0
    b = band(values, kind="percentile")
    np.testing.assert_allclose(b.median, [50.0, -100.0])
    np.testing.assert_allclose(b.lo68, [16.0, -168.0])
    np.testing.assert_allclose(b.hi68, [84.0, -32.0])
    np.testing.assert_allclose(b.lo95, [2.5, -195.0])
    np.testing.assert_allclose(b.hi95, [97.5, -5.0])
    assert b.n_replicas == 101


def test_t_band_of_known_values():
    values = np.array([1.0, 2.0, 3.0, 4.0, 5.0])  # median 3, sample sd sqrt(2.5)
    b = band(values)
    s = math.sqrt(2.5) * math.sqrt(1 + 1 / 5)
    # Student t with 4 degrees of freedom: 0.84 and 0.975 quantiles
    assert b.median == 3.0
    np.testing.assert_allclose(b.hi68 - 3.0, 1.13440 * s, rtol=2e-4)
    np.testing.assert_allclose(3.0 - b.lo95, 2.7764 * s, rtol=2e-4)
    wide = band(values, inflation=2.0)
    np.testing.assert_allclose(wide.hi95 - 3.0, 2 * (b.hi95 - 3.0))


def test_t_quantile_matches_tables():
    assert t_quantile(0.975, 1) == pytest.approx(12.7062, rel=1e-4)
    assert t_quantile(0.975, 7) == pytest.approx(2.3646, rel=1e-4)
    assert t_quantile(0.84, 10**6) == pytest.approx(0.99446, rel=1e-4)  # the normal's
    assert t_quantile(0.5, 3) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError):
        t_quantile(0.3, 3)


def test_band_rejects_bad_input():
    with pytest.raises(ValueError, match="at least 2"):
        band(np.ones((1, 3)))
    with pytest.raises(ValueError, match="kind"):
        band(np.ones((3, 3)), kind="bayes")
    with pytest.raises(ValueError, match="inflation"):
        band(np.ones((3, 3)), inflation=0.0)


def test_band_keeps_quantities():
    b = band(np.array([1.0, 2.0, 3.0]) * u.km / u.s, kind="percentile")
    assert b.median.unit == u.km / u.s and b.median.value == 2.0


def test_coverage_counts_points_inside_each_band():
    b = band(np.arange(101.0)[:, None] * np.ones(4), kind="percentile")
    # 68%: [16, 84]; 95%: [2.5, 97.5]; the NaN point is not counted
    truth = np.array([50.0, 10.0, 99.0, np.nan])
    c = coverage(b, truth)
    assert c == {"68": pytest.approx(1 / 3), "95": pytest.approx(2 / 3), "n": 3}


def test_coverage_of_gaussian_replicas_is_nominal():
    """Replicas scattered about the truth as a calibrated fit's are: the t bands of 8
    replicas cover it at their nominal rates, the raw percentiles of 8 do not."""
    rng = np.random.default_rng(0)
    n, k = 20000, 8
    truth = rng.normal(size=n)
    estimate = truth + rng.normal(size=n)  # the fit on the data: off by N(0, 1)
    replicas = estimate + rng.normal(size=(k, n))  # replicas scatter as the fit does
    c = coverage(band(replicas), truth)
    assert abs(c["68"] - 0.68) < 0.03 and abs(c["95"] - 0.95) < 0.02
    assert coverage(band(replicas, kind="percentile"), truth)["95"] < 0.85


def test_full_data_centred_t_band_of_known_values():
    """Centred on replica 0 (the full-data fit), whatever the others' median; the width is
    the t(K − 1) quantile times the bootstrap replicas' rms distance from that centre."""
    values = np.array([4.5, 1.0, 2.0, 3.0, 4.0])  # median 3; centre 4.5
    b = band(values, centre="full")
    s = math.sqrt((3.5**2 + 2.5**2 + 1.5**2 + 0.5**2) / 4)
    assert b.median == 4.5 and b.n_replicas == 5
    # Student t with 4 degrees of freedom (the 4 bootstrap replicas): 0.84 and 0.975
    np.testing.assert_allclose(b.hi68 - 4.5, 1.13440 * s, rtol=2e-4)
    np.testing.assert_allclose(4.5 - b.lo68, 1.13440 * s, rtol=2e-4)
    np.testing.assert_allclose(b.hi95 - 4.5, 2.7764 * s, rtol=2e-4)
    wide = band(values, centre="full", inflation={"68": 2.0, "95": 1.5})
    np.testing.assert_allclose(wide.hi68 - 4.5, 2 * (b.hi68 - 4.5))
    np.testing.assert_allclose(4.5 - wide.lo95, 1.5 * (4.5 - b.lo95))
    # a bootstrap replica equal to the centre adds no width; replicas along another axis
    np.testing.assert_allclose(band(np.array([2.0, 2.0, 4.0]), centre="full").hi68 - 2.0,
                               t_quantile(0.84, 2) * math.sqrt(4 / 2))
    two = band(np.stack([values, -values]), axis=1, centre="full")  # (2 points, 5)
    np.testing.assert_allclose(two.median, [4.5, -4.5])


def test_full_data_centred_percentile_band_is_the_basic_bootstrap():
    """The basic bootstrap interval [2c − P_hi, 2c − P_lo] of the bootstrap replicas'
    percentiles: skewed replicas give a band skewed the other way about c."""
    values = np.concatenate([[10.0], np.arange(101.0)])  # centre 10; replicas 0 … 100
    b = band(values, kind="percentile", centre="full")
    assert b.median == 10.0
    assert (b.lo68, b.hi68) == (pytest.approx(20 - 84), pytest.approx(20 - 16))
    assert (b.lo95, b.hi95) == (pytest.approx(20 - 97.5), pytest.approx(20 - 2.5))


def test_full_data_centred_band_covers_at_nominal_rates_under_the_bootstrap_principle():
    """The full-data fit off the truth by N(0, σ²) and bootstrap replicas off the fit by
    N(0, σ²): (truth − c) / s_c is Student-t(K − 1), so the bands cover at 68% and 95%."""
    rng = np.random.default_rng(1)
    n, k = 40000, 8
    truth = rng.normal(size=n)
    fit = truth + rng.normal(size=n)
    values = np.concatenate([fit[None], fit + rng.normal(size=(k - 1, n))])
    c = coverage(band(values, centre="full"), truth)
    assert abs(c["68"] - 0.68) < 0.015 and abs(c["95"] - 0.95) < 0.01
    # the median-centred band of the same values is another band
    assert coverage(band(values), truth)["68"] != c["68"]


def test_full_data_centre_needs_two_values_and_a_known_centre():
    with pytest.raises(ValueError, match="at least 2"):
        band(np.ones((1, 3)), kind="percentile", centre="full")
    with pytest.raises(ValueError, match="centre"):
        band(np.ones((3, 3)), centre="mean")
    with pytest.raises(ValueError, match="centre"):
        _set(centre="first")


def test_z_scores():
    b = band(np.array([0.0, 1.0, 2.0, 3.0, 4.0]), kind="percentile")  # 68%: 0.64 … 3.36
    assert z_scores(b, 2.0) == 0.0
    np.testing.assert_allclose(z_scores(b, 0.64), 1.0)


def _catalog(n=500, weights=None):
    return dp.mocks.plummer(jax.random.key(1), n).with_weights(weights)


def test_bootstrap_is_deterministic_and_differs_per_replica():
    cat = _catalog()
    a, b = bootstrap(cat, jax.random.key(5)), bootstrap(cat, jax.random.key(5))
    np.testing.assert_array_equal(a.x, b.x)
    assert len(a) == len(cat)
    r0, r1 = replica_catalog(cat, 0, 0), replica_catalog(cat, 0, 1)
    assert not np.array_equal(r0.x, r1.x)
    np.testing.assert_array_equal(r0.x, replica_catalog(cat, 0, 0).x)
    assert not np.array_equal(r0.x, replica_catalog(cat, 1, 0).x)  # another seed
    # drawn with replacement from the stars: ~63% of them distinct
    rows = {tuple(row) for row in np.asarray(cat.w)}
    assert all(tuple(row) in rows for row in np.asarray(r0.w))
    assert 0.55 < r0.meta["bootstrap"]["distinct_stars"] / len(cat) < 0.70


def test_bootstrap_keeps_each_stars_weight():
    n = 400
    w = np.where(np.arange(n) % 2 == 0, 0.0, np.arange(n) / n)
    cat = _catalog(n, w)
    means = []
    for k in range(200):
        r = replica_catalog(cat, 0, k)
        # each drawn star carries its own weight
        lookup = {tuple(row): wt for row, wt in zip(np.asarray(cat.w), w)}
        assert all(lookup[tuple(row)] == wt for row, wt in zip(np.asarray(r.w), r.weights))
        means.append(np.average(r.x[:, 0] ** 2, weights=r.weights))
    # the weighted statistic of the resamples scatters about the catalogue's
    target = np.average(cat.x[:, 0] ** 2, weights=w)
    assert abs(np.mean(means) - target) < 3 * np.std(means) / math.sqrt(len(means)) + 0.02 * target


def _set(scales=(0.9, 1.0, 1.1, 1.2), **kw):
    return dp.ReplicaSet([dp.PotentialModel(dp.Plummer(m_tot=s, r_s=1.0)) for s in scales],
                         **kw)


def test_replica_set_bands_and_parameters():
    rs = _set()
    x = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    vals = rs.values("acceleration", x)
    assert vals.shape == (4, 2, 3)
    b = rs.band("potential", x, kind="percentile")
    exact = -np.array([0.9, 1.0, 1.1, 1.2])[:, None] / np.sqrt(1 + np.array([1.0, 4.0]))
    np.testing.assert_allclose(b.median, np.median(exact, 0), rtol=1e-5)
    np.testing.assert_allclose(b.lo95, np.percentile(exact, 2.5, axis=0), rtol=1e-5)
    params = rs.parameters()
    np.testing.assert_allclose(params["m_tot"], [0.9, 1.0, 1.1, 1.2], rtol=1e-6)
    pb = rs.parameter_bands(kind="percentile")["m_tot"]
    assert pb.median == pytest.approx(1.05, rel=1e-6)
    with pytest.raises(ValueError, match="unknown method"):
        rs.values("hessian", x)


def test_replica_set_in_physical_units_and_model_file(tmp_path):
    rs = dp.ReplicaSet([dp.PotentialModel(dp.Plummer(m_tot=m * u.Msun, r_s=1 * u.kpc))
                        for m in (1e10, 1.1e10, 1.2e10)])
    vc = rs.band("circular_velocity", [[8.0, 0.0, 0.0]] * u.kpc)
    assert vc.median.unit.is_equivalent(u.km / u.s) and vc.lo68 < vc.median < vc.hi68
    dp.save_model(tmp_path / "set.eqx", rs, {"stage": "potential"})
    back, meta = dp.load_model(tmp_path / "set.eqx")
    assert isinstance(back, dp.ReplicaSet) and len(back) == 3
    np.testing.assert_array_equal(back.parameters()["m_tot"], rs.parameters()["m_tot"])


def test_full_data_replica_holds_the_catalogue_and_the_others_are_unchanged():
    w = np.linspace(0.5, 2.0, 500)
    cat = _catalog(weights=w)
    full = replica_catalog(cat, 0, 0, "full")
    np.testing.assert_array_equal(full.x, cat.x)
    np.testing.assert_array_equal(full.v, cat.v)
    np.testing.assert_array_equal(full.weights, w)  # every star once, its own weight
    assert "bootstrap" not in full.meta
    assert full_data(0, "full") and not full_data(1, "full") and not full_data(0, "median")
    # replica 0 of the older construction is a resample; the others are the same draws
    assert replica_catalog(cat, 0, 0, "median").meta["bootstrap"]["distinct_stars"] < 400
    for k in (1, 2):
        np.testing.assert_array_equal(replica_catalog(cat, 0, k, "full").x,
                                      replica_catalog(cat, 0, k).x)
    # the fingerprints' salt: only the full-data replica's differs between the two
    assert replica_salt(0, "abc", "full") != replica_salt(0, "abc", "median")
    assert replica_salt(1, "abc", "full") == replica_salt(1, "abc", "median") == {
        "replica": 1, "catalog_sha256": "abc"}


def test_full_data_centred_set_bands_about_its_first_model(tmp_path):
    rs = _set((1.3, 0.9, 1.0, 1.1), centre="full")
    x = np.array([[1.0, 0.0, 0.0]])
    b = rs.band("potential", x)
    np.testing.assert_allclose(b.median, rs[0].potential.potential(x), rtol=1e-6)
    np.testing.assert_allclose(rs.parameter_bands()["m_tot"].median, 1.3, rtol=1e-6)
    dp.save_model(tmp_path / "set.eqx", rs, {"stage": "potential"})
    back, _ = dp.load_model(tmp_path / "set.eqx")
    assert back.centre == "full"
    np.testing.assert_array_equal(back.band("potential", x).median, b.median)


def test_replica_set_file_without_a_centre_loads_centred_on_the_median(tmp_path, monkeypatch):
    """A model file written before `ReplicaSet.centre` existed (no such field in it): its
    bands keep their meaning, the median over the replicas."""
    from deeppot import modelfile

    real = modelfile._describe

    def as_before(obj, arrays):
        desc = real(obj, arrays)
        if isinstance(obj, dp.ReplicaSet):
            del desc["fields"]["centre"]
        return desc

    rs = _set((1.3, 0.9, 1.0, 1.1), centre="full")
    monkeypatch.setattr(modelfile, "_describe", as_before)
    dp.save_model(tmp_path / "old.eqx", rs, {"stage": "potential"})
    monkeypatch.setattr(modelfile, "_describe", real)
    old, _ = dp.load_model(tmp_path / "old.eqx")
    assert old.centre == "median"
    x = np.array([[1.0, 0.0, 0.0]])
    np.testing.assert_allclose(old.band("potential", x).median,
                               np.median(rs.values("potential", x), axis=0), rtol=1e-6)
    assert dp.ReplicaSet(rs.models).centre == "median"  # a set of the user's own models


def test_replica_set_checks_its_models():
    with pytest.raises(ValueError, match="at least one"):
        dp.ReplicaSet([])
    with pytest.raises(TypeError, match="PotentialModel"):
        dp.ReplicaSet([dp.Plummer()])


# ---------------------------------------------------------------- calibration


def test_inflation_by_level_moves_each_band_about_the_median():
    values = np.arange(101.0)[:, None] * np.ones(2)
    b = band(values, kind="percentile", inflation={"68": 1.2, "95": 0.9})
    np.testing.assert_allclose(b.lo68, 50 - 1.2 * 34)  # the 16th percentile, 1.2× as far
    np.testing.assert_allclose(b.hi95, 50 + 0.9 * 47.5)
    t = band(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), inflation={68: 1.5, 95: 1.0})  # int keys
    plain = band(np.array([1.0, 2.0, 3.0, 4.0, 5.0]))
    np.testing.assert_allclose(t.hi68 - 3, 1.5 * (plain.hi68 - 3))
    np.testing.assert_allclose(t.lo95, plain.lo95)
    # a 68% factor that would take that band past the 95% one: the 95% band holds it
    odd = band(values, kind="percentile", inflation={"68": 2.0, "95": 1.0})
    np.testing.assert_allclose(odd.lo95, 50 - 68)  # not the 2.5th percentile
    np.testing.assert_allclose(odd.hi95, 50 + 68)
    np.testing.assert_allclose(odd.hi68, 50 + 68)


def test_calibrate_gives_the_exact_multiplier_of_a_known_normal_error():
    """Replicas with one fixed spread s at every point, the truth off their median by the
    quantiles of N(0, σ²): the factor of level L is σ z_L / (t_L(K − 1) s √(1 + 1/K))."""
    from statistics import NormalDist

    n, sigma = 20001, 0.3
    offsets = np.array([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 3.0])  # K = 8, median 0.25
    centre = np.linspace(-5, 5, n)
    values = centre + offsets[:, None]
    d = sigma * np.array([NormalDist().inv_cdf((i + 0.5) / n) for i in range(n)])
    truth = centre + np.median(offsets) + np.random.default_rng(0).permutation(d)
    k, s = len(offsets), np.std(offsets, ddof=1)
    f = calibrate(band(values), truth)
    for lvl, level in (("68", 0.68), ("95", 0.95)):
        q = (1 + level) / 2
        expected = sigma * NormalDist().inv_cdf(q) / (t_quantile(q, k - 1) * s
                                                      * math.sqrt(1 + 1 / k))
        assert f[lvl] == pytest.approx(expected, rel=2e-3)
    c = coverage(band(values, inflation=f), truth)
    assert c["68"] == pytest.approx(0.68, abs=2 / n) and c["95"] == pytest.approx(0.95, abs=2 / n)


def test_calibrate_leaves_calibrated_bands_alone_and_widens_narrow_ones():
    rng = np.random.default_rng(1)
    n, k = 20000, 8
    truth = rng.normal(size=n)
    estimate = truth + rng.normal(size=n)
    honest = estimate + rng.normal(size=(k, n))  # t bands already nominal: factors ≈ 1
    f = calibrate(band(honest), truth)
    assert f["68"] == pytest.approx(1.0, abs=0.05) and f["95"] == pytest.approx(1.0, abs=0.05)
    narrow = estimate + 0.5 * rng.normal(size=(k, n))  # replicas scatter half as much
    f = calibrate(band(narrow), truth)
    assert 1.8 < f["68"] < 2.05 and 1.8 < f["95"] < 2.05
    for kind in ("t", "percentile"):
        g = calibrate(band(narrow, kind=kind), truth)
        c = coverage(band(narrow, kind=kind, inflation=g), truth)
        assert c["68"] == pytest.approx(0.68, abs=1e-3) and c["95"] == pytest.approx(0.95,
                                                                                      abs=1e-3)


def test_calibrate_and_inflation_reject_bad_input():
    from deeppot.replicas import inflation_factors

    assert inflation_factors(2) == {"68": 2.0, "95": 2.0}
    for bad, match in (({"68": 1.2}, "exactly the levels 68, 95; got 68"),
                       ({"68": 1.0, "95": 1.0, "99": 1.0}, "exactly the levels"),
                       ({"68": 1.0, "95": -1.0}, "positive number; got -1.0 for the 95%"),
                       (math.inf, "positive number"), (True, "positive number"),
                       ("wide", "positive number")):
        with pytest.raises(ValueError, match=match) as err:
            inflation_factors(bad)
        assert "\n" not in str(err.value)
    b = band(np.ones((4, 3)))  # zero width everywhere
    with pytest.raises(ValueError, match="zero width"):
        calibrate(b, np.array([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="finite truth"):
        calibrate(band(np.arange(8.0)[:, None] * np.ones(2)), np.full(2, np.nan))


def test_calibrate_a_basic_bootstrap_band_that_excludes_its_centre():
    """Bootstrap replicas all above the full-data fit put its basic bootstrap band below it:
    a truth below is reached by the factor on that side's distance, one above by none."""
    values = np.concatenate([np.zeros((1, 4)), np.arange(1.0, 102.0)[:, None] * np.ones(4)])
    b = band(values, kind="percentile", centre="full")  # 68%: [−85, −17], centre 0
    assert b.hi68[0] == pytest.approx(-17.0) and b.lo68[0] == pytest.approx(-85.0)
    f = calibrate(b, np.full(4, -1.5 * 85.0))
    assert f["68"] == pytest.approx(1.5)
    with pytest.raises(ValueError, match="edge past the centre"):
        calibrate(b, np.full(4, 1.0))
