"""Helpers shared by the benchmark scripts: timing, machine description, output."""

import json
import os
import platform
import statistics
import time
from pathlib import Path

import jax

RESULTS = Path(__file__).parent / "results"


def time_call(fn, *args, repeats: int = 5):
    """Wall-clock times (ms) of `fn(*args)` after one warm-up call, blocking on results."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(1e3 * (time.perf_counter() - t0))
    return times


def summary(times):
    return {"median_ms": statistics.median(times), "min_ms": min(times), "n": len(times)}


def machine():
    dev = jax.devices()[0]
    return {
        "device": f"{dev.platform}:{dev.device_kind}",
        "n_devices": jax.device_count(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "machine": platform.machine(),
    }


def write_results(name: str, payload: dict, table: str) -> Path:
    RESULTS.mkdir(exist_ok=True)
    stem = f"{name}_{payload['machine']['device'].split(':')[0]}"
    path = RESULTS / f"{stem}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    (RESULTS / f"{stem}.md").write_text(table + "\n")
    return path
