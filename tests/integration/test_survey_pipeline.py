"""`deeppot run` on a survey table: [run] units, [data] source = "survey", [scores] selection."""

import astropy.units as u
import jax
import numpy as np
import pytest

import deeppot as dp
from deeppot import pipeline, survey
from deeppot.flows import PlummerDF
from deeppot.pipeline.config import ScoresConfig
from deeppot.pipeline.stages import draw_scores

SELECTION = {"type": "distance", "observer": [-8.122, 0.0, 0.0208], "d_half": 1.5,
             "sigma_mag": 0.5}


def _catalog(n=1024, seed=0):
    """Stars within ~1 kpc of the Sun, in kpc and km/s."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)) * [0.5, 0.5, 0.2] + [-8.1, 0.0, 0.0]
    v = rng.normal(size=(n, 3)) * 30.0 + [0.0, 220.0, 0.0]
    return dp.PhaseSpaceCatalog(x, v, units="galactic")


def _config(table, **sections):
    raw = {"run": {"units": "galactic", "progress": False},
           "data": {"source": "survey", "path": str(table),
                    "params": {"min_parallax_over_error": 5.0,
                               "sun": {"distance": 8.122, "z": 20.8}}},
           "df": {"kind": "ffjord", "params": {"width": 32, "depth": 2, "ode": 4}, "steps": 400,
                  "batch_size": 256, "warmup_steps": 20},
           "scores": {"n": 512, "chunk_size": 512, "selection": SELECTION},
           "potential": {"model": "miyamoto_nagai",
                         "params": {"m_tot": 1e11, "a": 3.0, "b": 0.3}},
           "fit": {"steps": 20, "batch_size": 256, "warmup_steps": 2},
           "evaluate": {"plots": False}}
    for name, updates in sections.items():
        raw[name] = {**raw[name], **updates}
    return raw


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    path = tmp_path_factory.mktemp("survey") / "gaia.fits"
    survey.write_table(survey.to_observables(_catalog(), errors=survey.GaiaLikeErrors()), path)
    return path


def test_survey_table_becomes_the_runs_catalogue(table, tmp_path):
    """The data stage reads the Gaia-column table back to the Galactocentric stars."""
    pipeline.run(pipeline.parse_config(_config(table)), tmp_path, log=None, stop_after="data")
    cat = dp.PhaseSpaceCatalog.load(tmp_path / "catalog.npz")
    truth = _catalog()
    assert cat.units.same_units(dp.units.get_units("galactic"))
    assert len(cat) == cat.meta["survey"]["n_kept"] and len(cat) > 0.9 * len(truth)
    assert cat.cov is not None and cat.cov.shape == (len(cat), 6, 6)
    # exact values were written (no noise key): the kept stars are the originals
    d = np.linalg.norm(cat.x[:, None, :] - truth.x[None, :, :], axis=-1)
    np.testing.assert_allclose(d.min(axis=1), 0.0, atol=1e-9)


def test_scores_are_corrected_for_the_configured_selection():
    """[scores] selection subtracts ∂ln S/∂x (in [run] units) and leaves ∂ln f/∂v alone."""
    df = PlummerDF()
    sel = {**SELECTION, "observer": [1.0, 0.0, 0.0], "d_half": 1.0}
    key = jax.random.key(0)
    plain = draw_scores(ScoresConfig(n=256, chunk_size=256), df, key)
    corrected = draw_scores(ScoresConfig(n=256, chunk_size=256, position="selection",
                                         selection=sel), df, key)
    s = dp.selection.selection_from_description({**sel, "units": "dimensionless"})
    _, dlns_dx = s.log_selection_and_gradient(plain.x)
    np.testing.assert_allclose(corrected.dlnf_dx, plain.dlnf_dx - dlns_dx, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(corrected.dlnf_dv, plain.dlnf_dv)
    assert float(np.max(np.abs(dlns_dx))) > 0.1  # the correction is not negligible here


@pytest.mark.parametrize("section, updates, match", [
    ("run", {"units": "dimensionless"}, "needs physical units"),
    ("data", {"path": "missing.fits"}, "not found"),
    ("data", {"params": {"min_parallax": 5}}, "no parameter 'min_parallax'"),
    ("scores", {"selection": {"type": "distance", "d_half": 1.0}}, "selection"),
    ("scores", {"selection": {"type": "cone"}}, "unknown selection type"),
])
def test_bad_survey_configs_are_named(table, section, updates, match):
    with pytest.raises(dp.ConfigError, match=match):
        pipeline.parse_config(_config(table, **{section: updates}))


def test_a_dimensionless_mock_refuses_physical_units():
    with pytest.raises(dp.ConfigError, match="dimensionless mock"):
        pipeline.parse_config({"run": {"units": "galactic"}, "data": {"source": "plummer"}})


@pytest.fixture(scope="module")
def stationary_table(tmp_path_factory):
    """A Plummer sphere of 10¹¹ M☉ and b = 3 kpc at the Galactic centre, seen from the Sun:
    stars a fit can explain (the Gaussian blob of `table` is stationary in no potential, so
    the run's health checks would rightly refuse it)."""
    G = 4.300917270e-6  # kpc (km/s)² / M☉
    b, mass = 3.0, 1e11
    unit = dp.mocks.plummer(jax.random.key(0), 2048)
    cat = dp.PhaseSpaceCatalog(np.asarray(unit.x) * b, np.asarray(unit.v) * np.sqrt(G * mass / b),
                               units="galactic")
    path = tmp_path_factory.mktemp("survey") / "plummer.fits"
    survey.write_table(survey.to_observables(cat, errors=survey.GaiaLikeErrors()), path)
    return path


@pytest.mark.slow
def test_survey_run_end_to_end_in_physical_units(stationary_table, tmp_path):
    """Table → catalogue → DF → corrected scores → a Plummer fit in kpc and M☉ → report."""
    raw = _config(stationary_table,
                  potential={"model": "plummer", "params": {"m_tot": 5e10, "r_s": 2.0}})
    metrics = pipeline.run(pipeline.parse_config(raw), tmp_path, log=None)
    model, _ = dp.load_model(tmp_path / "potential.eqx")
    assert model.potential.units.same_units(dp.units.get_units("galactic"))
    assert set(metrics["parameters"]) == {"m_tot", "r_s"}
    assert all(np.isfinite(v) for v in metrics["parameters"].values())
    assert "galactic" in (tmp_path / "report.md").read_text()
    # the fitted potential answers in physical units
    f = model.potential.acceleration([8.0, 0.0, 0.0] * u.kpc)
    assert f.unit.is_equivalent(u.km / u.s**2)
