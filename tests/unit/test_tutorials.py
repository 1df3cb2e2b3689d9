"""The tutorials' code blocks run, in order, in one namespace (and stay quick)."""

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).parents[2] / "docs" / "tutorials"


def _run_page(name: str) -> dict:
    """Run the page's python blocks in order in one namespace; return the namespace."""
    blocks = re.findall(r"```python\n(.*?)```", (DOCS / name).read_text(), flags=re.S)
    assert blocks
    namespace: dict = {"__name__": "__tutorial__"}
    for i, code in enumerate(blocks):
        try:
            exec(compile(code, f"{name}[block {i}]", "exec"), namespace)
        except Exception as err:  # pragma: no cover - the message is the point
            raise AssertionError(f"{name}, block {i} failed: {err!r}\n{code}") from err
    return namespace


# ~45 s of CPU, most of it compiling the flow's training step: run by `make test-all`.
@pytest.mark.slow
@pytest.mark.parametrize("name", ["survey.md"])
def test_tutorial_runs(name, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _run_page(name)
    out = capsys.readouterr().out
    assert "refused:" in out and "km / s" in out


def test_snapshot_tutorial_runs(tmp_path, monkeypatch, capsys):
    """docs/tutorials/snapshot.md: quick (no training), so in the fast suite."""
    monkeypatch.chdir(tmp_path)
    namespace = _run_page("snapshot.md")
    out = capsys.readouterr().out
    assert "refused:" in out and "no dataset PartType4/Velocities" in out
    assert "per-star truth" in out and (tmp_path / "run" / "catalog.npz").exists()
    # the recovered frame is the mock's, within the sample's noise
    assert namespace["cat"].meta["snapshot"]["scale_factor"] == 0.8
    assert abs(namespace["np"].degrees(namespace["np"].arccos(namespace["z_axis"][2]))) < 3.0
