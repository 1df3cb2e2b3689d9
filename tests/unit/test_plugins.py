"""Plugins reach deeppot through the `deeppot.plugins` entry-point group.

A toy plugin (tests/fixtures/toy_plugin) is installed for the test the way pip installs a
package — a module plus a `.dist-info` with `entry_points.txt` on `sys.path` — so deeppot
discovers it through `importlib.metadata` (nothing is monkeypatched on that path). Its family
is then usable in a run configuration (`[potential] model`) without touching deeppot. The
real plugins (plugins/deeppot-galpy, -gala, -agama) are checked when they are installed.
"""

import importlib
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import deeppot as dp
from deeppot import registry
from deeppot.pipeline import build, config

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "toy_plugin"


@pytest.fixture
def toy_plugin(tmp_path, monkeypatch):
    """The toy plugin installed on a temporary sys.path entry; registries restored after."""
    shutil.copy(FIXTURE / "toy_deeppot_plugin.py", tmp_path)
    info = tmp_path / "toy_deeppot_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-deeppot-plugin\n"
                                   "Version: 0.1\n")
    (info / "entry_points.txt").write_text("[deeppot.plugins]\n"
                                           "toy = toy_deeppot_plugin:register\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for reg in (registry.potentials, registry.sources, registry.distribution_functions,
                registry.exporters):
        monkeypatch.setattr(reg, "_entries", dict(reg._entries))
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    yield
    sys.modules.pop("toy_deeppot_plugin", None)


def test_plugin_is_found_through_its_entry_point(toy_plugin):
    assert "toy_sphere" in registry.potentials
    assert registry.potentials["toy_sphere"].__module__ == "toy_deeppot_plugin"
    assert registry.exporters["toy"](registry.potentials["toy_sphere"](k=2.0)) == 0.0


def test_plugin_family_is_usable_in_a_config(toy_plugin):
    cfg = config.parse_config({"potential": {"model": "toy_sphere", "params": {"k": 2.0}}})
    model = build.build_model(cfg.potential, jax.random.key(0))
    x = np.array([[1.0, 2.0, 2.0]])
    np.testing.assert_allclose(model.potential.potential(x), [9.0], rtol=1e-6)
    np.testing.assert_allclose(model.potential.density(x), [6.0 / (4 * np.pi)], rtol=1e-6)


TOY_RUN = """
[run]
seed = 3
progress = false

[data]
source = "toy_ball"
n = 4096
params = { k = 2.0, sigma = 0.5 }

[df]
kind = "toy_isothermal"
params = { k = 2.0, sigma = 0.5 }

[scores]
n = 4096
chunk_size = 4096

[potential]
model = "toy_sphere"
params = { k = 1.0 }

[fit]
steps = 300
batch_size = 1024
learning_rate = 0.05
warmup_steps = 10
density_weight = 0.0

[evaluate]
region = "radial"
r_min = 0.05
r_max = 0.6
n_points = 1024
plots = false
"""


def test_plugin_source_and_df_kind_run_end_to_end(toy_plugin, tmp_path, capsys):
    """A source and a DF kind registered outside deeppot run through `deeppot run` as the
    built-in ones do: stars of the isothermal harmonic sphere (k = 2), its exact DF, and a
    fit of the plugin's family from k = 1 that recovers k."""
    from deeppot import cli

    config_file = tmp_path / "toy.toml"
    config_file.write_text(TOY_RUN)
    assert cli.main(["run", str(config_file), "--run-dir", str(tmp_path / "run")]) == 0
    cat = dp.PhaseSpaceCatalog.load(tmp_path / "run" / "catalog.npz")
    assert cat.meta["generator"] == "toy_ball" and len(cat) == 4096
    np.testing.assert_allclose(np.std(np.asarray(cat.x)), 0.5 / np.sqrt(2.0), rtol=0.03)
    df, _ = dp.load_model(tmp_path / "run" / "df.eqx")
    assert type(df).__name__ == "ToyIsothermalDF" and (df.k, df.sigma) == (2.0, 0.5)
    model, _ = dp.load_model(tmp_path / "run" / "potential.eqx")
    assert abs(float(model.potential.k) - 2.0) < 0.02
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["config"]["data"]["params"] == {"k": 2.0, "sigma": 0.5}
    assert metrics["accuracy"]["force"]["median"] < 0.01


def test_plugin_kinds_are_checked_against_their_signatures(toy_plugin):
    msg = _config_error({"data": {"source": "toy_ball", "params": {"kk": 2.0}},
                         "df": {"kind": "toy_isothermal", "params": {"sigma": "wide"}}})
    assert "key 'params' in [data]: source 'toy_ball' has no parameter 'kk'; valid: k, sigma" \
        in msg
    assert "key 'params' in [df]: kind 'toy_isothermal': parameter 'sigma' must be a number, " \
        "got string 'wide'" in msg
    # a plugin kind's parameter written as a key of the section is pointed to `params`
    assert "key 'sigma' in [df] moved: a kind's own settings are its parameters, in " \
        "[df.params] (sigma = 0.5)" in _config_error({"df": {"kind": "toy_isothermal",
                                                             "sigma": 0.5}})
    # the plugin's source records its exact DF, so kind = "exact" accepts it
    cfg = config.parse_config({"data": {"source": "toy_ball"}, "df": {"kind": "exact"}})
    assert cfg.df.kind == "exact" and not config.trainable("exact")
    assert config.trainable("ffjord") and not config.trainable("toy_isothermal")


def test_mock_help_lists_the_registered_sources(toy_plugin, capsys):
    from deeppot import cli

    with pytest.raises(SystemExit):
        cli.main(["mock", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    generators = [n for n in registry.sources if config.generates(n)]
    assert set(generators) >= {"plummer", "disk", "bar", "bar_jacobi", "toy_ball"}
    assert f"a registered mock source: {', '.join(generators)}" in out
    assert "file" not in generators and "survey" not in generators


def _config_error(raw):
    with pytest.raises(dp.ConfigError) as info:
        config.parse_config(raw)
    return str(info.value)


def test_unknown_plugin_family_is_a_config_error(toy_plugin):
    with pytest.raises(dp.ConfigError, match="toy_spheer"):
        config.parse_config({"potential": {"model": "toy_spheer"}})


def test_a_broken_plugin_warns_and_deeppot_keeps_working(tmp_path, monkeypatch):
    info = tmp_path / "deeppot_broken-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: deeppot-broken\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[deeppot.plugins]\nbroken = no_such_module_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    with pytest.warns(RuntimeWarning, match="'broken'.*failed to load"):
        assert "plummer" in registry.potentials


@pytest.mark.parametrize(("package", "name"), [
    ("deeppot_galpy", "galpy"), ("deeppot_gala", "gala"), ("deeppot_agama", "agama")])
def test_installed_plugins_register_their_exporters(package, name):
    """After `pip install -e plugins/deeppot-<name>`, the exporter is found by name."""
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} is not installed")
    module = importlib.import_module(package)
    assert registry.exporters[name] is getattr(module, f"to_{name}")
