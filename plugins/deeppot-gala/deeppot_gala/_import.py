"""gala's analytic potentials as deeppot families (parameters in the gala unit system)."""

from __future__ import annotations

from collections.abc import Callable

import gala.potential as gp
import numpy as np

import deeppot as dp
from deeppot.potentials import AbstractPotential, CompositePotential

from ._export import DeeppotPotential


def _values(pot) -> dict[str, float]:
    """gala's parameters as plain numbers in the potential's unit system."""
    out = {}
    for name, value in pot.parameters.items():
        value = value.decompose(pot.units).value if hasattr(value, "unit") else value
        out[name] = float(np.asarray(value))
    return out


def _nfw(p, G):
    if (p["a"], p["b"], p["c"]) != (1.0, 1.0, 1.0):
        raise ValueError(f"gala's triaxial NFWPotential (a, b, c = {p['a']}, {p['b']}, "
                         f"{p['c']}) has no deeppot family (deeppot's NFW is spherical)")
    return dp.NFW(m_s=p["m"], r_s=p["r_s"], G=G)


def _logarithmic(p, G):
    if (p["q1"], p["q2"]) != (1.0, 1.0):
        raise ValueError(f"gala's LogarithmicPotential with q1, q2 = {p['q1']}, {p['q2']} has "
                         "no deeppot family (deeppot's Logarithmic has q1 = q2 = 1)")
    return dp.Logarithmic(v_c=p["v_c"], r_c=p["r_h"], q=p["q3"], G=G)


# exact gala classes → deeppot families, from (parameter values, G)
CONVERTERS: dict[type, Callable[[dict, float], AbstractPotential]] = {
    gp.KeplerPotential: lambda p, G: dp.Kepler(m_tot=p["m"], G=G),
    gp.PlummerPotential: lambda p, G: dp.Plummer(m_tot=p["m"], r_s=p["b"], G=G),
    gp.HernquistPotential: lambda p, G: dp.Hernquist(m_tot=p["m"], r_s=p["c"], G=G),
    gp.NFWPotential: _nfw,
    gp.IsochronePotential: lambda p, G: dp.Isochrone(m_tot=p["m"], b=p["b"], G=G),
    gp.MiyamotoNagaiPotential: lambda p, G: dp.MiyamotoNagai(m_tot=p["m"], a=p["a"],
                                                            b=p["b"], G=G),
    gp.LogarithmicPotential: _logarithmic,
    gp.PowerLawCutoffPotential: lambda p, G: dp.PowerLawCutoff(m_tot=p["m"], alpha=p["alpha"],
                                                              r_c=p["r_c"], G=G),
}


def _check_placement(pot) -> None:
    origin = np.asarray(pot.origin, dtype=float)
    if np.any(origin != 0):
        raise ValueError(f"gala's {type(pot).__name__} is centred at {origin.tolist()}; "
                         "deeppot's families are centred on the origin")
    R = getattr(pot, "R", None)
    if R is not None and not np.array_equal(np.asarray(R), np.eye(3)):
        raise ValueError(f"gala's {type(pot).__name__} is rotated (R is not the identity); "
                         "deeppot's families are not")


def convert(pot) -> AbstractPotential:
    """See `deeppot_gala.from_gala`."""
    if isinstance(pot, DeeppotPotential):  # an export: the model inside it
        return pot.potential
    if isinstance(pot, gp.CompositePotential):
        if len(pot) == 0:
            raise ValueError("from_gala got an empty CompositePotential")
        return CompositePotential({str(name): convert(p) for name, p in pot.items()})
    if not isinstance(pot, gp.PotentialBase):
        raise TypeError(f"from_gala needs a gala potential, got {type(pot).__name__}")
    make = CONVERTERS.get(type(pot))
    if make is None:
        known = ", ".join(sorted(c.__name__ for c in CONVERTERS))
        raise ValueError(f"gala's {type(pot).__name__} has no deeppot family; convertible: "
                         f"{known} (and composites of them)")
    _check_placement(pot)
    return make(_values(pot), float(pot.G))
