"""Model files: any deeppot model saved to one self-describing file and read back.

`save_model(path, model, meta)` writes a single `.eqx` file: a JSON header line that
describes the model's structure (each Equinox module by its import path and fields, each
function by its import path, containers and plain values as they are), the arrays after it
(`eqx.tree_serialise_leaves`), and a checksum of both (`deeppot._framed`).
`load_model(path)` rebuilds the structure from the header alone and reads the arrays into
it, so every model the API can build — analytic, neural, symmetric and composite
potentials in any frame, flows of any size and ODE setting, ensembles, models from
plugins — loads without knowing how it was configured.

Only classes and functions from deeppot, its dependencies and its registered plugins are
rebuilt from a file, and only Equinox modules are instantiated (without running their
`__init__`; their `__check_init__` invariants are checked).

A field a class gained after a file was written (e.g. `PotentialModel.region`) takes its
default when the file does not name it.

Version 2 files checksum the header and the arrays together; version 1 files checksummed
the arrays only, and are still read, with that check (their header is not protected).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import inspect
import io
import json
import os
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._errors import CheckpointError
from ._framed import read_framed, write_framed
from .units import UnitSystem

__all__ = ["load_model", "save_model"]

_MAGIC = "deeppot-model"
_VERSION = 2  # 2: the checksum covers the header too
_BODY_ONLY = (1,)  # versions whose checksum covers the arrays only (still read)
# top-level packages whose modules and functions a model file may name
_TRUSTED = ("deeppot", "equinox", "diffrax", "flowjax", "paramax", "jax", "jaxlib", "optax",
            "lineax", "optimistix")


def _trusted() -> tuple[str, ...]:
    from . import registry

    registry.load_plugins()
    plugins = {ep.value.split(":")[0].split(".")[0]
               for ep in importlib.metadata.entry_points(group=registry.ENTRY_POINT_GROUP)}
    return _TRUSTED + tuple(sorted(plugins))


def _path_of(obj) -> str:
    """`module:qualname` that imports to `obj` (for a module-level lambda, its name there)."""
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", "")
    if module is not None:
        path = f"{module}:{qualname}"
        if "<" not in qualname and _resolve(path, check=False) is obj:
            return path
        try:
            names = vars(importlib.import_module(module))
        except ImportError:
            names = {}
        for name, value in names.items():
            if value is obj:
                return f"{module}:{name}"
    raise TypeError(f"cannot describe {obj!r} in a model file: it is not a named, importable "
                    "class or function (a lambda or a local function?)")


# Classes and functions that moved after files naming them were written: old `module:qualname`
# -> new. `_resolve` reads every path through this table, so old files keep loading; add a
# row for each class or function a file may name whenever one moves.
MOVED = {
    "deeppot.flows._symmetry:Augmented": "deeppot.flows._augment:Augmented",
    "deeppot.flows._symmetry:symmetry_transform": "deeppot.flows._augment:symmetry_transform",
    "deeppot.flows._symmetry:AxisymmetricDF": "deeppot.flows._axisymmetric:AxisymmetricDF",
    "deeppot.flows._symmetry:Precondition": "deeppot.flows._precondition:Precondition",
    "deeppot.flows._symmetry:VelocityProfile": "deeppot.flows._profile:VelocityProfile",
    "deeppot.flows._symmetry:AbstractSymmetricDF": "deeppot.flows._reduced:AbstractSymmetricDF",
    "deeppot.flows._symmetry:SphericalDF": "deeppot.flows._spherical:SphericalDF",
}


# Fields that modules lost after files recording them were written: `module:qualname` -> the
# names `load_model` skips. Only fields holding settings, never arrays, are dropped this way:
# FFJORD's loss settings (reg_kinetic, reg_jacobian, hutchinson, cfm_sigma_min) became the
# fields of the training objectives (`deeppot.objectives`) and are not part of the model.
DROPPED = {
    "deeppot.flows._ffjord:FFJORD": ("reg_kinetic", "reg_jacobian", "hutchinson",
                                     "cfm_sigma_min"),
}


def _fields(desc: dict) -> dict:
    """The described fields of a module that its class still has."""
    dropped = DROPPED.get(MOVED.get(desc["module"], desc["module"]), ())
    return {name: value for name, value in desc["fields"].items() if name not in dropped}


def _resolve(path: str, *, check: bool = True):
    module, _, qualname = MOVED.get(path, path).partition(":")
    if check and module.split(".")[0] not in _trusted():
        raise CheckpointError(f"model files may only name deeppot, its dependencies and its "
                              f"plugins; this one names {path!r}")
    try:
        obj = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as err:
        if not check:
            return None
        raise CheckpointError(f"model file names {path!r}, which this installation does not "
                              f"have ({err}); is a plugin or a newer deeppot missing?") from None
    return obj


def _describe(obj, arrays: list) -> Any:
    """JSON description of a pytree of modules, containers, functions and arrays."""
    if isinstance(obj, jax.Array | np.ndarray) and not isinstance(obj, np.generic):
        if jnp.issubdtype(obj.dtype, jax.dtypes.prng_key):
            raise TypeError("cannot store random keys in a model file")
        arrays.append(obj)
        return {"array": len(arrays) - 1, "dtype": str(obj.dtype), "shape": list(obj.shape)}
    if isinstance(obj, UnitSystem):
        return {"units": obj.to_dict()}
    if isinstance(obj, eqx.Module) and getattr(obj, "constructor_arguments", None) is not None:
        # modules whose internals hold closures (flowjax's) are rebuilt by their constructor
        leaves = jax.tree.leaves(eqx.filter(obj, eqx.is_array))
        return {"construct": _path_of(type(obj)),
                "arguments": _describe(dict(obj.constructor_arguments), arrays),
                "leaves": [_describe(a, arrays) for a in leaves]}
    if isinstance(obj, eqx.Module):
        fields = {f.name: _describe(getattr(obj, f.name), arrays)
                  for f in dataclasses.fields(obj) if f.init or hasattr(obj, f.name)}
        return {"module": _path_of(type(obj)), "fields": fields}
    if obj is None or isinstance(obj, bool | int | float | str):
        return {"value": obj}
    if isinstance(obj, np.generic):
        return {"value": obj.item()}
    if isinstance(obj, tuple | list):
        return {type(obj).__name__: [_describe(o, arrays) for o in obj]}
    if isinstance(obj, dict):
        if not all(isinstance(k, str) for k in obj):
            raise TypeError("model files store dictionaries with string keys only")
        return {"dict": {k: _describe(v, arrays) for k, v in obj.items()}}
    if isinstance(obj, np.dtype) or (isinstance(obj, type) and issubclass(obj, np.generic)):
        return {"dtype": np.dtype(obj).name}
    if callable(obj):
        return {"function": _path_of(obj)}
    raise TypeError(f"cannot describe a {type(obj).__name__} in a model file")


def _rebuild(desc: Any, arrays: list) -> Any:
    """The skeleton a description names (arrays left as `None`, their shapes in `arrays`)."""
    if not isinstance(desc, dict) or len(desc) == 0:
        raise CheckpointError("model file has a malformed description")
    if "array" in desc:
        arrays.append((tuple(desc["shape"]), desc["dtype"]))
        return None
    if "module" in desc:
        cls = _resolve(desc["module"])
        if not (isinstance(cls, type) and issubclass(cls, eqx.Module)):
            raise CheckpointError(f"model file names {desc['module']!r}, not a module")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        obj = object.__new__(cls)
        described = _fields(desc)
        for name, value in described.items():
            if name not in fields:
                raise CheckpointError(f"{cls.__name__} has no field {name!r}, which the file "
                                      "names (written by another version of deeppot?)")
            object.__setattr__(obj, name, _rebuild(value, arrays))
        for name, field in fields.items():  # fields added since the file was written
            if name not in described and field.default is not dataclasses.MISSING:
                object.__setattr__(obj, name, field.default)
        return obj
    if "construct" in desc:
        cls = _resolve(desc["construct"])
        kwargs = _rebuild(desc["arguments"], [])
        if "key" in inspect.signature(cls).parameters:
            kwargs["key"] = jax.random.key(0)
        obj = cls(**kwargs)
        for leaf in desc["leaves"]:
            _rebuild(leaf, arrays)
        return obj
    if "units" in desc:
        return UnitSystem.from_dict(desc["units"])
    if "value" in desc:
        return desc["value"]
    if "tuple" in desc:
        return tuple(_rebuild(d, arrays) for d in desc["tuple"])
    if "list" in desc:
        return [_rebuild(d, arrays) for d in desc["list"]]
    if "dict" in desc:
        return {k: _rebuild(v, arrays) for k, v in desc["dict"].items()}
    if "dtype" in desc:
        return np.dtype(desc["dtype"]).type
    if "function" in desc:
        fn = _resolve(desc["function"])
        if not callable(fn):
            raise CheckpointError(f"model file names {desc['function']!r}, not a function")
        return fn
    raise CheckpointError(f"model file has an unknown entry {sorted(desc)}")


def _check_invariants(tree) -> None:
    for node in jax.tree.leaves(tree, is_leaf=lambda x: isinstance(x, eqx.Module)):
        if isinstance(node, eqx.Module):
            for cls in type(node).__mro__:
                check = cls.__dict__.get("__check_init__")
                if check is not None:
                    check(node)


def save_model(path: str | os.PathLike, model, meta: dict | None = None) -> Path:
    """Write a model and JSON metadata to one self-describing file, atomically.

    **Arguments:**

    - `path`: the file (`.eqx` by convention); replaced if it exists.
    - `model`: any deeppot model (a DF, a potential, a `PotentialModel`, …).
    - `meta`: JSON-serialisable metadata kept with it (training summary, config, …).

    **Returns:** the path written.

    **Raises:** `TypeError` if the model holds something a file cannot name (a lambda).
    """
    path = Path(path)
    arrays: list = []
    description = _describe(model, arrays)
    buffer = io.BytesIO()
    eqx.tree_serialise_leaves(buffer, [jnp.asarray(a) for a in arrays])
    body = buffer.getvalue()
    header = {"format": _MAGIC, "version": _VERSION, "model": description,
              "meta": json.loads(json.dumps(meta or {}, default=_json_default)),
              "x64": bool(jax.config.read("jax_enable_x64"))}
    return write_framed(path, header, body)


def load_model(path: str | os.PathLike):
    """Read a model written by `save_model`.

    **Arguments:**

    - `path`: the file.

    **Returns:** `(model, meta)`. A model saved under float64 (`jax.enable_x64`) is read
    with float64 enabled for the arrays, whatever the current setting.

    **Raises:** `FileNotFoundError` if there is no file; `CheckpointError` naming the file
    if it is not a deeppot model file, is truncated or corrupt, or names classes this
    installation does not have.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such model file: '{path}'")
    what = f"model file '{path}'"
    header, body = read_framed(path, kind="model file", magic=_MAGIC, versions=(_VERSION,),
                               body_only=_BODY_ONLY)
    with jax.enable_x64(bool(header.get("x64", False))):
        try:
            shapes: list = []
            skeleton = _rebuild(header["model"], shapes)
            like = [jnp.zeros(s, d) for s, d in shapes]
            arrays = eqx.tree_deserialise_leaves(io.BytesIO(body), like)
        except CheckpointError as err:
            raise CheckpointError(f"{what}: {err}") from None
        leaves = iter(arrays)
        model = _fill(header["model"], skeleton, leaves)
    _check_invariants(model)
    return model, header["meta"]


def _fill(desc, node, leaves):
    """Put the read arrays into the skeleton, in description order."""
    if "array" in desc:
        return next(leaves)
    if "module" in desc:
        for name, value in _fields(desc).items():
            object.__setattr__(node, name, _fill(value, getattr(node, name), leaves))
        return node
    if "construct" in desc:
        params, static = eqx.partition(node, eqx.is_array)
        treedef = jax.tree.structure(params)
        params = jax.tree.unflatten(treedef, [next(leaves) for _ in desc["leaves"]])
        return eqx.combine(params, static)
    if "tuple" in desc:
        return tuple(_fill(d, n, leaves) for d, n in zip(desc["tuple"], node))
    if "list" in desc:
        return [_fill(d, n, leaves) for d, n in zip(desc["list"], node)]
    if "dict" in desc:
        return {k: _fill(v, node[k], leaves) for k, v in desc["dict"].items()}
    return node


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if hasattr(obj, "__array__"):
        return np.asarray(obj).tolist()
    raise TypeError(f"cannot store a {type(obj).__name__} in a model file's metadata")
