"""The documentation runs: every Python block of README.md and docs/, page by page, in order.

A block is skipped only when the line before its fence says so:

- `<!-- no-run -->`: never run (it needs files, a long run or a network);
- `<!-- requires: agama -->` (module names, comma-separated): run only when those modules
  are installed (optional plugins and their libraries).

Each page runs in a fresh namespace, in a temporary working directory, and the global JAX
settings a page changes (e.g. `jax_enable_x64`) are restored afterwards.
"""

import importlib.util
import re
from pathlib import Path

import jax
import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
MARKER = re.compile(r"<!--\s*(no-run|requires:\s*([\w.,\s-]+?))\s*-->")


def code_blocks(text: str) -> list[tuple[int, str, str | None]]:
    """(line number, code, why it is skipped or None) for each Python block of a page."""
    out = []
    for m in FENCE.finditer(text):
        if m.group(1) != "python":
            continue
        line = text.count("\n", 0, m.start()) + 1
        before = [ln for ln in text[: m.start()].splitlines() if ln.strip()]
        marker = MARKER.fullmatch(before[-1].strip()) if before else None
        skip = None
        if marker is not None and marker.group(1) == "no-run":
            skip = "marked no-run"
        elif marker is not None:
            missing = [name.strip() for name in marker.group(2).split(",")
                       if importlib.util.find_spec(name.strip()) is None]
            skip = f"needs {', '.join(missing)}" if missing else None
        out.append((line, m.group(2), skip))
    return out


# the tutorials run in tests/unit/test_tutorials.py (slow: they train models)
RUNNABLE = [p for p in PAGES if code_blocks(p.read_text()) and "tutorials" not in p.parts]


def test_marker_parsing():
    text = "a\n```python\nx = 1\n```\n<!-- no-run -->\n```python\nboom\n```\n" \
           "<!-- requires: no_such_module_xyz -->\n\n```python\nboom\n```\n```bash\nls\n```\n"
    blocks = code_blocks(text)
    assert [(code, skip) for _, code, skip in blocks] == [
        ("x = 1\n", None), ("boom\n", "marked no-run"), ("boom\n", "needs no_such_module_xyz")]


@pytest.mark.parametrize("page", RUNNABLE, ids=lambda p: str(p.relative_to(ROOT)))
def test_page_code_runs(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": f"docs_{page.stem}"}
    x64 = jax.config.jax_enable_x64
    try:
        for line, code, skip in code_blocks(page.read_text()):
            if skip is not None:
                continue
            exec(compile(code, f"{page.relative_to(ROOT)}:{line}", "exec"), namespace)
    finally:
        jax.config.update("jax_enable_x64", x64)
        import matplotlib.pyplot as plt

        plt.close("all")


def test_docs_are_self_contained():
    """No page points outside the repository (the design notes, the shared folder)."""
    for page in PAGES:
        text = page.read_text()
        for bad in ("../shared", "DESIGN.md", "/work/"):
            assert bad not in text, f"{page.relative_to(ROOT)} refers to {bad!r}"
