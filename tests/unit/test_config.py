"""Pipeline configs are validated up front, with messages that name the section and key."""

import dataclasses
import tomllib
from pathlib import Path

import jax
import pytest

import deeppot as dp
from deeppot import cli, pipeline
from deeppot.pipeline import ConfigError, load_config, parse_config


def _error(raw, base_dir="."):
    with pytest.raises(ConfigError) as info:
        parse_config(raw, base_dir)
    return str(info.value)


def test_defaults_are_valid_and_are_the_api_defaults():
    """An empty config gets the recommended recipe, defined once: the API's settings, which
    `fit_df` and `fit_potential` use by default."""
    import inspect

    from deeppot.flows import FFJORD
    from deeppot.train import DF_SETTINGS, POTENTIAL_SETTINGS, fit_df, fit_potential

    def default(fn, name):
        return inspect.signature(fn).parameters[name].default

    assert default(fit_df, "settings") is DF_SETTINGS
    assert default(fit_potential, "settings") is POTENTIAL_SETTINGS
    cfg = parse_config({})
    assert cfg.data.source == "plummer" and cfg.df.kind == "ffjord"
    assert FFJORD.objectives[0] == "cfm"  # the DF trains by flow matching unless told
    for key, name in [("steps", "max_steps"), ("batch_size", "batch_size"),
                      ("learning_rate", "learning_rate"), ("warmup_steps", "warmup_steps"),
                      ("schedule", "lr_schedule"), ("validate_every", "validate_every"),
                      ("patience", "patience"), ("optimizer", "optimizer"),
                      ("checkpoint_every", "checkpoint_every")]:
        assert getattr(cfg.df, key) == getattr(DF_SETTINGS, name), key
        assert getattr(cfg.fit, key) == getattr(POTENTIAL_SETTINGS, name), key
    assert cfg.df.ema_decay == DF_SETTINGS.ema_decay
    # today's recommended values (the demo's numbers depend on them)
    assert (DF_SETTINGS.max_steps, DF_SETTINGS.batch_size, DF_SETTINGS.learning_rate,
            DF_SETTINGS.warmup_steps, DF_SETTINGS.lr_schedule, DF_SETTINGS.validate_every,
            DF_SETTINGS.ema_decay) == (20000, 2048, 2e-3, 500, "cosine", 50, 0.998)
    assert (POTENTIAL_SETTINGS.max_steps, POTENTIAL_SETTINGS.batch_size,
            POTENTIAL_SETTINGS.learning_rate, POTENTIAL_SETTINGS.warmup_steps,
            POTENTIAL_SETTINGS.lr_schedule, POTENTIAL_SETTINGS.validate_every,
            POTENTIAL_SETTINGS.ema_decay) == (8000, 2048, 2e-3, 500, "cosine", 10, None)
    # the kind's own parameters are its constructor's: FFJORD's defaults, unless set
    assert cfg.df.params == {}
    df = pipeline.build_df(cfg.df, jax.random.key(0))
    mlp = df.blocks[0].field.mlp
    assert (len(df.blocks), mlp.width_size, mlp.depth) == tuple(
        default(FFJORD, key) for key in ("n_blocks", "width", "depth"))
    assert mlp.activation is default(FFJORD, "activation")


def test_unknown_key_names_key_section_and_valid_keys():
    msg = _error({"df": {"kind": "spline", "foo": 1}})
    assert "unknown key 'foo' in [df]" in msg
    assert "valid keys:" in msg and "learning_rate" in msg


def test_unknown_section_is_named():
    msg = _error({"optimiser": {"lr": 1e-3}})
    assert "unknown section [optimiser]" in msg and "[fit]" in msg


@pytest.mark.parametrize(
    "raw, expected",
    [
        ({"fit": {"steps": "100"}}, "key 'steps' in [fit] must be an integer, got string '100'"),
        ({"fit": {"steps": True}}, "key 'steps' in [fit] must be an integer"),
        ({"fit": {"steps": 2.5}}, "key 'steps' in [fit] must be an integer, got float 2.5"),
        ({"fit": {"learning_rate": "fast"}}, "key 'learning_rate' in [fit] must be a number"),
        ({"fit": {"learning_rate": 0.0}}, "key 'learning_rate' in [fit] must be > 0, got 0.0"),
        ({"scores": {"n": -5}}, "key 'n' in [scores] must be ≥ 1, got -5"),
        ({"evaluate": {"density_fraction": 2}}, "key 'density_fraction' in [evaluate] must be ≤ 1"),
        ({"df": {"kind": "maf"}}, "key 'kind' in [df] must be one of 'conditional', "),
        ({"run": {"x64": "yes"}}, "key 'x64' in [run] must be true or false"),
        ({"potential": {"omega": [0, 0]}}, "key 'omega' in [potential] must be an array of 3"),
        ({"fit": 3}, "[fit] must be a table"),
        ({"evaluate": {"band_inflation": 0}}, "key 'band_inflation' in [evaluate]: the band "
         "inflation must be a positive number; got 0"),
        ({"evaluate": {"band_inflation": "wide"}}, "key 'band_inflation' in [evaluate] must be "
         "a positive number or a table of one per band level, got string 'wide'"),
        ({"evaluate": {"band_inflation": {"68": 1.2}}}, "key 'band_inflation' in [evaluate]: a "
         "band inflation by level needs exactly the levels 68, 95; got 68"),
        ({"fit": {"optimizer": "lbfgs"}}, "key 'optimizer' in [fit] must be one of 'radam', "
                                          "'adam'"),
    ],
)
def test_bad_values_name_the_key(raw, expected):
    assert expected in _error(raw)


def test_key_for_another_kind_is_rejected():
    msg = _error({"data": {"source": "file", "path": "x.npz", "observe": True}})
    assert "key 'observe' in [data] applies only when source = a mock generator" in msg
    msg = _error({"data": {"source": "plummer", "path": "x.npz"}})
    assert "key 'path' in [data] applies only when source = a source that reads a file" in msg
    msg = _error({"df": {"kind": "exact", "steps": 10}})
    assert "key 'steps' in [df] applies only when kind = a trained DF" in msg
    msg = _error({"potential": {"model": "plummer", "width": 64}})
    assert "key 'width' in [potential] applies only when model = a learned model" in msg


def test_missing_catalogue_file_names_path(tmp_path):
    msg = _error({"data": {"source": "file", "path": "nowhere.npz"}}, tmp_path)
    assert "key 'path' in [data]" in msg and "nowhere.npz" in msg and "not found" in msg
    assert "key 'path' in [data] is required" in _error({"data": {"source": "file"}})


def test_relative_catalogue_path_is_resolved_against_the_config(tmp_path):
    (tmp_path / "stars.npz").write_bytes(b"")
    cfg_file = tmp_path / "run.toml"
    cfg_file.write_text('[data]\nsource = "file"\npath = "stars.npz"\n')
    assert load_config(cfg_file).data.path == str(tmp_path / "stars.npz")


def test_cross_section_checks():
    assert "kind = 'exact' in [df]" in _error({"data": {"source": "disk"}, "df": {"kind": "exact"}})
    assert "kind = 'exact' in [df]" in _error({"data": {"observe": True}, "df": {"kind": "exact"}})
    msg = _error({"potential": {"model": "miyamoto_nagai", "params": {"a": 1.0, "c": 2.0}}})
    assert "miyamoto_nagai has no parameter 'c'" in msg
    assert "key 'objective' in [df]" in _error({"df": {"kind": "spline", "objective": "cfm"}})
    assert "r_min < r_max" in _error({"evaluate": {"r_min": 3.0, "r_max": 1.0}})


def test_all_errors_are_reported_together():
    msg = _error({"df": {"foo": 1}, "fit": {"steps": -1}, "bar": {}})
    assert "'foo'" in msg and "'steps'" in msg and "[bar]" in msg


def test_overrides_are_parsed_as_toml_or_bare_strings(tmp_path):
    plain = tmp_path / "plain.toml"
    plain.write_text("[fit]\nsteps = 1\n")
    cfg = load_config(plain, ["fit.steps=10", "df.kind=ffjord", "potential.omega=[0, 0, 0.3]",
                              "df.learning_rate=1e-3"])
    assert cfg.fit.steps == 10 and cfg.df.kind == "ffjord"
    assert cfg.potential.omega == [0.0, 0.0, 0.3] and cfg.df.learning_rate == 1e-3
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(pipeline.default_config_path("demo"), ["steps=10"])
    # the demo config tunes FFJORD's parameters, so switching the kind flags them by name
    with pytest.raises(ConfigError, match="kind 'spline' has no parameter 'width'; valid: kind"):
        load_config(pipeline.default_config_path("demo"), ["df.kind=spline"])
    # a key of a table is a dotted path
    cfg = load_config(pipeline.default_config_path("demo"), ["df.params.width=64",
                                                             "data.params.r_max=20"])
    assert cfg.df.params == {"width": 64, "depth": 3, "activation": "tanh", "ode": 4}
    assert cfg.data.params == {"r_max": 20.0}
    with pytest.raises(ConfigError, match="cannot override df.kind.width: df.kind is not a"):
        load_config(pipeline.default_config_path("demo"), ["df.kind.width=64"])


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[fit\nsteps = 1\n")
    with pytest.raises(ConfigError, match="TOML syntax error"):
        load_config(bad)


_CASES = sorted((Path(__file__).parents[2] / "benchmarks" / "configs").glob("*.toml"))


@pytest.mark.parametrize("path", [*(pipeline.default_config_path(n) for n in
                                    ("demo", "demo-quick", "disk", "sphere")), *_CASES],
                         ids=lambda p: Path(p).stem)
def test_shipped_configs_validate_and_round_trip(path, tmp_path):
    """The shipped configs and the reproduction cases' configs validate and round-trip (a
    catalogue or snapshot file that a benchmark script writes first is stood in for by a
    small one)."""
    overrides = []
    data = tomllib.loads(Path(path).read_text()).get("data", {})
    source = data.get("source")
    if source in ("file", "snapshot") and not (Path(path).parent / data["path"]).is_file():
        from deeppot.flows import PlummerDF

        w = PlummerDF().sample(jax.random.key(0), 64)
        if source == "file":
            stand_in = dp.PhaseSpaceCatalog(w[:, :3], w[:, 3:]).save(tmp_path / "stars.npz")
        else:
            from deeppot.snapshot import write_snapshot

            stars = dp.PhaseSpaceCatalog(w[:, :3], w[:, 3:], units="galactic")
            stand_in = write_snapshot(stars, tmp_path / "snap.hdf5")
        overrides.append(f"data.path={stand_in}")
    cfg = load_config(path, overrides)
    again = parse_config(tomllib.loads(pipeline.dumps_toml(cfg.to_dict())))
    assert again == cfg


def test_band_calibration_round_trips_through_the_config():
    """A calibration (`calibrate`'s factors) reaches another run as the `--set` line its
    report prints, and survives the run directory's config.toml."""
    from deeppot.pipeline import calibration_setting

    factors = {"68": 1.2345678, "95": 0.61}
    raw = pipeline.apply_overrides({}, [calibration_setting(factors)])
    cfg = parse_config(raw).evaluate
    assert cfg.band_inflation == {"68": pytest.approx(1.235), "95": 0.61}
    again = parse_config(tomllib.loads(pipeline.dumps_toml(parse_config(raw).to_dict())))
    assert again.evaluate.band_inflation == cfg.band_inflation
    assert parse_config({"evaluate": {"band_inflation": 2}}).evaluate.band_inflation == 2.0


def test_sphere_recipe_reads_a_file_and_keeps_the_recommended_settings(tmp_path):
    """sphere.toml: data from a catalogue file, the spherical DF with the dispersion
    profiles and a spherical potential; every other key the demo's (the recommended one)."""
    from deeppot.flows import PlummerDF

    w = PlummerDF().sample(jax.random.key(0), 64)
    stars = dp.PhaseSpaceCatalog(w[:, :3], w[:, 3:]).save(tmp_path / "stars.npz")
    cfg = load_config(pipeline.default_config_path("sphere"), [f"data.path={stars}"])
    demo = load_config(pipeline.default_config_path("demo"))
    assert (cfg.data.source, cfg.data.path) == ("file", str(stars))
    assert (cfg.df.symmetry, cfg.df.tangential, cfg.df.scale_velocities) == (
        "spherical", "vector", True)
    assert cfg.potential.model == "spherical"
    assert dataclasses.replace(cfg.df, scale_velocities=False) == demo.df
    assert (cfg.scores, cfg.potential, cfg.fit) == (demo.scores, demo.potential, demo.fit)


def test_extends_merges_key_by_key_and_refuses_cycles(tmp_path):
    base = tmp_path / "base.toml"
    base.write_text("[fit]\nsteps = 7\nbatch_size = 64\n[df]\nkind = 'exact'\n")
    child = tmp_path / "child.toml"
    child.write_text("extends = 'base.toml'\n[fit]\nsteps = 9\n")
    cfg = load_config(child)
    assert (cfg.fit.steps, cfg.fit.batch_size, cfg.df.kind) == (9, 64, "exact")
    quick = load_config(pipeline.default_config_path("demo-quick"))
    demo = load_config(pipeline.default_config_path("demo"))
    assert quick.df.params == demo.df.params and quick.df.steps < demo.df.steps
    # `params` tables merge key by key too, unless the kind changes
    base.write_text("[df]\nkind = 'spline'\nparams = { knots = 4, nn_depth = 1 }\n")
    child.write_text("extends = 'base.toml'\n[df.params]\nknots = 6\n")
    assert load_config(child).df.params == {"knots": 6, "nn_depth": 1}
    child.write_text("extends = 'base.toml'\n[df]\nkind = 'ffjord'\nparams = { width = 8 }\n")
    assert load_config(child).df.params == {"width": 8}
    base.write_text("extends = 'child.toml'\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(child)


def test_cli_reports_config_errors_before_any_work(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[df]\nkind = \"spline\"\nlearning_rat = 1e-3\n")
    assert cli.main(["run", str(bad), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'learning_rat' in [df]" in err
    assert not (tmp_path / "run").exists()
    assert cli.main(["demo", "--set", "fit.steps=-3"]) == 2
    assert "key 'steps' in [fit] must be ≥ 0" in capsys.readouterr().err


def test_cli_parses_every_subcommand():
    parser = cli.build_parser()
    for argv in (["run", "c.toml", "--run-dir", "d", "--set", "fit.steps=3"],
                 ["fit-df", "cat.npz", "-o", "df.eqx"], ["scores", "df.eqx", "-o", "s.npz"],
                 ["fit-potential", "s.npz", "-o", "p.eqx"],
                 ["evaluate", "p.eqx", "--catalog", "cat.npz"], ["demo", "--quick"]):
        args = parser.parse_args(argv)
        assert callable(args.func)


def test_docs_list_every_key_as_the_schema_does():
    """docs/pipeline.md's key tables are the schema's (regenerate them with
    `python -c "import deeppot.pipeline.config as c; print(c.reference_markdown())"`)."""
    from deeppot.pipeline.config import reference_markdown

    doc = (Path(__file__).parents[2] / "docs" / "pipeline.md").read_text()
    assert reference_markdown() in doc


@pytest.mark.parametrize("symmetry, augment, tangential, reflect, mirror, wrappers, dim", [
    ("spherical", "none", "vector", True, False, ["Reflected", "SphericalDF"], 4),
    ("spherical", "none", "speed", False, False, ["SphericalDF"], 3),
    ("axisymmetric", "mirror_z", "vector", True, False,
     ["Reflected", "Augmented", "AxisymmetricDF"], 5),
    ("axisymmetric", "none", "vector", True, True, ["Reflected", "AxisymmetricDF"], 5),
    ("none", "spherical", "vector", False, False, ["Augmented"], 6),
    ("none", "none", "vector", False, True, ["Reflected"], 6),
])
def test_df_symmetry_and_augmentation_build_the_wrappers(symmetry, augment, tangential,
                                                         reflect, mirror, wrappers, dim):
    """[df] symmetry reduces the flow's dimension (tangential chooses the spherical one);
    augment wraps the DF for training; reflect averages a symmetric DF over the velocity
    reflection of its symmetry, mirror_z over z → −z."""
    from deeppot.pipeline.build import build_df

    cfg = pipeline.parse_config({"df": {"kind": "ffjord", "params": {"width": 8, "depth": 1},
                                        "symmetry": symmetry, "augment": augment,
                                        "tangential": tangential, "reflect": reflect,
                                        "mirror_z": mirror, "ensemble": 2}})
    df = build_df(cfg.df, jax.random.key(0))
    velocity = {"spherical": ("radial_velocity",), "axisymmetric": ("meridional_velocity",),
                "none": ()}[symmetry]
    for member in df.members:
        flow, names = member, []
        while hasattr(flow, "inner"):
            names.append(type(flow).__name__)
            if type(flow).__name__ == "SphericalDF":  # velocities scaled by default
                assert flow.profile is not None
            if type(flow).__name__ == "Reflected":
                assert flow.reflections == velocity * reflect + ("mirror_z",) * mirror
            flow = flow.inner
        assert names == wrappers
        assert type(flow).__name__ == "FFJORD" and flow.loc.shape == (dim,)
        assert flow.pair_invariant == (dim == 4)


def test_reflect_needs_a_symmetry():
    msg = _error({"df": {"kind": "ffjord", "reflect": True}})
    assert "reflect = true in [df]" in msg and "symmetry = 'spherical' or 'axisymmetric'" in msg


def test_rotating_frame_keys_are_checked():
    msg = _error({"potential": {"frame": "rotating", "train_frame_params": ["omega", "spin"]}})
    assert "key 'train_frame_params' in [potential]: unknown name(s) 'spin'" in msg
    msg = _error({"potential": {"train_frame_params": ["omega"]}})
    assert "names parameters of a rotating frame; frame = 'inertial'" in msg
    assert "key 'azimuthal_mean' in [fit] must be ≥ 0" in _error({"fit": {"azimuthal_mean": -1}})
    assert "key 'region' in [evaluate] must be one of" in _error({"evaluate": {"region": "box"}})


def test_train_frame_params_train_only_the_named_frame_parameters():
    """`[potential] train_frame_params = ["omega"]`: the filter spec the potential stage
    passes to `fit_potential` trains Ω and the potential, not the centre or u0; without it
    train_frame = true trains all three, and train_frame = false none."""
    from deeppot.pipeline import stages
    from deeppot.pipeline.build import build_model

    def trained(potential):
        cfg = parse_config({"potential": {"model": "plummer", "frame": "rotating",
                                          "omega": [0.0, 0.0, 0.1], **potential}})
        model = build_model(cfg.potential, jax.random.key(0))
        spec = stages._trainable(model, cfg.potential)
        return ({k: bool(getattr(spec.frame, k)) for k in ("omega", "center", "u0")},
                bool(spec.potential.log_m_tot))

    assert trained({"train_frame_params": ["omega"]}) == (
        {"omega": True, "center": False, "u0": False}, True)
    assert trained({}) == ({"omega": True, "center": True, "u0": True}, True)
    assert trained({"train_frame": False}) == (
        {"omega": False, "center": False, "u0": False}, True)


def test_azimuthal_mean_adds_the_penalty_to_the_loss():
    from deeppot import terms
    from deeppot.pipeline.build import build_loss

    plain = build_loss(parse_config({}).fit)
    assert not any(isinstance(t, terms.AzimuthalMeanPenalty) for t in getattr(plain, "terms", ()))
    loss = build_loss(parse_config({"fit": {"azimuthal_mean": 0.5}}).fit)
    assert isinstance(loss, terms.WeightedSum)
    pairs = [(w, t) for w, t in zip(loss.weights, loss.terms)
             if isinstance(t, terms.AzimuthalMeanPenalty)]
    assert [w for w, _ in pairs] == [0.5]


def test_kind_params_are_checked_against_the_registered_signature():
    """`params` of a source, DF or potential family: names and TOML types come from the
    registered object's signature; values convert (integers to floats, activation names and
    ODE step counts to the constructor's objects)."""
    msg = _error({"data": {"source": "disk", "params": {"n_dyn": "long", "h_r": 1.0}},
                  "df": {"kind": "ffjord", "params": {"widht": 8, "activation": "relu",
                                                      "depth": 2.5}},
                  "potential": {"model": "plummer", "params": {"m_tot": True}}})
    assert "key 'params' in [data]: source 'disk': parameter 'n_dyn' must be a number, got " \
        "string 'long'" in msg
    assert "key 'params' in [data]: source 'disk' has no parameter 'h_r'; valid: a, b, h_R, " \
        "h_z, n_dyn, m_tot," in msg
    assert "key 'params' in [df]: kind 'ffjord' has no parameter 'widht'; valid: n_blocks, " \
        "width, depth, activation, ode," in msg
    assert "parameter 'activation' must be one of 'tanh', 'silu'; got 'relu'" in msg
    assert "parameter 'depth' must be an integer, got float 2.5" in msg
    assert "key 'params' in [potential]: plummer: parameter 'm_tot' must be a number" in msg
    # what the pipeline supplies (key, n, dim, …) is not a parameter
    assert "has no parameter 'dim'" in _error({"df": {"params": {"dim": 4}}})
    assert "has no parameter 'n'" in _error({"data": {"params": {"n": 4}}})

    import diffrax

    cfg = parse_config({"data": {"source": "disk", "params": {"n_dyn": 8}},
                        "df": {"params": {"width": 8, "depth": 1, "activation": "tanh",
                                          "ode": 3}}})
    assert cfg.data.params == {"n_dyn": 8.0} and isinstance(cfg.data.params["n_dyn"], float)
    flow = pipeline.build_df(cfg.df, jax.random.key(0))
    assert flow.blocks[0].field.mlp.activation is jax.numpy.tanh
    ode = flow.blocks[0].ode
    assert ode.n_steps == 3 and isinstance(ode.solver, diffrax.Tsit5)
    cfg = parse_config({"df": {"params": {"width": 8, "depth": 1, "ode": 0}}})
    assert pipeline.build_df(cfg.df, jax.random.key(0)).blocks[0].ode.n_steps is None


@pytest.mark.parametrize("section, key, value, where", [
    ("df", "width", 128, "[df.params] (width = 128)"),
    ("df", "ode_steps", 4, "[df.params] (ode = 4)"),
    ("df", "spline_kind", "coupling", "[df.params] (kind = 'coupling')"),
    ("data", "n_dyn", 8.0, "[data.params] (n_dyn = 8.0)"),
    ("data", "r_max", 10.0, "[data.params] (r_max = 10.0)"),
])
def test_old_kind_keys_say_where_they_moved(section, key, value, where):
    msg = _error({section: {key: value}})
    assert msg.splitlines()[1].strip() == (
        f"key {key!r} in [{section}] moved: a {'kind' if section == 'df' else 'source'}'s own "
        f"settings are its parameters, in {where}")


@pytest.mark.parametrize("old, value, new", [
    ("reg_kinetic", 0.01, "reg_kinetic = 0.01"), ("reg_jacobian", 0.0, "reg_jacobian = 0.0"),
    ("hutchinson", "gaussian", "probe = 'gaussian'"),
    ("cfm_sigma_min", 1e-3, "sigma_min = 0.001"),
])
def test_ffjord_loss_settings_say_where_they_moved(old, value, new):
    """FFJORD's loss settings are the objective's now: one line naming the new table and
    key, and no second complaint about the parameter FFJORD lacks."""
    msg = _error({"df": {"params": {old: value, "width": 8}}})
    assert msg.splitlines()[1:] == [
        f"  parameter {old!r} in [df.params] moved: a training objective's settings are its "
        f"parameters, in [df.objective_params] ({new})"]
    assert _error({"df": {"objective": "nll_exact"}}).splitlines()[1].strip() == (
        "key 'objective' in [df]: 'nll_exact' moved: it is objective = 'nll' with trace = "
        "'exact' in [df.objective_params]")


def test_objective_and_its_params_build_the_objective():
    """`[df] objective` names a registered objective the kind supports (default: the kind's
    first), and `objective_params` are its constructor's arguments, checked like `params`."""
    from deeppot.objectives import FlowMatching, MaximumLikelihood

    cfg = parse_config({"df": {"objective": "nll", "objective_params": {
        "trace": "exact", "reg_kinetic": 0, "probe": "gaussian"}}})
    assert cfg.df.objective_params == {"trace": "exact", "reg_kinetic": 0.0, "probe": "gaussian"}
    assert pipeline.build_objective(cfg.df) == MaximumLikelihood(
        trace="exact", probe="gaussian", reg_kinetic=0.0)
    default = parse_config({"df": {"objective_params": {"sigma_min": 0.01}}})
    assert pipeline.build_objective(default.df) == FlowMatching(sigma_min=0.01)
    assert pipeline.build_objective(parse_config({"df": {"kind": "spline"}}).df) == \
        MaximumLikelihood()
    assert "key 'objective_params' in [df]: objective 'cfm' has no parameter 'trace'; " \
        "valid: sigma_min" in _error({"df": {"objective_params": {"trace": "exact"}}})
    assert "objective 'nll': parameter 'reg_kinetic'" in _error(
        {"df": {"objective": "nll", "objective_params": {"reg_kinetic": "big"}}})
    assert "key 'objective_params' in [df] applies only when kind = a trained DF" in _error(
        {"df": {"kind": "exact", "objective_params": {"sigma_min": 0.1}},
         "data": {"source": "plummer"}})


def test_sources_declare_their_needs():
    """A source's signature and attributes say what it needs: survey a path and physical
    units, a mock without a units parameter dimensionless units, exact a mock recording
    its DF; nothing is checked by a source's name."""
    assert "key 'path' in [data] is required when source = 'survey'" in _error(
        {"run": {"units": "galactic"}, "data": {"source": "survey"}})
    assert "[data] source 'survey' needs physical units" in _error({"data": {
        "source": "survey", "path": "t.fits"}})
    assert "[data] source 'plummer' is a dimensionless mock" in _error(
        {"run": {"units": "galactic"}})
    assert "kind = 'exact' in [df]" in _error({"data": {"source": "bar"}, "df": {"kind": "exact"}})
    parse_config({"data": {"source": "bar_jacobi"}, "df": {"kind": "exact"}})
