"""From a simulation snapshot to a `PhaseSpaceCatalog`: Gadget-4, AREPO and GIZMO HDF5.

`read_snapshot` reads the star particles (`PartType4`, or any particle types) of an HDF5
snapshot with h5py, converts them to a physical unit system with astropy, centres them on
the stars, subtracts the stars' bulk velocity and rotates them so that z lies along the
stars' angular momentum. Particle masses become the catalogue's weights; the file's
`Acceleration` and `Potential` datasets, when it has them, become the catalogue's per-star
truth (`PhaseSpaceCatalog.truth`), which `evaluate` compares a fitted potential with. Every
step is recorded in `meta["snapshot"]`.

**Units.** A value v stored in the file is the physical quantity

    v · a^a_scaling · h^h_scaling · to_cgs   (in cgs)

with a the scale factor and h = `HubbleParam`. Gadget-4 and AREPO write `a_scaling`,
`h_scaling` and `to_cgs` as attributes of each dataset, and those are used when present.
Otherwise `to_cgs` is built from the code units in the file's `Header` or `Parameters`
(`UnitLength_in_cm`, `UnitVelocity_in_cm_per_s`, `UnitMass_in_g`; GIZMO's
`UnitLength_In_CGS`, … also), and the exponents are Gadget's (`GADGET_SCALING`):

| dataset | a | h | code unit |
|---|---|---|---|
| `Coordinates` | 1 | −1 | length (comoving kpc/h → kpc: × a / h) |
| `Velocities` | ½ | 0 | velocity (× √a: Gadget stores v_pec / √a) |
| `Masses` (or `Header/MassTable`) | 0 | −1 | mass (1e10 M☉/h → M☉: × 1e10 / h) |
| `Acceleration` | −2 | 1 | velocity² / length |
| `Potential` | −1 | 0 | velocity² |

a is 1 when the file says `ComovingIntegrationOn = 0`, else 1 / (1 + `Redshift`) (or
`Time`). Every one of these can be overridden: `hubble`, `scale_factor`, `code_units`, and
per dataset `a_scaling` and `h_scaling`. Velocities are peculiar velocities; the Hubble
flow across the galaxy (H₀ r ≈ 0.07 km/s per kpc today) is not added.

**Frame.** The centre is found by shrinking spheres (Power et al. 2003): start at the
mass-weighted mean of all the stars read, then repeatedly take the mass-weighted mean of
the stars within a sphere `shrink` times smaller, until fewer than `shrink_min_stars` would
be left. The bulk velocity is the mass-weighted mean velocity within `velocity_radius` of
the centre, the angular momentum that of the stars within `align_radius` (both default to
the stars' half-mass radius), and the rotation is the smallest one that takes its direction
to +z. A catalogue position is x' = R (x − c), a velocity v' = R (v − u), a truth
acceleration a' = R a.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import astropy.units as u
import numpy as np

from . import registry
from ._errors import SnapshotError
from .catalog import PhaseSpaceCatalog
from .units import get_units

__all__ = [
    "GADGET_SCALING",
    "align_rotation",
    "read_snapshot",
    "shrinking_sphere_center",
    "snapshot",
    "write_snapshot",
]

# Gadget's convention per dataset: (a exponent, h exponent, powers of the code
# (length, velocity, mass) units), and the physical dimension of its values
GADGET_SCALING: dict[str, tuple[float, float, tuple[int, int, int]]] = {
    "Coordinates": (1.0, -1.0, (1, 0, 0)),
    "Velocities": (0.5, 0.0, (0, 1, 0)),
    "Masses": (0.0, -1.0, (0, 0, 1)),
    "Acceleration": (-2.0, 1.0, (-1, 2, 0)),
    "Potential": (-1.0, 0.0, (0, 2, 0)),
}
_DIMENSION = {"Coordinates": "length", "Velocities": "velocity", "Masses": "mass",
              "Acceleration": "acceleration", "Potential": "potential"}
_CGS = {"length": u.cm, "velocity": u.cm / u.s, "mass": u.g,
        "acceleration": u.cm / u.s**2, "potential": u.cm**2 / u.s**2}
# the truth datasets and the catalogue's truth fields they fill
_TRUTH = {"Acceleration": "acceleration", "Potential": "potential"}
# where the code units live, and their spellings (Gadget-4/AREPO; GIZMO)
_UNIT_GROUPS = ("Header", "Parameters", "Units")
_UNIT_NAMES = {"length": ("UnitLength_in_cm", "UnitLength_In_CGS"),
               "velocity": ("UnitVelocity_in_cm_per_s", "UnitVelocity_In_CGS"),
               "mass": ("UnitMass_in_g", "UnitMass_In_CGS")}
_MAX_SHRINK_ITERATIONS = 10_000


def _first_rows(rows: np.ndarray) -> str:
    shown = ", ".join(str(int(i)) for i in rows[:10])
    return f"[{shown}{', ...' if len(rows) > 10 else ''}]"


def _attribute(h5, name: str, groups: Sequence[str] = _UNIT_GROUPS):
    """The first of `groups`' attributes called `name` (case-insensitive), and where."""
    for group in groups:
        if group in h5:
            attrs = h5[group].attrs
            for key in attrs:
                if key.lower() == name.lower():
                    value = np.asarray(attrs[key])
                    return (value.item() if value.size == 1 else value), f"{group}/{key}"
    return None, None


def _scalar(value, what: str) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise SnapshotError(f"{what} must be a number, got {value!r}") from None
    if not np.isfinite(out) or out <= 0:
        raise SnapshotError(f"{what} must be positive and finite, got {out}")
    return out


class _Conversions:
    """The factors from a snapshot's stored numbers to a unit system, and their record."""

    def __init__(self, h5, path: str, system, hubble, scale_factor, code_units, a_scaling,
                 h_scaling):
        self.h5, self.path, self.system = h5, path, system
        self.a_override = dict(a_scaling or {})
        self.h_override = dict(h_scaling or {})
        for what, given in (("a_scaling", self.a_override), ("h_scaling", self.h_override)):
            unknown = sorted(set(given) - set(GADGET_SCALING))
            if unknown:
                raise SnapshotError(f"{what} names unknown datasets {unknown}; known: "
                                    f"{sorted(GADGET_SCALING)}")
        self.record: dict[str, Any] = {}
        self._hubble(hubble)
        self._scale_factor(scale_factor)
        self._code_units(code_units)
        self.datasets: dict[str, dict[str, Any]] = {}

    def _hubble(self, hubble) -> None:
        if hubble is not None:
            self.h, self.record["hubble"] = _scalar(hubble, "hubble"), "given"
            return
        value, where = _attribute(self.h5, "HubbleParam")
        self.h = None if value is None else _scalar(value, f"'{self.path}' {where}")
        self.record["hubble"] = where

    def _scale_factor(self, scale_factor) -> None:
        if scale_factor is not None:
            self.a, self.record["scale_factor"] = _scalar(scale_factor, "scale_factor"), "given"
            return
        comoving, where = _attribute(self.h5, "ComovingIntegrationOn")
        redshift, z_where = _attribute(self.h5, "Redshift", ("Header",))
        time, t_where = _attribute(self.h5, "Time", ("Header",))
        if comoving is not None and not int(comoving):
            self.a, self.record["scale_factor"] = 1.0, f"{where} = 0"
        elif redshift is not None:
            self.a = 1.0 / (1.0 + float(redshift))
            self.record["scale_factor"] = f"1 / (1 + {z_where})"
        elif time is not None:
            self.a, self.record["scale_factor"] = _scalar(time, t_where), t_where
        else:
            self.a, self.record["scale_factor"] = None, None

    def _code_units(self, code_units) -> None:
        given = dict(code_units or {})
        unknown = sorted(set(given) - set(_UNIT_NAMES))
        if unknown:
            raise SnapshotError(f"code_units has unknown keys {unknown}; known: "
                                f"{sorted(_UNIT_NAMES)}")
        self.code_cgs: dict[str, float | None] = {}
        self.record["code_units"] = {}
        for dim, names in _UNIT_NAMES.items():
            if dim in given:
                try:
                    q = u.Quantity(given[dim])
                    self.code_cgs[dim] = float(q.to_value(_CGS[dim]))
                except (TypeError, ValueError, u.UnitsError) as err:
                    raise SnapshotError(f"code_units {dim!r} = {given[dim]!r} is not a "
                                        f"{dim} astropy understands ({err})") from None
                self.record["code_units"][dim] = "given"
                continue
            value, where = None, None
            for name in names:
                value, where = _attribute(self.h5, name)
                if value is not None:
                    break
            self.code_cgs[dim] = None if value is None else _scalar(value,
                                                                     f"'{self.path}' {where}")
            self.record["code_units"][dim] = where

    def factor(self, dataset: str, where: str, attrs: Mapping[str, Any]) -> float:
        """The number that turns stored values of `dataset` (e.g. `"Coordinates"`, read
        from `where`, with HDF5 attributes `attrs`) into the unit system's; recorded per
        dataset name."""
        a_exp, h_exp, powers = GADGET_SCALING[dataset]
        how = {}

        def exponent(name, override, convention):
            if dataset in override:
                how[name] = "given"
                return float(override[dataset])
            if name in attrs:
                how[name] = "attribute"
                return float(np.asarray(attrs[name]))
            how[name] = "Gadget convention"
            return convention

        a_exp = exponent("a_scaling", self.a_override, a_exp)
        h_exp = exponent("h_scaling", self.h_override, h_exp)
        to_cgs = float(np.asarray(attrs["to_cgs"])) if "to_cgs" in attrs else 0.0
        if to_cgs > 0 and not any(d in self.record["code_units"]
                                  and self.record["code_units"][d] == "given"
                                  for d in _UNIT_NAMES):
            how["to_cgs"] = "attribute"
        else:
            to_cgs = 1.0
            for dim, power in zip(("length", "velocity", "mass"), powers):
                if power == 0:
                    continue
                if self.code_cgs[dim] is None:
                    raise SnapshotError(
                        f"'{self.path}': unknown units of {where}: no to_cgs attribute and "
                        f"no {_UNIT_NAMES[dim][0]} in {', '.join(_UNIT_GROUPS)}; give "
                        f"code_units = {{{dim} = \"...\"}}")
                to_cgs *= self.code_cgs[dim] ** power
            how["to_cgs"] = "code units"
        a_factor = 1.0
        if a_exp != 0:
            if self.a is None:
                raise SnapshotError(f"'{self.path}': {where} scales with the scale factor "
                                    "but the Header has no Redshift or Time; give scale_factor")
            a_factor = self.a**a_exp
        h_factor = 1.0
        if h_exp != 0:
            if self.h is None:
                raise SnapshotError(f"'{self.path}': {where} scales with h but the file has "
                                    "no HubbleParam; give hubble")
            h_factor = self.h**h_exp
        dim = _DIMENSION[dataset]
        unit = float(_CGS[dim].to(self.system.unit(dim)))
        factor = a_factor * h_factor * to_cgs * unit
        self.datasets.setdefault(dataset, {
            "factor": factor, "a_scaling": a_exp, "h_scaling": h_exp, "to_cgs": to_cgs,
            "unit": str(self.system.unit(dim)), **{f"{k}_from": v for k, v in how.items()}})
        if not np.isclose(self.datasets[dataset]["factor"], factor, rtol=1e-12, atol=0):
            raise SnapshotError(f"'{self.path}': {where} has other units than the {dataset} "
                                "read before it; read the particle types one at a time")
        return factor


def _read(h5, path: str, group: str, name: str, conv: _Conversions,
          shape: tuple) -> np.ndarray:
    """One dataset of one particle type, converted, checked for shape and NaN."""
    if name not in h5[group]:
        raise SnapshotError(f"'{path}' has no dataset {group}/{name} (it has: "
                            f"{', '.join(sorted(h5[group].keys()))})")
    ds = h5[group][name]
    if ds.shape[1:] != shape:
        raise SnapshotError(f"'{path}': dataset {group}/{name} has shape {ds.shape}; expected "
                            f"(n{', ' if shape else ''}{', '.join(map(str, shape))})")
    return np.asarray(ds[()], dtype=np.float64) * conv.factor(name, ds.name, ds.attrs)


def _check_finite(arrays: dict[str, np.ndarray], path: str, drop_invalid: bool,
                  dropped: dict[str, int]) -> np.ndarray:
    """Rows whose every dataset is finite; NaN rows are an error naming the dataset unless
    `drop_invalid` (then counted in `dropped`)."""
    n = len(next(iter(arrays.values())))
    keep = np.ones(n, bool)
    for name, arr in arrays.items():
        bad = ~np.isfinite(arr.reshape(n, -1)).all(axis=1)
        if bad.any():
            rows = np.flatnonzero(bad)
            if not drop_invalid:
                raise SnapshotError(f"'{path}': dataset {name} has {len(rows)} particles with "
                                    f"NaN or infinite values (first rows: {_first_rows(rows)})"
                                    "; pass drop_invalid=True to drop them")
            dropped[name] = int(bad.sum())
            keep &= ~bad
    return keep


def shrinking_sphere_center(x, masses=None, *, shrink: float = 0.75, min_stars: int = 1000,
                            start=None) -> tuple[np.ndarray, dict[str, Any]]:
    """The centre of a particle distribution by shrinking spheres (Power et al. 2003).

    **Arguments:**

    - `x`: positions, shape (n, 3).
    - `masses`: the particles' masses (equal if `None`).
    - `shrink`: each sphere's radius over the previous one's (in (0, 1)).
    - `min_stars`: stop before a sphere would hold fewer particles than this.
    - `start`: the first centre (default: the mass-weighted mean of all particles).

    **Returns:** `(centre, info)`; `info` has the number of `iterations`, the final sphere's
    `radius` and the particles it holds (`n_inside`).
    """
    x = np.asarray(x, np.float64)
    m = np.ones(len(x)) if masses is None else np.asarray(masses, np.float64)
    if not 0 < shrink < 1:
        raise ValueError(f"shrink must be in (0, 1), got {shrink}")
    c = np.average(x, axis=0, weights=m) if start is None else np.asarray(start, np.float64)
    d = np.linalg.norm(x - c, axis=1)
    radius, n_inside, it = float(d.max()), len(x), 0
    while it < _MAX_SHRINK_ITERATIONS:
        r_new = radius * shrink
        inside = d < r_new
        if inside.sum() < min_stars or not m[inside].sum() > 0:
            break
        c = np.average(x[inside], axis=0, weights=m[inside])
        radius, n_inside, it = r_new, int(inside.sum()), it + 1
        d = np.linalg.norm(x - c, axis=1)
    return c, {"iterations": it, "radius": radius, "n_inside": n_inside}


def align_rotation(direction) -> np.ndarray:
    """The smallest rotation R that takes `direction` to +z (R @ d̂ = ẑ), shape (3, 3)."""
    d = np.asarray(direction, np.float64)
    norm = np.linalg.norm(d)
    if not norm > 0 or not np.isfinite(norm):
        raise ValueError(f"cannot align with a zero or non-finite direction {d}")
    d = d / norm
    k = np.cross(d, [0.0, 0.0, 1.0])  # axis × sin θ
    s, c = np.linalg.norm(k), d[2]
    if s < 1e-15:
        return np.eye(3) if c > 0 else np.diag([1.0, -1.0, -1.0])
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + kx + kx @ kx * ((1.0 - c) / s**2)


def _half_mass_radius(d: np.ndarray, m: np.ndarray) -> float:
    order = np.argsort(d)
    cum = np.cumsum(m[order])
    return float(d[order][np.searchsorted(cum, 0.5 * cum[-1])])


def _radius(value, name: str) -> float | None:
    if value is None:
        return None
    value = float(value)
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be positive, got {value}")
    return value


def read_snapshot(
    path: str | os.PathLike,
    *,
    particle_types: str | Sequence[str] = ("PartType4",),
    units: Any = "galactic",
    subsample: int | None = None,
    seed: int = 0,
    region_radius: float | None = None,
    center: str | Sequence[float] = "shrinking",
    shrink: float = 0.75,
    shrink_min_stars: int = 1000,
    velocity_radius: float | None = None,
    align: bool = True,
    align_radius: float | None = None,
    truth: bool = True,
    hubble: float | None = None,
    scale_factor: float | None = None,
    code_units: Mapping[str, str] | None = None,
    a_scaling: Mapping[str, float] | None = None,
    h_scaling: Mapping[str, float] | None = None,
    drop_invalid: bool = False,
) -> PhaseSpaceCatalog:
    """Read the stars of a Gadget-4 / AREPO / GIZMO HDF5 snapshot as a centred, aligned
    `PhaseSpaceCatalog` in physical units (the module docstring has the conventions).

    Steps, in order, each recorded in `meta["snapshot"]`: read `Coordinates`, `Velocities`,
    `Masses` (or the Header's `MassTable`) and, with `truth`, `Acceleration` and
    `Potential` of each particle type; convert them; find the centre (shrinking spheres, or
    `center`); subtract the bulk velocity within `velocity_radius`; rotate z onto the
    angular momentum within `align_radius`; keep the stars within `region_radius`; keep a
    random `subsample` of them.

    **Arguments:**

    - `path`: the HDF5 snapshot (one file).
    - `particle_types`: the groups to read (`"PartType4"`: stars), one name or several.
    - `units`: the catalogue's unit system (physical; default `"galactic"`: kpc, km/s, M☉).
    - `subsample`: keep this many stars, drawn without replacement with `seed` (in file
      order); `None` keeps all.
    - `region_radius`: keep the stars within this distance of the centre (the catalogue's
      length unit); `None` keeps all.
    - `center`: `"shrinking"` (shrinking spheres over the stars read), or a position in the
      file's own units (as `Coordinates` stores them, e.g. a halo finder's ckpc/h).
    - `shrink`, `shrink_min_stars`: the shrinking spheres' radius ratio and stopping size.
    - `velocity_radius`: the bulk velocity is the mass-weighted mean within this distance
      of the centre (default: the stars' half-mass radius).
    - `align`: rotate so that z is along the stars' angular momentum.
    - `align_radius`: the angular momentum is that of the stars within this distance
      (default: the half-mass radius).
    - `truth`: use the `Acceleration` and `Potential` datasets as the per-star truth when
      every particle type read has them.
    - `hubble`, `scale_factor`: h and a, instead of the file's.
    - `code_units`: `{"length": "1 kpc", "velocity": "1 km/s", "mass": "1e10 Msun"}`
      (any of them), instead of the file's (and of per-dataset `to_cgs` attributes).
    - `a_scaling`, `h_scaling`: `{dataset: exponent}`, instead of the file's attributes or
      Gadget's convention (e.g. `{"Velocities": 0.0}` for files of physical velocities).
    - `drop_invalid`: drop particles with NaN values (counted) instead of raising.

    **Returns:** the `PhaseSpaceCatalog` (masses as weights; `truth` from the file's
    `Acceleration` and `Potential`).

    **Raises:** `SnapshotError` (a `ValueError`) naming the group, dataset or attribute: a
    missing particle type or dataset, units that cannot be determined, NaN particles.
    """
    import h5py

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such snapshot: '{path}'")
    system = get_units(units)
    if not system.is_physical:
        raise ValueError("a snapshot is read into a physical unit system (e.g. 'galactic')")
    types = [particle_types] if isinstance(particle_types, str) else list(particle_types)
    if not types:
        raise ValueError("particle_types names no particle type")
    region_radius = _radius(region_radius, "region_radius")
    velocity_radius = _radius(velocity_radius, "velocity_radius")
    align_radius = _radius(align_radius, "align_radius")
    if subsample is not None and int(subsample) < 1:
        raise ValueError(f"subsample must be positive, got {subsample}")
    try:
        h5 = h5py.File(path, "r")
    except OSError as err:
        raise SnapshotError(f"'{path}' is not a readable HDF5 file ({err})") from None
    with h5:
        conv = _Conversions(h5, str(path), system, hubble, scale_factor, code_units,
                            a_scaling, h_scaling)
        parts: dict[str, list[np.ndarray]] = {"x": [], "v": [], "m": []}
        truth_parts: dict[str, list[np.ndarray]] = {name: [] for name in _TRUTH}
        n_read = {}
        for index, group in enumerate(types):
            if group not in h5:
                have = sorted(k for k in h5.keys() if k.startswith("PartType"))
                raise SnapshotError(f"'{path}' has no group {group} (particle groups: "
                                    f"{', '.join(have) or 'none'})")
            x = _read(h5, str(path), group, "Coordinates", conv, (3,))
            n = len(x)
            if n == 0:
                raise SnapshotError(f"'{path}': {group} has no particles")
            v = _read(h5, str(path), group, "Velocities", conv, (3,))
            if "Masses" in h5[group]:
                m = _read(h5, str(path), group, "Masses", conv, ())
            else:
                table, where = _attribute(h5, "MassTable", ("Header",))
                number = int(group[8:]) if group[8:].isdigit() else None
                if table is None or number is None or not np.asarray(table)[number] > 0:
                    raise SnapshotError(f"'{path}' has no dataset {group}/Masses and no "
                                        f"positive Header/MassTable entry for {group}")
                m = np.full(n, float(np.asarray(table)[number]) *
                            conv.factor("Masses", f"{where}[{number}]", {}))
            for name, arr in (("Velocities", v), ("Masses", m)):
                if len(arr) != n:
                    raise SnapshotError(f"'{path}': {group}/{name} has {len(arr)} rows but "
                                        f"{group}/Coordinates has {n}")
            parts["x"].append(x)
            parts["v"].append(v)
            parts["m"].append(m)
            n_read[group] = n
            for name in _TRUTH:
                if truth and name in h5[group]:
                    shape = (3,) if name == "Acceleration" else ()
                    arr = _read(h5, str(path), group, name, conv, shape)
                    if len(arr) != n:
                        raise SnapshotError(f"'{path}': {group}/{name} has {len(arr)} rows "
                                            f"but {group}/Coordinates has {n}")
                    truth_parts[name].append(arr)
        centre_file = None
        if not isinstance(center, str):
            centre_file = np.asarray(center, np.float64)
            if centre_file.shape != (3,) or not np.all(np.isfinite(centre_file)):
                raise ValueError(f"center must be 'shrinking' or 3 finite numbers, got "
                                 f"{center!r}")
            ds = h5[types[0]]["Coordinates"]
            centre_given = centre_file * conv.factor("Coordinates", ds.name, ds.attrs)
        elif center != "shrinking":
            raise ValueError(f"center must be 'shrinking' or a position, got {center!r}")
    x, v, m = (np.concatenate(parts[k]) for k in ("x", "v", "m"))
    found = {name: np.concatenate(a) for name, a in truth_parts.items()
             if len(a) == len(types)}
    dropped: dict[str, int] = {}
    keep = _check_finite({"Coordinates": x, "Velocities": v, "Masses": m,
                          **{name: a for name, a in found.items()}},
                         str(path), drop_invalid, dropped)
    if not keep.all():
        x, v, m = x[keep], v[keep], m[keep]
        found = {k: a[keep] for k, a in found.items()}
    if len(x) == 0:
        raise SnapshotError(f"'{path}': no particle is left after dropping NaN rows")
    if (m < 0).any():
        raise SnapshotError(f"'{path}': {int((m < 0).sum())} particles have negative Masses")

    # frame: centre, bulk velocity, rotation
    if centre_file is None:
        c, shrink_info = shrinking_sphere_center(x, m, shrink=shrink,
                                                 min_stars=shrink_min_stars)
        centre_info = {"method": "shrinking spheres", "shrink": shrink,
                       "min_stars": shrink_min_stars, **shrink_info}
    else:
        c = centre_given
        centre_info = {"method": "given", "file_units": centre_file.tolist()}
    d = np.linalg.norm(x - c, axis=1)
    r_half = _half_mass_radius(d, m)
    r_vel = r_half if velocity_radius is None else velocity_radius
    inside = d <= r_vel
    if not m[inside].sum() > 0:
        raise SnapshotError(f"no star with mass within velocity_radius = {r_vel:g} of the "
                            "centre")
    bulk = np.average(v[inside], axis=0, weights=m[inside])
    rotation, momentum = np.eye(3), None
    r_align = r_half if align_radius is None else align_radius
    if align:
        inside = d <= r_align
        momentum = np.sum(m[inside, None] * np.cross(x[inside] - c, v[inside] - bulk), axis=0)
        if not np.linalg.norm(momentum) > 0:
            raise SnapshotError(f"the stars within align_radius = {r_align:g} have no angular "
                                "momentum to align with; pass align=False")
        rotation = align_rotation(momentum)
    x = (x - c) @ rotation.T
    v = (v - bulk) @ rotation.T
    if "Acceleration" in found:
        found["Acceleration"] = found["Acceleration"] @ rotation.T

    # region and subsample
    n_total = len(x)
    rows = np.arange(n_total)
    if region_radius is not None:
        rows = rows[np.linalg.norm(x, axis=1) <= region_radius]
        if len(rows) == 0:
            raise SnapshotError(f"no star within region_radius = {region_radius:g} of the "
                                "centre")
    n_region = len(rows)
    if subsample is not None and int(subsample) < len(rows):
        rng = np.random.default_rng(seed)
        rows = np.sort(rng.choice(rows, size=int(subsample), replace=False))
    record = {
        "path": str(path),
        "particle_types": types,
        "n_read": n_read,
        "dropped_invalid": dropped,
        "n_in_region": n_region,
        "n_kept": len(rows),
        "region_radius": region_radius,
        "subsample": None if subsample is None else int(subsample),
        "seed": int(seed),
        "hubble": conv.h,
        "scale_factor": conv.a,
        "sources": conv.record,
        "datasets": conv.datasets,
        "center": c.tolist(),
        "center_method": centre_info,
        "half_mass_radius": r_half,
        "velocity_radius": r_vel,
        "bulk_velocity": bulk.tolist(),
        "align_radius": r_align if align else None,
        "angular_momentum": None if momentum is None else momentum.tolist(),
        "rotation": rotation.tolist(),
        "truth": sorted(_TRUTH[k] for k in found),
        "convention": "x = R (x_file - center), v = R (v_file - bulk_velocity), "
                      "acceleration = R a_file, in the catalogue's units",
    }
    meta = {"generator": "deeppot.snapshot.read_snapshot", "snapshot": record}
    return PhaseSpaceCatalog(x[rows], v[rows], m[rows], meta, units=system,
                             truth={_TRUTH[k]: a[rows] for k, a in found.items()})


def write_snapshot(
    catalog: PhaseSpaceCatalog,
    path: str | os.PathLike,
    *,
    hubble: float = 0.7,
    scale_factor: float = 1.0,
    code_units: Mapping[str, str] | None = None,
    particle_type: str = "PartType4",
    dataset_attributes: bool = True,
    dtype: Any = np.float64,
) -> Path:
    """Write a catalogue as a Gadget-4 HDF5 snapshot, in Gadget's units and conventions.

    The inverse of `read_snapshot`'s conversions (`GADGET_SCALING`), for tests, examples and
    mocks that stand in for a simulation: positions are stored comoving in code-length/h
    (÷ a × h), velocities as v / √a, masses (the catalogue's weights, or 1 M☉ per star) in
    code-mass/h, and the catalogue's `truth` as `Acceleration` and `Potential`. The frame is
    the catalogue's own: tilt, offset or boost the catalogue first to write a galaxy that is
    not at the origin.

    **Arguments:**

    - `catalog`: a catalogue in physical units.
    - `path`: the HDF5 file to write (replaced if it exists).
    - `hubble`, `scale_factor`: h and a (`HubbleParam`; `Time` and `Redshift`).
    - `code_units`: `{"length": ..., "velocity": ..., "mass": ...}` (default Gadget's: 1 kpc,
      1 km/s, 1e10 M☉), written as `UnitLength_in_cm`, … in `Parameters`.
    - `particle_type`: the group the particles go to.
    - `dataset_attributes`: also write Gadget-4's per-dataset `a_scaling`, `h_scaling` and
      `to_cgs` (False: only the code units and h in `Parameters`, as older codes do).
    - `dtype`: the stored float type (Gadget's default output is float32).

    **Returns:** the path written.
    """
    import h5py

    from ._atomic import replacing

    system = catalog.units
    if not system.is_physical:
        raise ValueError("write_snapshot needs a catalogue in physical units")
    given = {"length": "1 kpc", "velocity": "1 km/s", "mass": "1e10 Msun", **(code_units or {})}
    cgs = {dim: float(u.Quantity(given[dim]).to_value(_CGS[dim])) for dim in _UNIT_NAMES}
    h, a = _scalar(hubble, "hubble"), _scalar(scale_factor, "scale_factor")
    masses = np.ones(len(catalog)) * u.Msun.to(system.mass) if catalog.weights is None \
        else catalog.weights
    data = {"Coordinates": catalog.x, "Velocities": catalog.v, "Masses": masses}
    for field, name in (("acceleration", "Acceleration"), ("potential", "Potential")):
        if field in catalog.truth:
            data[name] = catalog.truth[field]
    path = Path(path)
    with replacing(path, suffix=path.suffix) as tmp, h5py.File(tmp, "w") as h5:
        n = len(catalog)
        number = int(particle_type[8:]) if particle_type[8:].isdigit() else 4
        counts = np.zeros(6, np.int64)
        counts[number % 6] = n
        header = h5.create_group("Header")
        header.attrs.update({"NumPart_ThisFile": counts, "NumPart_Total": counts,
                             "MassTable": np.zeros(6), "Time": a, "Redshift": 1.0 / a - 1.0,
                             "NumFilesPerSnapshot": 1, "BoxSize": 0.0})
        params = h5.create_group("Parameters")
        params.attrs.update({"UnitLength_in_cm": cgs["length"],
                             "UnitVelocity_in_cm_per_s": cgs["velocity"],
                             "UnitMass_in_g": cgs["mass"], "HubbleParam": h,
                             "ComovingIntegrationOn": 1})
        group = h5.create_group(particle_type)
        group.create_dataset("ParticleIDs", data=np.arange(1, n + 1, dtype=np.uint64))
        for name, values in data.items():
            a_exp, h_exp, powers = GADGET_SCALING[name]
            to_cgs = float(np.prod([cgs[d] ** p for d, p in
                                    zip(("length", "velocity", "mass"), powers)]))
            dim = _DIMENSION[name]
            factor = a**a_exp * h**h_exp * to_cgs * float(_CGS[dim].to(system.unit(dim)))
            ds = group.create_dataset(name, data=(np.asarray(values) / factor).astype(dtype))
            if dataset_attributes:
                ds.attrs.update({"a_scaling": a_exp, "h_scaling": h_exp, "to_cgs": to_cgs,
                                 "length_scaling": powers[0], "velocity_scaling": powers[1],
                                 "mass_scaling": powers[2]})
    return path


@registry.sources.register("snapshot")
def snapshot(
    path: str,
    *,
    units: str = "galactic",
    particle_types: list | str = "PartType4",
    subsample: int = 0,
    seed: int = 0,
    region_radius: float = 0.0,
    center: list | str = "shrinking",
    velocity_radius: float = 0.0,
    align: bool = True,
    align_radius: float = 0.0,
    shrink_min_stars: int = 1000,
    truth: bool = True,
    hubble: float = 0.0,
    scale_factor: float = 0.0,
    code_units: dict | None = None,
    a_scaling: dict | None = None,
    h_scaling: dict | None = None,
    drop_invalid: bool = False,
) -> PhaseSpaceCatalog:
    """`[data] source = "snapshot"`: `read_snapshot` on a Gadget-4 / AREPO / GIZMO HDF5
    file, its arguments as a config writes them (0 for "not given": `subsample = 0` keeps
    every star, `region_radius = 0` keeps every distance, `velocity_radius = 0` and
    `align_radius = 0` use the half-mass radius, `hubble = 0` and `scale_factor = 0` take
    the file's).

    **Arguments:**

    - `path`: the snapshot file (`[data] path`).
    - `units`: the run's unit system (`[run] units`, physical).
    - the others: as for `read_snapshot`; `center` is `"shrinking"` or `[x, y, z]` in the
      file's units.

    **Returns:** the centred, aligned `PhaseSpaceCatalog`.
    """
    def given(value):
        return value if value else None

    return read_snapshot(
        path, particle_types=particle_types, units=units, subsample=given(subsample),
        seed=seed, region_radius=given(region_radius), center=center,
        shrink_min_stars=shrink_min_stars, velocity_radius=given(velocity_radius),
        align=align, align_radius=given(align_radius), truth=truth, hubble=given(hubble),
        scale_factor=given(scale_factor), code_units=code_units, a_scaling=a_scaling,
        h_scaling=h_scaling, drop_invalid=drop_invalid)


snapshot.suffixes = (".hdf5", ".h5")  # the files it reads
snapshot.physical_units = True  # a simulation's numbers have units
