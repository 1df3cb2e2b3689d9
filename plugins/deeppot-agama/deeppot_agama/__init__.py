"""deeppot → agama: a deeppot potential as an agama potential expansion.

`to_agama` samples deeppot's Φ (or ρ = ∇²Φ/4πG) over the data region and builds an agama
`Multipole` (near-spherical systems) or `CylSpline` (discs) expansion from it, so that agama's
action finder, orbit integrator and DF machinery run on the learned potential. It is
registered in `deeppot.registry.exporters` as `"agama"` through the `deeppot.plugins` entry
point. agama is imported only when `to_agama` runs; without it, the error says how to build
it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from deeppot import registry

if TYPE_CHECKING:
    from deeppot.potentials import AbstractPotential

__all__ = ["AGAMA_SYMMETRY", "AXISYMMETRIC_NOT_MIRRORED", "DEFAULTS", "import_agama", "register",
           "to_agama"]
__version__ = "0.1.0.dev0"

INSTALL_HINT = (
    "agama is not installed. It is not installable from the package registries offline; build "
    "it from its source archive: `make agama` in the deeppot repository, or by hand "
    "(apt-get install libgsl-dev libeigen3-dev; tar -xzf agama-src.tar.gz; cd agama; "
    "CFLAGS=-I/usr/include/eigen3 python setup.py bdist_wheel --yes; "
    "pip install dist/agama-*.whl). See plugins/deeppot-agama/README.md."
)

# deeppot.export.symmetry → agama's symmetry codes. agama's "a"xisymmetry includes the
# mirror z → −z; a potential axisymmetric about ẑ but not even in z (a learned
# `Axisymmetric` network) gets agama's bit code for reflections in x and y plus rotation
# about z (1 | 2 | 16), so that its odd part in z is kept.
AGAMA_SYMMETRY = {"spherical": "s", "axisymmetric": "a", "none": "n"}
AXISYMMETRIC_NOT_MIRRORED = str(1 | 2 | 16)
_LETTER_BITS = {"s": 63, "a": 31, "t": 15, "b": 12, "r": 8, "n": 0}  # agama's coord.h

# grid and order defaults per expansion kind (enough for 1e-3 forces on smooth models)
DEFAULTS: dict[str, dict[str, int]] = {
    "multipole": {"grid_size_R": 64, "l_max": 12, "m_max": 8},
    "cylspline": {"grid_size_R": 64, "grid_size_z": 64, "m_max": 6},
}


def import_agama():
    """Import agama, or raise `ImportError` saying how to install it."""
    try:
        import agama
    except ImportError as err:
        raise ImportError(INSTALL_HINT) from err
    return agama


def _unit_factors(agama, potential) -> tuple[float, float, float] | None:
    """(length, velocity, mass) of agama's current units in the model's units (None when
    both are unit-free)."""
    from deeppot.export import unit_system

    units = unit_system(potential)
    current = agama.getUnits()
    if units is None:
        if current:
            raise ValueError(f"agama has physical units set ({current}) but this deeppot "
                             "potential is dimensionless; call agama.setUnits() without "
                             "arguments (N-body units, G = 1) before exporting it")
        return None
    if not current:
        raise ValueError("this deeppot potential has physical units but agama is in N-body "
                         "units; call agama.setUnits(length=1, velocity=1, mass=1) (kpc, km/s, "
                         "Msun) or other units first")
    import astropy.units as u

    return (float(units.to_value(current["length"] * u.kpc, "length", "agama length")),
            float(units.to_value(current["velocity"] * u.km / u.s, "velocity",
                                 "agama velocity")),
            float(units.to_value(current["mass"] * u.Msun, "mass", "agama mass")))


def _symmetry_bits(sym: str) -> int:
    """agama's symmetry bit mask of a symmetry name or bit code, or `ValueError`."""
    bits = int(sym) if sym.isdigit() else _LETTER_BITS.get(sym[:1].lower())
    if bits is None:
        raise ValueError(f"unknown agama symmetry {sym!r}; a name (s, a, t, b, r, n) or "
                         "agama's bit code")
    return bits


def _kepler_offset(fields, r_max: float, length: float, velocity: float) -> float:
    """The constant that makes Φ(r_max) = −r_max |∇Φ(r_max)|, in agama's units, averaged
    over the 6 axis and 8 diagonal directions at r_max."""
    axes = np.concatenate([np.eye(3), -np.eye(3)])
    diagonals = np.array([[i, j, k] for i in (-1, 1) for j in (-1, 1) for k in (-1, 1)])
    directions = np.concatenate([axes, diagonals / np.sqrt(3.0)])
    x = directions * r_max * length
    phi = fields.potential_at(x) / velocity**2
    grad = np.linalg.norm(fields.gradient_at(x), axis=-1) * length / velocity**2
    return float(np.mean(phi) + r_max * np.mean(grad))


def to_agama(
    potential: AbstractPotential,
    kind: Literal["multipole", "cylspline"] = "multipole",
    *,
    r_min: float,
    r_max: float,
    z_min: float | None = None,
    z_max: float | None = None,
    source: Literal["potential", "density"] = "potential",
    offset: float | Literal["kepler"] = 0.0,
    symmetry: str | None = None,
    grid_size_R: int | None = None,
    grid_size_z: int | None = None,
    l_max: int | None = None,
    m_max: int | None = None,
) -> Any:
    """An agama potential expansion of a deeppot potential over the data region.

    The expansion is built by agama from a Python callable that evaluates the JAX model
    (compiled, float64): with `source="potential"` (default) agama expands Φ itself, so its
    forces follow deeppot's inside the grid (derivatives by agama's 4th-order finite
    differences of Φ); with `source="density"` it expands ρ = ∇²Φ/4πG and solves Poisson's
    equation, which also counts the model's density outside the data region (where a learned
    model is unconstrained) and has Φ → 0 at infinity. Outside its grid agama extrapolates
    each harmonic as a power law.

    **Arguments:**

    - `potential`: any deeppot potential.
    - `kind`: `"multipole"` (spherical harmonics × radial splines, for near-spherical
      systems) or `"cylspline"` (azimuthal harmonics × 2-D splines in (R, z), for discs).
    - `r_min`, `r_max`: the radial extent of the grid (the data region), in the units agama
      is set to (for a dimensionless model, the model's units).
    - `z_min`, `z_max`: the vertical extent of a CylSpline grid (default `r_min`, `r_max`).
    - `source`: `"potential"` or `"density"`.
    - `offset`: a constant subtracted from Φ (`source="potential"` only; in agama's units).
      A learned Φ is known only up to a constant, but agama's action finder needs
      Φ(0) < 0 and Φ → 0 far out: `"kepler"` picks the constant that continues Φ beyond
      the grid as a point mass would, Φ(r_max) = −r_max |∇Φ(r_max)| (both averaged over
      14 directions at r_max).
    - `symmetry`: agama's symmetry code (a name or its bit code); default from
      `deeppot.export.symmetry` and `deeppot.export.mirror_symmetric_z` (`"s"`pherical,
      `"a"`xisymmetric and even in z, `AXISYMMETRIC_NOT_MIRRORED`, or `"n"`one).
    - `grid_size_R`, `grid_size_z`, `l_max`, `m_max`: grid sizes and expansion orders
      (defaults in `DEFAULTS`; `l_max`/`m_max` drop to 0 where the symmetry allows).

    **Returns:** an `agama.Potential`.

    **Raises:** `ImportError` (with install instructions) without agama; `ValueError` for an
    unknown `kind`/`source`, a bad grid, or units that do not match agama's current units
    (`agama.setUnits`).
    """
    from deeppot.export import FieldEvaluator, mirror_symmetric_z

    if kind not in DEFAULTS:
        raise ValueError(f"kind must be one of {sorted(DEFAULTS)}, got {kind!r}")
    if source not in ("potential", "density"):
        raise ValueError(f"source must be 'potential' or 'density', got {source!r}")
    if not (offset == "kepler" or (isinstance(offset, int | float)
                                   and not isinstance(offset, bool) and math.isfinite(offset))):
        raise ValueError(f"offset must be a finite number or 'kepler', got {offset!r}")
    if source == "density" and offset != 0:
        raise ValueError("offset applies to source='potential' (a density fixes Φ → 0 itself)")
    if symmetry is not None:
        _symmetry_bits(str(symmetry))
    z_min = r_min if z_min is None else z_min
    z_max = r_max if z_max is None else z_max
    for name, value in (("r_min", r_min), ("r_max", r_max), ("z_min", z_min), ("z_max", z_max)):
        if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive number, got {value!r}")
    if r_min >= r_max or z_min >= z_max:
        raise ValueError(f"need r_min < r_max and z_min < z_max, got r: [{r_min}, {r_max}], "
                         f"z: [{z_min}, {z_max}]")
    agama = import_agama()
    fields = FieldEvaluator(potential)
    if symmetry is not None:
        sym = str(symmetry)
    elif fields.symmetry == "axisymmetric" and not mirror_symmetric_z(potential):
        sym = AXISYMMETRIC_NOT_MIRRORED
    else:
        sym = AGAMA_SYMMETRY[fields.symmetry]
    bits = _symmetry_bits(sym)
    factors = _unit_factors(agama, potential)
    length, velocity, mass = (1.0, 1.0, 1.0) if factors is None else factors

    if source == "potential":
        shift = float(offset) if offset != "kepler" else _kepler_offset(fields, r_max, length,
                                                                        velocity)

        def phi(xyz):
            return (fields.potential_at(np.asarray(xyz, dtype=np.float64) * length)
                    / velocity**2 - shift)

        src = {"potential": phi}
    else:
        # ρ in agama's units: ∇²Φ/4πG in the model's converted, or ∇²Φ/4π in N-body units
        # (G = 1 there, whatever the dimensionless model's G)
        scale = 1 / (4 * math.pi) if factors is None \
            else length**3 / mass / (4 * math.pi * float(potential.G))

        def rho(xyz):
            return fields.laplacian_at(np.asarray(xyz, dtype=np.float64) * length) * scale

        src = {"density": rho}

    opts = dict(DEFAULTS[kind])
    opts.update({k: v for k, v in (("grid_size_R", grid_size_R), ("grid_size_z", grid_size_z),
                                   ("l_max", l_max), ("m_max", m_max)) if v is not None})
    axisymmetric = bool(bits & 16)
    if kind == "multipole":
        l_max_ = 0 if bits & 32 else opts["l_max"]
        return agama.Potential(type="Multipole", symmetry=sym, gridSizeR=opts["grid_size_R"],
                               rmin=r_min, rmax=r_max, lmax=l_max_,
                               mmax=0 if axisymmetric else min(opts["m_max"], l_max_), **src)
    return agama.Potential(type="CylSpline", symmetry=sym, gridSizeR=opts["grid_size_R"],
                           gridSizeZ=opts["grid_size_z"], rmin=r_min, rmax=r_max,
                           zmin=z_min, zmax=z_max, mmax=0 if axisymmetric else opts["m_max"],
                           **src)


def register() -> None:
    """Register `to_agama` as `deeppot.registry.exporters["agama"]` (the entry point)."""
    registry.exporters.register("agama")(to_agama)
