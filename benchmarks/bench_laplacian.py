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

    python benchmarks/bench_laplacian.py                     # 2^10, 2^12, 2^14; forward + hessian
    python benchmarks/bench_laplacian.py --quick             # 2^12 forward only, < 60 s
    python benchmarks/bench_laplacian.py --batches 14 --methods forward --repeats 7

On a GPU it runs in full float32 (`jax.default_matmul_precision("highest")`) by default;
`--tf32` adds a run with TF32 matmuls, reported separately.
"""

import argparse
import resource
import sys
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, summary, write_results  # noqa: E402

import deeppot as dp  # noqa: E402

WIDTH, DEPTH = 512, 4
ROWS = 5  # value, three Jacobian rows and the Laplacian go through every hidden layer


def _cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed(fn, *args):
    """(wall ms, process CPU ms) of one blocking call."""
    c0, t0 = _cpu_seconds(), time.perf_counter()
    jax.block_until_ready(fn(*args))
    return 1e3 * (time.perf_counter() - t0), 1e3 * (_cpu_seconds() - c0)


def scores(key, n):
    k = jax.random.split(key, 5)
    return dp.ScoreSample(
        jax.random.normal(k[0], (n, 3)),
        jax.random.normal(k[1], (n, 3)),
        1e-1 * jax.random.normal(k[2], (n, 3)),
        1e-1 * jax.random.normal(k[3], (n, 3)),
        jax.random.normal(k[4], (n,)),
    )


def fit_potential_step(model, data, batch_size, loss=None):
    """The step `fit_potential(model, data, loss)` runs, with its initial arguments."""
    step, tx = dp.train.make_train_step(dp.train.potential_loss_fn(loss), batch_size=batch_size)
    params, static = eqx.partition(model, eqx.is_inexact_array)
    args = (params, static, tx.init(params), None, data, jnp.asarray(0, jnp.int32),
            jnp.asarray(1e-3, jnp.float32), (jax.random.key(1), jax.random.key(2)))
    return step, args


def step_flops(batch):
    """Matmul FLOPs of the forward-Laplacian step: 5 row-sets through each layer, forward,
    input gradient and weight gradient (3 products); the first layer has 3 inputs."""
    hidden = (DEPTH - 1) * 2 * ROWS * batch * WIDTH * WIDTH
    first = 2 * ROWS * batch * 3 * WIDTH
    return 3 * (hidden + first)


def matmul_floor_fns(batch):
    a = jax.random.normal(jax.random.key(3), (ROWS * batch, WIDTH))
    w = jax.random.normal(jax.random.key(4), (WIDTH, WIDTH))
    forward = jax.jit(lambda a, w: a @ w.T)
    weight_grad = jax.jit(lambda a, b: a.T @ b)
    return {"matmul_fwd": (forward, (a, w)), "matmul_wgrad": (weight_grad, (a, a))}


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
    compile_s = {}
    for name, (fn, args) in calls.items():
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        compile_s[name] = time.perf_counter() - t0
    wall = {name: [] for name in calls}
    cpu = {name: [] for name in calls}
    for _ in range(repeats):  # interleaved: each round runs everything once
        for name, (fn, args) in calls.items():
            w, c = timed(fn, *args)
            wall[name].append(w)
            cpu[name].append(c)
    mm_flops = 2 * ROWS * n * WIDTH * WIDTH
    t_fwd = summary(wall["matmul_fwd"])["min_ms"]
    t_wgrad = summary(wall["matmul_wgrad"])["min_ms"]
    floor_ms = (DEPTH - 1) * (2 * t_fwd + t_wgrad)
    rows = []
    for m in methods:
        s = summary(wall[f"step/{m}"])
        fields = summary(wall[f"fields/{m}"])
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[10, 12, 14])
    parser.add_argument("--methods", nargs="+", default=["forward", "hessian"],
                        choices=["forward", "hessian", "hvp"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tf32", action="store_true", help="also run with TF32 matmuls")
    parser.add_argument("--quick", action="store_true",
                        help="2^12, forward only, 3 repeats (under a minute with compilation)")
    parser.add_argument("--name", default="laplacian", help="results file stem")
    args = parser.parse_args()
    if args.quick:
        args.batches, args.methods, args.repeats = [12], ["forward"], 3
    precisions = ["highest"] + (["tensorfloat32"] if args.tf32 else [])
    info = machine() | {"dtype": str(jnp.zeros(()).dtype), "width": WIDTH, "depth": DEPTH,
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
        f"    {' '.join(['python'] + sys.argv)}\n\n" + HEAD + "\n"
        + "\n".join(line(r) for r in rows)
    )
    path = write_results(args.name, {"machine": info, "rows": rows, "argv": sys.argv}, text)
    print(f"\n{info['total_s']:.0f} s; wrote {path}", flush=True)


if __name__ == "__main__":
    main()
