"""galpy's analytic potentials as deeppot families (parameters in galpy's natural units)."""

from __future__ import annotations

import math
from collections.abc import Callable

import galpy.potential as gp

import deeppot as dp
from deeppot.potentials import AbstractPotential, CompositePotential

from ._export import DeeppotPotential


def _amp(p) -> float:
    return float(p._amp)


def _two_power(p) -> AbstractPotential:
    # ρ = amp / (4π a³) (r/a)^−α (1 + r/a)^(α−β): Hernquist (1, 4) has mass amp/2; NFW (1, 3)
    # has m_s = 4π ρ0 a³ = amp.
    if (p.alpha, p.beta) == (1, 4):
        return dp.Hernquist(m_tot=_amp(p) / 2, r_s=float(p.a))
    if (p.alpha, p.beta) == (1, 3):
        return dp.NFW(m_s=_amp(p), r_s=float(p.a))
    raise ValueError(f"galpy's TwoPowerSphericalPotential with (alpha, beta) = "
                     f"({p.alpha}, {p.beta}) has no deeppot family (only (1, 4), Hernquist, "
                     "and (1, 3), NFW)")


def _logarithmic(p) -> AbstractPotential:
    if p._b is not None and p._b != 1:
        raise ValueError(f"galpy's triaxial LogarithmicHaloPotential (b = {p._b}) has no "
                         "deeppot family (deeppot's Logarithmic is axisymmetric)")
    return dp.Logarithmic(v_c=math.sqrt(_amp(p)), r_c=math.sqrt(p._core2), q=float(p._q))


def _power_cutoff(p) -> AbstractPotential:
    # galpy: ρ = amp r^−α exp(−r²/r_c²); total mass 2π amp r_c^(3−α) Γ(3/2 − α/2).
    alpha, rc = float(p.alpha), float(p.rc)
    m_tot = 2 * math.pi * _amp(p) * rc ** (3 - alpha) * math.gamma(1.5 - alpha / 2)
    return dp.PowerLawCutoff(m_tot=m_tot, alpha=alpha, r_c=rc)


# exact galpy classes → deeppot families (subclasses may change the meaning of parameters)
CONVERTERS: dict[type, Callable[[gp.Potential], AbstractPotential]] = {
    gp.PlummerPotential: lambda p: dp.Plummer(m_tot=_amp(p), r_s=float(p._b)),
    gp.HernquistPotential: lambda p: dp.Hernquist(m_tot=_amp(p) / 2, r_s=float(p.a)),
    gp.NFWPotential: lambda p: dp.NFW(m_s=_amp(p), r_s=float(p.a)),
    gp.TwoPowerSphericalPotential: _two_power,
    gp.MiyamotoNagaiPotential: lambda p: dp.MiyamotoNagai(m_tot=_amp(p), a=float(p._a),
                                                          b=float(p._b)),
    gp.IsochronePotential: lambda p: dp.Isochrone(m_tot=_amp(p), b=float(p.b)),
    gp.KeplerPotential: lambda p: dp.Kepler(m_tot=_amp(p)),
    gp.LogarithmicHaloPotential: _logarithmic,
    gp.PowerSphericalPotentialwCutoff: _power_cutoff,
}


def _components(pot) -> list:
    """galpy potentials in a potential, a list/tuple of them or a CompositePotential."""
    if isinstance(pot, list | tuple | gp.CompositePotential):
        return [c for p in pot for c in _components(p)]
    return [pot]


def convert(pot) -> AbstractPotential:
    """See `deeppot_galpy.from_galpy`."""
    parts = _components(pot)
    if not parts:
        raise ValueError("from_galpy got an empty list of potentials")
    converted = []
    for p in parts:
        if not isinstance(p, gp.Potential):
            raise TypeError(f"from_galpy needs galpy potentials, got {type(p).__name__}")
        if isinstance(p, DeeppotPotential):  # an export: the model inside it
            converted.append(p.potential)
            continue
        make = CONVERTERS.get(type(p))
        if make is None:
            known = ", ".join(sorted(c.__name__ for c in CONVERTERS))
            raise ValueError(f"galpy's {type(p).__name__} has no deeppot family; "
                             f"convertible: {known} (and lists or sums of them)")
        converted.append(make(p))
    if len(converted) == 1:
        return converted[0]
    return CompositePotential.from_items([(None, p) for p in converted])
