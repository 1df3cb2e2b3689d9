"""What a registered kind declares to the pipeline, through its signature and attributes.

Every kind a config names — a data source (`[data] source`), a DF (`[df] kind`), a
potential family (`[potential] model`) — is a registry entry, built-in or from a plugin,
and is configured the same way: its section's `params` table holds keyword arguments of the
registered object, checked against its signature (names, and TOML types from the
annotations). The arguments the pipeline supplies itself are not in `params`; an entry
receives those its signature names:

- a source: `key` and `n` (then it is a mock generator, which `observe` and the selection
  apply to), `path` (`[data] path`), `units` (`[run] units`), `progress` (`[run]
  progress`);
- a DF: `key`, `dim` and `pair_invariant` (for the symmetry wrappers), `symmetry` (`[df]
  symmetry`, to a DF that reduces its coordinates itself: then it is not wrapped),
  `catalog` (the run's catalogue);
- a potential family: `key` (then it is a learned model, which `[potential] width`, `depth`
  and `input_scale` apply to) and `G`.

Attributes declare the rest: a source with `exact_df = True` records its exact DF in its
catalogues' meta, one with `physical_units = True` needs physical `[run] units`, one with
`suffixes` reads files with those suffixes; a DF with `needs_truth_df = True` is such an
exact DF; a DF is trained when it has `objectives` (the names of the registered training
objectives it supports, `[df] objective`, whose settings `[df] objective_params` holds,
checked against the objective's signature in the same way).

A parameter whose Python value is no TOML value is written as one that `CONVERTERS` turns
into it: an activation function by name, `ODESettings` as its number of fixed steps.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from ... import registry
from ...flows import ODESettings
from ._fields import check_value, copy_value

__all__ = [
    "ACTIVATIONS",
    "CONVERTERS",
    "SUPPLIED",
    "REGISTRIES",
    "Converter",
    "Parameter",
    "check_params",
    "conditional",
    "generates",
    "learned_model",
    "parameters",
    "python_params",
    "takes",
    "trainable",
]

ACTIVATIONS: dict[str, Callable] = {"tanh": jnp.tanh, "silu": jax.nn.silu}


@dataclasses.dataclass(frozen=True)
class Converter:
    """The TOML spelling of a Python type: `kind` and `choices` check it, `to_python`
    converts it, `to_toml` writes a default of that type, `doc` explains it."""

    kind: str
    doc: str
    to_python: Callable[[Any], Any]
    to_toml: Callable[[Any], Any]
    choices: tuple[str, ...] | None = None


def _ode(steps: int) -> ODESettings:
    import diffrax

    return ODESettings() if steps == 0 else ODESettings(solver=diffrax.Tsit5(), n_steps=steps)


def _ode_steps(ode: ODESettings | None) -> int:
    return 0 if ode is None or ode.n_steps is None else ode.n_steps


CONVERTERS: dict[Any, Converter] = {
    Callable: Converter("str", "an activation", ACTIVATIONS.__getitem__,
                        lambda fn: next((n for n, f in ACTIVATIONS.items() if f is fn), None),
                        tuple(ACTIVATIONS)),
    ODESettings: Converter("int", "fixed Tsit5 steps per block (0: adaptive Dopri5)", _ode,
                           _ode_steps),
}

# the registry each section's selector names an entry of
REGISTRIES: dict[str, registry.Registry] = {
    "data": registry.sources, "df": registry.distribution_functions,
    "potential": registry.potentials}
# what the pipeline passes itself, per section (those of them an entry's signature names);
# "objective" is `[df] objective`, whose settings are `[df] objective_params`
SUPPLIED: dict[str, tuple[str, ...]] = {
    "data": ("key", "n", "path", "units", "progress"),
    "df": ("key", "dim", "pair_invariant", "symmetry", "scale_velocities", "catalog"),
    "potential": ("key", "G", "width", "depth", "input_scale"),
    "objective": (),
}

_TOML_TYPES = {bool: "bool", int: "int", float: "float", str: "str", list: "array",
               tuple: "array", dict: "table"}


@dataclasses.dataclass(frozen=True)
class Parameter:
    """One configurable parameter of a registered kind: its TOML type (None: unchecked),
    its default as a TOML value (`required` when it has none, None when it is no TOML
    value), and its converter, if its Python type needs one."""

    name: str
    kind: str | None
    default: Any
    required: bool
    converter: Converter | None = None
    tuple_value: bool = False  # a TOML array passed on as a tuple

    def describe(self) -> str:
        """`name = default` (or `name` (required)), for the generated docs."""
        if self.required:
            return f"`{self.name}` (required)"
        if self.default is None:
            return f"`{self.name}`"
        return f"`{self.name} = {_toml_text(self.default)}`"


def _toml_text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_text(v) for v in value) + "]"
    return repr(value)


def _callable_of(entry) -> Callable:
    return entry.__init__ if isinstance(entry, type) else entry


def _hints(entry) -> dict[str, Any]:
    try:
        return typing.get_type_hints(_callable_of(entry))
    except Exception:  # an annotation that does not resolve: those parameters go unchecked
        return {}


def _members(hint) -> tuple:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


def _spec(name: str, hint, default) -> Parameter:
    required = default is inspect.Parameter.empty
    for member in _members(hint):
        origin = typing.get_origin(member) or member
        if member in CONVERTERS or origin in CONVERTERS:
            conv = CONVERTERS.get(member, CONVERTERS.get(origin))
            toml_default = None if required else conv.to_toml(default)
            return Parameter(name, conv.kind, toml_default, required, conv)
    kinds = [_TOML_TYPES.get(typing.get_origin(m) or m) for m in _members(hint)]
    if "float" in kinds:
        kind = "float"
    else:
        kind = next((k for k in kinds if k is not None), None)
    if kind is None and not required and default is not None:
        kind = _TOML_TYPES.get(type(default))
    is_tuple = any((typing.get_origin(m) or m) is tuple for m in _members(hint)) or \
        isinstance(default, tuple)
    toml_default = None
    if not required and default is not None and type(default) in _TOML_TYPES:
        toml_default = copy_value(default)
    return Parameter(name, kind, toml_default, required, None, is_tuple)


def parameters(entry, section: str) -> tuple[dict[str, Parameter], bool]:
    """The parameters a config's `params` may set for a registered entry, and whether it
    takes any other keyword (`**kwargs`).

    **Arguments:**

    - `entry`: the registered class or function.
    - `section`: `"data"`, `"df"`, `"potential"` or `"objective"` (what the pipeline
      supplies).
    """
    hints = _hints(entry)
    out, open_ended = {}, False
    for name, p in inspect.signature(entry).parameters.items():
        if p.kind == p.VAR_KEYWORD:
            open_ended = True
        elif p.kind != p.VAR_POSITIONAL and name not in SUPPLIED[section]:
            out[name] = _spec(name, hints.get(name), p.default)
    return out, open_ended


def check_params(where: str, entry, params: Mapping[str, Any], section: str,
                 errors: list[str]) -> dict[str, Any]:
    """Check a `params` table against a registered entry's signature.

    **Arguments:**

    - `where`: how messages name the table (e.g. `"key 'params' in [df]: kind 'ffjord'"`).
    - `entry`, `section`: as for `parameters`.
    - `params`: the table.
    - `errors`: where each problem is appended, one line each.

    **Returns:** the table with its values converted (integers given for numbers become
    floats).
    """
    specs, open_ended = parameters(entry, section)
    out = {}
    for name, value in params.items():
        spec = specs.get(name)
        if spec is None:
            if not open_ended:
                errors.append(f"{where} has no parameter {name!r}; valid: "
                              f"{', '.join(specs) or 'none'}")
            out[name] = value
            continue
        meta = {"choices": spec.converter.choices if spec.converter else None}
        value, err = check_value(f"{where}: parameter {name!r}", spec.kind, value, meta)
        if err:
            errors.append(err)
        out[name] = value
    for name, spec in specs.items():
        if spec.required and name not in params:
            errors.append(f"{where} needs parameter {name!r}")
    return out


def python_params(entry, params: Mapping[str, Any], section: str) -> dict[str, Any]:
    """A checked `params` table as the entry's keyword arguments (converted values, arrays
    as tuples where the parameter is a tuple)."""
    specs, _ = parameters(entry, section)
    out = {}
    for name, value in params.items():
        spec = specs.get(name)
        if spec is not None and spec.converter is not None:
            value = spec.converter.to_python(value)
        elif spec is not None and spec.tuple_value and isinstance(value, list):
            value = tuple(value)
        out[name] = value
    return out


def takes(entry, name: str) -> bool:
    """Whether a registered entry's signature names the parameter `name`."""
    return name in inspect.signature(entry).parameters


def generates(source: str) -> bool:
    """Whether a `[data] source` is a mock generator (its function takes `key` and `n`)."""
    entry = registry.sources.get(source)
    return entry is not None and takes(entry, "key") and takes(entry, "n")


def trainable(kind: str) -> bool:
    """Whether a `[df] kind` is trained (`fit_df`): its entry declares `objectives`."""
    objectives = getattr(registry.distribution_functions.get(kind), "objectives", ())
    return isinstance(objectives, tuple) and len(objectives) > 0


def learned_model(model: str) -> bool:
    """Whether a `[potential] model` name is a learned family (its factory takes a key)."""
    entry = registry.potentials.get(model)
    return entry is not None and takes(entry, "key")


def conditional(kind: str) -> bool:
    """Whether a `[df] kind` is a conditional DF, f = ν(x) p(v|x) (its entry is an
    `deeppot.flows.AbstractConditionalDF`), whose velocity factor alone gives the
    selection-free scores of `[scores] position = "free"`."""
    from ...flows import AbstractConditionalDF

    entry = registry.distribution_functions.get(kind)
    return isinstance(entry, type) and issubclass(entry, AbstractConditionalDF)
