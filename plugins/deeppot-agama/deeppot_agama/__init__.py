"""deeppot → agama: a deeppot potential as an agama potential expansion.

`to_agama` samples deeppot's Φ (or ρ = ∇²Φ/4πG) over the data region and builds an agama
`Multipole` (near-spherical systems) or `CylSpline` (discs) expansion from it, so that agama's
action finder, orbit integrator and DF machinery run on the learned potential. It is
registered in `deeppot.registry.exporters` as `"agama"` through the `deeppot.plugins` entry
point. agama is imported only when `to_agama` runs; without it, the error says how to build
it.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from deeppot import registry

if TYPE_CHECKING:
    from deeppot.potentials import AbstractPotential
    from deeppot.validity import ValidityRegion

__all__ = ["AGAMA_SYMMETRY", "AXISYMMETRIC_NOT_MIRRORED", "DEFAULTS", "FLAT_ASPECT",
           "FORCE_TOLERANCE", "MAX_L_MAX", "default_expansion", "default_orders", "import_agama",
           "region_points", "register", "to_agama"]
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

logger = logging.getLogger(__name__)
# the median relative force difference above which a built expansion is reported as a warning
FORCE_TOLERANCE = 1e-3

# grid and order defaults per expansion kind (enough for 1e-3 forces on smooth models);
# a multipole of a flattened region gets a higher l_max (`default_orders`)
DEFAULTS: dict[str, dict[str, int]] = {
    "multipole": {"grid_size_R": 64, "l_max": 12, "m_max": 8},
    "cylspline": {"grid_size_R": 64, "grid_size_z": 64, "m_max": 6},
}
# a region whose thinnest extent is below this fraction of its widest is flattened: it gets
# a CylSpline by default, and a multipole of it l_max ≈ 4 / aspect (up to MAX_L_MAX)
FLAT_ASPECT = 0.3
MAX_L_MAX = 64


def _aspect(region: ValidityRegion | None) -> float:
    """The region's thinnest over its widest extent (1 for a sphere or no region)."""
    if region is None or region.kind == "spherical":
        return 1.0
    return min(region.scales) / max(region.scales)


def default_expansion(region: ValidityRegion | None) -> str:
    """The expansion `to_agama` builds by default: `"cylspline"` for an axisymmetric
    region flatter than `FLAT_ASPECT` (a disc's: on the disk config's learned potential
    with its tail, its median force difference at the score points inside the region is
    9e-7, a multipole's 4e-4 at l_max = 64), else `"multipole"`."""
    if region is not None and region.kind == "axisymmetric" and _aspect(region) < FLAT_ASPECT:
        return "cylspline"
    return "multipole"


def default_orders(expansion: str, region: ValidityRegion | None) -> dict[str, int]:
    """The grid sizes and orders `to_agama` uses by default: `DEFAULTS[expansion]`, with a
    multipole's `l_max` raised for a flattened region to 4 / aspect (rounded up to even;
    aspect the region's thinnest over widest extent), at most `MAX_L_MAX`: harmonics of
    that order resolve structure over its thickness (the disk config's region, aspect
    0.06, gets 64: a median force difference of 4e-4 inside it, where 12 left 7e-2)."""
    if expansion not in DEFAULTS:
        raise ValueError(f"expansion must be one of {sorted(DEFAULTS)}, got {expansion!r}")
    opts = dict(DEFAULTS[expansion])
    if expansion == "multipole":
        need = 2 * math.ceil(2 / _aspect(region))
        opts["l_max"] = max(opts["l_max"], min(MAX_L_MAX, need))
    return opts


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
    expansion: Literal["multipole", "cylspline"] | None = None,
    *,
    r_min: float | None = None,
    r_max: float | None = None,
    z_min: float | None = None,
    z_max: float | None = None,
    source: Literal["potential", "density"] = "potential",
    offset: float | Literal["kepler"] | None = None,
    symmetry: str | None = None,
    grid_size_R: int | None = None,
    grid_size_z: int | None = None,
    l_max: int | None = None,
    m_max: int | None = None,
    tail: bool | AbstractPotential | str = True,
    region: ValidityRegion | None = None,
    points=None,
    return_report: bool = False,
) -> Any:
    """An agama potential expansion of a deeppot potential over the data region.

    The expansion is built by agama from a Python callable that evaluates the JAX model
    (compiled, float64): with `source="potential"` (default) agama expands Φ itself, so its
    forces follow deeppot's inside the grid (derivatives by agama's 4th-order finite
    differences of Φ); with `source="density"` it expands ρ = ∇²Φ/4πG and solves Poisson's
    equation, which also counts the model's density outside the data region (where a learned
    model is unconstrained) and has Φ → 0 at infinity. Outside its grid agama extrapolates
    each harmonic as a power law.

    With a validity region (a `PotentialModel` from a fit carries one, a `WithTail` has
    one, or give `region=`), the model is expanded inside its region and continued by a
    Keplerian tail outside it (`tail=True`, the default; `deeppot.export.for_export`): the
    grid defaults to [radii[0] / 2, 10 radii[2]] of the region (z from a sixteenth of an
    axisymmetric region's |z| extent, `scales[1]`), the constant is the tail's
    (so Φ = −GM/r beyond the grid, as agama extrapolates), and the median relative force
    difference of the expansion to the model at points inside the region is measured,
    logged (a warning above 1e-3) and returned with `return_report=True`.

    **Arguments:**

    - `potential`: any deeppot potential, a `PotentialModel` (its region is used) or a
      `WithTail` potential.
    - `expansion`: `"multipole"` (spherical harmonics × radial splines, for near-spherical
      systems) or `"cylspline"` (azimuthal harmonics × 2-D splines in (R, z), for discs);
      default `default_expansion(region)`: CylSpline for a flattened axisymmetric region,
      else a multipole.
    - `r_min`, `r_max`: the radial extent of the grid (the data region), in the units agama
      is set to (for a dimensionless model, the model's units); required without a region.
    - `z_min`, `z_max`: the vertical extent of a CylSpline grid (default `r_min`, `r_max`).
    - `source`: `"potential"` or `"density"`.
    - `offset`: a constant subtracted from Φ (`source="potential"` only; in agama's units;
      default: the tail's constant with a tail, else 0).
      A learned Φ is known only up to a constant, but agama's action finder needs
      Φ(0) < 0 and Φ → 0 far out: `"kepler"` picks the constant that continues Φ beyond
      the grid as a point mass would, Φ(r_max) = −r_max |∇Φ(r_max)| (both averaged over
      14 directions at r_max).
    - `symmetry`: agama's symmetry code (a name or its bit code); default from
      `deeppot.export.symmetry` and `deeppot.export.mirror_symmetric_z` (`"s"`pherical,
      `"a"`xisymmetric and even in z, `AXISYMMETRIC_NOT_MIRRORED`, or `"n"`one).
    - `grid_size_R`, `grid_size_z`, `l_max`, `m_max`: grid sizes and expansion orders
      (defaults `default_orders(expansion, region)`: `DEFAULTS`, with a multipole's `l_max`
      raised for a flattened region; `l_max`/`m_max` drop to 0 where the symmetry allows).
    - `tail`, `region`: as in `deeppot.export.for_export` (`tail=False`: no tail).
    - `points`: positions (n, 3) in the model's units where the force difference is
      measured (e.g. the score points); default 2048 points spread over the region
      (log-uniform in radius) that it classifies as inside.
    - `return_report`: also return the report (a dict: `median_force_difference`,
      `p90_force_difference`, `n_points`, `region`, `grid`, `offset`).

    **Returns:** an `agama.Potential` (with `return_report=True`, `(potential, report)`;
    the report is `None` without a region or `points`).

    **Raises:** `ImportError` (with install instructions) without agama; `ValueError` for an
    unknown `expansion`/`source`, a bad grid, or units that do not match agama's current units
    (`agama.setUnits`).
    """
    from deeppot.export import FieldEvaluator, for_export, mirror_symmetric_z
    from deeppot.potentials import WithTail

    if expansion is not None and expansion not in DEFAULTS:
        raise ValueError(f"expansion must be one of {sorted(DEFAULTS)}, got {expansion!r}")
    potential, region = for_export(potential, tail=tail, region=region)
    if expansion is None:
        expansion = default_expansion(region)
    if region is None and (r_min is None or r_max is None):
        raise ValueError("give r_min and r_max (the grid's radial extent), or a model with a "
                         "validity region (a fitted PotentialModel, or region=)")
    if source not in ("potential", "density"):
        raise ValueError(f"source must be 'potential' or 'density', got {source!r}")
    if not (offset is None or offset == "kepler" or (
            isinstance(offset, int | float) and not isinstance(offset, bool)
            and math.isfinite(offset))):
        raise ValueError(f"offset must be a finite number or 'kepler', got {offset!r}")
    if source == "density" and offset not in (None, 0):
        raise ValueError("offset applies to source='potential' (a density fixes Φ → 0 itself)")
    if symmetry is not None:
        _symmetry_bits(str(symmetry))
    for name, value in (("r_min", r_min), ("r_max", r_max), ("z_min", z_min), ("z_max", z_max)):
        if value is not None and not (isinstance(value, int | float) and math.isfinite(value)
                                      and value > 0):
            raise ValueError(f"{name} must be a positive number, got {value!r}")
    if r_min is not None and r_max is not None:
        _check_grid(r_min, r_max, r_min if z_min is None else z_min,
                    r_max if z_max is None else z_max)
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
    if region is not None:  # the grid by default: from half the inner edge to 10× the outer
        r_min = region.radii[0] / 2 / length if r_min is None else r_min
        r_max = 10 * region.radii[2] / length if r_max is None else r_max
        if z_min is None and region.kind == "axisymmetric":  # a disc's first z node inside it
            z_min = min(r_min, region.scales[1] / 16 / length)
    z_min = r_min if z_min is None else z_min
    z_max = r_max if z_max is None else z_max
    _check_grid(r_min, r_max, z_min, z_max)
    if offset is None:
        offset = "tail" if isinstance(potential, WithTail) and source == "potential" else 0.0

    if source == "potential":
        if offset == "tail":
            shift = float(potential.offset) / velocity**2
        elif offset == "kepler":
            shift = _kepler_offset(fields, r_max, length, velocity)
        else:
            shift = float(offset)

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

    opts = default_orders(expansion, region)
    opts.update({k: v for k, v in (("grid_size_R", grid_size_R), ("grid_size_z", grid_size_z),
                                   ("l_max", l_max), ("m_max", m_max)) if v is not None})
    axisymmetric = bool(bits & 16)
    if expansion == "multipole":
        l_max_ = 0 if bits & 32 else opts["l_max"]
        built = agama.Potential(type="Multipole", symmetry=sym, gridSizeR=opts["grid_size_R"],
                                rmin=r_min, rmax=r_max, lmax=l_max_,
                                mmax=0 if axisymmetric else min(opts["m_max"], l_max_), **src)
    else:
        built = agama.Potential(type="CylSpline", symmetry=sym, gridSizeR=opts["grid_size_R"],
                                gridSizeZ=opts["grid_size_z"], rmin=r_min, rmax=r_max,
                                zmin=z_min, zmax=z_max,
                                mmax=0 if axisymmetric else opts["m_max"], **src)
    report = None
    if region is not None or points is not None:
        x = region_points(region) if points is None else np.asarray(points, dtype=np.float64)
        report = _force_report(built, fields, x, length, velocity)
        report.update(region=None if region is None else region.to_dict(),
                      grid={"r_min": r_min, "r_max": r_max, "z_min": z_min, "z_max": z_max},
                      offset=shift if source == "potential" else None, expansion=expansion)
        message = (f"agama {expansion} expansion: median relative force difference to the "
                   f"model {report['median_force_difference']:.2e} (90th percentile "
                   f"{report['p90_force_difference']:.2e}) at {report['n_points']} points "
                   "inside the region")
        if report["median_force_difference"] > FORCE_TOLERANCE:
            logger.warning("%s, above %g: raise the grid sizes or l_max", message,
                           FORCE_TOLERANCE)
        else:
            logger.info(message)
    return (built, report) if return_report else built


def _check_grid(r_min: float, r_max: float, z_min: float, z_max: float) -> None:
    if r_min >= r_max or z_min >= z_max:
        raise ValueError(f"need r_min < r_max and z_min < z_max, got r: [{r_min}, {r_max}], "
                         f"z: [{z_min}, {z_max}]")


def region_points(region: ValidityRegion, n: int = 2048, *, seed: int = 0) -> np.ndarray:
    """`n` positions (model units) that the region classifies as inside, beyond its inner
    edge: for a sphere, radii log-uniform and directions uniform; for an (R, z) region, R
    log-uniform, z and φ uniform; for a box, uniform; the points outside dropped."""
    from deeppot.validity import INSIDE

    rng = np.random.default_rng(seed)
    edge = region.bounds[1]
    kept: list[np.ndarray] = []
    for _ in range(64):
        m = 4 * n
        if region.kind == "spherical":
            r = np.exp(rng.uniform(np.log(region.radii[0]), np.log(edge), m))
            u = rng.normal(size=(m, 3))
            x = r[:, None] * u / np.linalg.norm(u, axis=-1, keepdims=True)
        elif region.kind == "axisymmetric":
            R = np.exp(rng.uniform(np.log(region.radii[0]), np.log(edge * region.scales[0]), m))
            phi = rng.uniform(0, 2 * np.pi, m)
            z = rng.uniform(-1, 1, m) * edge * region.scales[1]
            x = np.stack([R * np.cos(phi), R * np.sin(phi), z], -1)
        else:
            x = rng.uniform(-1, 1, (m, 3)) * edge * np.asarray(region.scales)
        keep = (np.asarray(region.classify(x)) == INSIDE) \
            & (np.linalg.norm(x, axis=-1) >= region.radii[0])
        kept.append(x[keep])
        if sum(len(k) for k in kept) >= n:
            break
    x = np.concatenate(kept)[:n]
    if len(x) == 0:
        raise ValueError("no points found inside the validity region; give points=")
    return x


def _force_report(built, fields, x, length: float, velocity: float) -> dict:
    """Relative force differences |F_agama − F_model| / |F_model| at positions x (model
    units)."""
    ours = -fields.gradient_at(x) * length / velocity**2
    theirs = np.asarray(built.force(x / length))
    diff = np.linalg.norm(theirs - ours, axis=-1) / np.linalg.norm(ours, axis=-1)
    return {"median_force_difference": float(np.median(diff)),
            "p90_force_difference": float(np.quantile(diff, 0.9)), "n_points": len(x)}


def register() -> None:
    """Register `to_agama` as `deeppot.registry.exporters["agama"]` (the entry point)."""
    registry.exporters.register("agama")(to_agama)
