"""Data parallelism over devices through JAX's own runtime (`jax.sharding`).

One concept, one place: `fit` (so `fit_df` and `fit_potential`) and `sample_scores` take a
`devices` option and turn it into a one-axis `Mesh` with `data_mesh`. Parameters and the
in-memory data are replicated on every device of the mesh; each batch is split over the
devices along its leading axis (the mesh axis `DATA_AXIS`), and XLA inserts the all-reduce
of the loss and the gradients. Results equal those of one device up to the order of
floating-point reductions. A single device gives `None`: the unsharded code path, unchanged.

Several processes (one per host) join with `jax.distributed.initialize()` before any other
JAX call; `jax.devices()` then lists every process's devices and the default mesh spans
them all. See `docs/devices.md`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["DATA_AXIS", "Devices", "batch_sharding", "data_mesh", "initialize_distributed",
           "is_main_process", "replicate", "same_on_all_processes", "to_host"]

DATA_AXIS = "data"  # the name of the mesh axis that batches are split over

# what the `devices` option of `fit` and `sample_scores` accepts
Devices = int | Sequence[jax.Device] | Mesh | None


def data_mesh(devices: Devices = None) -> Mesh | None:
    """The one-axis device mesh that batches are sharded over, or `None` for one device.

    **Arguments:**

    - `devices`: `None` (the default): every device JAX sees (`jax.devices()`, all
      processes' devices after `jax.distributed.initialize()`); an int `k`: the first `k`
      of them (`1` turns sharding off); a sequence of devices; or a `Mesh` whose axes are
      `(DATA_AXIS,)`.

    **Returns:**

    A `Mesh` with the single axis `DATA_AXIS`, or `None` when it would hold one device.

    **Raises:**

    `ValueError` for a count outside `1..jax.device_count()`, an empty or repeated device
    list, a mesh with other axes, or (with several processes) a mesh that leaves out a
    process's devices.
    """
    if isinstance(devices, Mesh):
        if tuple(devices.axis_names) != (DATA_AXIS,):
            raise ValueError(f"a mesh for data parallelism has the one axis {DATA_AXIS!r}; "
                             f"got axes {tuple(devices.axis_names)}")
        mesh = devices
    else:
        available = jax.devices()
        if devices is None:
            chosen = available
        elif isinstance(devices, (int, np.integer)) and not isinstance(devices, bool):
            if not 1 <= devices <= len(available):
                raise ValueError(f"devices must be between 1 and the {len(available)} "
                                 f"device(s) JAX sees; got {devices}")
            chosen = available[: int(devices)]
        elif isinstance(devices, Sequence) and not isinstance(devices, str):
            chosen = list(devices)
            if not chosen or not all(isinstance(d, jax.Device) for d in chosen):
                raise ValueError("devices must be None, an int, a non-empty sequence of "
                                 "jax devices or a Mesh")
            if len(set(chosen)) != len(chosen):
                raise ValueError(f"devices lists a device twice: {chosen}")
        else:
            raise TypeError("devices must be None, an int, a sequence of jax devices or a "
                            f"Mesh; got {type(devices).__name__}")
        mesh = Mesh(np.array(chosen), (DATA_AXIS,))
    if jax.process_count() > 1:
        procs = {d.process_index for d in mesh.devices.flat}
        if len(procs) != jax.process_count():
            raise ValueError(f"with {jax.process_count()} processes the mesh must hold "
                             "devices of every process (use devices=None)")
    if mesh.devices.size == 1:
        return None
    return mesh


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading axis split over the mesh's devices, other axes whole."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicate(tree, mesh: Mesh):
    """Copy every array leaf of `tree` onto every device of `mesh`.

    With one process this is `jax.device_put`; with several, each process must hold the
    same values (parameters built from the same key, data read from the same file), and
    each leaf is assembled from this process's copy without a cross-process check.

    **Arguments:**

    - `tree`: a pytree; leaves that are not arrays are left alone.
    - `mesh`: the mesh from `data_mesh`.

    **Returns:**

    The same pytree with its arrays replicated over `mesh`.
    """
    sharding = NamedSharding(mesh, PartitionSpec())

    def put(x):
        if not isinstance(x, (jax.Array, np.ndarray)):
            return x
        if jax.process_count() == 1:
            return jax.device_put(x, sharding)
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return jax.device_put(x, sharding)  # already global
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            impl = jax.random.key_impl(x)
            data = replicate(jax.random.key_data(x), mesh)
            return jax.random.wrap_key_data(data, impl=impl)
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(put, tree)


def to_host(x) -> np.ndarray:
    """A (possibly sharded, possibly multi-process) array as one NumPy array on this host."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        if x.is_fully_replicated:
            return np.asarray(x.addressable_data(0))
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def is_main_process() -> bool:
    """Whether this is process 0 (the one that writes files when several processes run)."""
    return jax.process_index() == 0


def same_on_all_processes(value: int, what: str) -> None:
    """Raise `ValueError` naming `what` unless every process holds the same integer
    `value` (a no-op with one process)."""
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils

    values = np.asarray(multihost_utils.process_allgather(np.asarray([value], np.int64)))
    if len(set(values.ravel().tolist())) != 1:
        raise ValueError(f"processes disagree on {what}: {values.ravel().tolist()}")


ENV_VARS = ("DEEPPOT_COORDINATOR", "DEEPPOT_NUM_PROCESSES", "DEEPPOT_PROCESS_ID")


def initialize_distributed(env: Mapping[str, str] | None = None, *,
                           coordinator: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None) -> int:
    """Join a run of several processes (one per host) with `jax.distributed.initialize`.

    Call it first, before any JAX computation, in every process (the pipeline does, for
    `[run] coordinator`). The coordinator's `host:port` (process 0's, reachable from every
    host), the number of processes and this process's index are the arguments when given;
    else the environment variables `DEEPPOT_COORDINATOR`, `DEEPPOT_NUM_PROCESSES` and
    `DEEPPOT_PROCESS_ID` when set; without either JAX detects the run itself (Slurm, Open
    MPI, Kubernetes, Cloud TPU) and fails elsewhere. Then `jax.devices()` lists every
    process's devices, and `fit` and `sample_scores` shard over all of them by default.
    A process that has joined already is left as it is.

    **Arguments:**

    - `env`: the environment to read (default `os.environ`).
    - `coordinator`, `num_processes`, `process_id`: the run, all three or none.

    **Returns:**

    This process's index.

    **Raises:**

    `ValueError` if only some of the three (arguments or variables) are given, they are not
    integers, or the index is not below the number of processes.
    """
    if jax.distributed.is_initialized():
        return jax.process_index()
    args = (coordinator, num_processes, process_id)
    if any(a is not None for a in args):
        if any(a is None for a in args):
            raise ValueError("give coordinator, num_processes and process_id together; got "
                             f"{coordinator=}, {num_processes=}, {process_id=}")
    else:
        env = os.environ if env is None else env
        given = [k for k in ENV_VARS if env.get(k)]
        if given and len(given) != len(ENV_VARS):
            missing = [k for k in ENV_VARS if k not in given]
            raise ValueError(f"set all of {', '.join(ENV_VARS)} or none; missing {missing}")
        if not given:
            jax.distributed.initialize()
            return jax.process_index()
        try:
            coordinator = env["DEEPPOT_COORDINATOR"]
            num_processes = int(env["DEEPPOT_NUM_PROCESSES"])
            process_id = int(env["DEEPPOT_PROCESS_ID"])
        except ValueError:
            raise ValueError("DEEPPOT_NUM_PROCESSES and DEEPPOT_PROCESS_ID must be integers; "
                             f"got {env['DEEPPOT_NUM_PROCESSES']!r}, "
                             f"{env['DEEPPOT_PROCESS_ID']!r}") from None
    if not 0 <= process_id < num_processes:
        raise ValueError(f"the process index must be in [0, {num_processes}); got {process_id}")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id)
    return jax.process_index()
