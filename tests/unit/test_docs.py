"""The documentation runs: every Python block of README.md and docs/, page by page, in order.

A block is skipped only when the line before its fence says so:

- `<!-- no-run -->`: never run (it needs files, a long run or a network);
- `<!-- requires: agama -->` (module names, comma-separated): run only when those modules
  are installed (optional plugins and their libraries).

Each page runs in a fresh namespace, in a temporary working directory, and the global JAX
settings a page changes (e.g. `jax_enable_x64`) are restored afterwards.
"""

import ast
import contextlib
import importlib
import importlib.util
import inspect
import pkgutil
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


# ---------------------------------------------------------------------------------------------
# The API reference: every public name has a mkdocstrings entry (`::: module.name`) in docs/api/
# ---------------------------------------------------------------------------------------------

API_PAGES = sorted((ROOT / "docs" / "api").glob("*.md"))
ENTRY = re.compile(r"^:::\s+([\w.]+)\s*$", re.M)
PLUGINS = ("deeppot_galpy", "deeppot_gala", "deeppot_agama")


def api_modules() -> list[str]:
    """deeppot, each of its public modules and subpackages, and the installed plugins."""
    import deeppot

    names = ["deeppot"] + [f"deeppot.{info.name}" for info in pkgutil.iter_modules(deeppot.__path__)
                           if not info.name.startswith("_")]
    return names + [p for p in PLUGINS if importlib.util.find_spec(p) is not None]


def public_names(module) -> list[str]:
    """A module's `__all__`; without one, the names its source binds at top level — its own
    definitions, `import x as x` re-exports and, in a package's `__init__`, every import from
    inside the package — that are not private (`_name`) and not modules."""
    if hasattr(module, "__all__"):
        return list(module.__all__)
    tree = ast.parse(Path(module.__file__).read_text())
    is_package = Path(module.__file__).name == "__init__.py"
    names = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, ast.Assign):
            names += [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.append(node.target.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            relative = isinstance(node, ast.ImportFrom) and node.level > 0
            names += [a.asname for a in node.names
                      if a.asname is not None and (a.asname == a.name or is_package and relative)]
            if is_package and relative:
                names += [a.name for a in node.names if a.asname is None]
    return [n for n in dict.fromkeys(names)
            if not n.startswith("_") and not inspect.ismodule(getattr(module, n))]


def resolve(path: str):
    """The object a dotted path names: the longest importable module, then attributes."""
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(path)


def api_entries() -> dict[str, str]:
    """Every `::: path` entry of docs/api/, with the page it is on."""
    return {path: page.name for page in API_PAGES for path in ENTRY.findall(page.read_text())}


def test_public_names_rule():
    """The rule that finds public names reads `__all__`, definitions and re-exports."""
    import deeppot
    import deeppot.frames
    import deeppot.laplacian

    assert public_names(deeppot.mocks) == deeppot.mocks.__all__
    top = public_names(deeppot)
    assert {"Plummer", "fit_df", "PhaseSpaceCatalog", "load_model", "ConfigError"} <= set(top)
    assert "flows" not in top and "jax" not in top
    # a plain module's names are its definitions, not what it imports (UnitSystem, vector3,
    # jaxtyping's Float, the private module's Position)
    laplacian = set(public_names(deeppot.laplacian))
    assert {"Method", "METHODS", "value_grad_laplacian"} <= laplacian
    assert not laplacian & {"Position", "Float", "Literal", "AbstractPotential", "jnp"}
    frames = set(public_names(deeppot.frames))
    assert {"AbstractFrame", "InertialFrame", "MovingFrame", "RotatingFrame"} <= frames
    assert not frames & {"UnitSystem", "resolve_units", "vector3", "final", "eqx"}
    assert {"FFJORD", "SphericalDF", "REFLECTIONS"} <= set(public_names(deeppot.flows))


def test_api_entries_resolve():
    """Every `::: path` in docs/api/ names an existing object (a stale one breaks the site)."""
    entries = api_entries()
    assert len(entries) > 100
    stale = []
    for path, page in entries.items():
        try:
            resolve(path)
        except (ImportError, AttributeError):
            stale.append(f"docs/api/{page}: ::: {path}")
    assert not stale, "entries naming nothing:\n" + "\n".join(stale)


def test_every_public_name_has_an_api_entry():
    """A public name is documented by an entry of its own path, or of another public path to
    the same object (`deeppot.Plummer` documents `deeppot.potentials.Plummer`)."""
    entries = api_entries()
    documented = {}
    for path in entries:
        with contextlib.suppress(ImportError, AttributeError):
            documented[id(resolve(path))] = path
    missing = []
    for modname in api_modules():
        module = importlib.import_module(modname)
        for name in public_names(module):
            path, obj = f"{modname}.{name}", getattr(module, name)
            plain = isinstance(obj, (str, int, float, bool, type(None)))  # equal values share ids
            if path not in entries and (plain or id(obj) not in documented):
                missing.append(path)
    assert not missing, ("public names without a `::: name` entry in docs/api/:\n"
                         + "\n".join(missing))


def test_architecture_names_every_module():
    """docs/architecture.md's layout names each module and package of deeppot/ and each
    plugin (by its stem, so `evaluate.py` and a package `evaluate/` are the same entry)."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    layout = text[text.index("## Layout"):text.index("## Registries and plugins")]
    named = set(re.findall(r"^ {2}([\w-]+)(?:\.py|/)\s", layout, re.M))
    assert {"flows", "catalog", "deeppot-galpy"} <= named, "layout block not recognised"
    tree = {p.stem for p in (ROOT / "deeppot").iterdir()
            if p.name != "__init__.py" and (p.suffix == ".py" or p.is_dir() and
                                            not p.name.startswith("__"))}
    tree |= {p.name for p in (ROOT / "plugins").iterdir() if (p / "pyproject.toml").exists()}
    assert tree - named == set(), f"docs/architecture.md's layout does not name {tree - named}"
