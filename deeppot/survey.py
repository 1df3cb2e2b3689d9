"""From a survey table to a `PhaseSpaceCatalog` and back: observables ↔ Galactocentric.

A Gaia-like table has, per star, the right ascension and declination `ra`, `dec` (deg), the
parallax `parallax` (mas), the proper motions `pmra` (μ_α* = μ_α cos δ) and `pmdec`
(mas/yr), the line-of-sight velocity `radial_velocity` (km/s), their standard deviations
`<name>_error` (`ra_error` and `dec_error` in mas, optional) and optionally Gaia's
correlation columns among the astrometric parameters (`ra_dec_corr`, …,
`pmra_pmdec_corr`). Columns with units (FITS, VOTable, ECSV, HDF5) are converted; columns
without units (plain CSV) are read in Gaia's units, and the catalogue's `meta` says so.

`from_observables` turns such a table (or a file: FITS, VOTable, CSV/ECSV, HDF5 through
`astropy.table`) into a Galactocentric `PhaseSpaceCatalog` with `astropy.coordinates`
(ICRS → `Galactocentric`, the Sun's position and velocity given by `Sun`), applies quality
cuts, and keeps each star's propagated uncertainty as a 6×6 covariance of (x, v)
(linearised: the Jacobian of the transformation times the observables' covariance). Every
star it drops is counted in `meta["survey"]`, by reason. `to_observables` is the inverse: a
catalogue "observed" from the Sun, optionally with Gaia-like errors (`GaiaLikeErrors`),
written in the survey's own columns; `write_table` and `read_table` store such tables.

Distances are 1/parallax (no prior): use a parallax-over-error cut so that this is a good
estimate.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, final

import astropy.coordinates as coord
import astropy.units as u
import jax
import jax.numpy as jnp
import numpy as np
from astropy.table import MaskedColumn, Table

from . import registry
from ._atomic import replacing
from .catalog import PhaseSpaceCatalog
from .units import UnitSystem, get_units, is_quantity

__all__ = [
    "ASTROMETRY",
    "GAIA_UNITS",
    "OBSERVABLES",
    "GaiaLikeErrors",
    "Sun",
    "from_observables",
    "galactocentric_rotation",
    "icrs_jacobian",
    "read_table",
    "survey_table",
    "to_observables",
    "write_table",
]

OBSERVABLES = ("ra", "dec", "parallax", "pmra", "pmdec", "radial_velocity")
ASTROMETRY = OBSERVABLES[:5]
_OBSERVABLE_UNITS = {
    "ra": u.deg,
    "dec": u.deg,
    "parallax": u.mas,
    "pmra": u.mas / u.yr,
    "pmdec": u.mas / u.yr,
    "radial_velocity": u.km / u.s,
}
# each error in its observable's unit, but the positions' errors in mas (Gaia's convention)
GAIA_UNITS: dict[str, u.UnitBase] = {
    **_OBSERVABLE_UNITS,
    **{f"{name}_error": u.mas if name in ("ra", "dec") else unit
       for name, unit in _OBSERVABLE_UNITS.items()},
}
_REQUIRED = OBSERVABLES + ("parallax_error", "pmra_error", "pmdec_error", "radial_velocity_error")
_OPTIONAL_ERRORS = ("ra_error", "dec_error")
# km/s of a proper motion of 1 mas/yr at 1 kpc
_K = (1 * u.mas / u.yr * u.kpc).to_value(u.km / u.s, u.dimensionless_angles())
_MAS = (1 * u.mas).to_value(u.rad)
_TABLE_FORMATS = {
    ".fits": "fits", ".fit": "fits", ".fits.gz": "fits",
    ".vot": "votable", ".xml": "votable", ".votable": "votable",
    ".csv": "ascii.csv", ".ecsv": "ascii.ecsv",
    ".h5": "hdf5", ".hdf5": "hdf5",
}
_HDF5_PATH = "data"


def _quantity(name: str, value, unit: u.UnitBase) -> u.Quantity:
    """`value` as a Quantity in `unit`: plain numbers are read in `unit`."""
    if is_quantity(value):
        try:
            return value.to(unit)
        except u.UnitConversionError:
            raise ValueError(f"{name} must be convertible to {unit}, got {value}") from None
    return u.Quantity(value, unit)


@final
class Sun:
    """The Sun's place in the Galaxy: the parameters of astropy's `Galactocentric` frame.

    Defaults are astropy's "v4.0" values, written out so that results do not depend on
    astropy's global frame defaults: distance to the Galactic centre 8.122 kpc (GRAVITY
    2018), height above the midplane 20.8 pc (Bennett & Bovy 2019), velocity relative to the
    Galactic centre (12.9, 245.6, 7.78) km/s (Drimmel & Poggio 2018), Sgr A* at
    (ra, dec) = (266.4051°, −28.936175°), roll 0. In the resulting frame the Galactic centre
    is at the origin, the Sun near (−8.12, 0, 0.02) kpc, and the disk rotates clockwise seen
    from +z (the Sun moves towards +y).

    **Arguments** (quantities, or plain numbers in the units named):

    - `distance`: Sun–Galactic-centre distance (kpc).
    - `z`: the Sun's height above the midplane (pc).
    - `velocity`: the Sun's Galactocentric Cartesian velocity (km/s), shape (3,).
    - `roll`: rotation of the frame about its x axis (deg).
    - `galcen_ra`, `galcen_dec`: ICRS position of the Galactic centre (deg).
    """

    __slots__ = ("distance", "z", "velocity", "roll", "galcen_ra", "galcen_dec")

    def __init__(
        self,
        distance=8.122 * u.kpc,
        z=20.8 * u.pc,
        velocity=(12.9, 245.6, 7.78) * u.km / u.s,
        roll=0.0 * u.deg,
        galcen_ra=266.4051 * u.deg,
        galcen_dec=-28.936175 * u.deg,
    ):
        values = {
            "distance": _quantity("distance", distance, u.kpc),
            "z": _quantity("z", z, u.pc),
            "velocity": _quantity("velocity", velocity, u.km / u.s),
            "roll": _quantity("roll", roll, u.deg),
            "galcen_ra": _quantity("galcen_ra", galcen_ra, u.deg),
            "galcen_dec": _quantity("galcen_dec", galcen_dec, u.deg),
        }
        for name, q in values.items():
            shape = (3,) if name == "velocity" else ()
            if q.shape != shape or not np.all(np.isfinite(q.value)):
                raise ValueError(f"Sun {name} must be finite with shape {shape}, got {q}")
        if not values["distance"].value > 0:
            raise ValueError(f"Sun distance must be positive, got {values['distance']}")
        for name, q in values.items():
            object.__setattr__(self, name, q)

    def __setattr__(self, name, value):
        raise AttributeError("Sun is immutable")

    def frame(self) -> coord.Galactocentric:
        """The astropy `Galactocentric` frame with these parameters."""
        return coord.Galactocentric(
            galcen_coord=coord.ICRS(ra=self.galcen_ra, dec=self.galcen_dec),
            galcen_distance=self.distance,
            galcen_v_sun=coord.CartesianDifferential(self.velocity),
            z_sun=self.z,
            roll=self.roll,
        )

    def position(self, units: Any = "galactic") -> np.ndarray:
        """The Sun's Galactocentric position, shape (3,), in `units` (a physical system)."""
        system = get_units(units)
        sun = coord.SkyCoord(coord.CartesianRepresentation([0.0, 0.0, 0.0] * u.kpc),
                             frame=coord.ICRS()).transform_to(self.frame())
        return sun.cartesian.xyz.to_value(system.length)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description in kpc, pc, km/s and deg; `Sun(**d)` rebuilds it."""
        return {"distance": float(self.distance.to_value(u.kpc)),
                "z": float(self.z.to_value(u.pc)),
                "velocity": self.velocity.to_value(u.km / u.s).tolist(),
                "roll": float(self.roll.to_value(u.deg)),
                "galcen_ra": float(self.galcen_ra.to_value(u.deg)),
                "galcen_dec": float(self.galcen_dec.to_value(u.deg))}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sun):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        d = self.to_dict()
        return (f"Sun(distance={d['distance']} kpc, z={d['z']} pc, velocity={d['velocity']} "
                f"km/s, roll={d['roll']} deg)")


@final
class GaiaLikeErrors:
    """Per-star standard deviations of the observables, for observing mocks.

    Constant by default (roughly Gaia DR3 at G ≈ 15 for the astrometry, RVS for the line of
    sight); each may also be an array with one value per star.

    **Arguments** (quantities, or plain numbers in Gaia's units):

    - `position`: `ra_error` (σ of α* = α cos δ) and `dec_error` (mas).
    - `parallax`: `parallax_error` (mas).
    - `pm`: `pmra_error` and `pmdec_error` (mas/yr).
    - `radial_velocity`: `radial_velocity_error` (km/s).
    """

    __slots__ = ("position", "parallax", "pm", "radial_velocity")

    def __init__(self, position=0.02 * u.mas, parallax=0.02 * u.mas, pm=0.02 * u.mas / u.yr,
                 radial_velocity=1.0 * u.km / u.s):
        for name, value, unit in (("position", position, u.mas), ("parallax", parallax, u.mas),
                                  ("pm", pm, u.mas / u.yr),
                                  ("radial_velocity", radial_velocity, u.km / u.s)):
            q = _quantity(name, value, unit)
            if not np.all(np.isfinite(q.value)) or np.any(q.value < 0):
                raise ValueError(f"error {name} must be finite and non-negative, got {q}")
            object.__setattr__(self, name, q)

    def __setattr__(self, name, value):
        raise AttributeError("GaiaLikeErrors is immutable")

    def columns(self, n: int) -> dict[str, np.ndarray]:
        """The `*_error` columns for n stars, in Gaia's units."""
        vals = {"ra_error": self.position, "dec_error": self.position,
                "parallax_error": self.parallax, "pmra_error": self.pm, "pmdec_error": self.pm,
                "radial_velocity_error": self.radial_velocity}
        out = {}
        for name, q in vals.items():
            arr = np.broadcast_to(q.to_value(GAIA_UNITS[name]), (n,)) if q.ndim == 0 else \
                q.to_value(GAIA_UNITS[name])
            if arr.shape != (n,):
                raise ValueError(f"error {name!r} has shape {arr.shape}, expected ({n},)")
            out[name] = np.array(arr, dtype=np.float64)
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description (Gaia's units)."""
        return {"position_mas": self.position.to_value(u.mas).tolist(),
                "parallax_mas": self.parallax.to_value(u.mas).tolist(),
                "pm_mas_per_yr": self.pm.to_value(u.mas / u.yr).tolist(),
                "radial_velocity_km_s": self.radial_velocity.to_value(u.km / u.s).tolist()}


# -- Galactocentric → observables -----------------------------------------------------------


def _physical_units(catalog: PhaseSpaceCatalog) -> UnitSystem:
    system = catalog.units
    if not system.is_physical:
        raise ValueError(
            "the catalogue is dimensionless: give it physical units (e.g. build it with "
            "units='galactic') before observing it from the Sun"
        )
    return system


def to_observables(
    catalog: PhaseSpaceCatalog,
    *,
    sun: Sun | None = None,
    errors: GaiaLikeErrors | None = None,
    key: jax.Array | None = None,
) -> Table:
    """Observe a Galactocentric catalogue from the Sun: a table in Gaia's columns.

    **Arguments:**

    - `catalog`: a catalogue in physical units (`catalog.units`), Galactocentric.
    - `sun`: the Sun's parameters (default `Sun()`).
    - `errors`: if given, add the `*_error` columns (`GaiaLikeErrors`).
    - `key`: with `errors`, a typed key to draw Gaussian measurement noise with those
      errors (independent per observable); without it the values are exact.

    **Returns:** an astropy `Table` with `source_id`, `ra`, `dec` (deg), `parallax` (mas),
    `pmra`, `pmdec` (mas/yr), `radial_velocity` (km/s), the error columns if requested,
    and `weight` if the catalogue is weighted. Units are attached to the columns;
    `table.meta` records the Sun (`DP_SUN`) and the error model (`DP_ERRS`, `DP_NOISE`) as
    JSON strings (FITS-compatible keys).
    """
    system = _physical_units(catalog)
    sun = Sun() if sun is None else sun
    galcen = coord.SkyCoord(
        x=catalog.x[:, 0] * system.length, y=catalog.x[:, 1] * system.length,
        z=catalog.x[:, 2] * system.length,
        v_x=catalog.v[:, 0] * system.velocity, v_y=catalog.v[:, 1] * system.velocity,
        v_z=catalog.v[:, 2] * system.velocity, frame=sun.frame(),
    )
    icrs = galcen.transform_to(coord.ICRS())
    n = len(catalog)
    cols = {
        "ra": icrs.ra.to_value(u.deg),
        "dec": icrs.dec.to_value(u.deg),
        "parallax": icrs.distance.to_value(u.mas, u.parallax()),
        "pmra": icrs.pm_ra_cosdec.to_value(u.mas / u.yr),
        "pmdec": icrs.pm_dec.to_value(u.mas / u.yr),
        "radial_velocity": icrs.radial_velocity.to_value(u.km / u.s),
    }
    meta: dict[str, Any] = {"DP_SUN": json.dumps(sun.to_dict())}
    if errors is not None:
        err = errors.columns(n)
        if key is not None:
            with jax.enable_x64(True):
                g = np.asarray(jax.random.normal(key, (6, n), jnp.float64))
            cos_dec = np.cos(np.deg2rad(cols["dec"]))
            cols["ra"] = np.mod(cols["ra"] + np.rad2deg(g[0] * err["ra_error"] * _MAS) / cos_dec,
                                360.0)
            cols["dec"] = np.clip(cols["dec"] + np.rad2deg(g[1] * err["dec_error"] * _MAS),
                                  -90.0, 90.0)
            for i, name in enumerate(OBSERVABLES[2:], start=2):
                cols[name] = cols[name] + g[i] * err[f"{name}_error"]
            meta["DP_NOISE"] = "gaussian"
        cols.update(err)
        meta["DP_ERRS"] = json.dumps(errors.to_dict())
    table = Table()
    table["source_id"] = np.arange(n, dtype=np.int64)
    for name, values in cols.items():
        table[name] = u.Quantity(values, GAIA_UNITS[name])
    if catalog.weights is not None:
        table["weight"] = catalog.weights
    table.meta.update(meta)
    return table


# -- observables → Galactocentric -----------------------------------------------------------


def _column(col, name: str, meta_units: dict[str, str]) -> np.ndarray:
    """A table column as float64 in Gaia's unit for `name` (masked entries become NaN)."""
    expected = GAIA_UNITS[name]
    if isinstance(col, MaskedColumn) or hasattr(col, "mask"):
        values = np.ma.filled(np.ma.asarray(col, dtype=np.float64), np.nan)
    else:
        try:
            values = np.asarray(col, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"column {name!r} is not numeric (dtype {col.dtype})") from None
    unit = getattr(col, "unit", None)
    if unit is None:
        meta_units[name] = f"{expected} (assumed: no unit in the table)"
        return np.array(values, dtype=np.float64)
    if isinstance(unit, u.UnrecognizedUnit):
        raise ValueError(f"column {name!r} has an unknown unit {str(unit)!r}; expected {expected}")
    try:
        factor = u.Unit(unit).to(expected)
    except u.UnitConversionError:
        raise ValueError(
            f"column {name!r} is in {unit} ({unit.physical_type}), which does not convert to "
            f"{expected}"
        ) from None
    return np.array(values, dtype=np.float64) * factor


def _find_columns(table: Table) -> dict[str, str]:
    """Map Gaia names to the table's column names (exact, else case-insensitive)."""
    lower = {c.lower(): c for c in table.colnames}
    found = {}
    for name in tuple(GAIA_UNITS) + tuple(_corr_names()):
        if name in table.colnames:
            found[name] = name
        elif name in lower:
            found[name] = lower[name]
    return found


def _corr_names() -> list[str]:
    return [f"{a}_{b}_corr" for i, a in enumerate(ASTROMETRY) for b in ASTROMETRY[i + 1:]]


def _icrs_cartesian(obs: jax.Array) -> jax.Array:
    """(α, δ [rad], ϖ [mas], μ_α*, μ_δ [mas/yr], v_r [km/s]) → ICRS (x [kpc], v [km/s])."""
    ra, dec, plx, pmra, pmdec, vr = obs
    d = 1.0 / plx
    ca, sa, cd, sd = jnp.cos(ra), jnp.sin(ra), jnp.cos(dec), jnp.sin(dec)
    r_hat = jnp.stack([cd * ca, cd * sa, sd])
    p_hat = jnp.stack([-sa, ca, jnp.zeros_like(ca)])
    q_hat = jnp.stack([-sd * ca, -sd * sa, cd])
    v = vr * r_hat + _K * d * (pmra * p_hat + pmdec * q_hat)
    return jnp.concatenate([d * r_hat, v])


@jax.jit
def _jacobians(obs: jax.Array) -> jax.Array:
    jac = jax.vmap(jax.jacfwd(_icrs_cartesian))(obs)
    return jac.at[:, :, 0].divide(jnp.cos(obs[:, 1])[:, None])


def icrs_jacobian(obs) -> np.ndarray:
    """∂(x, v)_ICRS / ∂(α*, δ, ϖ, μ_α*, μ_δ, v_r) per star (α* = α cos δ), in float64.

    **Arguments:**

    - `obs`: (α, δ) in radians, ϖ in mas, (μ_α*, μ_δ) in mas/yr, v_r in km/s; shape (n, 6).

    **Returns:** the Jacobians, shape (n, 6, 6), of ICRS Cartesian (x [kpc], v [km/s]) with
    respect to (α* [rad], δ [rad], ϖ [mas], μ_α* [mas/yr], μ_δ [mas/yr], v_r [km/s]).
    """
    with jax.enable_x64(True):
        return np.asarray(_jacobians(jnp.asarray(obs, jnp.float64)))


def galactocentric_rotation(frame: coord.Galactocentric) -> np.ndarray:
    """The rotation R with x_gc = R x_icrs + x_sun (and v_gc = R v_icrs + v_sun).

    **Arguments:**

    - `frame`: an astropy `Galactocentric` frame (e.g. `Sun().frame()`).

    **Returns:** R, shape (3, 3), read off astropy's transformation of the ICRS axes.
    """
    basis = np.concatenate([np.zeros((1, 3)), np.eye(3)]) * u.kpc
    pts = coord.SkyCoord(coord.CartesianRepresentation(basis.T), frame=coord.ICRS())
    xyz = pts.transform_to(frame).cartesian.xyz.to_value(u.kpc).T
    return (xyz[1:] - xyz[0]).T


def _covariances(obs: np.ndarray, sig: np.ndarray, corr: dict[tuple[int, int], np.ndarray],
                 frame: coord.Galactocentric) -> np.ndarray:
    """Galactocentric (kpc, km/s) covariances from the observables' errors, shape (n, 6, 6)."""
    cov_obs = np.einsum("ni,ij->nij", sig**2, np.eye(6))
    for (i, j), rho in corr.items():
        cov_obs[:, i, j] = cov_obs[:, j, i] = rho * sig[:, i] * sig[:, j]
    jac = icrs_jacobian(obs)
    R = galactocentric_rotation(frame)
    rot = np.zeros((6, 6))
    rot[:3, :3] = rot[3:, 3:] = R
    full = np.einsum("ij,njk->nik", rot, jac)
    cov = np.einsum("nij,njk,nlk->nil", full, cov_obs, full)
    return 0.5 * (cov + np.swapaxes(cov, 1, 2))


def _check_finite(values: dict[str, np.ndarray], keep: np.ndarray, names: Sequence[str],
                  drop_invalid: bool, dropped: dict[str, int]) -> np.ndarray:
    for name in names:
        bad = keep & ~np.isfinite(values[name])
        if bad.any():
            what = f"column {name!r} has {int(bad.sum())} NaN, masked or infinite values"
            if not drop_invalid:
                raise ValueError(f"{what}; apply a quality cut or pass drop_invalid=True")
            dropped[f"{name} not finite"] = int(bad.sum())
            keep = keep & ~bad
    return keep


def from_observables(
    table: Table | str | os.PathLike,
    *,
    sun: Sun | None = None,
    units: Any = "galactic",
    min_parallax_over_error: float | None = None,
    cuts: Mapping[str, tuple[float | None, float | None]] | None = None,
    weight_column: str | None = None,
    drop_invalid: bool = False,
    meta: Mapping[str, Any] | None = None,
) -> PhaseSpaceCatalog:
    """A Galactocentric `PhaseSpaceCatalog` from a table of Gaia-like observables.

    Steps, each counted in `meta["survey"]`: the quality cuts (`min_parallax_over_error`,
    then `cuts` in order; a star whose cut value is NaN fails it), then the checks of what
    is left — NaN/masked values or errors (`drop_invalid=True` drops them, counted; else a
    `ValueError` naming the column), non-positive parallaxes and negative errors (always a
    `ValueError` naming the column: cut them first). Then the ICRS → Galactocentric
    transformation by astropy, with the Sun's parameters `sun`, and the linearised
    propagation of the errors (and Gaia correlations, if the table has them) into a 6×6
    covariance per star.

    **Arguments:**

    - `table`: an astropy `Table` or a file `read_table` reads.
    - `sun`: the Sun's position and velocity (default `Sun()`).
    - `units`: the unit system of the catalogue (physical; default `"galactic"`).
    - `min_parallax_over_error`: keep stars with parallax / parallax_error ≥ this.
    - `cuts`: `{column: (lo, hi)}` keeping lo ≤ value ≤ hi (`None` for an open end), on any
      numeric column (e.g. `{"phot_g_mean_mag": (None, 17.0)}`).
    - `weight_column`: a column of per-star weights.
    - `drop_invalid`: drop stars with NaN/masked values (counted) instead of raising.
    - `meta`: extra provenance for the catalogue's `meta`.

    **Returns:** the `PhaseSpaceCatalog` (positions, velocities, covariances in `units`);
    `meta["survey"]` records the input size, each cut with the number of stars it dropped,
    the dropped invalid rows by column, the Sun and any units assumed.

    **Raises:** `ValueError` naming the column: missing columns, units that do not convert,
    non-numeric columns, NaN values (unless `drop_invalid`), non-positive parallaxes,
    negative errors; or when no star is left.
    """
    source = None
    if not isinstance(table, Table):
        source = str(table)
        table = read_table(table)
    sun = Sun() if sun is None else sun
    system = get_units(units)
    if not system.is_physical:
        raise ValueError("units must be a physical unit system (e.g. 'galactic')")
    found = _find_columns(table)
    missing = [c for c in _REQUIRED if c not in found]
    if missing:
        raise ValueError(f"the table is missing columns {missing} (has: {table.colnames})")
    n_input = len(table)
    if n_input == 0:
        raise ValueError("the table is empty")
    assumed: dict[str, str] = {}
    values = {}
    for name in _REQUIRED + _OPTIONAL_ERRORS:
        if name in found:
            values[name] = _column(table[found[name]], name, assumed)
        else:
            values[name] = np.zeros(n_input)
    corr = {}
    for i, a in enumerate(ASTROMETRY):
        for j in range(i + 1, 5):
            name = f"{a}_{ASTROMETRY[j]}_corr"
            if name in found:
                corr[(i, j)] = np.asarray(np.ma.filled(np.ma.asarray(table[found[name]],
                                                                     dtype=np.float64), np.nan))

    keep = np.ones(n_input, dtype=bool)
    cut_log = []
    if min_parallax_over_error is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = values["parallax"] / values["parallax_error"]
        passed = ratio >= float(min_parallax_over_error)  # NaN fails
        cut_log.append({"cut": f"parallax_over_error >= {min_parallax_over_error:g}",
                        "dropped": int((keep & ~passed).sum())})
        keep &= passed
    for name, bounds in (cuts or {}).items():
        if name not in table.colnames:
            raise ValueError(f"cut on column {name!r}, which the table does not have")
        try:
            col = np.ma.filled(np.ma.asarray(table[name], dtype=np.float64), np.nan)
        except (TypeError, ValueError):
            raise ValueError(f"cut on column {name!r}, which is not numeric") from None
        lo, hi = bounds
        passed = np.ones(n_input, dtype=bool) & np.isfinite(col)
        if lo is not None:
            passed &= col >= lo
        if hi is not None:
            passed &= col <= hi
        cut_log.append({"cut": f"{lo if lo is not None else '-inf'} <= {name} <= "
                               f"{hi if hi is not None else 'inf'}",
                        "dropped": int((keep & ~passed).sum())})
        keep &= passed
    dropped: dict[str, int] = {}
    corr_names = {f"{ASTROMETRY[i]}_{ASTROMETRY[j]}_corr": (i, j) for i, j in corr}
    keep = _check_finite(values, keep, _REQUIRED + _OPTIONAL_ERRORS, drop_invalid, dropped)
    keep = _check_finite({k: corr[v] for k, v in corr_names.items()}, keep, list(corr_names),
                         drop_invalid, dropped)
    nonpos = keep & (values["parallax"] <= 0)
    if nonpos.any():
        raise ValueError(
            f"column 'parallax' has {int(nonpos.sum())} zero or negative values (distances "
            "are 1/parallax): cut them, e.g. with min_parallax_over_error"
        )
    for name in ("parallax_error", "pmra_error", "pmdec_error", "radial_velocity_error")\
            + _OPTIONAL_ERRORS:
        neg = keep & (values[name] < 0)
        if neg.any():
            raise ValueError(f"column {name!r} has {int(neg.sum())} negative values")
    for name, (i, j) in corr_names.items():
        bad = keep & (np.abs(corr[(i, j)]) > 1)
        if bad.any():
            raise ValueError(f"column {name!r} has {int(bad.sum())} values outside [-1, 1]")
    weights = None
    if weight_column is not None:
        if weight_column not in table.colnames:
            raise ValueError(f"weight column {weight_column!r} is not in the table")
        weights = np.ma.filled(np.ma.asarray(table[weight_column], dtype=np.float64), np.nan)
        keep = _check_finite({weight_column: weights}, keep, [weight_column], drop_invalid,
                             dropped)
        weights = weights[keep]
    n_kept = int(keep.sum())
    if n_kept == 0:
        raise ValueError(f"no star of {n_input} is left after the cuts {cut_log} and the "
                         f"invalid rows {dropped}")

    v = {name: arr[keep] for name, arr in values.items()}
    frame = sun.frame()
    icrs = coord.SkyCoord(
        ra=v["ra"] * u.deg, dec=v["dec"] * u.deg,
        distance=(v["parallax"] * u.mas).to(u.kpc, u.parallax()),
        pm_ra_cosdec=v["pmra"] * u.mas / u.yr, pm_dec=v["pmdec"] * u.mas / u.yr,
        radial_velocity=v["radial_velocity"] * u.km / u.s, frame=coord.ICRS(),
    )
    gc = icrs.transform_to(frame)
    x = gc.cartesian.xyz.to_value(system.length).T
    vel = gc.velocity.d_xyz.to_value(system.velocity).T

    obs = np.stack([np.deg2rad(v["ra"]), np.deg2rad(v["dec"]), v["parallax"], v["pmra"],
                    v["pmdec"], v["radial_velocity"]], axis=1)
    sig = np.stack([v["ra_error"] * _MAS, v["dec_error"] * _MAS, v["parallax_error"],
                    v["pmra_error"], v["pmdec_error"], v["radial_velocity_error"]], axis=1)
    cov = _covariances(obs, sig, {k: c[keep] for k, c in corr.items()}, frame)
    scale = np.concatenate([np.full(3, u.kpc.to(system.length)),
                            np.full(3, (u.km / u.s).to(system.velocity))])
    cov = cov * scale[:, None] * scale[None, :]

    survey_meta = {
        "n_input": n_input,
        "cuts": cut_log,
        "dropped_invalid": dropped,
        "n_kept": n_kept,
        "sun": sun.to_dict(),
        "correlations": sorted(corr_names),
    }
    if assumed:
        survey_meta["assumed_units"] = assumed
    if source is not None:
        survey_meta["source"] = source
    full_meta = {"generator": "deeppot.survey.from_observables", **dict(meta or {}),
                 "survey": survey_meta}
    return PhaseSpaceCatalog(x, vel, weights, full_meta, cov=cov, units=system)


# -- files ------------------------------------------------------------------------------------


def _table_format(path: Path) -> str:
    name = path.name.lower()
    for ext in sorted(_TABLE_FORMATS, key=len, reverse=True):
        if name.endswith(ext):
            return _TABLE_FORMATS[ext]
    raise ValueError(f"unknown table format for '{path}': use one of {sorted(_TABLE_FORMATS)}")


def read_table(path: str | os.PathLike) -> Table:
    """Read a survey table with `astropy.table` (FITS, VOTable, CSV, ECSV, HDF5).

    **Arguments:**

    - `path`: the file; its extension picks the format (`.fits`, `.vot`/`.xml`, `.csv`,
      `.ecsv`, `.h5`/`.hdf5`; HDF5 tables are read from the path `"data"`, or the file's
      only table).

    **Returns:** the astropy `Table`.
    """
    path = Path(path)
    fmt = _table_format(path)
    if not path.exists():
        raise FileNotFoundError(f"no such table file: '{path}'")
    kwargs = {}
    if fmt == "hdf5":
        import h5py

        with h5py.File(path, "r") as h5:
            names = list(h5.keys())
        if _HDF5_PATH not in names and len(names) != 1:
            raise ValueError(f"'{path}' has tables {names}; expected one, or one named 'data'")
        kwargs["path"] = _HDF5_PATH if _HDF5_PATH in names else names[0]
    if fmt == "votable":
        import warnings

        from astropy.io.votable.exceptions import VOWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", VOWarning)
            return Table.read(path, format=fmt)
    return Table.read(path, format=fmt, **kwargs)


def write_table(table: Table, path: str | os.PathLike) -> Path:
    """Write a survey table atomically (FITS, VOTable, CSV, ECSV, HDF5 by extension).

    Plain CSV keeps no units (they are read back as Gaia's); the other formats keep them.

    **Arguments:**

    - `table`: the astropy `Table` (e.g. from `to_observables`).
    - `path`: the destination; an existing file is replaced.

    **Returns:** the path written.
    """
    path = Path(path)
    fmt = _table_format(path)
    with replacing(path, suffix="".join(path.suffixes)) as tmp:
        kwargs: dict[str, Any] = {"overwrite": True}
        if fmt == "hdf5":
            kwargs.update(path=_HDF5_PATH, serialize_meta=True)
        table.write(tmp, format=fmt, **kwargs)
    return path


# -- the pipeline's source --------------------------------------------------------------------


@registry.sources.register("survey")
def survey_table(
    path: str,
    *,
    units: str = "galactic",
    sun: dict | None = None,
    min_parallax_over_error: float | None = None,
    cuts: dict | None = None,
    weight_column: str | None = None,
    drop_invalid: bool = False,
) -> PhaseSpaceCatalog:
    """`[data] source = "survey"`: `from_observables` on a table file, its arguments as a
    config writes them.

    **Arguments:**

    - `path`: the table file (`read_table`'s formats).
    - `units`: the catalogue's unit system (physical).
    - `sun`: the Sun's parameters, a table of `Sun`'s arguments as plain numbers.
    - `cuts`: `{column: [lo, hi]}`.
    - the others: as for `from_observables`.

    **Returns:** the Galactocentric `PhaseSpaceCatalog`.
    """
    return from_observables(
        path, units=units, sun=None if sun is None else Sun(**sun),
        min_parallax_over_error=min_parallax_over_error,
        cuts=None if cuts is None else {k: tuple(v) for k, v in cuts.items()},
        weight_column=weight_column, drop_invalid=drop_invalid)


survey_table.suffixes = tuple(_TABLE_FORMATS)  # the files it reads
survey_table.physical_units = True  # observables need physical [run] units
