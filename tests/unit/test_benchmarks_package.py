"""`benchmarks/` is one importable package: every script imports as `benchmarks.<name>`
without touching `sys.path` or JAX's global settings, and exposes `main`."""

import importlib
import pkgutil
import sys
from pathlib import Path

import jax
import pytest

import benchmarks

MODULES = sorted(m.name for m in pkgutil.iter_modules(benchmarks.__path__))
SCRIPTS = [m for m in MODULES if not m.startswith("_")]


def test_every_file_is_a_module_and_listed():
    files = sorted(p.stem for p in Path(benchmarks.__file__).parent.glob("*.py")
                   if p.stem != "__init__")
    assert MODULES == files
    assert len(SCRIPTS) >= 20
    for name in SCRIPTS:  # the package docstring lists every script, one line each
        assert f"- `{name}`:" in benchmarks.__doc__


@pytest.mark.parametrize("name", MODULES)
def test_imports_cleanly(name):
    path = list(sys.path)
    x64 = jax.config.jax_enable_x64
    module = importlib.import_module(f"benchmarks.{name}")
    assert sys.path == path, f"importing benchmarks.{name} changed sys.path"
    assert jax.config.jax_enable_x64 == x64, f"importing benchmarks.{name} changed x64"
    if not name.startswith("_"):
        assert callable(getattr(module, "main", None)), f"benchmarks.{name} has no main()"


def test_scripts_import_the_package_not_each_other():
    """No script imports another script: shared code lives in the `_` modules."""
    root = Path(benchmarks.__file__).parent
    for name in MODULES:
        text = (root / f"{name}.py").read_text()
        assert "sys.path" not in text, name
        for other in SCRIPTS:
            assert f"from .{other} import" not in text, (name, other)
            assert f"from . import {other}" not in text, (name, other)
            assert f"import {other}" not in text.replace(f"benchmarks.{other}", ""), (name,
                                                                                      other)
