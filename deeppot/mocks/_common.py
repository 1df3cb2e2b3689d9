"""Shared helpers for the mock generators: keys, truth descriptions, provenance."""

import inspect
from typing import Any

import jax
import numpy as np

from .. import registry
from ..potentials import AbstractPotential, CompositePotential


def _registered_classes(reg: registry.Registry) -> dict[str, type]:
    """The classes a registry holds, by class name (the name a truth description records)."""
    return {entry.__name__: entry for entry in reg.values() if isinstance(entry, type)}


def _analytic_families() -> dict[str, type]:
    """Registered analytic families (classes, not factories of learned models) by class name."""
    return {name: cls for name, cls in _registered_classes(registry.potentials).items()
            if issubclass(cls, AbstractPotential)
            and "key" not in inspect.signature(cls).parameters}


def _family_parameters(cls: type) -> tuple[str, ...]:
    """The physical parameters of an analytic family: its constructor's, less G and units."""
    return tuple(p for p in inspect.signature(cls).parameters if p not in ("G", "units"))


def check_key(key: Any) -> jax.Array:
    """Require a typed PRNG key (`jax.random.key(seed)`), not a legacy uint32 `PRNGKey`.

    **Arguments:**

    - `key`: the key to check.

    **Returns:** the key; raises `TypeError` for anything else.
    """
    if not (isinstance(key, jax.Array) and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)):
        raise TypeError(
            "expected a typed PRNG key from jax.random.key(seed), got "
            f"{type(key).__name__} with dtype {getattr(key, 'dtype', None)} "
            "(legacy jax.random.PRNGKey keys are not accepted)"
        )
    return key


def check_draw(key: Any, n) -> int:
    """Check a generator's key (`check_key`) and number of stars.

    **Returns:** `n` as an `int`; raises `ValueError` unless it is positive.
    """
    check_key(key)
    n = int(n)
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    return n


def check_positive(**values) -> None:
    """Raise `ValueError` naming the first of `values` (name=value) that is not a positive,
    finite number."""
    for name, val in values.items():
        if not (np.isfinite(val) and val > 0):
            raise ValueError(f"{name} must be positive and finite, got {val}")


def key_meta(key: jax.Array) -> dict[str, Any]:
    """Serialisable description of a key: implementation and raw key data."""
    return {
        "impl": str(jax.random.key_impl(key)),
        "data": np.asarray(jax.random.key_data(key)).tolist(),
    }


def describe_potential(potential: AbstractPotential) -> dict[str, Any]:
    """JSON description of a known analytic potential, for a catalogue's `meta["truth"]`.

    **Arguments:**

    - `potential`: a registered analytic family (`Plummer`, `MiyamotoNagai`,
      `LongMuraliBar`, …) or a `CompositePotential` of them.

    **Returns:** e.g. `{"class": "MiyamotoNagai", "m_tot": 1.0, "a": 1.0, "b": 0.1, "G": 1.0}`
    (parameters rounded to 15 significant digits, in the model's units; a model in physical
    units adds `"units": UnitSystem.to_dict()`), or for a composite
    `{"class": "CompositePotential", "components": {name: description, ...}}`;
    `truth_potential` inverts it.
    """
    if isinstance(potential, CompositePotential):
        return {"class": "CompositePotential",
                "components": {k: describe_potential(p) for k, p in potential.items()}}
    name = type(potential).__name__
    families = _analytic_families()
    if name not in families:
        raise ValueError(f"cannot describe a {name}; known: CompositePotential, "
                         f"{', '.join(sorted(families))}")
    desc: dict[str, Any] = {"class": name}
    for p in _family_parameters(families[name]):
        # 15 significant digits undo the exp(log(·)) round trip of the stored parameters.
        desc[p] = float(f"{float(getattr(potential, p)):.15g}")
    desc["G"] = float(potential.G)
    if potential.units.is_physical:
        desc["units"] = potential.units.to_dict()
    return desc


def truth_df(meta: dict[str, Any]):
    """The exact distribution function a mock generator recorded in `meta["truth_df"]`.

    **Arguments:**

    - `meta`: a catalogue's `meta`.

    **Returns:** the analytic DF (e.g. `PlummerDF(r_max=10.0)`).

    **Raises:** `ValueError` if the catalogue records none (files, observed or selected
    mocks).
    """
    desc = meta.get("truth_df")
    classes = _registered_classes(registry.distribution_functions)
    if not isinstance(desc, dict) or desc.get("class") not in classes:
        raise ValueError(f"this catalogue records no exact distribution function "
                         f"(generator {meta.get('generator', 'unknown')!r})")
    params = {k: truth_potential(v) if isinstance(v, dict) and "class" in v else v
              for k, v in desc.items() if k != "class"}  # nested potentials are rebuilt
    return classes[desc["class"]](**params)


def truth_potential(meta_or_desc: dict[str, Any]) -> AbstractPotential:
    """Rebuild the true potential recorded in a catalogue's `meta` (or its `"truth"` entry).

    **Arguments:**

    - `meta_or_desc`: `catalog.meta` or `catalog.meta["truth"]` (a `describe_potential`
      description).

    **Returns:** the potential module (e.g. `dp.MiyamotoNagai(m_tot=1, a=1, b=0.1)`, or a
    `CompositePotential`).
    """
    desc = meta_or_desc.get("truth", meta_or_desc)
    families = _analytic_families()
    if not isinstance(desc, dict):
        raise ValueError(f"no known truth potential in {desc!r}")
    if desc.get("class") == "CompositePotential" and isinstance(desc.get("components"), dict):
        return CompositePotential({k: truth_potential(d) for k, d in desc["components"].items()})
    if desc.get("class") not in families:
        raise ValueError(f"no known truth potential in {desc!r}")
    cls = families[desc["class"]]
    params = {p: desc[p] for p in _family_parameters(cls) if p in desc}
    if "units" in desc:
        return cls(**params, units=desc["units"])
    return cls(**params, G=desc.get("G", 1.0))
