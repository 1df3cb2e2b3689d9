"""Config fields: what a key holds (its TOML type, limits, choices, the kinds it applies to)
and the check of one value against that."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from typing import Any

__all__ = ["Only", "check_value", "choices_of", "copy_value", "option", "typename"]


@dataclasses.dataclass(frozen=True)
class Only:
    """A field that applies only to some values of its section's selector (`source`,
    `kind`, `model`): `test(value)` says whether it does, `text` says which, for messages."""

    test: Callable[[Any], bool]
    text: str


def option(default, kind: str, doc: str, *, choices=None, lo=None, hi=None, lo_open=False,
           only: tuple[str, ...] | Only | None = None,
           fingerprint: bool | str | Callable[[Any], bool] = True):
    """A config field: `kind` in int|float|str|bool|vec3|array|names|table|path|levels.

    `kind` "levels" is a band inflation: a positive number, or a table with one for each
    band level (`deeppot.replicas.inflation_factors`).
    `choices` is a tuple or a function returning one (names from a registry); `only` is a
    tuple of selector values, or an `Only` predicate, for fields of some kinds only;
    `fingerprint=False` for a setting that does not change what its stage computes (how it
    is shown, where it runs), which a run directory's fingerprints leave out;
    `fingerprint="unless_default"` for a key added after run directories existed whose
    default is what they computed: it enters the fingerprint only when set to another
    value, so those runs resume without running their stages again; a predicate of the
    key's value for one whose other values follow from keys the fingerprint already holds
    (it enters only where the predicate is true).
    """
    if isinstance(only, tuple):
        values = only
        only = Only(lambda v: v in values, " or ".join(map(repr, values)))
    meta = dict(kind=kind, doc=doc, choices=choices, lo=lo, hi=hi, lo_open=lo_open, only=only,
                fingerprint=fingerprint)
    if isinstance(default, (list, dict, tuple)):
        return dataclasses.field(default_factory=lambda: copy_value(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def copy_value(value):
    """A deep copy of a TOML value (tuples become arrays)."""
    return json.loads(json.dumps(value))


def choices_of(meta) -> tuple[str, ...] | None:
    c = meta.get("choices")
    return tuple(c()) if callable(c) else c


def typename(value) -> str:
    return {bool: "boolean", int: "integer", float: "float", str: "string", list: "array",
            dict: "table"}.get(type(value), type(value).__name__)


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_value(where: str, kind: str | None, value, meta) -> tuple[Any, str | None]:
    """Convert and check one value; returns (value, error message or None).

    `kind` None accepts any value; `meta` holds `choices`, `lo`, `hi`, `lo_open` (each
    optional).
    """
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            return value, f"{where} must be an integer, got {typename(value)} {value!r}"
    elif kind == "float":
        if not _number(value):
            return value, f"{where} must be a number, got {typename(value)} {value!r}"
        value = float(value)
        if not math.isfinite(value):
            return value, f"{where} must be finite, got {value!r}"
    elif kind in ("str", "path"):
        if not isinstance(value, str):
            return value, f"{where} must be a string, got {typename(value)} {value!r}"
    elif kind == "bool":
        if not isinstance(value, bool):
            return value, f"{where} must be true or false, got {typename(value)} {value!r}"
    elif kind == "vec3":
        if not (isinstance(value, list) and len(value) == 3
                and all(_number(c) and math.isfinite(c) for c in value)):
            return value, f"{where} must be an array of 3 finite numbers, got {value!r}"
        value = [float(c) for c in value]
    elif kind == "array":
        if not isinstance(value, list):
            return value, f"{where} must be an array, got {typename(value)} {value!r}"
    elif kind == "names":
        if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            return value, f"{where} must be an array of names, got {value!r}"
    elif kind == "levels":
        from ...replicas import inflation_factors

        if not (_number(value) or isinstance(value, dict)):
            return value, (f"{where} must be a positive number or a table of one per band "
                           f"level, got {typename(value)} {value!r}")
        try:
            factors = inflation_factors(value)
        except ValueError as err:
            return value, f"{where}: {err}"
        return (factors if isinstance(value, dict) else factors["68"]), None
    elif kind == "table":
        if not isinstance(value, dict):
            return value, f"{where} must be a table, got {typename(value)} {value!r}"
        for k, v in value.items():
            if isinstance(v, float) and not math.isfinite(v):
                return value, f"{where}: parameter {k!r} must be finite, got {v!r}"
        value = copy_value(value)
    choices = choices_of(meta)
    if choices is not None and kind == "names":
        unknown = [v for v in value if v not in choices]
        if unknown:
            return value, (f"{where}: unknown name(s) {', '.join(map(repr, unknown))}; "
                           f"one of {', '.join(map(repr, choices))}")
    elif choices is not None and value not in choices:
        return value, f"{where} must be one of {', '.join(map(repr, choices))}; got {value!r}"
    lo, hi = meta.get("lo"), meta.get("hi")
    if kind in ("int", "float"):
        if lo is not None and (value <= lo if meta.get("lo_open") else value < lo):
            rel = ">" if meta.get("lo_open") else "≥"
            return value, f"{where} must be {rel} {lo}, got {value!r}"
        if hi is not None and value > hi:
            return value, f"{where} must be ≤ {hi}, got {value!r}"
    return value, None
