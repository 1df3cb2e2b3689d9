"""Phase-space points drawn from a distribution function, with its scores there.

`sample_scores` draws them chunk by chunk, optionally sharded over devices and streamed to
an HDF5 file; `ScoreSample` holds them in memory, `ScoreFile` on disk (read a batch at a
time by `fit_potential`), and `load_scores` picks the one that fits.
"""

import json
import os
import shutil
import tokenize
import zipfile
from pathlib import Path
from typing import final

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec
from jaxtyping import Array, Float, PRNGKeyArray

from .hostdata import AbstractHostData, fits_in_memory
from .sharding import DATA_AXIS, Devices, data_mesh, is_main_process, to_host

__all__ = ["ScoreFile", "ScoreSample", "VelocityScoreSample", "load_scores", "sample_scores",
           "sample_velocity_scores"]

_FIELDS = ("x", "v", "dlnf_dx", "dlnf_dv", "ln_f")
_H5_FORMAT = "deeppot.ScoreSample/1"  # the `format` attribute of a score HDF5 file


@final
class ScoreSample(eqx.Module):
    """Points (x, v) with the scores ∂ln f/∂x, ∂ln f/∂v and ln f there; n rows each.

    This is the data the potential fit trains on. It is a pytree of arrays sharing the
    leading axis, so batches are `jax.tree.map(lambda a: a[idx], sample)`.
    """

    x: Float[Array, "n 3"]
    v: Float[Array, "n 3"]
    dlnf_dx: Float[Array, "n 3"]
    dlnf_dv: Float[Array, "n 3"]
    ln_f: Float[Array, " n"]

    def __init__(self, x, v, dlnf_dx, dlnf_dv, ln_f=None):
        arrays = {"x": x, "v": v, "dlnf_dx": dlnf_dx, "dlnf_dv": dlnf_dv}
        n = None
        for name, value in arrays.items():
            value = jnp.asarray(value)
            if value.ndim != 2 or value.shape[1] != 3:
                raise ValueError(f"ScoreSample.{name} must have shape (n, 3), got {value.shape}")
            if n is None:
                n = value.shape[0]
            elif value.shape[0] != n:
                raise ValueError(f"ScoreSample.{name} has {value.shape[0]} rows, expected {n}")
            arrays[name] = value
        if n == 0:
            raise ValueError("ScoreSample is empty")
        ln_f = jnp.full((n,), jnp.nan) if ln_f is None else jnp.asarray(ln_f)
        if ln_f.shape != (n,):
            raise ValueError(f"ScoreSample.ln_f must have shape ({n},), got {ln_f.shape}")
        self.x, self.v = arrays["x"], arrays["v"]
        self.dlnf_dx, self.dlnf_dv = arrays["dlnf_dx"], arrays["dlnf_dv"]
        self.ln_f = ln_f

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, index) -> "ScoreSample":
        return jax.tree.map(lambda a: a[index], self)

    def save(self, path: str | os.PathLike, meta: dict | None = None) -> None:
        """Write the sample to `.npz` or `.h5`/`.hdf5` atomically; `meta`
        (JSON-serialisable) is kept. HDF5 files can be opened as a `ScoreFile`."""
        path = Path(path)
        if path.suffix in _H5_SUFFIXES:
            with _ScoreWriter(path, len(self), jnp.result_type(self.x), meta) as out:
                out.write(0, *(np.asarray(getattr(self, k)) for k in _FIELDS))
            return
        if path.suffix != ".npz":
            raise ValueError(f"ScoreSample files are .npz, .h5 or .hdf5, got {path.name!r}")
        tmp = path.with_name(path.name + ".tmp.npz")
        arrays = {k: np.asarray(getattr(self, k)) for k in _FIELDS}
        np.savez(tmp, **arrays, meta=np.array(json.dumps(meta or {})))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ScoreSample":
        """Read a sample written by `save` (or by `sample_scores(..., path=...)`) into
        memory."""
        if Path(path).suffix in _H5_SUFFIXES:
            return ScoreFile(path).load()
        return cls(*_read_npz(path, _FIELDS, "ScoreSample"))


_H5_SUFFIXES = (".h5", ".hdf5")


def _host_sample(arrays) -> ScoreSample:
    """A `ScoreSample` over NumPy arrays as they are (no copy to a device)."""
    template = ScoreSample(*(np.zeros((1, 3), np.float32),) * 4, np.zeros(1, np.float32))
    return jax.tree.unflatten(jax.tree.structure(template), list(arrays))


class _ScoreWriter:
    """Writes an HDF5 score file of `n` rows slab by slab; atomic (renamed on success)."""

    def __init__(self, path, n: int, dtype, meta: dict | None = None):
        import h5py

        self.path = Path(path)
        if self.path.suffix not in _H5_SUFFIXES:
            raise ValueError(f"score files to stream into are .h5 or .hdf5; got "
                             f"{self.path.name!r}")
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        self.file = h5py.File(self.tmp, "w")
        self.file.attrs["format"] = _H5_FORMAT
        self.file.attrs["meta"] = json.dumps(meta or {})
        self.written = 0
        self.n = n
        for name in _FIELDS:  # contiguous, uncompressed: cheap random row reads
            shape = (n,) if name == "ln_f" else (n, 3)
            self.file.create_dataset(name, shape=shape, dtype=np.dtype(dtype))

    def write(self, start: int, x, v, dlnf_dx, dlnf_dv, ln_f) -> None:
        m = len(x)
        for name, a in zip(_FIELDS, (x, v, dlnf_dx, dlnf_dv, ln_f), strict=True):
            self.file[name][start : start + m] = a
        self.written += m

    def close(self, success: bool) -> None:
        """Close; keep the file (renamed into place) only if it is complete."""
        self.file.close()
        if success and self.written == self.n:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)
            if success:
                raise RuntimeError(f"{self.path}: wrote {self.written} of {self.n} rows")

    def __enter__(self):
        return self

    def __exit__(self, kind, err, tb):
        self.close(success=kind is None)
        return False


def _memmap(path: Path, dataset) -> np.ndarray | None:
    """A read-only memory map of an HDF5 dataset stored contiguous and unfiltered (what
    `_ScoreWriter` writes), or `None` for any other layout. h5py reads random rows one
    selection at a time (~1 s for 2^11 rows of a 2^24-row file); the map reads them as
    NumPy indexing of the page cache."""
    offset = dataset.id.get_offset()
    if offset is None or dataset.chunks is not None or dataset.compression is not None:
        return None
    return np.memmap(path, dtype=dataset.dtype, mode="r", offset=offset, shape=dataset.shape)


class ScoreFile(AbstractHostData):
    """A `ScoreSample` in an HDF5 file, read on the host a batch at a time.

    What `sample_scores(..., path=...)` returns; `fit_potential` trains from it without
    loading the file (the same batches as from `load()`, so the same result).

    **Arguments:**

    - `path`: an `.h5`/`.hdf5` file written by `sample_scores` or `ScoreSample.save`.
    """

    def __init__(self, path: str | os.PathLike):
        import h5py

        self.path = Path(path)
        try:
            with h5py.File(self.path, "r") as f:
                missing = [k for k in _FIELDS if k not in f]
                if f.attrs.get("format") != _H5_FORMAT or missing:
                    raise ValueError(f"{self.path}: not a deeppot score file "
                                     f"(format {f.attrs.get('format')!r}, missing {missing})")
                self._n = int(f["x"].shape[0])
                self._dtype = f["x"].dtype
                self.meta = json.loads(f.attrs.get("meta", "{}"))
        except OSError as err:
            raise ValueError(f"cannot read score file {self.path}: {err}") from None
        self._file = None
        self._maps: dict[str, np.ndarray | None] = {}

    def __len__(self) -> int:
        return self._n

    @property
    def nbytes(self) -> int:
        return self._n * 13 * self._dtype.itemsize

    def _handle(self):
        import h5py

        if self._file is None:
            self._file = h5py.File(self.path, "r")
            self._maps = {name: _memmap(self.path, self._file[name]) for name in _FIELDS}
        return self._file

    def take(self, rows) -> ScoreSample:
        """Rows of the file as a `ScoreSample` of NumPy arrays (order of `rows` kept)."""
        rows = np.asarray(rows)
        f = self._handle()
        if all(m is not None for m in self._maps.values()):
            # contiguous datasets (as written here): random rows straight from the page cache
            return _host_sample(self._maps[name][rows] for name in _FIELDS)
        unique, inverse = np.unique(rows, return_inverse=True)  # HDF5 reads sorted rows
        return _host_sample(f[name][unique][inverse] for name in _FIELDS)

    def __getitem__(self, index: slice) -> ScoreSample:
        """A range of rows (`scores[i:j]`, as of a `ScoreSample`), read from the file."""
        if not isinstance(index, slice):
            raise TypeError(f"a ScoreFile is sliced by a range of rows; use take() for "
                            f"{type(index).__name__}")
        return self.take(np.arange(*index.indices(self._n)))

    def load(self) -> ScoreSample:
        """The whole file as an in-memory `ScoreSample`."""
        f = self._handle()
        return ScoreSample(*(f[name][()] for name in _FIELDS))

    def save(self, path: str | os.PathLike, meta: dict | None = None) -> None:
        """Write the scores to `path` with `meta` (JSON-serialisable), as `ScoreSample.save`
        does, without holding them in memory: the file's own path keeps its rows and gets
        `meta`; another `.h5`/`.hdf5` is a copy (written atomically); a `.npz` is written
        from the loaded sample."""
        import h5py

        path = Path(path)
        if path.suffix not in _H5_SUFFIXES:
            self.load().save(path, meta)
            return
        self.close()
        same = path.exists() and path.resolve() == self.path.resolve()
        target = path if same else path.with_name(path.name + ".tmp")
        if not same:
            shutil.copyfile(self.path, target)
        with h5py.File(target, "r+") as f:
            f.attrs["meta"] = json.dumps(meta or {})
        if same:
            self.meta = meta or {}
        else:
            os.replace(target, path)

    def close(self) -> None:
        """Close the file handle (it reopens on the next read)."""
        if self._file is not None:
            self._file.close()
            self._file = None
            self._maps = {}

    def __repr__(self) -> str:
        return f"ScoreFile({str(self.path)!r}, n={self._n}, dtype={self._dtype})"


def load_scores(path: str | os.PathLike, in_memory: bool | None = None):
    """Scores from a file: in memory when they fit, else a `ScoreFile` read by batches.

    **Arguments:**

    - `path`: a `.npz` (always loaded) or `.h5`/`.hdf5` score file.
    - `in_memory`: `True` loads, `False` keeps the file on disk; `None` (default) loads
      when the data take at most a quarter of the available host memory and of each
      device's memory (`deeppot.hostdata.fits_in_memory`).

    **Returns:**

    A `ScoreSample` or a `ScoreFile`, or the `VelocityScoreSample` of an `.npz` file that
    holds one (a selection-free sample, `[scores] position = "free"`); `fit_potential`
    takes each.
    """
    if Path(path).suffix not in _H5_SUFFIXES:
        if _is_velocity_file(path):
            return VelocityScoreSample.load(path)
        return ScoreSample.load(path)
    scores = ScoreFile(path)
    if in_memory is None:
        in_memory = fits_in_memory(scores.nbytes)
    return scores.load() if in_memory else scores


def correct_selection(scores: ScoreSample, selection) -> ScoreSample:
    """Scores of the underlying DF f from those of the observed DF f_obs ∝ S(x) f.

    For a selection S(x) that depends on position only:
    ∂ln f/∂x = ∂ln f_obs/∂x − ∂ln S/∂x, ∂ln f/∂v = ∂ln f_obs/∂v, ln f = ln f_obs − ln S
    (up to a constant). The points themselves are unchanged (they follow f_obs, which is
    where the data constrain f).

    **Arguments:**

    - `scores`: a `ScoreSample` drawn from a DF trained on the selected stars.
    - `selection`: the selection function (`deeppot.selection.AbstractSelection`), in the
      same units as the scores' positions.

    **Returns:** a new `ScoreSample` with corrected `dlnf_dx` and `ln_f`.
    """
    from .selection import AbstractSelection

    if not isinstance(selection, AbstractSelection):
        raise TypeError(f"selection must be an AbstractSelection, got {type(selection).__name__}")
    log_s, grad = selection.log_selection_and_gradient(jnp.asarray(scores.x))
    dtype = scores.dlnf_dx.dtype
    return ScoreSample(scores.x, scores.v, scores.dlnf_dx - grad.astype(dtype), scores.dlnf_dv,
                       scores.ln_f - log_s.astype(scores.ln_f.dtype))


@final
class VelocityScoreSample(eqx.Module):
    """Positions, each with k velocities drawn from a conditional DF's p(·|x) and that
    factor's scores ∇ₓln p(v|x), ∇ᵥln p(v|x) there: what the selection-free term
    `deeppot.terms.ProfiledStationarity` trains on (∇ln ν is profiled out per position).
    A pytree whose arrays share the leading axis (positions), as `ScoreSample`'s do.
    """

    x: Float[Array, "n 3"]
    v: Float[Array, "n k 3"]
    dlnp_dx: Float[Array, "n k 3"]
    dlnp_dv: Float[Array, "n k 3"]

    def __init__(self, x, v, dlnp_dx, dlnp_dv):
        x = jnp.asarray(x)
        if x.ndim != 2 or x.shape[1] != 3 or x.shape[0] == 0:
            raise ValueError(f"VelocityScoreSample.x must have shape (n, 3), n > 0; got "
                             f"{x.shape}")
        arrays = [jnp.asarray(a) for a in (v, dlnp_dx, dlnp_dv)]
        for name, a in zip(("v", "dlnp_dx", "dlnp_dv"), arrays):
            if a.ndim != 3 or a.shape[0] != x.shape[0] or a.shape[2] != 3:
                raise ValueError(f"VelocityScoreSample.{name} must have shape "
                                 f"({x.shape[0]}, k, 3); got {a.shape}")
            if a.shape != arrays[0].shape:
                raise ValueError(f"VelocityScoreSample.{name} has shape {a.shape}, v has "
                                 f"{arrays[0].shape}")
        self.x = x
        self.v, self.dlnp_dx, self.dlnp_dv = arrays

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, index) -> "VelocityScoreSample":
        return jax.tree.map(lambda a: a[index], self)

    def save(self, path: str | os.PathLike, meta: dict | None = None) -> None:
        """Write the sample to a `.npz` file atomically; `meta` (JSON-serialisable) is
        kept. `load_scores` and `VelocityScoreSample.load` read it back."""
        path = Path(path)
        if path.suffix != ".npz":
            raise ValueError(f"VelocityScoreSample files are .npz; got {path.name!r}")
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, **{k: np.asarray(getattr(self, k)) for k in _VELOCITY_FIELDS},
                 meta=np.array(json.dumps(meta or {})))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "VelocityScoreSample":
        """Read a sample written by `save`."""
        arrays = _read_npz(path, _VELOCITY_FIELDS, "VelocityScoreSample")
        return cls(*arrays)


_VELOCITY_FIELDS = ("x", "v", "dlnp_dx", "dlnp_dv")


def _read_npz(path, fields, what):
    """The arrays `fields` of an `.npz` file, or a `ValueError` naming what is wrong."""
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in fields if k not in data]
            arrays = [] if missing else [data[k] for k in fields]
    except FileNotFoundError:
        raise
    except (OSError, ValueError, EOFError, NotImplementedError, RuntimeError, SyntaxError,
            tokenize.TokenError, zipfile.BadZipFile) as err:  # (a damaged .npy header)
        raise ValueError(f"score file '{path}' is corrupt or truncated "
                         f"({type(err).__name__}: {err})") from None
    if missing:
        raise ValueError(f"{path}: not a {what} file, missing {missing}")
    return arrays


def _is_velocity_file(path) -> bool:
    """Whether an `.npz` file holds a `VelocityScoreSample` (its `dlnp_dx`)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return "dlnp_dx" in data
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return False  # ScoreSample.load names the problem


def sample_velocity_scores(df, key: PRNGKeyArray, x: Float[Array, "n 3"], k: int = 8
                           ) -> VelocityScoreSample:
    """Draw `k` velocities from a conditional DF's p(·|x) at each position of `x` (a
    catalogue's own positions: a selected survey's positions are data) with the velocity
    factor's scores there.

    **Arguments:**

    - `df`: a conditional DF (`deeppot.flows.AbstractConditionalDF`).
    - `key`: a typed key.
    - `x`: positions, shape `(n, 3)`.
    - `k`: velocities per position (at least 4: three are used up by ∇ln ν).

    **Returns:** a `VelocityScoreSample`.
    """
    from .flows import AbstractConditionalDF

    if not isinstance(df, AbstractConditionalDF):
        raise TypeError(f"velocity scores need a conditional DF (f = ν(x) p(v|x)); got "
                        f"{type(df).__name__}")
    if int(k) < 4:
        raise ValueError(f"k must be at least 4 velocities per position; got {k}")
    x = jnp.asarray(x)
    v = df.sample_velocities(key, x, int(k))
    dx, dv = df.velocity_scores(jnp.broadcast_to(x[:, None, :], v.shape), v)
    return VelocityScoreSample(x, v, dx, dv)


@eqx.filter_jit
def _sample_score_sharded(df, keys, m: int, mesh):
    """One chunk of `m` points per device: device i draws with `keys[i]` exactly what
    `df.sample_and_score(keys[i], m)` draws on one device."""
    params, static = eqx.partition(df, eqx.is_array)

    def per_device(p, k):
        return eqx.combine(p, static).sample_and_score(k[0], m)

    # check_vma off: flowjax's scans start from unvarying carries
    sharded = jax.shard_map(per_device, mesh=mesh, in_specs=(PartitionSpec(), PartitionSpec(
        DATA_AXIS)), out_specs=PartitionSpec(DATA_AXIS), check_vma=False)
    return sharded(params, keys)


def sample_scores(
    df,
    key: PRNGKeyArray,
    n: int,
    chunk_size: int = 2**14,
    progress: bool = False,
    selection=None,
    *,
    devices: Devices = None,
    path: str | os.PathLike | None = None,
):
    """Draw `n` points from a distribution function and evaluate its scores there.

    Works chunk by chunk so that 2^20 points and more fit in memory. The points depend on
    `key`, `n` and `chunk_size` only: not on the devices, and not on `path`.

    **Arguments:**

    - `df`: a distribution function (`deeppot.flows.AbstractDF`).
    - `key`: a typed PRNG key.
    - `n`: number of points.
    - `chunk_size`: points drawn and differentiated at a time (per device).
    - `progress`: show a progress bar.
    - `selection`: the known selection function S(x) of the stars the DF was trained on
      (`deeppot.selection.AbstractSelection`); the scores are then those of the
      underlying DF (see `correct_selection`).
    - `devices`: data parallelism as in `fit` (`deeppot.sharding.data_mesh`): by default
      every device draws its own chunks (a device count's worth at a time); `1` draws on
      one device.
    - `path`: an `.h5`/`.hdf5` file to stream the chunks into as they are drawn (written
      atomically), so that memory stays bounded by a chunk per device whatever `n` is.

    **Returns:** a `ScoreSample` of n rows in memory, or with `path` a `ScoreFile` over the
    file.
    """
    if n < 1 or chunk_size < 1:
        raise ValueError(f"n and chunk_size must be positive, got {n=}, {chunk_size=}")
    if path is not None and Path(path).suffix not in _H5_SUFFIXES:
        raise ValueError(f"sample_scores streams into .h5 or .hdf5 files; got {str(path)!r}")
    mesh = data_mesh(devices)
    sizes = [chunk_size] * (n // chunk_size) + ([n % chunk_size] if n % chunk_size else [])
    keys = jax.random.split(key, len(sizes))
    # groups of chunks drawn together: one per device (the last padded by repeating its
    # last key, and its extra rows dropped); a shorter final chunk alone
    per = 1 if mesh is None else mesh.size
    n_full = n // chunk_size
    groups = [(i, min(per, n_full - i), chunk_size) for i in range(0, n_full, per)]
    if n % chunk_size:
        groups.append((n_full, 1, n % chunk_size))
    iterator = groups
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(groups, desc="scores", unit="group" if per > 1 else "chunk")

    def draw(first, count, m):
        if mesh is None or m != chunk_size:
            out = df.sample_and_score(keys[first], m)
        else:
            idx = np.minimum(np.arange(first, first + per), first + count - 1)
            out = _sample_score_sharded(df, keys[idx], m, mesh)
        w, ln_f, dx, dv = (to_host(a)[: count * m] for a in out)
        parts = w[:, :3], w[:, 3:], dx, dv, ln_f
        if selection is not None:  # chunk by chunk, so that streaming stays bounded
            corrected = correct_selection(ScoreSample(*parts), selection)
            parts = tuple(np.asarray(getattr(corrected, k)) for k in _FIELDS)
        return parts

    if path is None:
        chunks = [draw(*g) for g in iterator]
        return ScoreSample(*(np.concatenate(parts) for parts in zip(*chunks)))
    writer = None  # with several processes, process 0 writes the file
    try:
        start = 0
        for g in iterator:
            parts = draw(*g)
            if writer is None and is_main_process():
                writer = _ScoreWriter(path, n, parts[0].dtype)
            if writer is not None:
                writer.write(start, *parts)
            start += len(parts[0])
    except BaseException:
        if writer is not None:
            writer.close(success=False)
        raise
    if writer is not None:
        writer.close(success=True)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f"deeppot.sample_scores wrote {path}")
    return ScoreFile(path)
