"""Plugins reach deeppot through the `deeppot.plugins` entry-point group.

A toy plugin (tests/fixtures/toy_plugin) is installed for the test the way pip installs a
package — a module plus a `.dist-info` with `entry_points.txt` on `sys.path` — so deeppot
discovers it through `importlib.metadata` (nothing is monkeypatched on that path). Its family
is then usable in a run configuration (`[potential] model`) without touching deeppot. The
real plugins (plugins/deeppot-galpy, -gala, -agama) are checked when they are installed.
"""

import importlib
import importlib.util
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
    for reg in (registry.potentials, registry.exporters):
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
