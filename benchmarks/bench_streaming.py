"""Scores at scale: 2^24 scores streamed to HDF5 in bounded memory, and a potential fit that
reads them back a batch at a time.

Each phase runs in its own process, so that its peak resident memory (`ru_maxrss`) is its
own; rows are printed as they are measured.

- `write`: `sample_scores(PlummerDF, key, n, chunk_size, path=...)` (exact scores of the
  analytic Plummer DF: the point is the pipeline's memory, not the DF) against the size
  the same scores would take in memory.
- `read`: `ScoreFile.take` of random batches (the host read of one training step).
- `fit`: `fit_potential` from the `ScoreFile` (streamed batches) and, for comparison, from
  an in-memory `ScoreSample` of 2^20 of the rows: time per step and peak memory.

    python -m benchmarks.bench_streaming                  # 2^24 scores
    python -m benchmarks.bench_streaming --log2-n 20      # smaller
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from . import _harness as harness
from ._harness import cpu_seconds, peak_rss_mib


def phase_write(args) -> dict:
    import jax

    import deeppot as dp

    df = dp.flows.PlummerDF(r_max=10.0)
    path = Path(args.dir) / "scores.h5"
    dp.sample_scores(df, jax.random.key(0), 2 * args.chunk, chunk_size=args.chunk,
                     path=Path(args.dir) / "warm.h5")  # compiles
    rss_before = peak_rss_mib()
    c0, t0 = cpu_seconds(), time.perf_counter()
    out = dp.sample_scores(df, jax.random.key(1), 2**args.log2_n, chunk_size=args.chunk,
                           path=path)
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    return {"phase": "write", "n": len(out), "chunk": args.chunk, "wall_s": wall,
            "cpu_s": cpu, "file_mib": path.stat().st_size / 2**20,
            "in_memory_mib": out.nbytes / 2**20, "rss_before_mib": rss_before,
            "peak_rss_mib": peak_rss_mib()}


def phase_read(args) -> dict:
    import numpy as np

    import deeppot as dp

    scores = dp.ScoreFile(Path(args.dir) / "scores.h5")
    rng = np.random.default_rng(0)
    times = []
    for _ in range(args.reads):
        rows = rng.integers(0, len(scores), args.batch)
        t0 = time.perf_counter()
        scores.take(rows)
        times.append(time.perf_counter() - t0)
    return {"phase": "read", "n": len(scores), "batch": args.batch,
            "median_ms": 1e3 * float(np.median(times)), "min_ms": 1e3 * min(times),
            "peak_rss_mib": peak_rss_mib()}


def phase_fit(args) -> dict:
    import jax

    import deeppot as dp

    scores = dp.ScoreFile(Path(args.dir) / "scores.h5")
    if args.in_memory:  # the first 2^20 rows, in memory
        import numpy as np

        data = scores.take(np.arange(min(2**20, len(scores))))
    else:
        data = scores
    model = dp.PotentialModel(dp.NeuralPotential(key=jax.random.key(2), width=args.width,
                                                 depth=args.depth))
    kw = dict(key=jax.random.key(3), batch_size=args.batch, progress=False)
    c0, t0 = cpu_seconds(), time.perf_counter()
    _, short = dp.fit_potential(model, data, max_steps=11, return_history=True, **kw)
    t_short, c_short = time.perf_counter() - t0, cpu_seconds() - c0
    c0, t0 = cpu_seconds(), time.perf_counter()
    _, hist = dp.fit_potential(model, data, max_steps=11 + args.steps, return_history=True,
                               **kw)
    t_long, c_long = time.perf_counter() - t0, cpu_seconds() - c0
    return {"phase": "fit", "source": "memory (2^20 rows)" if args.in_memory else
            f"ScoreFile ({len(scores)} rows)", "batch": args.batch,
            "model": f"{args.depth}x{args.width} tanh",
            # each fit call compiles anew: the difference is the time of the extra steps
            "step_ms": 1e3 * (t_long - t_short) / args.steps,
            "step_cpu_ms": 1e3 * (c_long - c_short) / args.steps,
            "final_train_loss": hist.train_loss[-1], "peak_rss_mib": peak_rss_mib()}


PHASES = {"write": phase_write, "read": phase_read, "fit": phase_fit}


def main(argv=None):
    p = harness.parser(__doc__, __file__)
    p.add_argument("--log2-n", type=int, default=24)
    p.add_argument("--chunk", type=int, default=2**16, help="sample_scores chunk size")
    p.add_argument("--batch", type=int, default=2048)
    p.add_argument("--reads", type=int, default=50)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--dir", default=None, help="where the HDF5 file goes (default: a temp dir)")
    p.add_argument("--phase", choices=list(PHASES), default=None, help=argparse.SUPPRESS)
    p.add_argument("--in-memory", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.phase is not None:
        print(json.dumps(PHASES[args.phase](args)), flush=True)
        return

    tmp = tempfile.TemporaryDirectory(prefix="deeppot-stream-", dir=args.dir)
    base = ["--dir", tmp.name, "--log2-n", str(args.log2_n),
            "--chunk", str(args.chunk), "--batch", str(args.batch), "--reads",
            str(args.reads), "--steps", str(args.steps), "--width", str(args.width),
            "--depth", str(args.depth)]
    rows = []
    for extra in (["--phase", "write"], ["--phase", "read"], ["--phase", "fit"],
                  ["--phase", "fit", "--in-memory"]):
        try:
            rows.append(harness.run_child(__file__, base + extra))
        except harness.ChildFailed as e:
            print(f"{' '.join(extra)} failed:\n{e.stderr[-3000:]}", flush=True)
            continue
        print(json.dumps(rows[-1]), flush=True)
    if not rows:
        raise SystemExit("every phase failed")
    info = harness.machine()
    command = harness.command(__file__, argv)
    lines = [f"# Streaming scores ({info['device']}, {info['cpu_count']} CPU cores, shared "
             f"machine, load {os.getloadavg()[0]:.0f})", "", f"    {command}", "",
             "| phase | what | wall | CPU | peak RSS |", "|---|---|---|---|---|"]
    for r in rows:
        if r["phase"] == "write":
            lines.append(f"| write | 2^{args.log2_n} Plummer scores to HDF5 in chunks of "
                         f"{r['chunk']} ({r['file_mib']:.0f} MiB file; "
                         f"{r['in_memory_mib']:.0f} MiB in memory) | {r['wall_s']:.0f} s | "
                         f"{r['cpu_s']:.0f} s | {r['peak_rss_mib']:.0f} MiB (before: "
                         f"{r['rss_before_mib']:.0f}) |")
        elif r["phase"] == "read":
            lines.append(f"| read | `ScoreFile.take` of {r['batch']} random rows (median "
                         f"of {args.reads}; min {r['min_ms']:.1f} ms) | {r['median_ms']:.1f} "
                         f"ms | | {r['peak_rss_mib']:.0f} MiB |")
        else:
            lines.append(f"| fit | `fit_potential` from {r['source']}, {r['model']}, batch "
                         f"{r['batch']}, per step | {r['step_ms']:.0f} ms | "
                         f"{r['step_cpu_ms']:.0f} ms | {r['peak_rss_mib']:.0f} MiB |")
    text = "\n".join(lines)
    print(text, flush=True)
    harness.write_results(f"streaming_{harness.device_platform(info)}",
                          {"command": command, "machine": info, "rows": rows}, text)


if __name__ == "__main__":
    main()
