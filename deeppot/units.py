"""Physical units at the edges: one unit system, astropy underneath, plain numbers inside.

The JAX core works on plain numbers. A `UnitSystem` says what those numbers mean: a length,
a velocity and a mass unit (the time unit of the dynamics is length / velocity, so that
x, v, Φ = v², ∇Φ = v²/length and the stationarity equation are consistent) and the
gravitational constant `G` in them, taken from `astropy.constants`. Potentials, frames and
catalogues carry their unit system; astropy `Quantity` values are converted to it where they
enter (constructor arguments, positions given to a potential's methods) and results come
back as quantities when a quantity went in (or through `UnitSystem.quantity`).

Two systems ship:

- `galactic`: kpc, km/s, M☉ (times reported in Myr); G ≈ 4.3009e-6 kpc (km/s)² / M☉.
- `dimensionless`: no physical units, G = 1 (the default; `UnitSystem.dimensionless(G)`
  for another G). A dimensionful quantity given to a dimensionless model is an error.

A quantity is always either converted or refused with an error naming the parameter; it is
never read as a bare number. A model built from quantities without an explicit `units=` is
in `galactic` units, and bare numbers given next to them are read in that system.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, final

import astropy.constants as const
import astropy.units as u
import numpy as np

__all__ = [
    "DIMENSIONS",
    "UnitSystem",
    "dimensionless",
    "galactic",
    "get_units",
    "is_quantity",
    "resolve_units",
]

# Powers of (length, velocity, mass) of each physical dimension the library uses.
DIMENSIONS: dict[str, tuple[int, int, int]] = {
    "dimensionless": (0, 0, 0),
    "length": (1, 0, 0),
    "velocity": (0, 1, 0),
    "mass": (0, 0, 1),
    "time": (1, -1, 0),
    "frequency": (-1, 1, 0),  # angular velocities, pattern speeds
    "potential": (0, 2, 0),  # Φ, energies per unit mass
    "acceleration": (-1, 2, 0),  # ∇Φ
    "hessian": (-2, 2, 0),  # ∂²Φ/∂x_i∂x_j and ∇²Φ
    "density": (-3, 0, 1),
    "inverse_length": (-1, 0, 0),  # ∂ln f/∂x
    "inverse_velocity": (0, -1, 0),  # ∂ln f/∂v
    "angular_momentum": (1, 1, 0),
}


def is_quantity(value: Any) -> bool:
    """Whether `value` is an astropy `Quantity`."""
    return isinstance(value, u.Quantity)


def _check_dimension(dimension: str) -> tuple[int, int, int]:
    if dimension not in DIMENSIONS:
        raise ValueError(f"unknown dimension {dimension!r}; known: {sorted(DIMENSIONS)}")
    return DIMENSIONS[dimension]


def _check_G(G: Any) -> float:
    try:
        G = float(G)
    except (TypeError, ValueError):
        raise TypeError(f"G must be a positive number, got {G!r}") from None
    if not (math.isfinite(G) and G > 0):
        raise ValueError(f"G must be positive and finite, got {G}")
    return G


@final
class UnitSystem:
    """What the plain numbers of a model mean: length, velocity and mass units, and G.

    **Arguments:**

    - `length`, `velocity`, `mass`: astropy units (or strings astropy parses), e.g.
      `u.kpc`, `u.km / u.s`, `u.Msun`. Scaled units such as `u.Unit(100 * u.km / u.s)` work.
    - `time`: the unit in which times are *reported* (`quantity(..., "time")`); the time
      unit of the dynamics is always length / velocity. Default: length / velocity.
    - `name`: a label (default: the three units).

    G is computed from `astropy.constants.G` in these units. `UnitSystem.dimensionless(G)`
    builds the unit-free system instead. Systems compare equal when their units and G do;
    they are immutable and hashable (potentials keep them as static fields).
    """

    __slots__ = ("_length", "_velocity", "_mass", "_time", "_G", "_name")

    def __init__(self, length, velocity, mass, *, time=None, name: str | None = None):
        try:
            length, velocity, mass = u.Unit(length), u.Unit(velocity), u.Unit(mass)
            time = (length / velocity) if time is None else u.Unit(time)
        except (TypeError, ValueError) as err:
            raise ValueError(f"not a unit: {err}") from None
        for what, unit, target in (
            ("length", length, u.m),
            ("velocity", velocity, u.m / u.s),
            ("mass", mass, u.kg),
            ("time", time, u.s),
        ):
            if not unit.is_equivalent(target):
                raise ValueError(f"{what} unit must be a {what}, got {unit} ({unit.physical_type})")
        G = const.G.to_value(length * velocity**2 / mass)
        self._init(length, velocity, mass, time, G, name or f"{length}, {velocity}, {mass}")

    def _init(self, length, velocity, mass, time, G, name):
        object.__setattr__(self, "_length", length)
        object.__setattr__(self, "_velocity", velocity)
        object.__setattr__(self, "_mass", mass)
        object.__setattr__(self, "_time", time)
        object.__setattr__(self, "_G", float(G))
        object.__setattr__(self, "_name", str(name))

    @classmethod
    def dimensionless(cls, G: float = 1.0) -> UnitSystem:
        """The unit-free system: plain numbers, gravitational constant `G` (default 1)."""
        G = _check_G(G)
        self = object.__new__(cls)
        self._init(None, None, None, None, G, "dimensionless")
        return self

    def __setattr__(self, name, value):
        raise AttributeError("UnitSystem is immutable")

    # -- accessors -------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The system's label, e.g. `"galactic"`."""
        return self._name

    @property
    def G(self) -> float:
        """The gravitational constant in this system's units."""
        return self._G

    @property
    def is_physical(self) -> bool:
        """False for the dimensionless system."""
        return self._length is not None

    @property
    def length(self) -> u.UnitBase:
        """The length unit (raises for the dimensionless system)."""
        return self.unit("length")

    @property
    def velocity(self) -> u.UnitBase:
        """The velocity unit (raises for the dimensionless system)."""
        return self.unit("velocity")

    @property
    def mass(self) -> u.UnitBase:
        """The mass unit (raises for the dimensionless system)."""
        return self.unit("mass")

    @property
    def time(self) -> u.UnitBase:
        """The unit times are reported in (the dynamics use length / velocity)."""
        self._require_physical("time")
        return self._time

    def unit(self, dimension: str) -> u.UnitBase:
        """The unit of a physical dimension in this system (`DIMENSIONS` lists them).

        **Arguments:**

        - `dimension`: e.g. `"length"`, `"potential"`, `"acceleration"`, `"density"`.

        **Returns:** the astropy unit, a product of the length, velocity and mass units
        (`"time"` is length / velocity here: the unit plain time values are in).
        """
        p, q, r = _check_dimension(dimension)
        if (p, q, r) == (0, 0, 0):
            return u.dimensionless_unscaled
        self._require_physical(dimension)
        return self._length**p * self._velocity**q * self._mass**r

    def _require_physical(self, what: str) -> None:
        if not self.is_physical:
            raise ValueError(
                f"the dimensionless unit system has no unit for {what}: build the model with "
                "units='galactic' (or another UnitSystem) to use physical quantities"
            )

    def same_units(self, other: UnitSystem) -> bool:
        """Whether two systems give plain numbers the same meaning (G aside)."""
        if not isinstance(other, UnitSystem):
            return False
        if not (self.is_physical and other.is_physical):
            return self.is_physical == other.is_physical
        return all(a == b for a, b in zip(self._units(), other._units()))

    def _units(self):
        return (self._length, self._velocity, self._mass)

    # -- conversions -----------------------------------------------------------------------

    def to_value(self, value: Any, dimension: str, name: str = "value") -> Any:
        """Plain numbers in this system: a `Quantity` is converted, anything else returned.

        **Arguments:**

        - `value`: a `Quantity`, or plain numbers (already in this system's units).
        - `dimension`: what `value` must be (`"length"`, `"mass"`, ...).
        - `name`: the parameter's name, for error messages.

        **Returns:** a float, a NumPy array, or `value` itself when it is not a quantity.

        **Raises:** `ValueError` naming `name` for a quantity of the wrong dimension, or a
        dimensionful quantity given to the dimensionless system.
        """
        if not is_quantity(value):
            return value
        _check_dimension(dimension)
        if not self.is_physical:
            if value.unit.is_equivalent(u.dimensionless_unscaled):
                return value.to_value(u.dimensionless_unscaled)
            raise ValueError(
                f"{name} is a quantity ({_describe(value)}) but the model is dimensionless: "
                "pass units='galactic' (or another UnitSystem), or plain numbers"
            )
        target = self.unit(dimension)
        try:
            return value.to_value(target)
        except u.UnitConversionError:
            raise ValueError(
                f"{name} must be a {dimension.replace('_', ' ')} (convertible to {target}), "
                f"got {_describe(value)}"
            ) from None

    def quantity(self, value: Any, dimension: str) -> u.Quantity:
        """Plain numbers of this system as a `Quantity`.

        **Arguments:**

        - `value`: numbers (NumPy or JAX arrays, floats) in this system's units.
        - `dimension`: what they are (`"length"`, `"velocity"`, `"potential"`, ...).
          Times come back in the system's reporting unit (`time`, Myr for `galactic`).

        **Returns:** a `Quantity`.
        """
        unit = self.unit(dimension)
        q = u.Quantity(np.asarray(value), unit)
        if dimension == "time":
            return q.to(self._time)
        return q

    # -- description -----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description; `UnitSystem.from_dict` inverts it."""
        if not self.is_physical:
            return {"name": "dimensionless", "G": self._G}
        return {
            "name": self._name,
            "length": self._length.to_string(),
            "velocity": self._velocity.to_string(),
            "mass": self._mass.to_string(),
            "time": self._time.to_string(),
        }

    @classmethod
    def from_dict(cls, desc: Mapping[str, Any]) -> UnitSystem:
        """Rebuild a system from `to_dict`'s description (or a name: see `get_units`)."""
        if not isinstance(desc, Mapping):
            raise TypeError(f"a unit-system description must be a mapping, got {desc!r}")
        if desc.get("name") == "dimensionless" or "length" not in desc:
            if set(desc) - {"name", "G"}:
                raise ValueError(f"not a unit-system description: {dict(desc)!r}")
            return cls.dimensionless(desc.get("G", 1.0))
        missing = [k for k in ("length", "velocity", "mass") if k not in desc]
        if missing:
            raise ValueError(f"unit-system description is missing {missing}: {dict(desc)!r}")
        return cls(desc["length"], desc["velocity"], desc["mass"], time=desc.get("time"),
                   name=desc.get("name"))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, UnitSystem):
            return NotImplemented
        return self.same_units(other) and self._G == other._G

    def __hash__(self) -> int:
        if not self.is_physical:
            return hash(("dimensionless", self._G))
        return hash((*(x.to_string() for x in self._units()), self._G))

    def __repr__(self) -> str:
        if not self.is_physical:
            g = "" if self._G == 1.0 else f"G={self._G!r}"
            return f"UnitSystem.dimensionless({g})"
        return (f"UnitSystem({self._name!r}: {self._length}, {self._velocity}, {self._mass}; "
                f"G={self._G:.6g})")

    def __reduce__(self):
        return (UnitSystem.from_dict, (self.to_dict(),))


def _describe(q: u.Quantity) -> str:
    kind = q.unit.physical_type
    shown = f"{q}" if q.size == 1 else f"a quantity in {q.unit}"
    return f"{shown} ({kind})"


galactic = UnitSystem(u.kpc, u.km / u.s, u.Msun, time=u.Myr, name="galactic")
dimensionless = UnitSystem.dimensionless()

_NAMED = {"galactic": galactic, "dimensionless": dimensionless}


def get_units(units: Any) -> UnitSystem:
    """A `UnitSystem` from a system, a name (`"galactic"`, `"dimensionless"`) or a dict.

    **Arguments:**

    - `units`: a `UnitSystem`, one of the names above, or `UnitSystem.to_dict()` output.

    **Returns:** the `UnitSystem`; raises `ValueError` for an unknown name.
    """
    if isinstance(units, UnitSystem):
        return units
    if isinstance(units, str):
        if units not in _NAMED:
            raise ValueError(f"unknown unit system {units!r}; known: {sorted(_NAMED)}")
        return _NAMED[units]
    if isinstance(units, Mapping):
        return UnitSystem.from_dict(units)
    raise TypeError(f"units must be a UnitSystem, a name or a dict, got {type(units).__name__}")


def resolve_units(units: Any, G: Any, *values: Any) -> UnitSystem:
    """The unit system of a model from its `units=` and `G=` arguments and its parameters.

    - `units` given: that system (`G` may only be given with the dimensionless system).
    - else, if any of `values` is a `Quantity`: `galactic` (`G` may not be given).
    - else the dimensionless system with `G` (default 1).

    **Arguments:**

    - `units`: `None`, a `UnitSystem`, a name or a dict (see `get_units`).
    - `G`: `None` or the gravitational constant of a dimensionless model.
    - `*values`: the constructor's parameters (only inspected for quantities).

    **Returns:** the `UnitSystem`.
    """
    if units is not None:
        system = get_units(units)
        if G is None:
            return system
        if system.is_physical:
            raise ValueError(
                f"G is fixed by the unit system ({system.name}: G = {system.G:.6g}); "
                "do not pass G together with physical units"
            )
        return UnitSystem.dimensionless(G)
    if any(is_quantity(v) for v in values):
        if G is not None:
            raise ValueError(
                "G is fixed by the unit system when parameters are quantities (galactic: "
                f"G = {galactic.G:.6g}); do not pass G"
            )
        return galactic
    return dimensionless if G is None else UnitSystem.dimensionless(G)
