"""Survey tables ↔ Galactocentric catalogues: astropy agreement, errors, files, bad input."""

import astropy.coordinates as coord
import astropy.units as u
import jax
import numpy as np
import pytest
from astropy.table import MaskedColumn, QTable, Table

import deeppot as dp
from deeppot import survey


def _catalog(n=64, seed=0, weights=False):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)) * [2.0, 2.0, 0.3] + [-8.1, 0.0, 0.0]
    v = rng.normal(size=(n, 3)) * 30.0 + [0.0, 220.0, 0.0]
    w = rng.uniform(0.5, 2.0, n) if weights else None
    return dp.PhaseSpaceCatalog(x, v, w, units="galactic")


def _table(n=64, seed=0, **kw):
    return survey.to_observables(_catalog(n, seed), errors=survey.GaiaLikeErrors(), **kw)


def test_sun_defaults_are_astropys_v4():
    sun = survey.Sun()
    frame = sun.frame()
    ref = coord.Galactocentric()  # astropy's current defaults ("v4.0")
    assert frame.galcen_distance == ref.galcen_distance and frame.z_sun == ref.z_sun
    np.testing.assert_array_equal(frame.galcen_v_sun.xyz, ref.galcen_v_sun.xyz)
    np.testing.assert_allclose(sun.position(), [-8.12197337, 0.0, 0.0208], atol=1e-8)
    assert survey.Sun(**sun.to_dict()) == sun
    np.testing.assert_allclose(survey.Sun(distance=8000 * u.pc).distance.value, 8.0)
    with pytest.raises(ValueError, match="distance must be convertible to kpc"):
        survey.Sun(distance=8 * u.km / u.s)
    with pytest.raises(ValueError, match="velocity must be finite with shape"):
        survey.Sun(velocity=[1.0, 2.0])


def test_to_observables_matches_astropy():
    cat = _catalog()
    sun = survey.Sun(distance=8.3, z=25.0, velocity=[11.1, 232.2, 7.3])
    t = survey.to_observables(cat, sun=sun)
    direct = coord.SkyCoord(
        x=cat.x[:, 0] * u.kpc, y=cat.x[:, 1] * u.kpc, z=cat.x[:, 2] * u.kpc,
        v_x=cat.v[:, 0] * u.km / u.s, v_y=cat.v[:, 1] * u.km / u.s, v_z=cat.v[:, 2] * u.km / u.s,
        frame=coord.Galactocentric(galcen_distance=8.3 * u.kpc, z_sun=25 * u.pc,
                                   galcen_v_sun=[11.1, 232.2, 7.3] * u.km / u.s),
    ).icrs
    np.testing.assert_allclose(t["ra"], direct.ra.deg, rtol=1e-12)
    np.testing.assert_allclose(t["dec"], direct.dec.deg, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(t["parallax"], 1 / direct.distance.to_value(u.kpc), rtol=1e-12)
    np.testing.assert_allclose(t["pmra"], direct.pm_ra_cosdec.to_value(u.mas / u.yr), rtol=1e-12)
    np.testing.assert_allclose(t["pmdec"], direct.pm_dec.to_value(u.mas / u.yr), rtol=1e-12)
    np.testing.assert_allclose(t["radial_velocity"], direct.radial_velocity.value, rtol=1e-12)
    assert t["parallax"].unit == u.mas and t["pmra"].unit == u.mas / u.yr


def test_from_observables_matches_astropy_and_round_trips():
    cat = _catalog(weights=True)
    t = survey.to_observables(cat, errors=survey.GaiaLikeErrors())
    back = survey.from_observables(t, weight_column="weight")
    scale = np.abs(cat.w).max(axis=0)
    assert np.max(np.abs(back.w - cat.w) / scale) <= 1e-10
    np.testing.assert_array_equal(back.weights, cat.weights)
    direct = coord.SkyCoord(
        ra=t["ra"].quantity, dec=t["dec"].quantity,
        distance=t["parallax"].quantity.to(u.kpc, u.parallax()), pm_ra_cosdec=t["pmra"].quantity,
        pm_dec=t["pmdec"].quantity, radial_velocity=t["radial_velocity"].quantity,
    ).transform_to(coord.Galactocentric())
    np.testing.assert_allclose(back.x, direct.cartesian.xyz.to_value(u.kpc).T, rtol=1e-13)
    np.testing.assert_allclose(back.v, direct.velocity.d_xyz.to_value(u.km / u.s).T, rtol=1e-13)
    assert back.units.name == "galactic"
    assert back.meta["survey"]["n_input"] == back.meta["survey"]["n_kept"] == len(cat)


def test_other_unit_systems():
    cat = _catalog()
    pc = dp.UnitSystem(u.pc, u.km / u.s, u.Msun)
    back = survey.from_observables(_table(), units=pc)
    np.testing.assert_allclose(back.x, cat.x * 1000, rtol=1e-10)
    np.testing.assert_allclose(back.errors[:, :3], survey.from_observables(_table()).errors[:, :3]
                               * 1000, rtol=1e-10)
    with pytest.raises(ValueError, match="physical unit system"):
        survey.from_observables(_table(), units="dimensionless")
    with pytest.raises(ValueError, match="the catalogue is dimensionless"):
        survey.to_observables(dp.PhaseSpaceCatalog(cat.x, cat.v))


def test_covariance_is_the_linearised_astropy_transformation():
    """Central differences through astropy reproduce the Jacobian; the covariance is J Σ Jᵀ,
    with Gaia's correlation columns."""
    t = _table(8)
    t["pmra_pmdec_corr"] = 0.5
    t["parallax_pmra_corr"] = -0.3
    cat = survey.from_observables(t)
    sun = survey.Sun()
    i = 5
    obs = {k: float(t[k][i]) for k in survey.OBSERVABLES}

    def galcen(o):
        c = coord.SkyCoord(
            ra=o["ra"] * u.deg, dec=o["dec"] * u.deg,
            distance=(o["parallax"] * u.mas).to(u.kpc, u.parallax()),
            pm_ra_cosdec=o["pmra"] * u.mas / u.yr, pm_dec=o["pmdec"] * u.mas / u.yr,
            radial_velocity=o["radial_velocity"] * u.km / u.s,
        ).transform_to(sun.frame())
        return np.concatenate([c.cartesian.xyz.to_value(u.kpc),
                               c.velocity.d_xyz.to_value(u.km / u.s)])

    steps = {"ra": 1e-7, "dec": 1e-7, "parallax": 1e-6, "pmra": 1e-5, "pmdec": 1e-5,
             "radial_velocity": 1e-4}
    J = np.zeros((6, 6))
    for j, k in enumerate(survey.OBSERVABLES):
        hi, lo = dict(obs), dict(obs)
        hi[k] += steps[k]
        lo[k] -= steps[k]
        J[:, j] = (galcen(hi) - galcen(lo)) / (2 * steps[k])
    mas = (1 * u.mas).to_value(u.deg)
    J[:, 0] *= mas / np.cos(np.deg2rad(obs["dec"]))  # per mas of α* = α cos δ
    J[:, 1] *= mas
    sig = np.array([t[f"{k}_error"][i] for k in survey.OBSERVABLES])
    cov_obs = np.diag(sig**2)
    cov_obs[3, 4] = cov_obs[4, 3] = 0.5 * sig[3] * sig[4]
    cov_obs[2, 3] = cov_obs[3, 2] = -0.3 * sig[2] * sig[3]
    expected = J @ cov_obs @ J.T
    np.testing.assert_allclose(cat.cov[i], expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())
    assert cat.meta["survey"]["correlations"] == ["parallax_pmra_corr", "pmra_pmdec_corr"]
    # the analytic Jacobian itself, rotated, against the finite differences (per radian)
    o = [[np.deg2rad(obs["ra"]), np.deg2rad(obs["dec"]), obs["parallax"], obs["pmra"],
          obs["pmdec"], obs["radial_velocity"]]]
    jac = survey.icrs_jacobian(o)[0]
    R = np.kron(np.eye(2), survey.galactocentric_rotation(sun.frame()))
    per_rad = J.copy()
    per_rad[:, :2] /= (1 * u.mas).to_value(u.rad)
    np.testing.assert_allclose(R @ jac, per_rad, rtol=1e-5, atol=1e-6 * np.abs(per_rad).max())


def test_noisy_observations_follow_the_errors():
    cat = _catalog(4000, seed=1)
    errors = survey.GaiaLikeErrors(position=0.1 * u.mas, parallax=0.05, pm=0.1,
                                   radial_velocity=2.0)
    exact = survey.to_observables(cat, errors=errors)
    noisy = survey.to_observables(cat, errors=errors, key=jax.random.key(0))
    for k in ("parallax", "pmra", "pmdec", "radial_velocity"):
        z = (noisy[k] - exact[k]) / exact[f"{k}_error"]
        assert abs(np.std(z) - 1) < 0.05 and abs(np.mean(z)) < 0.05, k
    dra = (noisy["ra"] - exact["ra"]) * np.cos(np.deg2rad(exact["dec"])) * 3.6e6
    assert abs(np.std(dra) / 0.1 - 1) < 0.05
    with pytest.raises(ValueError, match="error 'parallax_error' has shape"):
        survey.to_observables(cat, errors=survey.GaiaLikeErrors(parallax=np.ones(3)))
    with pytest.raises(ValueError, match="non-negative"):
        survey.GaiaLikeErrors(pm=-1.0)


@pytest.mark.parametrize("ext", [".fits", ".vot", ".csv", ".ecsv", ".h5"])
def test_table_files_round_trip(tmp_path, ext):
    t = _table(16)
    t["weight"] = np.linspace(1, 2, 16)
    path = survey.write_table(t, tmp_path / f"gaia{ext}")
    from_file = survey.from_observables(path, weight_column="weight")
    direct = survey.from_observables(t, weight_column="weight")
    np.testing.assert_allclose(from_file.w, direct.w, rtol=1e-13)
    np.testing.assert_allclose(from_file.cov, direct.cov, rtol=1e-12)
    assert from_file.meta["survey"]["source"] == str(path)
    # plain CSV keeps no units: Gaia's are assumed, and the catalogue says so
    assumed = from_file.meta["survey"].get("assumed_units", {})
    assert ("parallax" in assumed) == (ext == ".csv")
    # and the catalogue survives its own files
    for cat_ext in (".npz", ".h5", ".csv"):
        again = dp.PhaseSpaceCatalog.load(from_file.save(tmp_path / f"cat{cat_ext}"))
        assert again == from_file


def test_unknown_table_format(tmp_path):
    with pytest.raises(ValueError, match="unknown table format"):
        survey.read_table(tmp_path / "t.xlsx")
    with pytest.raises(FileNotFoundError):
        survey.read_table(tmp_path / "missing.fits")


def test_missing_columns_are_named():
    t = _table(4)
    t.remove_columns(["pmdec", "radial_velocity_error"])
    with pytest.raises(ValueError, match=r"missing columns \['pmdec', 'radial_velocity_error'\]"):
        survey.from_observables(t)


def test_case_insensitive_columns():
    t = _table(4)
    t.rename_column("parallax", "PARALLAX")
    np.testing.assert_allclose(survey.from_observables(t).x, survey.from_observables(_table(4)).x)


@pytest.mark.parametrize(
    ("column", "unit", "match"),
    [
        ("parallax", u.km, "column 'parallax' is in km .* does not convert to mas"),
        ("pmra", u.Unit("bogon", parse_strict="silent"), "column 'pmra' has an unknown unit"),
        ("radial_velocity", u.kpc / u.Myr, None),  # convertible: fine
        ("parallax", u.arcsec, None),
    ],
)
def test_column_units(column, unit, match):
    t = _table(4)
    ref = survey.from_observables(t)
    if match is None:
        factor = (1 * survey.GAIA_UNITS[column]).to_value(unit)
        t[column] = t[column].value * factor
        t[column].unit = unit
        np.testing.assert_allclose(survey.from_observables(t).w, ref.w, rtol=1e-12)
        return
    t[column].unit = unit
    with pytest.raises(ValueError, match=match):
        survey.from_observables(t)


def test_non_numeric_column_is_named():
    t = _table(2)
    t["pmdec"] = ["a", "b"]
    with pytest.raises(ValueError, match="column 'pmdec' is not numeric"):
        survey.from_observables(t)


def test_bad_values_are_named_and_cuts_are_counted():
    t = _table(20)
    t["parallax"][0] = -0.1
    t["parallax"][1] = 0.0
    with pytest.raises(ValueError, match="column 'parallax' has 2 zero or negative values"):
        survey.from_observables(t)
    nan_error = _table(4)
    nan_error["pmdec_error"][2] = np.nan
    with pytest.raises(ValueError, match="column 'pmdec_error' has 1 NaN"):
        survey.from_observables(nan_error)
    t["parallax_error"][2] = np.nan
    t["radial_velocity"] = MaskedColumn(t["radial_velocity"], mask=np.arange(20) == 3)
    t["phot_g_mean_mag"] = np.linspace(10, 20, 20)
    with pytest.raises(ValueError, match="column 'radial_velocity' has 1 NaN, masked"):
        survey.from_observables(t, min_parallax_over_error=5)
    cat = survey.from_observables(t, min_parallax_over_error=5, drop_invalid=True,
                                  cuts={"phot_g_mean_mag": (None, 19.0)})
    s = cat.meta["survey"]
    # rows 0, 1 (parallax ≤ 0) and 2 (NaN error: NaN ratio) fail the parallax cut; G ≤ 19
    # drops rows 18 and 19; the masked radial velocity of row 3 is dropped as invalid
    assert s["cuts"] == [{"cut": "parallax_over_error >= 5", "dropped": 3},
                         {"cut": "-inf <= phot_g_mean_mag <= 19.0", "dropped": 2}]
    assert s["dropped_invalid"] == {"radial_velocity not finite": 1}
    assert s["n_input"] == 20 and s["n_kept"] == len(cat) == 14
    t["radial_velocity_error"][5] = -1.0
    with pytest.raises(ValueError, match="column 'radial_velocity_error' has 1 negative"):
        survey.from_observables(t, min_parallax_over_error=5, drop_invalid=True)
    with pytest.raises(ValueError, match="cut on column 'nope'"):
        survey.from_observables(_table(3), cuts={"nope": (0, 1)})
    with pytest.raises(ValueError, match="no star of 3 is left"):
        survey.from_observables(_table(3), min_parallax_over_error=1e9)
    with pytest.raises(ValueError, match="the table is empty"):
        survey.from_observables(_table(3)[:0])
    bad_corr = _table(3)
    bad_corr["ra_dec_corr"] = 2.0
    with pytest.raises(ValueError, match="column 'ra_dec_corr' has 3 values outside"):
        survey.from_observables(bad_corr)
    with pytest.raises(ValueError, match="weight column 'w' is not in the table"):
        survey.from_observables(_table(3), weight_column="w")


def test_from_observables_accepts_plain_numbers_and_quantity_tables():
    t = _table(5)
    plain = Table({k: np.asarray(t[k]) for k in t.colnames})
    cat = survey.from_observables(plain)
    np.testing.assert_allclose(cat.w, survey.from_observables(t).w, rtol=1e-14)
    assert set(cat.meta["survey"]["assumed_units"]) >= set(survey.OBSERVABLES)
    np.testing.assert_allclose(survey.from_observables(QTable(t)).w, cat.w, rtol=1e-14)
