"""The one harness every benchmark uses: where results go, how they are written, how calls
are timed, how a script names its own command and runs itself in a child process.

- Results: `RESULTS` (`benchmarks/results/`); `write_results(stem, payload, table)` writes
  `<stem>.json` (and `<stem>.md` when there is a table), `append_rows(name, rows)` appends
  JSON lines. `device_platform()` is the `cpu` / `gpu` suffix of device-tagged stems.
- Timing: `cpu_seconds()` (user + system time of every thread of this process), `timed`
  (one blocking call: wall and CPU ms), `interleaved` (the protocol: one first call per
  function, compilation included, then `warmup` more, then `repeats` rounds that call every
  function once each, so that load drift on a shared machine hits all alike),
  `summary` (median and min), `Stage` (wall and CPU seconds of a block).
- Commands: `command(__file__)` is the `python -m benchmarks.<name> ...` line a script
  records; `parser(__doc__, __file__)` its argument parser (the docstring's first line
  above the options, the rest below); `run_child(__file__, args)` runs it again as a child
  process (for a peak memory or a device count of its own) and returns the child's last
  JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
CONFIGS = HERE / "configs"


# ---------------------------------------------------------------- commands and options


def module_name(file: str) -> str:
    """`benchmarks.<name>` of a benchmark script's `__file__`."""
    return f"{HERE.name}.{Path(file).stem}"


def invocation(file: str, argv: list[str] | None = None) -> list[str]:
    """`["-m", "benchmarks.<name>", *argv]`; `argv` defaults to this process's arguments."""
    return ["-m", module_name(file), *(sys.argv[1:] if argv is None else argv)]


def command(file: str, argv: list[str] | None = None) -> str:
    """The command line that reruns the script, as the results record it."""
    return " ".join(["python", *invocation(file, argv)])


def parser(doc: str, file: str) -> argparse.ArgumentParser:
    """The argument parser of the script `file` (its `__file__`), described by its
    docstring `doc`: the first line above the options, the rest below them."""
    first, _, rest = doc.strip().partition("\n")
    return argparse.ArgumentParser(prog=f"python -m {module_name(file)}", description=first,
                                   epilog=rest.strip() or None,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


class ChildFailed(RuntimeError):
    """A child process of a benchmark exited with an error; `stderr` is its output."""

    def __init__(self, module: str, stderr: str):
        super().__init__(f"{module} failed:\n{stderr[-3000:]}")
        self.stderr = stderr


def run_child(file: str, args: list[str], env: dict | None = None) -> dict:
    """Run `python -m benchmarks.<name> *args` in a new process (environment `env`, default
    this one's, with the repository root on `PYTHONPATH`) and return its last stdout line,
    a JSON object. Raises `ChildFailed` if it exits with an error."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, *invocation(file, args)], env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise ChildFailed(module_name(file), proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- the machine


def machine() -> dict:
    """The device JAX computes on and the software that runs it."""
    import jax

    dev = jax.devices()[0]
    return {
        "device": f"{dev.platform}:{dev.device_kind}",
        "n_devices": jax.device_count(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "machine": platform.machine(),
    }


def device_platform(info: dict | None = None) -> str:
    """`cpu`, `gpu`, ...: the platform of `machine()`'s device (of `info` if given)."""
    return (info or machine())["device"].split(":")[0]


# ---------------------------------------------------------------- timing


def cpu_seconds() -> float:
    """User + system CPU time of this process (all threads) so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, MiB (Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn, *args) -> tuple[float, float]:
    """(wall ms, process CPU ms) of one call, blocking until its results are ready."""
    import jax

    c0, t0 = cpu_seconds(), time.perf_counter()
    jax.block_until_ready(fn(*args))
    return 1e3 * (time.perf_counter() - t0), 1e3 * (cpu_seconds() - c0)


def interleaved(calls: dict, repeats: int, warmup: int = 0) -> dict:
    """Time `calls` (`name -> (fn, args)`) by the benchmarks' protocol.

    Each function is called once (`first_call_s`: compilation included) and `warmup` more
    times; then `repeats` rounds each call every function once, in order.

    **Returns:** `{"first_call_s": {name: s}, "wall_ms": {name: [ms, ...]},
    "cpu_ms": {name: [ms, ...]}}`.
    """
    import jax

    first = {}
    for name, (fn, args) in calls.items():
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        first[name] = time.perf_counter() - t0
        for _ in range(warmup):
            jax.block_until_ready(fn(*args))
    wall = {name: [] for name in calls}
    cpu = {name: [] for name in calls}
    for _ in range(repeats):
        for name, (fn, args) in calls.items():
            w, c = timed(fn, *args)
            wall[name].append(w)
            cpu[name].append(c)
    return {"first_call_s": first, "wall_ms": wall, "cpu_ms": cpu}


def time_call(fn, *args, repeats: int = 5) -> list[float]:
    """Wall-clock times (ms) of `fn(*args)` after one warm-up call (`interleaved` of one)."""
    return interleaved({"call": (fn, args)}, repeats)["wall_ms"]["call"]


def summary(times) -> dict:
    return {"median_ms": statistics.median(times), "min_ms": min(times), "n": len(times)}


class Stage:
    """Wall and CPU seconds of a block: `with Stage() as st: ...`, then `st.wall`, `st.cpu`
    or `st.info()` (both to 0.1 s)."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), cpu_seconds()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall
        self.cpu = cpu_seconds() - self.cpu

    def info(self) -> dict:
        return {"wall_s": round(self.wall, 1), "cpu_s": round(self.cpu, 1)}


# ---------------------------------------------------------------- results


def write_results(stem: str, payload: dict, table: str | None = None, *,
                  default=None) -> Path:
    """Write `RESULTS/<stem>.json` (and `RESULTS/<stem>.md`, the table, if given).

    **Arguments:**

    - `stem`: the file name without suffix.
    - `payload`: the JSON object.
    - `table`: the markdown text.
    - `default`: `json.dumps`'s conversion of values it does not know.

    **Returns:** the JSON file's path.
    """
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{stem}.json"
    path.write_text(json.dumps(payload, indent=2, default=default) + "\n")
    if table is not None:
        (RESULTS / f"{stem}.md").write_text(table + "\n")
    return path


def markdown_table(columns: list[str], rows) -> str:
    """A Markdown table: a header of `columns`, then a line per row of cells (strings)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in rows])


def append_rows(name: str, rows: list[dict]) -> Path:
    """Append `rows` as JSON lines to `RESULTS/<name>`, printing each."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / name
    with open(path, "a") as f:
        for row in rows:
            print(json.dumps(row), flush=True)
            f.write(json.dumps(row) + "\n")
    return path
