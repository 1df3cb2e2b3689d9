"""Training data that stays on the host: `fit` gathers each random batch from it.

`fit` trains from a pytree of arrays held in (device) memory by default. When the data do
not fit there, pass an `AbstractHostData` instead (e.g. a `ScoreFile` over an HDF5 file
written by `sample_scores(..., path=...)`): the same random rows are drawn (the batch
indices come from the same function, `batch_indices`), read on the host and sent to the
devices one batch at a time, the next batch read while the current step runs. A run from a
host source therefore equals the in-memory run on the same rows.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray, PyTree

__all__ = ["AbstractHostData", "HostBatches", "available_memory", "batch_indices",
           "fits_in_memory"]


def batch_indices(
    key: PRNGKeyArray,
    step: Int[Array, ""],
    batch_size: int,
    n: int,
    cdf: Float[Array, " n"] | None = None,
) -> Int[Array, " batch_size"]:
    """The rows (drawn with replacement) of training step `step`'s batch out of `n`.

    The one definition used inside `fit`'s jitted step and for host batches, so both draw
    the same rows.

    **Arguments:**

    - `key`: the batch key of the run.
    - `step`: the step number (a traced or concrete int32 scalar).
    - `batch_size`: rows per batch.
    - `n`: rows to draw from.
    - `cdf`: `None` draws rows uniformly; else the normalised cumulative sum of the rows'
      weights, and rows are drawn with probability ∝ weight.

    **Returns:**

    `batch_size` row indices in `[0, n)`.
    """
    key = jax.random.fold_in(key, step)
    if cdf is None:
        return jax.random.randint(key, (batch_size,), 0, n)
    u = jax.random.uniform(key, (batch_size,), cdf.dtype) * cdf[-1]
    return jnp.minimum(jnp.searchsorted(cdf, u, side="right"), n - 1)


_batch_indices_jit = jax.jit(batch_indices, static_argnums=(2, 3))


class AbstractHostData(abc.ABC):
    """Rows of training data kept on the host and read a batch at a time.

    Subclasses hold a leading axis of `len(self)` rows and return any subset of them as a
    pytree of NumPy arrays with `take`; `fit` accepts them in place of in-memory arrays.
    """

    @abc.abstractmethod
    def __len__(self) -> int:
        """Number of rows."""

    @abc.abstractmethod
    def take(self, rows: np.ndarray) -> PyTree[np.ndarray]:
        """The given rows (any order, repeats allowed) as a pytree of NumPy arrays.

        **Arguments:**

        - `rows`: integer row indices in `[0, len(self))`.

        **Returns:**

        A pytree (the type the loss function expects, e.g. a `ScoreSample`) whose arrays
        have leading axis `len(rows)`, in the order of `rows`.
        """

    @property
    @abc.abstractmethod
    def nbytes(self) -> int:
        """Bytes the whole data would take in memory."""


def available_memory() -> int:
    """Bytes of host memory available now (`MemAvailable`), or the total if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def fits_in_memory(nbytes: int, fraction: float = 0.25) -> bool:
    """Whether `nbytes` of data take at most `fraction` of the available host memory and of
    each local device's memory (where the backend reports it).

    **Arguments:**

    - `nbytes`: size of the data.
    - `fraction`: the share of memory the data may take (training needs the rest).

    **Returns:**

    `True` when the in-memory path is safe.
    """
    if nbytes > fraction * available_memory():
        return False
    for device in jax.local_devices():
        stats = device.memory_stats() if hasattr(device, "memory_stats") else None
        limit = (stats or {}).get("bytes_limit")
        if limit and nbytes > fraction * limit:
            return False
    return True


class HostBatches:
    """Batches of `fit` gathered on the host from some rows of an `AbstractHostData`.

    Step `s` reads rows `rows[batch_indices(key, s, batch_size, len(rows))]` (or all of
    `rows`, in order, when `whole` and there are no more than `batch_size`), places them
    with `place` and, in a background thread, already reads the batch of step
    `s + stride`.

    **Arguments:**

    - `source`: the host data.
    - `rows`: the rows of `source` this split uses (e.g. the training rows).
    - `key`: the batch key.
    - `batch_size`: rows per batch.
    - `place`: moves a host pytree to the devices (`jax.device_put` or a replication).
    - `whole`: use all rows when they are no more than `batch_size` (validation batches).
    - `stride`: the step that usually follows (for reading ahead).
    - `cdf`: draw rows ∝ weight (`batch_indices`' `cdf`, over `rows`); never `whole` then.
    """

    def __init__(self, source: AbstractHostData, rows, key: PRNGKeyArray, batch_size: int,
                 place: Callable, *, whole: bool = False, stride: int = 1, cdf=None):
        self.source = source
        self.rows = np.asarray(rows)
        self.key = key
        self.batch_size = batch_size
        self.place = place
        self.cdf = cdf
        self.whole = whole and len(self.rows) <= batch_size and cdf is None
        self.stride = stride
        self._pool = ThreadPoolExecutor(max_workers=1)
        self._ahead: dict[int, object] = {}
        self._last: tuple[int, PyTree] | None = None

    def _read(self, step: int):
        if self.whole:
            return self.source.take(self.rows)
        step_arr = np.asarray(step, np.int32)
        idx = np.asarray(_batch_indices_jit(self.key, step_arr, self.batch_size,
                                            len(self.rows), self.cdf))
        return self.source.take(self.rows[idx])

    def __call__(self, step: int) -> PyTree:
        """The placed batch of step `step`."""
        if self._last is not None and (self.whole or self._last[0] == step):
            return self._last[1]
        pending = self._ahead.pop(step, None)
        self._ahead.clear()
        host = pending.result() if pending is not None else self._read(step)
        if not self.whole:
            self._ahead[step + self.stride] = self._pool.submit(self._read, step + self.stride)
        batch = self.place(host)
        self._last = (step, batch)
        return batch

    def close(self) -> None:
        """Stop reading ahead."""
        self._ahead.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)

