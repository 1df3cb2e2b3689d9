"""The potential training step exactly as `fit_potential` runs it, against the matmul floor.

For the paper's 4×512 tanh `NeuralPotential` in an inertial frame, each row times

- `fields`: Φ, ∇Φ, ∇²Φ at a batch (`dp.value_grad_laplacian` by the row's method);
- `step`: the jitted training step of `fit_potential` — built by `dp.train.make_train_step`
  from `dp.train.potential_loss_fn(loss)`, i.e. the same loss terms (default: the paper's
  `Log(Stationarity() + PositiveDensity()) + L2Weights(0.1)`), batch gather from the
  training sample, gradient, global-norm clipping at 1, RAdam and the finite-check;

and, in the same loop, the three matrix products one hidden layer of the step does
((5n × 512) @ (512 × 512) twice, forward and input gradient, and the (512 × 5n) @ (5n × 512)
weight gradient). The floor is the step's matmul work (3 hidden layers × those three
products) at the measured rate; `step / floor` says how close the step is to it.
Methods and timings are interleaved so that load drift hits all alike; each row is printed
as soon as it is measured. Machine, device, dtype and matmul precision are recorded.

    python -m benchmarks.bench_laplacian                 # 2^10, 2^12, 2^14; forward + hessian
    python -m benchmarks.bench_laplacian --quick         # 2^12 forward only, < 60 s
    python -m benchmarks.bench_laplacian --batches 14 --methods forward --repeats 7

On a GPU it runs in full float32 (`jax.default_matmul_precision("highest")`) by default;
`--tf32` adds a run with TF32 matmuls, reported separately.
"""

import time

import equinox as eqx
import jax
import jax.numpy as jnp

import deeppot as dp

from . import _harness as harness
from ._step import DEPTH, ROWS, WIDTH, fit_potential_step, matmul_floor_fns, scores, step_flops


def temp_bytes(fn, *args):
    try:
        kwargs = getattr(fn, "keywords", {})  # make_train_step's step is a partial
        compiled = getattr(fn, "func", fn).lower(*args, **kwargs).compile()
        compiled = getattr(compiled, "compiled", compiled)  # equinox wraps jax's Compiled
        return int(compiled.memory_analysis().temp_size_in_bytes)
    except Exception:  # memory analysis is not available on every backend
        return None


def run_batch(log2, methods, repeats, precision, emit):
    n = 2**log2
    data = scores(jax.random.key(log2), 4 * n)
    x = data.x[:n]
    pot = dp.NeuralPotential(key=jax.random.key(0), width=WIDTH, depth=DEPTH, features=("x",))
    calls = {}
    for m in methods:
        model = dp.PotentialModel(pot, laplacian_method=m)
        calls[f"fields/{m}"] = (eqx.filter_jit(dp.value_grad_laplacian), (pot, x, m))
        calls[f"step/{m}"] = fit_potential_step(model, data, n)
    calls.update(matmul_floor_fns(n))
    t = harness.interleaved(calls, repeats)
    compile_s, wall, cpu = t["first_call_s"], t["wall_ms"], t["cpu_ms"]
    mm_flops = 2 * ROWS * n * WIDTH * WIDTH
    t_fwd = harness.summary(wall["matmul_fwd"])["min_ms"]
    t_wgrad = harness.summary(wall["matmul_wgrad"])["min_ms"]
    floor_ms = (DEPTH - 1) * (2 * t_fwd + t_wgrad)
    rows = []
    for m in methods:
        s = harness.summary(wall[f"step/{m}"])
        fields = harness.summary(wall[f"fields/{m}"])
        row = {
            "batch": n,
            "method": m,
            "precision": precision,
            "fields": fields,
            "step": s,
            "step_cpu_min_ms": min(cpu[f"step/{m}"]),
            "step_compile_s": compile_s[f"step/{m}"],
            "step_gflops": step_flops(n) / (s["min_ms"] * 1e-3) / 1e9,
            "matmul_fwd_gflops": mm_flops / (t_fwd * 1e-3) / 1e9,
            "matmul_wgrad_gflops": mm_flops / (t_wgrad * 1e-3) / 1e9,
            "floor_ms": floor_ms,
            "step_over_floor": s["min_ms"] / floor_ms,
            "step_temp_bytes": temp_bytes(calls[f"step/{m}"][0], *calls[f"step/{m}"][1]),
        }
        rows.append(row)
        emit(row)
    return rows


HEAD = (
    "| batch | method | precision | fields median ms | fields min ms | step median ms "
    "| step min ms | step CPU-min ms | step GFLOP/s | matmul GFLOP/s (fwd / wgrad) "
    "| floor ms | step / floor | temp MiB |\n" + "|" + "---|" * 13
)


def line(r):
    mib = "" if r["step_temp_bytes"] is None else f"{r['step_temp_bytes'] / 2**20:.0f}"
    return (
        f"| 2^{r['batch'].bit_length() - 1} | {r['method']} | {r['precision']} "
        f"| {r['fields']['median_ms']:.1f} | {r['fields']['min_ms']:.1f} "
        f"| {r['step']['median_ms']:.1f} | {r['step']['min_ms']:.1f} "
        f"| {r['step_cpu_min_ms']:.0f} | {r['step_gflops']:.0f} "
        f"| {r['matmul_fwd_gflops']:.0f} / {r['matmul_wgrad_gflops']:.0f} "
        f"| {r['floor_ms']:.1f} | {r['step_over_floor']:.2f} | {mib} |"
    )


def main(argv=None):
    parser = harness.parser(__doc__, __file__)
    parser.add_argument("--batches", type=int, nargs="+", default=[10, 12, 14])
    parser.add_argument("--methods", nargs="+", default=["forward", "hessian"],
                        choices=["forward", "hessian", "hvp"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tf32", action="store_true", help="also run with TF32 matmuls")
    parser.add_argument("--quick", action="store_true",
                        help="2^12, forward only, 3 repeats (under a minute with compilation)")
    parser.add_argument("--name", default="laplacian", help="results file stem")
    args = parser.parse_args(argv)
    if args.quick:
        args.batches, args.methods, args.repeats = [12], ["forward"], 3
    precisions = ["highest"] + (["tensorfloat32"] if args.tf32 else [])
    info = harness.machine() | {"dtype": str(jnp.zeros(()).dtype), "width": WIDTH, "depth": DEPTH,
                        "precisions": precisions, "loss": "fit_potential default (paper Eq. 13)"}
    print(f"training step of fit_potential, {info['device']}, {info['cpu_count']} CPUs, "
          f"jax {info['jax']}, 4x512 tanh MLP, {info['dtype']}", flush=True)
    print(HEAD, flush=True)
    rows = []
    t0 = time.perf_counter()
    for precision in precisions:
        with jax.default_matmul_precision(precision):
            for log2 in args.batches:
                rows += run_batch(log2, args.methods, args.repeats, precision,
                                  lambda r: print(line(r), flush=True))
    info["total_s"] = time.perf_counter() - t0
    text = (
        f"Training step of `fit_potential` (`dp.train.make_train_step`), {info['device']}, "
        f"{info['cpu_count']} CPUs, jax {info['jax']}, 4x512 tanh MLP, {info['dtype']}\n\n"
        f"    {harness.command(__file__, argv)}\n\n" + HEAD + "\n"
        + "\n".join(line(r) for r in rows)
    )
    path = harness.write_results(f"{args.name}_{harness.device_platform(info)}",
                                 {"machine": info, "rows": rows,
                                  "argv": harness.invocation(__file__, argv)}, text)
    print(f"\n{info['total_s']:.0f} s; wrote {path}", flush=True)


if __name__ == "__main__":
    main()
