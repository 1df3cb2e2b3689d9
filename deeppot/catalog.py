"""`PhaseSpaceCatalog`: a validated snapshot of stellar positions and velocities.

A catalogue holds n stars' positions `x` (n, 3), velocities `v` (n, 3), optional per-star
weights (n,), optional per-star covariances `cov` (n, 6, 6) of (x, v) (the propagated
measurement uncertainties of a survey), optional per-star truth (`truth`: the acceleration
(n, 3) and potential (n,) a simulation recorded at each star, which `evaluate` compares a
fitted potential with when no analytic truth is known), and a JSON-serialisable `meta`
dictionary with provenance (which generator made it, with which parameters and random key,
the true potential when it is known, quality cuts and how many stars they dropped). Arrays
are float64 NumPy arrays on the host and are read-only; a catalogue never changes after it
is made.

Numbers are in the catalogue's unit system (`units`, kept in `meta["units"]`; dimensionless
unless stated): `PhaseSpaceCatalog(x=pos * u.kpc, v=vel * u.km / u.s)` is in `galactic`
units, and `quantity("x")` gives the positions back as an astropy `Quantity`.

Files: `.npz`, `.h5`/`.hdf5` and `.csv` (columns `x,y,z,vx,vy,vz`, optionally `weight`,
the 21 covariance columns `cov_x_x, cov_x_y, …, cov_vz_vz` and the truth columns
`truth_ax, truth_ay, truth_az` and `truth_phi`; the metadata is stored as JSON, in
a `# deeppot-meta:` comment line for CSV). Saves are atomic: the file is written next to its
destination and then moved into place. A damaged file is named as corrupt or truncated: NPZ
members and HDF5 datasets carry checksums, and a deeppot CSV records its row count and ends
in a newline.
"""

import json
import os
import struct
import tokenize
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, final

import jax.numpy as jnp
import numpy as np
from jaxtyping import Float

from . import _atomic
from .units import UnitSystem, dimensionless, get_units, resolve_units

__all__ = ["TRUTH_FIELDS", "PhaseSpaceCatalog"]

# per-star truth a catalogue may carry: name -> (physical dimension, shape of one star's value)
TRUTH_FIELDS: dict[str, tuple[str, tuple[int, ...]]] = {
    "acceleration": ("acceleration", (3,)),  # −∇Φ at the star
    "potential": ("potential", ()),  # Φ at the star (any constant offset)
}
_TRUTH_COLUMNS = {"acceleration": ("truth_ax", "truth_ay", "truth_az"),
                  "potential": ("truth_phi",)}

_COLUMNS = ("x", "y", "z", "vx", "vy", "vz")
# the upper triangle of the (x, v) covariance, row by row, as CSV columns
_COV_PAIRS = tuple((i, j) for i in range(6) for j in range(i, 6))
_COV_COLUMNS = tuple(f"cov_{_COLUMNS[i]}_{_COLUMNS[j]}" for i, j in _COV_PAIRS)
_COV_SYMMETRY_RTOL = 1e-8
_WEIGHT_COLUMNS = ("weight", "weights", "w")
_META_PREFIX = "# deeppot-meta:"
_ROWS_PREFIX = "# deeppot-rows:"
_FORMATS = {".npz": "npz", ".h5": "h5", ".hdf5": "h5", ".csv": "csv"}
_MAX_LISTED = 10
# room left above a file's sum of squares for the constants computations multiply it by
_OVERFLOW_HEADROOM = 1e3


def _json_default(obj: Any) -> Any:
    """Convert NumPy/JAX scalars and arrays to JSON-native types."""
    if isinstance(obj, np.generic):
        return obj.item()
    if hasattr(obj, "__array__"):
        return np.asarray(obj).tolist()
    if isinstance(obj, tuple | set | frozenset):
        return list(obj)
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serialisable")


def _normalise_meta(meta: Mapping[str, Any] | None) -> dict[str, Any]:
    """Return a JSON round-tripped copy of `meta` (so it equals what a file gives back)."""
    if meta is None:
        return {}
    if not isinstance(meta, Mapping):
        raise ValueError(f"meta must be a mapping, got {type(meta).__name__}")
    try:
        return json.loads(json.dumps(dict(meta), default=_json_default))
    except (TypeError, ValueError) as err:
        raise ValueError(f"meta must be JSON-serialisable: {err}") from None


def _first(indices: np.ndarray) -> str:
    shown = ", ".join(str(int(i)) for i in indices[:_MAX_LISTED])
    return f"[{shown}{', ...' if len(indices) > _MAX_LISTED else ''}]"


def _as_float_array(name: str, value: Any) -> np.ndarray:
    try:
        arr = np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be numeric: {err}") from None
    return arr


@final
class PhaseSpaceCatalog:
    """A snapshot of n stars in 6-D phase space, validated on construction.

    **Arguments:**

    - `x`: positions, shape (n, 3).
    - `v`: velocities, shape (n, 3).
    - `weights`: optional non-negative per-star weights, shape (n,).
    - `meta`: JSON-serialisable provenance (generator, parameters, key/seed, truth potential
      as e.g. `{"class": "MiyamotoNagai", "m_tot": 1.0, "a": 1.0, "b": 0.1}`). NumPy/JAX values
      are converted to plain lists and numbers; tuples become lists.
    - `cov`: optional per-star covariance of (x, y, z, vx, vy, vz), shape (n, 6, 6),
      symmetric with a non-negative diagonal, in the catalogue's units.
    - `units`: the unit system of the numbers (`deeppot.units`: a `UnitSystem`, a name such
      as `"galactic"` or its dict); recorded in `meta["units"]`. Positions and velocities
      given as astropy quantities are converted to it (to `galactic` if `units` is not
      given); plain numbers are taken as they are.
    - `truth`: optional per-star truth from a simulation, `{"acceleration": (n, 3),
      "potential": (n,)}` (either or both; `TRUTH_FIELDS`), in the catalogue's units:
      what the force and potential errors of a fit are measured against when `meta`
      records no analytic truth.
    - `drop_invalid`: if True, rows with NaN or inf in x, v, weights, cov or truth are
      dropped with a `UserWarning` (instead of raising).

    **Raises:** `ValueError` naming the problem: wrong shapes, mismatched lengths, an empty
    catalogue, NaN/inf values (with their count and first row indices), negative weights
    or weights that are all zero, a covariance that is not symmetric or has a negative
    variance, metadata that cannot be stored as JSON, or a unit system different from the
    one `meta` already records.
    """

    __slots__ = ("_x", "_v", "_weights", "_cov", "_truth", "_meta")

    def __init__(
        self,
        x: Float[Any, "n 3"],
        v: Float[Any, "n 3"],
        weights: Float[Any, " n"] | None = None,
        meta: Mapping[str, Any] | None = None,
        *,
        cov: Float[Any, "n 6 6"] | None = None,
        units: UnitSystem | str | Mapping[str, Any] | None = None,
        truth: Mapping[str, Any] | None = None,
        drop_invalid: bool = False,
    ):
        meta = _normalise_meta(meta)
        system = _catalog_units(units, meta, x, v)
        if system.is_physical or "units" in meta:
            meta["units"] = system.to_dict()
        x = _as_float_array("x", system.to_value(x, "length", "x"))
        v = _as_float_array("v", system.to_value(v, "velocity", "v"))
        for name, arr in (("x", x), ("v", v)):
            if arr.ndim != 2 or arr.shape[1] != 3:
                raise ValueError(f"{name} must have shape (n, 3), got {arr.shape}")
        if len(x) != len(v):
            raise ValueError(f"x has {len(x)} rows but v has {len(v)}: lengths must match")
        if weights is not None:
            weights = _as_float_array("weights", weights)
            if weights.shape != (len(x),):
                raise ValueError(f"weights must have shape ({len(x)},), got {weights.shape}")
        if cov is not None:
            cov = _as_float_array("cov", cov)
            if cov.shape != (len(x), 6, 6):
                raise ValueError(f"cov must have shape ({len(x)}, 6, 6), got {cov.shape}")
        truth = _check_truth(truth, len(x), system)
        bad = ~np.all(np.isfinite(x), axis=1) | ~np.all(np.isfinite(v), axis=1)
        if weights is not None:
            bad |= ~np.isfinite(weights)
        if cov is not None:
            bad |= ~np.all(np.isfinite(cov), axis=(1, 2))
        for arr in truth.values():
            bad |= ~np.isfinite(arr.reshape(len(x), -1)).all(axis=1)
        if bad.any():
            rows = np.flatnonzero(bad)
            what = f"{len(rows)} of {len(x)} rows contain NaN or inf (first rows: {_first(rows)})"
            if not drop_invalid:
                raise ValueError(f"{what}; pass drop_invalid=True to drop them")
            warnings.warn(f"dropping {what}", UserWarning, stacklevel=2)
            keep = ~bad
            x, v = x[keep], v[keep]
            weights = None if weights is None else weights[keep]
            cov = None if cov is None else cov[keep]
            truth = {k: a[keep] for k, a in truth.items()}
        if len(x) == 0:
            raise ValueError("catalogue is empty: it needs at least one star")
        if weights is not None and (weights < 0).any():
            rows = np.flatnonzero(weights < 0)
            raise ValueError(
                f"weights must be non-negative: {len(rows)} rows are negative "
                f"(first rows: {_first(rows)})"
            )
        if weights is not None and not weights.sum() > 0:
            raise ValueError("weights are all zero: at least one star needs a positive weight")
        if cov is not None:
            _check_cov(cov)
        for arr in (x, v, weights, cov, *truth.values()):
            if arr is not None:
                arr.flags.writeable = False
        self._x = x
        self._v = v
        self._weights = weights
        self._cov = cov
        self._truth = truth
        self._meta = meta

    # -- accessors ---------------------------------------------------------------------------

    @property
    def x(self) -> Float[np.ndarray, "n 3"]:
        """Positions, shape (n, 3) (read-only float64)."""
        return self._x

    @property
    def v(self) -> Float[np.ndarray, "n 3"]:
        """Velocities, shape (n, 3) (read-only float64)."""
        return self._v

    @property
    def w(self) -> Float[np.ndarray, "n 6"]:
        """Phase-space coordinates (x, v) concatenated, shape (n, 6)."""
        return np.concatenate([self._x, self._v], axis=1)

    @property
    def weights(self) -> Float[np.ndarray, " n"] | None:
        """Per-star weights, shape (n,), or None."""
        return self._weights

    @property
    def cov(self) -> Float[np.ndarray, "n 6 6"] | None:
        """Per-star covariance of (x, v), shape (n, 6, 6), or None."""
        return self._cov

    @property
    def truth(self) -> dict[str, np.ndarray]:
        """Per-star truth recorded by a simulation: `{"acceleration": (n, 3), "potential":
        (n,)}`, those present (read-only float64; empty if none)."""
        return dict(self._truth)

    @property
    def errors(self) -> Float[np.ndarray, "n 6"] | None:
        """Per-star standard deviations of (x, y, z, vx, vy, vz), shape (n, 6), or None."""
        if self._cov is None:
            return None
        return np.sqrt(np.diagonal(self._cov, axis1=1, axis2=2))

    @property
    def units(self) -> UnitSystem:
        """The unit system of the numbers (dimensionless unless `meta["units"]` says)."""
        return get_units(self._meta["units"]) if "units" in self._meta else dimensionless

    def quantity(self, name: str):
        """Positions, velocities or their errors as an astropy `Quantity`.

        **Arguments:**

        - `name`: `"x"` (positions), `"v"` (velocities), `"x_err"` or `"v_err"` (the
          square roots of the covariance's diagonal blocks' diagonals).

        **Returns:** a `Quantity` of shape (n, 3) in the catalogue's units (raises for a
        dimensionless catalogue, or for errors when there is no covariance).
        """
        getters = {"x": (lambda: self._x, "length"), "v": (lambda: self._v, "velocity"),
                   "x_err": (lambda: self._err(slice(0, 3)), "length"),
                   "v_err": (lambda: self._err(slice(3, 6)), "velocity")}
        if name not in getters:
            raise ValueError(f"unknown catalogue quantity {name!r}; known: {sorted(getters)}")
        get, dimension = getters[name]
        return self.units.quantity(get(), dimension)

    def _err(self, axes: slice) -> np.ndarray:
        errors = self.errors
        if errors is None:
            raise ValueError("this catalogue has no covariance, so no errors")
        return errors[:, axes]

    @property
    def meta(self) -> dict[str, Any]:
        """Provenance metadata (a copy: edit it with `with_meta`)."""
        return json.loads(json.dumps(self._meta))

    def __len__(self) -> int:
        return len(self._x)

    def __repr__(self) -> str:
        gen = self._meta.get("generator", "?")
        w = ", weighted" if self._weights is not None else ""
        c = ", with covariances" if self._cov is not None else ""
        c += f", with truth {sorted(self._truth)}" if self._truth else ""
        units = self.units
        un = f", units={units.name!r}" if units.is_physical else ""
        return f"PhaseSpaceCatalog(n={len(self)}{w}{c}{un}, generator={gen!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PhaseSpaceCatalog):
            return NotImplemented
        same_w = (self._weights is None and other._weights is None) or (
            self._weights is not None
            and other._weights is not None
            and np.array_equal(self._weights, other._weights)
        )
        same_cov = (self._cov is None and other._cov is None) or (
            self._cov is not None
            and other._cov is not None
            and np.array_equal(self._cov, other._cov)
        )
        return (
            np.array_equal(self._x, other._x)
            and np.array_equal(self._v, other._v)
            and same_w
            and same_cov
            and self._truth.keys() == other._truth.keys()
            and all(np.array_equal(a, other._truth[k]) for k, a in self._truth.items())
            and self._meta == other._meta
        )

    __hash__ = None  # type: ignore[assignment]

    # -- derived catalogues ------------------------------------------------------------------

    def with_meta(self, **updates: Any) -> "PhaseSpaceCatalog":
        """A copy with `meta` keys added or replaced.

        **Arguments:**

        - `**updates`: keys and JSON-serialisable values to set.

        **Returns:** a new `PhaseSpaceCatalog` sharing the arrays.
        """
        return PhaseSpaceCatalog(self._x, self._v, self._weights, {**self._meta, **updates},
                                 cov=self._cov, truth=self._truth)

    def with_weights(self, weights: Float[Any, " n"] | None) -> "PhaseSpaceCatalog":
        """A copy with per-star weights replaced (`None` removes them).

        **Arguments:**

        - `weights`: non-negative weights, shape (n,), or `None`.

        **Returns:** a new `PhaseSpaceCatalog` sharing the other arrays.
        """
        return PhaseSpaceCatalog(self._x, self._v, weights, self._meta, cov=self._cov,
                                 truth=self._truth)

    def subset(self, rows: Any, **meta_updates: Any) -> "PhaseSpaceCatalog":
        """The stars picked by a boolean mask or an index array.

        **Arguments:**

        - `rows`: boolean mask of shape (n,) or integer indices.
        - `**meta_updates`: keys to add to the copy's `meta`.

        **Returns:** a new `PhaseSpaceCatalog` (raises `ValueError` if it would be empty).
        """
        rows = np.asarray(rows)
        w = None if self._weights is None else self._weights[rows]
        cov = None if self._cov is None else self._cov[rows]
        truth = {k: a[rows] for k, a in self._truth.items()}
        return PhaseSpaceCatalog(self._x[rows], self._v[rows], w, {**self._meta, **meta_updates},
                                 cov=cov, truth=truth)

    @staticmethod
    def concatenate(catalogs: Sequence["PhaseSpaceCatalog"]) -> "PhaseSpaceCatalog":
        """Stack catalogues; `meta` comes from the first one.

        **Arguments:**

        - `catalogs`: one or more catalogues in one unit system, all weighted or all
          unweighted, all with covariances or all without, all with the same truth fields.

        **Returns:** a new `PhaseSpaceCatalog` with the stars in order.
        """
        if len(catalogs) == 0:
            raise ValueError("concatenate needs at least one catalogue")
        weighted = {c.weights is not None for c in catalogs}
        if len(weighted) > 1:
            raise ValueError("cannot concatenate weighted and unweighted catalogues")
        with_cov = {c.cov is not None for c in catalogs}
        if len(with_cov) > 1:
            raise ValueError("cannot concatenate catalogues with and without covariances")
        if any(c.units != catalogs[0].units for c in catalogs):
            raise ValueError("cannot concatenate catalogues in different unit systems")
        fields = {tuple(sorted(c._truth)) for c in catalogs}
        if len(fields) > 1:
            raise ValueError(f"cannot concatenate catalogues with different truth fields "
                             f"{sorted(fields)}")
        w = np.concatenate([c.weights for c in catalogs]) if weighted == {True} else None
        cov = np.concatenate([c.cov for c in catalogs]) if with_cov == {True} else None
        return PhaseSpaceCatalog(
            np.concatenate([c.x for c in catalogs]),
            np.concatenate([c.v for c in catalogs]),
            w,
            catalogs[0]._meta,
            cov=cov,
            truth={k: np.concatenate([c._truth[k] for c in catalogs])
                   for k in catalogs[0]._truth},
        )

    # -- files -------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> Path:
        """Write the catalogue (with weights, covariances, truth, units, meta) to `.npz`,
        `.h5`/`.hdf5` or `.csv`, atomically.

        **Arguments:**

        - `path`: destination; the extension picks the format. An existing file is replaced.

        **Returns:** the path written.
        """
        path = Path(path)
        fmt = _format_of(path)
        meta_json = json.dumps(self._meta)
        with _atomic.replacing(path) as tmp:
            if fmt == "h5":
                _write_h5(tmp, self, meta_json)
            else:
                with open(tmp, "wb") as f:
                    if fmt == "npz":
                        arrays = {"x": self._x, "v": self._v, "meta": np.array(meta_json)}
                        if self._weights is not None:
                            arrays["weights"] = self._weights
                        if self._cov is not None:
                            arrays["cov"] = self._cov
                        for name, arr in self._truth.items():
                            arrays[f"truth_{name}"] = arr
                        np.savez(f, **arrays)
                    else:
                        _write_csv(f, self, meta_json)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, *, drop_invalid: bool = False,
             check_fit: bool = True) -> "PhaseSpaceCatalog":
        """Read a catalogue written by `save` (or any file with the same layout).

        **Arguments:**

        - `path`: a `.npz`, `.h5`/`.hdf5` or `.csv` file. NPZ/HDF5 need arrays `x` and `v`
          (n, 3), optionally `weights`, `cov` (n, 6, 6), `truth_acceleration` (n, 3),
          `truth_potential` (n,) and a JSON `meta` string (HDF5: attribute). CSV needs a
          header with columns x,y,z,vx,vy,vz (any order), optionally `weight`, all 21
          `cov_…` columns and the truth columns (`truth_ax, truth_ay, truth_az`,
          `truth_phi`); other columns are ignored and their names recorded in
          `meta["ignored_columns"]`.
        - `drop_invalid`: drop rows with NaN/inf (with a warning) instead of raising.
        - `check_fit`: refuse stars no DF can be fitted to: positions or velocities whose
          squares overflow the working precision (float32 unless x64 is enabled), a
          coordinate that does not vary, or more than half of the stars exact copies of
          others (a bootstrap resample keeps 1 - 1/e ≈ 63% distinct). False loads any valid
          catalogue as it was saved.

        **Returns:** the `PhaseSpaceCatalog`.

        **Raises:** `FileNotFoundError` if the file does not exist; `ValueError` naming the
        file for an unknown extension, a corrupt or truncated file, missing arrays or
        columns, invalid values, or (`check_fit`) stars no DF can be fitted to.
        """
        path = Path(path)
        fmt = _format_of(path)
        if not path.exists():
            raise FileNotFoundError(f"no such catalogue file: '{path}'")
        reader = {"npz": _read_npz, "h5": _read_h5, "csv": _read_csv}[fmt]
        x, v, weights, cov, truth, meta = reader(path)
        try:
            cat = cls(x, v, weights, meta, cov=cov, truth=truth, drop_invalid=drop_invalid)
            if check_fit:
                _check_fit(cat)
        except ValueError as err:
            raise ValueError(f"'{path}': {err}") from None
        return cat


def _catalog_units(units, meta: dict[str, Any], x, v) -> UnitSystem:
    """The catalogue's unit system from `units=`, `meta["units"]` and quantity inputs."""
    recorded = None
    if "units" in meta:
        try:
            recorded = get_units(meta["units"])
        except (TypeError, ValueError) as err:
            raise ValueError(f"meta['units'] is not a unit system: {err}") from None
    if units is None:
        if recorded is not None:
            return recorded
        return resolve_units(None, None, x, v)
    system = get_units(units)
    if recorded is not None and recorded != system:
        raise ValueError(f"units={system!r} but meta records {recorded!r}")
    return system


def _check_fit(cat: PhaseSpaceCatalog) -> None:
    """A ValueError unless a DF can be fitted to the stars that have weight (`load`'s
    `check_fit`)."""
    dtype = np.dtype(jnp.result_type(float))
    limit = np.finfo(dtype).max / _OVERFLOW_HEADROOM
    for name, arr in (("positions", cat.x), ("velocities", cat.v)):
        with np.errstate(over="ignore"):
            squares = np.sum(arr**2)
        if not squares <= limit:
            row = int(np.argmax(np.max(np.abs(arr), axis=1)))
            raise ValueError(
                f"{name} overflow {dtype.name}: their squares sum to {squares:.3g}, too close "
                f"to {dtype.name}'s largest number ({np.finfo(dtype).max:.3g}) for a fit "
                f"(largest in row {row}: {np.max(np.abs(arr[row])):.3g}); use larger units or "
                "enable x64"
            )
    w = cat.w if cat.weights is None else cat.w[cat.weights > 0]
    flat = [_COLUMNS[i] for i in np.flatnonzero(np.ptp(w, axis=0) == 0)]
    if flat:
        raise ValueError(
            f"{', '.join(flat)} {'is' if len(flat) == 1 else 'are'} the same for all "
            f"{len(w)} stars: every coordinate must vary"
        )
    distinct = len(np.unique(w, axis=0))
    if 2 * distinct < len(w):
        raise ValueError(
            f"only {distinct} of {len(w)} stars are distinct rows; the rest repeat them "
            "(remove the copies, or give each distinct star a weight)"
        )


def _check_truth(truth: Mapping[str, Any] | None, n: int,
                 system: UnitSystem) -> dict[str, np.ndarray]:
    """Per-star truth arrays as float64, checked against `TRUTH_FIELDS` (quantities are
    converted to the catalogue's units)."""
    if truth is None:
        return {}
    if not isinstance(truth, Mapping):
        raise ValueError(f"truth must be a mapping of {sorted(TRUTH_FIELDS)} to arrays, got "
                         f"{type(truth).__name__}")
    out = {}
    for name, value in truth.items():
        if name not in TRUTH_FIELDS:
            raise ValueError(f"unknown truth field {name!r}; known: {sorted(TRUTH_FIELDS)}")
        dimension, shape = TRUTH_FIELDS[name]
        arr = _as_float_array(f"truth {name!r}",
                              system.to_value(value, dimension, f"truth {name!r}"))
        if arr.shape != (n, *shape):
            raise ValueError(f"truth {name!r} must have shape {(n, *shape)}, got {arr.shape}")
        out[name] = arr
    return out


def _check_cov(cov: np.ndarray) -> None:
    """Symmetric (to round-off) with non-negative variances, or a ValueError."""
    scale = np.sqrt(np.abs(np.diagonal(cov, axis1=1, axis2=2)))
    tol = _COV_SYMMETRY_RTOL * scale[:, :, None] * scale[:, None, :]
    asym = np.any(np.abs(cov - np.swapaxes(cov, 1, 2)) > tol, axis=(1, 2))
    if asym.any():
        rows = np.flatnonzero(asym)
        raise ValueError(
            f"cov must be symmetric: {len(rows)} rows are not (first rows: {_first(rows)})"
        )
    neg = np.any(np.diagonal(cov, axis1=1, axis2=2) < 0, axis=1)
    if neg.any():
        rows = np.flatnonzero(neg)
        raise ValueError(
            f"cov has negative variances in {len(rows)} rows (first rows: {_first(rows)})"
        )


def _format_of(path: Path) -> str:
    ext = path.suffix.lower()
    if ext not in _FORMATS:
        raise ValueError(
            f"unknown catalogue format {ext or '(no extension)'!r} for '{path}': "
            "use .npz, .h5/.hdf5 or .csv"
        )
    return _FORMATS[ext]


def _parse_meta(path: Path, text: str) -> dict[str, Any]:
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"'{path}': metadata is not valid JSON: {err}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"'{path}': metadata must be a JSON object")
    return meta


def _zip_gap(path: Path) -> str | None:
    """Where a zip archive's directory fails to account for its entries (None if it does).

    Each array of an `.npz` carries its own CRC, but the directory that lists them does not:
    a flipped bit there can make a reader skip an entry (an optional array or the meta
    silently gone). The entries must tile the file up to the directory, each local header
    followed by its data (and a data descriptor, for streamed writers), with no gap.
    """
    with open(path, "rb") as f, zipfile.ZipFile(f) as z:
        pos = 0
        for info in sorted(z.infolist(), key=lambda i: i.header_offset):
            if info.header_offset != pos:
                return f"bytes {pos}..{info.header_offset} belong to no listed entry"
            f.seek(info.header_offset + 26)
            name_len, extra_len = struct.unpack("<HH", f.read(4))
            pos = info.header_offset + 30 + name_len + extra_len + info.compress_size
            if info.flag_bits & 0x08:  # a data descriptor: optional signature, CRC, sizes
                f.seek(pos)
                pos += 4 * (f.read(4) == b"PK\x07\x08") + 4 + (16 if info.file_size >= 2**32
                                                                   else 8)
        if pos != z.start_dir:
            return f"bytes {pos}..{z.start_dir} belong to no listed entry"
    return None


def _read_npz(path: Path):
    try:
        gap = _zip_gap(path)
        if gap is not None:
            raise zipfile.BadZipFile(f"its directory is damaged: {gap}")
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (ValueError, OSError, EOFError, KeyError, NotImplementedError, RuntimeError,
            SyntaxError, tokenize.TokenError, struct.error,  # a damaged .npy header or zip
            zipfile.BadZipFile) as err:
        raise ValueError(f"'{path}' is corrupt or truncated: cannot read it as .npz ({err})"
                         ) from None
    missing = [k for k in ("x", "v") if k not in arrays]
    if missing:
        raise ValueError(f"'{path}' is missing arrays {missing} (found: {sorted(arrays)})")
    meta = _parse_meta(path, str(arrays["meta"])) if "meta" in arrays else {}
    truth = {k: arrays[f"truth_{k}"] for k in TRUTH_FIELDS if f"truth_{k}" in arrays}
    return arrays["x"], arrays["v"], arrays.get("weights"), arrays.get("cov"), truth, meta


def _read_h5(path: Path):
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            missing = [k for k in ("x", "v") if k not in h5]
            if missing:
                raise ValueError(
                    f"'{path}' is missing datasets {missing} (found: {sorted(h5.keys())})"
                )
            x, v = h5["x"][()], h5["v"][()]
            weights = h5["weights"][()] if "weights" in h5 else None
            cov = h5["cov"][()] if "cov" in h5 else None
            truth = {k: h5[f"truth_{k}"][()] for k in TRUTH_FIELDS if f"truth_{k}" in h5}
            raw = h5.attrs.get("meta")
    except (OSError, KeyError, RuntimeError) as err:
        raise ValueError(f"'{path}' is corrupt or truncated: cannot read it as HDF5 ({err})"
                         ) from None
    if raw is None:
        meta = {}
    else:
        meta = _parse_meta(path, raw.decode() if isinstance(raw, bytes) else str(raw))
    return x, v, weights, cov, truth, meta


def _write_h5(path: Path, cat: PhaseSpaceCatalog, meta_json: str) -> None:
    import h5py

    with h5py.File(path, "w") as h5:
        for name in ("x", "v", "weights", "cov"):
            arr = getattr(cat, name)
            if arr is not None:  # with checksums, so that a damaged file is noticed
                h5.create_dataset(name, data=arr, fletcher32=True)
        for name, arr in cat.truth.items():
            h5.create_dataset(f"truth_{name}", data=arr, fletcher32=True)
        h5.attrs["meta"] = meta_json


def _write_csv(f, cat: PhaseSpaceCatalog, meta_json: str) -> None:
    cols = list(_COLUMNS)
    data = [cat.x, cat.v]
    if cat.weights is not None:
        cols.append("weight")
        data.append(cat.weights[:, None])
    if cat.cov is not None:
        cols.extend(_COV_COLUMNS)
        data.append(np.stack([cat.cov[:, i, j] for i, j in _COV_PAIRS], axis=1))
    for name, arr in cat.truth.items():
        cols.extend(_TRUTH_COLUMNS[name])
        data.append(arr.reshape(len(cat), -1))
    f.write(f"{_META_PREFIX} {meta_json}\n".encode())
    f.write(f"{_ROWS_PREFIX} {len(cat)}\n".encode())
    np.savetxt(
        f,
        np.concatenate(data, axis=1),
        fmt="%.17g",
        delimiter=",",
        header=",".join(cols),
        comments="",
    )


def _read_csv(path: Path):
    meta: dict[str, Any] = {}
    declared = None
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() > 0:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                raise ValueError(
                    f"'{path}' may be truncated: its last line does not end in a newline "
                    "(if that row is complete, add a newline at the end of the file)"
                )
    try:
        with open(path, encoding="utf-8") as f:
            header = None
            for line in f:
                if line.startswith(_META_PREFIX):
                    meta = _parse_meta(path, line[len(_META_PREFIX) :])
                elif line.startswith(_ROWS_PREFIX):
                    declared = line[len(_ROWS_PREFIX) :].strip()
                elif line.startswith("#") or not line.strip():
                    continue
                else:
                    header = line
                    break
            if header is None:
                raise ValueError(f"'{path}' has no header line (expected columns {_COLUMNS})")
            names = [c.strip().lower() for c in header.split(",")]
            missing = [c for c in _COLUMNS if c not in names]
            if missing:
                raise ValueError(
                    f"'{path}' is missing columns {missing} (found: {names}); "
                    f"expected {list(_COLUMNS)}"
                )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # numpy warns on an empty body; handled below
                table = np.loadtxt(f, delimiter=",", ndmin=2, comments="#", dtype=np.float64)
    except UnicodeDecodeError as err:
        raise ValueError(f"'{path}' is corrupt or not CSV text: {err}") from None
    except ValueError as err:
        if str(err).startswith(f"'{path}'"):
            raise
        raise ValueError(f"'{path}' is corrupt or not a catalogue CSV: {err}") from None
    if table.size == 0:
        raise ValueError(f"'{path}': catalogue is empty: it needs at least one star")
    if declared is not None and declared != str(len(table)):
        raise ValueError(f"'{path}' is truncated or damaged: it declares {declared} rows but "
                         f"has {len(table)}")
    if table.shape[1] != len(names):
        raise ValueError(
            f"'{path}': header has {len(names)} columns but rows have {table.shape[1]}"
        )
    idx = {name: i for i, name in enumerate(names)}
    x = table[:, [idx[c] for c in _COLUMNS[:3]]]
    v = table[:, [idx[c] for c in _COLUMNS[3:]]]
    wcol = next((c for c in _WEIGHT_COLUMNS if c in idx), None)
    weights = table[:, idx[wcol]] if wcol is not None else None
    cov = None
    present = [c for c in _COV_COLUMNS if c in idx]
    if present:
        missing = [c for c in _COV_COLUMNS if c not in idx]
        if missing:
            raise ValueError(f"'{path}' has covariance columns but is missing {missing}")
        cov = np.empty((len(table), 6, 6))
        for (i, j), c in zip(_COV_PAIRS, _COV_COLUMNS):
            cov[:, i, j] = cov[:, j, i] = table[:, idx[c]]
    truth = {}
    for name, columns in _TRUTH_COLUMNS.items():
        found = [c for c in columns if c in idx]
        if found and len(found) < len(columns):
            raise ValueError(f"'{path}' has truth columns {found} but is missing "
                             f"{[c for c in columns if c not in idx]}")
        if found:
            values = table[:, [idx[c] for c in columns]]
            truth[name] = values if len(columns) > 1 else values[:, 0]
            present = [*present, *columns]
    known = set(_COLUMNS) | set(present) | {wcol}
    ignored = [c for c in names if c not in known]
    if ignored:
        meta = {**meta, "ignored_columns": ignored}
    return x, v, weights, cov, truth, meta
