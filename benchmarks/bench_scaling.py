"""Data-parallel scaling: time per training step and per 2^20 scores against device count.

Each device count runs in its own process. On CPU the devices are forced with
`XLA_FLAGS=--xla_force_host_platform_device_count=k`: they share the machine's cores, so
this shows that sharding works and what it costs, not a speed-up (on a 2-core machine 4
CPU devices cannot be faster than 1). With `--real` the process uses the first k of the
accelerators it sees (k up to `jax.device_count()`).

Per device count it measures, after a warm-up that compiles everything:

- `step`: wall and CPU time per step of `fit` as `fit_potential` runs it (the paper's
  Log(Stationarity + PositiveDensity) loss on a `NeuralPotential`, RAdam, validation every
  10 steps, loss checks), `devices=k`, over `--steps` steps;
- `scores`: `sample_scores(..., devices=k)` of an FFJORD flow (the recommended 3×256 SiLU
  vector field, Heun ×4 evaluation; untrained: the cost does not depend on the weights)
  for `--n-scores` points in chunks of `--chunk` per device, scaled to 2^20 points.

    python -m benchmarks.bench_scaling                      # CPU: 1, 2, 4 forced devices
    python -m benchmarks.bench_scaling --quick              # small sizes (smoke run)
    python -m benchmarks.bench_scaling --real --devices 1   # the accelerators themselves
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

from . import _harness as harness
from ._harness import cpu_seconds


def child(args) -> dict:
    """Measure one device count (runs in its own process)."""
    import diffrax
    import jax
    import jax.numpy as jnp

    import deeppot as dp
    from deeppot.terms import Log, PositiveDensity, Stationarity
    from deeppot.train import fit

    k = args.child
    jax.config.update("jax_compilation_cache_dir", args.cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    if k > jax.device_count():
        raise SystemExit(f"{k} devices asked for, {jax.device_count()} visible")
    row = {"devices": k, "batch": args.batch, "width": args.width, "depth": args.depth,
           "precision": args.precision, "dtype": str(jnp.zeros(()).dtype)}
    with jax.default_matmul_precision(args.precision):
        # --- the training step of fit_potential ---
        truth = dp.flows.PlummerDF(r_max=10.0)
        scores = dp.sample_scores(truth, jax.random.key(0), 4 * args.batch, devices=1)
        model = dp.PotentialModel(dp.NeuralPotential(key=jax.random.key(1), width=args.width,
                                                     depth=args.depth))
        loss = Log(Stationarity() + PositiveDensity())

        def loss_fn(m, batch, key):  # one function object: the warm-up's compilation is reused
            return loss(m, batch)

        kw = dict(key=jax.random.key(2), batch_size=args.batch, learning_rate=1e-3,
                  validate_every=10, progress=False, devices=k)

        def timed_fit(steps):
            c0, t0 = cpu_seconds(), time.perf_counter()
            fit(model, loss_fn, scores, max_steps=steps, **kw)
            return time.perf_counter() - t0, cpu_seconds() - c0

        # every `fit` call traces its step anew (its optimiser is a new object); with the
        # persistent compilation cache the XLA compilation is done once, and the
        # difference of a short and a long run is the time of the extra steps
        row["step_first_call_s"] = timed_fit(11)[0]  # compiles the step and validation
        short = timed_fit(11)
        long = timed_fit(11 + args.steps)
        row["step_ms"] = 1e3 * (long[0] - short[0]) / args.steps
        row["step_cpu_ms"] = 1e3 * (long[1] - short[1]) / args.steps

        # --- scores ---
        heun = dp.flows.ODESettings(solver=diffrax.Heun(), n_steps=4)
        flow = dp.flows.FFJORD(jax.random.key(3), width=256, depth=3, activation=jax.nn.silu,
                               ode=heun, chunk_size=args.df_chunk)
        flow = flow.standardise(jnp.concatenate([scores.x, scores.v], axis=1))
        t0 = time.perf_counter()
        dp.sample_scores(flow, jax.random.key(4), k * args.chunk, chunk_size=args.chunk,
                         devices=k)  # one chunk per device: compiles
        row["scores_compile_s"] = time.perf_counter() - t0
        c0, t0 = cpu_seconds(), time.perf_counter()
        out = dp.sample_scores(flow, jax.random.key(5), args.n_scores, chunk_size=args.chunk,
                               devices=k)
        wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
        assert len(out) == args.n_scores and bool(jnp.all(jnp.isfinite(out.dlnf_dv)))
        row["n_scores"] = args.n_scores
        row["scores_per_s"] = args.n_scores / wall
        row["s_per_2^20_scores"] = wall * 2**20 / args.n_scores
        row["cpu_s_per_2^20_scores"] = cpu * 2**20 / args.n_scores
    row["machine"] = harness.machine()
    row["load_avg"] = os.getloadavg()[0]
    return row


HEAD = ("| devices | step ms | step CPU ms | step vs 1 device | s per 2^20 scores "
        "| CPU s per 2^20 | scores vs 1 device | load |\n|" + "---|" * 8)


def line(r, base) -> str:
    return (f"| {r['devices']} | {r['step_ms']:.1f} | {r['step_cpu_ms']:.1f} "
            f"| {r['step_ms'] / base['step_ms']:.2f} | {r['s_per_2^20_scores']:.1f} "
            f"| {r['cpu_s_per_2^20_scores']:.1f} "
            f"| {r['s_per_2^20_scores'] / base['s_per_2^20_scores']:.2f} "
            f"| {r['load_avg']:.1f} |")


def main(argv=None):
    p = harness.parser(__doc__, __file__)
    p.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--real", action="store_true",
                   help="use the accelerators JAX sees instead of forced CPU devices")
    p.add_argument("--batch", type=int, default=2048, help="training batch size")
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--steps", type=int, default=50, help="timed training steps")
    p.add_argument("--n-scores", type=int, default=2**16, help="timed scores")
    p.add_argument("--chunk", type=int, default=2**12, help="sample_scores chunk (per device)")
    p.add_argument("--df-chunk", type=int, default=2**12, help="the flow's own chunk size")
    p.add_argument("--precision", default="highest", choices=["highest", "tensorfloat32"])
    p.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    p.add_argument("--name", default=None, help="results file stem (default scaling_<kind>)")
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--cache-dir", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    if args.quick:
        args.batch, args.width, args.steps = 512, 128, 20
        args.n_scores, args.chunk, args.df_chunk = 2**13, 2**10, 2**10
    if args.child is not None:
        print(json.dumps(child(args)), flush=True)
        return

    rows = []
    passthrough = [a for a in argv if a not in ("--quick",)]
    print(f"data-parallel scaling ({'accelerators' if args.real else 'forced CPU devices'}); "
          f"each row is one process", flush=True)
    print(HEAD, flush=True)
    cache = tempfile.TemporaryDirectory(prefix="deeppot-scaling-")
    for k in args.devices:
        env = dict(os.environ)
        if not args.real:
            env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={k}"
            env["JAX_PLATFORMS"] = "cpu"
        child_args = [*passthrough, "--child", str(k), "--cache-dir",
                      os.path.join(cache.name, str(k))] + (["--quick"] if args.quick else [])
        try:
            rows.append(harness.run_child(__file__, child_args, env))
        except harness.ChildFailed as e:
            print(f"| {k} | failed: {e.stderr.strip().splitlines()[-1:]} |", flush=True)
            continue
        print(line(rows[-1], rows[0]), flush=True)
    if not rows:
        raise SystemExit("no device count ran")
    info = rows[0]["machine"]
    kind = harness.device_platform(info) if args.real else "cpu_forced"
    stem = args.name or f"scaling_{kind}{'_quick' if args.quick else ''}"
    command = harness.command(__file__, argv)
    text = (
        f"# Data-parallel scaling ({'accelerators' if args.real else 'forced CPU devices'})\n\n"
        f"    {command}\n\n"
        f"{info['device']}, {info['cpu_count']} CPU cores, jax {info['jax']}, "
        f"{rows[0]['dtype']}, matmul precision {args.precision}. Training step: `fit` as "
        f"`fit_potential` runs it, {args.depth}x{args.width} tanh `NeuralPotential`, batch "
        f"{args.batch}, mean of {args.steps} steps (validation every 10). Scores: "
        f"`sample_scores` of a 3x256 SiLU FFJORD, Heun x4, {args.n_scores} points in chunks "
        f"of {args.chunk} per device, scaled to 2^20. `load` is the 1-minute load average "
        f"of the (shared) machine.\n\n" + HEAD + "\n" + "\n".join(line(r, rows[0]) for r in rows)
    )
    if not args.real:
        text += ("\n\nForced CPU devices share the same cores: the rows show that sharding "
                 "works and its overhead, not a speed-up.")
    path = harness.write_results(stem, {"command": command, "rows": rows}, text)
    print(f"\nwrote {path} and .md", flush=True)


if __name__ == "__main__":
    main()
