"""Config files: TOML reading (with `extends`), `section.key=value` overrides, writing."""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from ..._errors import ConfigError
from ._fields import copy_value
from ._schema import SELECTOR, Config
from ._validate import parse_config

__all__ = ["apply_overrides", "default_config_path", "dumps_toml", "load_config"]


def _parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item or "." not in item.split("=", 1)[0]:
        raise ConfigError(f"override {item!r} must look like section.key=value")
    lhs, text = item.split("=", 1)
    try:
        value = tomllib.loads(f"v = {text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = text.strip()  # bare words are strings: df.kind=spline
    return lhs.strip(), value


def apply_overrides(raw: Mapping[str, Any], overrides: Iterable[str] | Mapping[str, Any]):
    """Copy of a raw config with `section.key` values replaced.

    **Arguments:**

    - `raw`: the raw config dictionary.
    - `overrides`: strings `"section.key=value"` (the value is read as TOML, or as a bare
      string) or a mapping `{"section.key": value}`; a key may name a table's key, as in
      `df.params.width=64`.

    **Returns:** a new dictionary (not yet validated).
    """
    out = copy_value(dict(raw))
    items = overrides.items() if isinstance(overrides, Mapping) else \
        [_parse_override(o) for o in overrides]
    for lhs, value in items:
        *tables, key = lhs.split(".")
        table = out
        for depth, name in enumerate(tables):
            table = table.setdefault(name, {})
            if not isinstance(table, dict):
                where = ".".join(tables[: depth + 1])
                raise ConfigError(f"cannot override {lhs}: {where} is not a table")
        table[key] = value
    return out


def _merge(base: dict, table: dict) -> dict:
    """`table` over `base`, key by key, and so for the tables within (`params`)."""
    out = dict(base)
    for key, value in table.items():
        out[key] = _merge(base[key], value) if isinstance(value, dict) and isinstance(
            base.get(key), dict) else value
    return out


def _read_toml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """A TOML file's tables, with the tables of its `extends = "base.toml"` merged under it."""
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} not found")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: TOML syntax error: {err}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read the config: {err}") from None
    base = raw.pop("extends", None)
    if base is None:
        return raw
    if not isinstance(base, str):
        raise ConfigError(f"{path}: 'extends' must be a file name, got {base!r}")
    base_path = (path.parent / base).resolve()
    if not base_path.is_file() and (default_config_path(base).is_file()):
        base_path = default_config_path(base)
    if base_path in seen:
        raise ConfigError(f"{path}: 'extends' makes a cycle through {base_path}")
    merged = _read_toml(base_path, (*seen, path.resolve()))
    for name, table in raw.items():
        base_table = merged.get(name)
        selector = SELECTOR.get(name)
        if isinstance(table, dict) and isinstance(base_table, dict) and not (
                selector in table and table[selector] != base_table.get(selector)):
            merged[name] = _merge(base_table, table)
        else:  # a new table, or another kind of model: the base's keys do not carry over
            merged[name] = table
    return merged


def load_config(path: str | os.PathLike, overrides: Iterable[str] | Mapping = ()) -> Config:
    """Read and validate a TOML config file.

    A file may start with `extends = "base.toml"` (a path relative to it, or the name of a
    shipped config such as `"demo"`): its tables are the base's, key by key overridden (and
    so the `params` tables within), except that a table choosing another kind of model
    (`[data] source`, `[df] kind`, `[potential] model`) replaces the base's table whole.

    **Arguments:**

    - `path`: the `.toml` file.
    - `overrides`: `"section.key=value"` strings (or a mapping) applied before validation.

    **Returns:** a `Config`.

    **Raises:** `ConfigError` (file missing, TOML syntax, or invalid keys and values).
    """
    path = Path(path)
    return parse_config(apply_overrides(_read_toml(path), overrides), path.parent)


def default_config_path(name: str = "demo") -> Path:
    """Path of a config shipped in `deeppot/configs/` (e.g. `"demo"`, `"disk"`)."""
    return Path(str(resources.files("deeppot") / "configs" / f"{name}.toml"))


def dumps_toml(d: Mapping[str, Mapping[str, Any]]) -> str:
    """TOML text for a two-level dictionary of scalars, arrays and inline tables."""

    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + "}"
        raise TypeError(f"cannot write {v!r} as TOML")

    lines = []
    for section, table in d.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {value(v)}" for k, v in table.items()]
        lines.append("")
    return "\n".join(lines)
