"""Shared helpers for the mock generators: keys, truth descriptions, provenance."""

from typing import Any

import jax
import numpy as np

from ..potentials import AbstractPotential, MiyamotoNagai, Plummer

_TRUTH_CLASSES = {"MiyamotoNagai": MiyamotoNagai, "Plummer": Plummer}
_TRUTH_PARAMS = {"MiyamotoNagai": ("m_tot", "a", "b"), "Plummer": ("m_tot", "r_s")}


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


def key_meta(key: jax.Array) -> dict[str, Any]:
    """Serialisable description of a key: implementation and raw key data."""
    return {
        "impl": str(jax.random.key_impl(key)),
        "data": np.asarray(jax.random.key_data(key)).tolist(),
    }


def describe_potential(potential: AbstractPotential) -> dict[str, Any]:
    """JSON description of a known analytic potential, for a catalogue's `meta["truth"]`.

    **Arguments:**

    - `potential`: a `Plummer` or `MiyamotoNagai`.

    **Returns:** e.g. `{"class": "MiyamotoNagai", "m_tot": 1.0, "a": 1.0, "b": 0.1, "G": 1.0}`
    (parameters rounded to 15 significant digits, in the model's units; a model in physical
    units adds `"units": UnitSystem.to_dict()`); `truth_potential` inverts it.
    """
    name = type(potential).__name__
    if name not in _TRUTH_PARAMS:
        raise ValueError(f"cannot describe a {name}; known: {sorted(_TRUTH_PARAMS)}")
    desc: dict[str, Any] = {"class": name}
    for p in _TRUTH_PARAMS[name]:
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
    from .. import flows

    desc = meta.get("truth_df")
    if not isinstance(desc, dict) or not hasattr(flows, str(desc.get("class"))):
        raise ValueError(f"this catalogue records no exact distribution function "
                         f"(generator {meta.get('generator', 'unknown')!r})")
    params = {k: v for k, v in desc.items() if k != "class"}
    return getattr(flows, desc["class"])(**params)


def truth_potential(meta_or_desc: dict[str, Any]) -> AbstractPotential:
    """Rebuild the true potential recorded in a catalogue's `meta` (or its `"truth"` entry).

    **Arguments:**

    - `meta_or_desc`: `catalog.meta` or `catalog.meta["truth"]`.

    **Returns:** the potential module (e.g. `dp.MiyamotoNagai(m_tot=1, a=1, b=0.1)`).
    """
    desc = meta_or_desc.get("truth", meta_or_desc)
    if not isinstance(desc, dict) or desc.get("class") not in _TRUTH_CLASSES:
        raise ValueError(f"no known truth potential in {desc!r}")
    name = desc["class"]
    params = {p: desc[p] for p in _TRUTH_PARAMS[name]}
    if "units" in desc:
        return _TRUTH_CLASSES[name](**params, units=desc["units"])
    return _TRUTH_CLASSES[name](**params, G=desc.get("G", 1.0))
