"""The key tables of `docs/pipeline.md`, generated from the schema and the registries."""

from __future__ import annotations

import dataclasses
import json

from ... import registry
from ._kinds import REGISTRIES, parameters
from ._schema import SECTIONS, SELECTOR

__all__ = ["reference_markdown"]

_TYPES = {"int": "integer", "float": "number", "str": "string", "bool": "boolean",
          "vec3": "3 numbers", "table": "table", "path": "path", "names": "array of names",
          "array": "array", "levels": "number or table {68, 95}"}


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def _section_table(name: str, cls: type) -> list[str]:
    out = [f"### `[{name}]`", "", "| key | default | type / range | applies to | meaning |",
           "|---|---|---|---|---|"]
    selector = SELECTOR.get(name)
    for f in dataclasses.fields(cls):
        meta = f.metadata
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        kind = _TYPES[meta["kind"]]
        choices = meta["choices"]
        if isinstance(choices, tuple):
            kind = ("array of: " if meta["kind"] == "names" else "") + " \\| ".join(choices)
        elif callable(choices):
            kind = "a registered name"
        limits = []
        if meta["lo"] is not None:
            limits.append(f"{'>' if meta['lo_open'] else '≥'} {meta['lo']}")
        if meta["hi"] is not None:
            limits.append(f"≤ {meta['hi']}")
        kind += (" " + ", ".join(limits)) if limits else ""
        applies = "all" if meta["only"] is None or selector is None else \
            _escape(f"{selector} = {meta['only'].text}")
        out.append(f"| `{f.name}` | `{json.dumps(default)}` | {kind} | {applies} | "
                   f"{_escape(meta['doc'])} |")
    return [*out, ""]


def _kind_table(title: str, column: str, section: str, params: str = "params") -> list[str]:
    """The built-in entries of a section's registry (`section` "objective": the objectives')
    with their parameters, the keys of the table `params` (a plugin's are documented by the
    plugin)."""
    out = [f"### {title}", "", f"| {column} | registered object | `{params}` (defaults) |",
           "|---|---|---|"]
    reg = registry.objectives if section == "objective" else REGISTRIES[section]
    for name in reg:
        entry = reg[name]
        if not entry.__module__.startswith("deeppot."):
            continue
        specs, open_ended = parameters(entry, section)
        listed = [spec.describe() + (f" ({spec.converter.doc})" if spec.converter else "")
                  for spec in specs.values()]
        if open_ended:
            listed.append("any other keyword")
        target = f"`{entry.__module__.split('._')[0]}.{entry.__qualname__}`"
        out.append(f"| `{name}` | {target} | {_escape(', '.join(listed)) or 'none'} |")
    return [*out, ""]


def reference_markdown() -> str:
    """The key tables of `docs/pipeline.md`, generated from the schema and the registries (a
    test keeps the page equal to this)."""
    out = []
    for name, cls in SECTIONS.items():
        out += _section_table(name, cls)
    out += _kind_table("Sources (`[data] source`)", "source", "data")
    out += _kind_table("DF kinds (`[df] kind`)", "kind", "df")
    out += _kind_table("Objectives (`[df] objective`)", "objective", "objective",
                       "objective_params")
    out += _kind_table("Potential families (`[potential] model`)", "model", "potential")
    return "\n".join(out)
