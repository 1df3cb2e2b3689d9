"""Hypothesis: quantities convert exactly, for every analytic family and every dimension."""

import inspect

import astropy.units as u
import jax
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import deeppot as dp
from deeppot.units import DIMENSIONS, UnitSystem, galactic

# The physical dimension of every analytic family's parameters (a new family must add its
# parameters here: `test_every_family_is_covered` fails until it does).
PARAM_DIMENSIONS = {"m_tot": "mass", "m_s": "mass", "r_s": "length", "a": "length",
                    "b": "length", "v_c": "velocity", "r_c": "length", "q": "dimensionless",
                    "alpha": "dimensionless", "c": "length", "angle": "dimensionless"}
# A galactic value range and an alternative unit to state it in, per dimension.
RANGES = {"mass": (1e8, 1e12, u.kg), "length": (0.1, 20.0, u.pc),
          "velocity": (10.0, 400.0, u.m / u.s), "dimensionless": (0.3, 1.0, u.percent)}
# Potentials built from networks or other potentials, not from physical parameters.
NOT_PARAMETRIC = {"NeuralPotential", "Spherical", "Axisymmetric", "CompositePotential",
                  "WithTail"}


def _subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


CLASSES = {c.__name__: c for c in _subclasses(dp.AbstractPotential)
           if c.__module__.startswith("deeppot") and getattr(c, "__final__", False)
           and c.__name__ not in NOT_PARAMETRIC}
FAMILIES = sorted(CLASSES)


def _parameters(cls):
    return [p for p in inspect.signature(cls).parameters if p not in ("G", "units")]


def test_every_family_is_covered():
    assert len(FAMILIES) >= 7
    for name in FAMILIES:
        for p in _parameters(CLASSES[name]):
            assert p in PARAM_DIMENSIONS, f"{name}.{p} has no dimension in PARAM_DIMENSIONS"


@pytest.mark.parametrize("family", FAMILIES)
@given(fractions=st.lists(st.floats(0.0, 1.0), min_size=3, max_size=3),
       x=st.lists(st.floats(-10.0, 10.0), min_size=3, max_size=3).filter(
           lambda x: np.linalg.norm(x) > 0.5))
def test_quantity_construction_equals_plain_galactic(family, fractions, x, x64):
    cls = CLASSES[family]
    plain, quantities = {}, {}
    for p, f in zip(_parameters(cls), fractions):
        lo, hi, alt = RANGES[PARAM_DIMENSIONS[p]]
        value = lo * (hi / lo) ** f
        plain[p] = value
        unit = galactic.unit(PARAM_DIMENSIONS[p])
        quantities[p] = (value * unit).to(alt)  # the same value stated in another unit
    a = cls(**plain, units="galactic")
    b = cls(**quantities)
    assert b.units == galactic
    for p in plain:
        np.testing.assert_allclose(getattr(b, p), plain[p], rtol=1e-12)
    xq = np.asarray(x) * u.kpc
    np.testing.assert_allclose(b.potential(xq).value, a.potential(np.asarray(x)), rtol=1e-12)
    np.testing.assert_allclose(b.gradient(xq.to(u.pc)).to_value(u.km**2 / u.s**2 / u.kpc),
                               a.gradient(np.asarray(x)), rtol=1e-10)


@pytest.mark.parametrize("family", FAMILIES)
def test_wrong_dimensions_are_refused_for_every_family(family):
    cls = CLASSES[family]
    for p in _parameters(cls):
        wrong = 1.0 * (u.s if PARAM_DIMENSIONS[p] != "dimensionless" else u.kpc)
        with pytest.raises(ValueError, match=f"parameter '{p}' must be a"):
            cls(**{p: wrong})


@pytest.mark.parametrize("dimension", sorted(DIMENSIONS))
@given(value=st.floats(1e-8, 1e8))
def test_quantity_round_trips(dimension, value):
    custom = UnitSystem(u.pc, u.Unit(100 * u.km / u.s), 1e10 * u.Msun)
    for system in (galactic, custom):
        q = system.quantity(value, dimension)
        back = system.to_value(q.si if dimension != "dimensionless" else q, dimension)
        np.testing.assert_allclose(back, value, rtol=1e-12)


@given(scale=st.floats(0.1, 10.0))
def test_potentials_scale_with_their_units(scale):
    """A model in pc and one in kpc describe the same galaxy (G from astropy in each)."""
    with jax.enable_x64(True):
        pc_system = UnitSystem(u.pc, u.km / u.s, u.Msun)
        a = dp.Hernquist(m_tot=1e10 * u.Msun, r_s=scale * u.kpc)
        b = dp.Hernquist(m_tot=1e10 * u.Msun, r_s=scale * u.kpc, units=pc_system)
        np.testing.assert_allclose(b.r_s, 1000 * scale, rtol=1e-12)
        x = np.array([[1.0, 2.0, 0.5], [8.0, 0.0, 0.0]]) * u.kpc
        np.testing.assert_allclose(b.potential(x).value, a.potential(x).value, rtol=1e-10)
        np.testing.assert_allclose(b.density(x).to_value(u.Msun / u.kpc**3),
                                   a.density(x).value, rtol=1e-10)
