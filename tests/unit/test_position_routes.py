"""`[scores] position`: the density, selection and selection-free routes of the scores stage,
against the exact Plummer sphere seen through a spherical selection centred at (1, 0, 0)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import deeppot as dp
from deeppot import pipeline
from deeppot.flows import ConditionalDF, ConditionalPlummerDF, PlummerDF
from deeppot.pipeline.build import build_df, build_loss
from deeppot.pipeline.config import ScoresConfig
from deeppot.pipeline.stages import ARTEFACTS, draw_scores, train_potential
from tests.dfs import ObservedPlummerDF

# S(x) = 1 / (1 + (|x − (1, 0, 0)| / d_half)^k): a smooth sphere about (1, 0, 0)
SELECTION = {"type": "distance", "observer": [1.0, 0.0, 0.0], "d_half": 1.0,
             "sigma_mag": 0.3}
_CONDITIONAL = {"df": {"kind": "conditional_plummer_df"}}


def _config(**sections):
    raw = {"run": {"progress": False}, **_CONDITIONAL}
    for name, table in sections.items():
        raw[name] = {**raw.get(name, {}), **table}
    return pipeline.parse_config(raw)


def _selected(n=4096, seed=0):
    """Plummer stars kept with probability S(x)."""
    cat = dp.mocks.plummer(jax.random.key(seed), n)
    sel = dp.selection.selection_from_description(SELECTION)
    return dp.mocks.select(cat, sel, jax.random.key(seed + 1))


def _plummer_scores(x, v):
    return PlummerDF().score(jnp.concatenate([x, v], -1))


# ---------------------------------------------------------------------------- configuration


@pytest.mark.parametrize("sections, match", [
    ({"df": {"kind": "ffjord"}, "scores": {"position": "free"}},
     r"position = 'free' in \[scores\] needs a conditional DF.*kind = 'ffjord'"),
    ({"scores": {"position": "selection"}},
     r"position = 'selection' in \[scores\].*key 'selection' in \[scores\]"),
    ({"scores": {"position": "density", "selection": SELECTION}},
     r"key 'selection' in \[scores\] applies with position = 'selection'"),
    ({"df": {"kind": "conditional", "ensemble": 2}, "scores": {"position": "free"}},
     r"position = 'free'.*bare conditional DF; drop ensemble > 1 in \[df\]"),
    ({"scores": {"position": "free", "path": "scores.h5"}},
     r"key 'path' in \[scores\].*position = 'free'"),
    ({"scores": {"position": "free"}, "fit": {"form": "f"}},
     r"form = 'f' in \[fit\].*position = 'free'"),
    ({"scores": {"position": "everywhere"}},
     r"key 'position' in \[scores\] must be one of 'density', 'selection', 'free'"),
    ({"scores": {"position": "free", "velocities_per_star": 3}},
     r"key 'velocities_per_star' in \[scores\] must be ≥ 4"),
])
def test_position_keys_are_validated(sections, match):
    with pytest.raises(dp.ConfigError, match=match):
        _config(**sections)


def test_position_defaults_and_older_configs():
    """density by default; a config from before the key that gives a selection meant the
    selection route; [df] symmetry reaches the conditional DF's velocity factor."""
    assert _config().scores.position == "density"
    assert _config().scores.velocities_per_star == 8
    assert _config(scores={"selection": SELECTION}).scores.position == "selection"
    cfg = _config(df={"kind": "conditional", "symmetry": "axisymmetric",
                      "params": {"density_symmetry": "none", "flow_layers": 1,
                                 "nn_width": 4, "nn_depth": 1}})
    df = build_df(cfg.df, jax.random.key(0))
    assert isinstance(df, ConditionalDF)
    assert (df.symmetry, df.density_symmetry) == ("axisymmetric", "none")
    # the profiled fit's first term is ProfiledStationarity, the plain fit's Stationarity
    assert isinstance(build_loss(cfg.fit, profiled=True).term.terms[0],
                      dp.terms.ProfiledStationarity)
    assert type(build_loss(cfg.fit).term.terms[0]) is dp.terms.Stationarity


def test_scale_velocities_reaches_the_spherical_conditional_df():
    """[df] scale_velocities divides a spherical velocity factor's velocities by the fitted
    profiles (true, the default, or false as given); other symmetries have no profile; the
    key is [df]'s, not [df.params]'s."""
    tiny = {"flow_layers": 1, "nn_width": 4, "nn_depth": 1}
    for scale in (True, False):
        cfg = _config(df={"kind": "conditional", "symmetry": "spherical",
                          "scale_velocities": scale, "params": tiny})
        df = build_df(cfg.df, jax.random.key(0))
        assert (df.profile is not None) == scale
        assert dict(df.architecture)["scale_velocities"] == scale
    cfg = _config(df={"kind": "conditional", "symmetry": "axisymmetric", "params": tiny})
    assert cfg.df.scale_velocities and build_df(cfg.df, jax.random.key(0)).profile is None
    with pytest.raises(dp.ConfigError, match="has no parameter 'scale_velocities'"):
        _config(df={"kind": "conditional", "symmetry": "spherical",
                    "params": {**tiny, "scale_velocities": True}})
    with pytest.raises(dp.ConfigError, match="key 'tangential' in \\[df\\] applies only"):
        _config(df={"kind": "conditional", "symmetry": "spherical", "tangential": "speed"})


def test_the_route_is_in_the_fingerprint_only_when_it_is_not_the_default():
    """Run directories from before `position` resume without rerunning a stage (the new
    keys at their defaults leave the fingerprints as they were); another route or
    velocity count reruns the scores stage and those after it, not the DF."""
    from deeppot.pipeline.rundir import fingerprints

    base = fingerprints(_config())
    assert fingerprints(_config(scores={"position": "density", "velocities_per_star": 8})) \
        == base
    for scores in ({"position": "free"}, {"velocities_per_star": 16}):
        other = fingerprints(_config(scores=scores))
        assert other["df"] == base["df"] and other["scores"] != base["scores"]


def test_keys_added_since_run_directories_existed_stay_out_of_their_fingerprints():
    """The keys added after run directories existed (`[scores] position` and
    `velocities_per_star`, `[df]` and `[fit] optimizer`) are not among the settings a
    stage's fingerprint holds while a config computes what it did before: the default, and
    an older survey config that names a selection and no route (read as `"selection"`, which
    follows from the selection the fingerprint already holds). Set to something new, they
    are."""
    from deeppot.pipeline.rundir import _settings

    added = {"scores": {"position", "velocities_per_star"}, "df": {"optimizer"},
             "fit": {"optimizer"}}

    def held(cfg):
        return {name: set(_settings(getattr(cfg, name))) & keys for name, keys in added.items()}

    trained = {"kind": "conditional"}  # a DF that [df] optimizer applies to
    nothing = {name: set() for name in added}
    assert held(_config()) == nothing and held(_config(df=trained)) == nothing
    survey = _config(scores={"selection": SELECTION})
    assert survey.scores.position == "selection" and held(survey) == nothing
    assert held(_config(scores={"position": "free"}))["scores"] == {"position"}
    changed = _config(df={**trained, "optimizer": "adam"}, fit={"optimizer": "adam"})
    assert held(changed)["df"] == {"optimizer"} and held(changed)["fit"] == {"optimizer"}


# ---------------------------------------------------------------------------- the routes' scores


@pytest.mark.slow
def test_density_and_selection_routes_give_the_exact_position_scores():
    """density: the DF's own scores; selection: those of S ν p(v|x) less ∇ln S, the
    underlying Plummer scores."""
    with jax.enable_x64(True):
        key = jax.random.key(2)
        dens = draw_scores(ScoresConfig(n=200, chunk_size=200), ConditionalPlummerDF(), key)
        np.testing.assert_allclose(dens.dlnf_dx, _plummer_scores(dens.x, dens.v)[0],
                                   rtol=1e-9, atol=1e-12)
        sel = dp.selection.selection_from_description(SELECTION)
        observed = ObservedPlummerDF(selection=sel, chunk_size=512)
        cfg = ScoresConfig(n=200, chunk_size=200, position="selection", selection=SELECTION)
        corrected = draw_scores(cfg, observed, key)
        exact_x, exact_v = _plummer_scores(corrected.x, corrected.v)
        raw_x = observed.score(jnp.concatenate([corrected.x, corrected.v], -1))[0]
        assert float(jnp.median(jnp.linalg.norm(raw_x - exact_x, axis=-1))) > 0.3
        np.testing.assert_allclose(corrected.dlnf_dx, exact_x, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(corrected.dlnf_dv, exact_v, rtol=1e-8, atol=1e-10)
        with pytest.raises(ValueError, match="applies with position = 'selection'"):
            draw_scores(ScoresConfig(n=8, selection=SELECTION), observed, key)


def test_free_route_draws_at_the_catalogue_positions(tmp_path):
    """free: velocities at the selected catalogue's own positions, whose profiled ∇ln ν
    under the true potential completes them to the exact Plummer scores (no ν, no S); the
    sample is stored and read back as itself, with its route."""
    with jax.enable_x64(True):
        cat = _selected(2048)
        cfg = ScoresConfig(n=300, chunk_size=128, position="free", velocities_per_star=6)
        free = draw_scores(cfg, ConditionalPlummerDF(), jax.random.key(2), catalog=cat)
        assert isinstance(free, dp.VelocityScoreSample) and free.v.shape == (300, 6, 3)
        # positions are catalogue stars (a subset: n < the catalogue's size), not resampled
        d = np.linalg.norm(np.asarray(free.x)[:, None] - np.asarray(cat.x)[None], axis=-1)
        np.testing.assert_array_equal(d.min(axis=1), 0.0)
        truth = dp.PotentialModel(dp.Plummer(m_tot=1.0, r_s=1.0))
        joint = dp.terms.profiled_scores(truth, free, ridge=0.0)
        exact_x, exact_v = _plummer_scores(joint.x, joint.v)
        np.testing.assert_allclose(joint.dlnf_dx, exact_x, rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(joint.dlnf_dv, exact_v, rtol=1e-9, atol=1e-12)
        assert dp.evaluate.fit_quality(truth, free)["median_relative_residual"] < 1e-6
        assert dp.check_potential_fit(truth, free)["residual_ratio"] < 1e-4  # the ridge's bias
        # a wrong mass is judged against Φ = 0 with ∇ln ν profiled for Φ = 0, not for the
        # wrong Φ (which made three times the mass look 14 times better than no force)
        def plummer(m):
            return dp.PotentialModel(dp.Plummer(m_tot=m, r_s=1.0))

        with pytest.raises(dp.FitFailed, match="no better than Φ = 0"):
            dp.check_potential_fit(plummer(3.0), free)
        assert 0.5 < dp.check_potential_fit(plummer(0.3), free)["residual_ratio"] < 1

        with pytest.raises(ValueError, match="give the catalogue"):
            draw_scores(cfg, ConditionalPlummerDF(), jax.random.key(2))
        with pytest.raises(ValueError, match="needs a conditional DF"):
            draw_scores(cfg, PlummerDF(), jax.random.key(2), catalog=cat)

        path = tmp_path / "scores.npz"
        ARTEFACTS["scores"].save(free, path, {"stage": "scores", "position": "free"})
        back, _ = ARTEFACTS["scores"].load(path)
        assert isinstance(back, dp.VelocityScoreSample)
        for name in ("x", "v", "dlnp_dx", "dlnp_dv"):
            np.testing.assert_array_equal(getattr(back, name), getattr(free, name))
    with np.load(path) as data:
        assert '"position": "free"' in str(data["meta"])
    ARTEFACTS["scores"].save(free, path, {})  # a score file replaces a score file


# ---------------------------------------------------------------------------- the profiled fit


@pytest.mark.slow
def test_free_route_fit_recovers_the_plummer_force():
    """Exact conditional scores at the selected stars, the `[fit]` loss with
    ProfiledStationarity (inside Log, with PositiveDensity): a Plummer family started 30%
    off recovers the force at the stars to 1e-3 (median), with no ∇ln ν and no S."""
    cfg = _config(scores={"position": "free", "n": 1024, "chunk_size": 1024},
                  potential={"model": "plummer", "params": {"m_tot": 0.7, "r_s": 1.3}},
                  fit={"steps": 200, "batch_size": 256, "warmup_steps": 10,
                       "learning_rate": 5e-2, "validate_every": 50})
    cat = _selected(2048)
    scores = draw_scores(cfg.scores, ConditionalPlummerDF(), jax.random.key(3), catalog=cat)
    model, summary = train_potential(cfg.potential, cfg.fit, scores, jax.random.key(4))
    x = jnp.asarray(cat.x)
    true = x * (1.0 + jnp.sum(x**2, -1, keepdims=True)) ** -1.5
    got = jax.vmap(model.potential._gradient)(x)
    err = jnp.linalg.norm(got - true, axis=-1) / jnp.linalg.norm(true, axis=-1)
    assert float(jnp.median(err)) < 1e-3, float(jnp.median(err))
    assert summary["check"]["residual_ratio"] < 0.01


@pytest.mark.slow
def test_a_free_run_records_its_route_and_resumes(tmp_path):
    """`deeppot run` with position = "free": the score file is a VelocityScoreSample that
    records its route, the fit recovers the truth from exact conditional scores, and a
    second run skips every stage."""
    cfg = _config(data={"source": "plummer", "n": 2048, "select_radius": 1.0,
                        "select_center": [1.0, 0.0, 0.0]},
                  scores={"position": "free", "n": 2048},
                  potential={"model": "plummer", "params": {"m_tot": 0.7, "r_s": 1.3}},
                  fit={"steps": 200, "batch_size": 512, "warmup_steps": 10,
                       "learning_rate": 5e-2, "validate_every": 50},
                  evaluate={"plots": False, "region": "radial", "r_min": 0.1, "r_max": 2.0})
    metrics = pipeline.run(cfg, tmp_path, log=None)
    assert metrics["accuracy"]["force"]["median"] < 1e-3
    with np.load(tmp_path / "scores.npz") as data:
        assert "dlnp_dx" in data and '"position": "free"' in str(data["meta"])
    lines = []
    pipeline.run(cfg, tmp_path, log=lines.append)
    assert sum("skipped" in line for line in lines) == 5, lines
