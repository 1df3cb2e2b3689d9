"""Laplacian methods alone and inside a full training step, for the paper's 4×512 tanh MLP.

For each batch size and method ("forward", "hessian", "hvp") it times
(a) Φ, ∇Φ, ∇²Φ alone and (b) a training step: value_and_grad of the paper's loss
(asinh stationarity + asinh negative-density penalty + L2 on the weights) plus an optax
RAdam update. Methods are interleaved and repeated; the table gives median and min ms,
the ratio to the Hessian trace, the achieved GFLOP/s of the step (matmul FLOPs counted
analytically for the forward Laplacian, used for every method so ratios stay comparable),
the same-shape matmul rate of the machine, and XLA's temp memory.

    python benchmarks/bench_laplacian.py [--batches 10 12 14] [--repeats 5] [--tf32]

On a GPU it runs in full float32 (`jax.default_matmul_precision("highest")`) by default;
`--tf32` adds a run with TF32 matmuls, reported separately.
"""

import argparse
import sys
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, summary, time_call, write_results  # noqa: E402

import deeppot as dp  # noqa: E402

METHODS = ("forward", "hessian", "hvp")
WIDTH, DEPTH = 512, 4


def paper_loss(model, x, v, dlnf_dx, dlnf_dv, method):
    _, grad, lap = dp.value_grad_laplacian(model, x, method=method)
    residual = jnp.sum(grad * dlnf_dv, -1) - jnp.sum(v * dlnf_dx, -1)
    stationarity = jnp.mean(jnp.arcsinh(jnp.abs(residual)))
    negative = jnp.mean(jnp.arcsinh(jnp.maximum(-lap, 0.0)))
    weights = jnp.concatenate([w.ravel() for w in model.net.weights])
    return stationarity + negative + 0.1 * jnp.mean(weights**2)


def make_step(method, optimizer):
    @eqx.filter_jit
    def step(model, opt_state, batch):
        loss, grads = eqx.filter_value_and_grad(paper_loss)(model, *batch, method)
        updates, opt_state = optimizer.update(grads, opt_state, model)
        return eqx.apply_updates(model, updates), opt_state, loss

    return step


def make_vgl(method):
    return eqx.filter_jit(lambda model, x: dp.value_grad_laplacian(model, x, method=method))


def step_flops(batch):
    """Matmul FLOPs of a forward-Laplacian step: value, 3 Jacobian rows and the Laplacian
    go through each hidden W×W layer (5 row-sets), and the backward pass costs twice the
    forward."""
    hidden = (DEPTH - 1) * 2 * 5 * batch * WIDTH * WIDTH
    first = 2 * 5 * batch * 3 * WIDTH
    return 3 * (hidden + first)


def matmul_rate(batch, repeats):
    a = jax.random.normal(jax.random.key(1), (5 * batch, WIDTH))
    w = jax.random.normal(jax.random.key(2), (WIDTH, WIDTH))
    f = jax.jit(lambda a, w: jnp.tanh(a @ w))
    t = summary(time_call(f, a, w, repeats=repeats))
    return 2 * 5 * batch * WIDTH * WIDTH / (t["min_ms"] * 1e-3) / 1e9


def temp_bytes(fn, *args):
    try:
        compiled = fn.lower(*args).compile()
        compiled = getattr(compiled, "compiled", compiled)  # equinox wraps jax's Compiled
        return int(compiled.memory_analysis().temp_size_in_bytes)
    except Exception:  # memory analysis is not available on every backend
        return None


def run(batches, repeats, precision):
    model = dp.NeuralPotential(key=jax.random.key(0), width=WIDTH, depth=DEPTH)
    optimizer = optax.radam(1e-3)
    opt_state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))
    rows = []
    with jax.default_matmul_precision(precision):
        for log2 in batches:
            n = 2**log2
            keys = jax.random.split(jax.random.key(log2), 4)
            batch = tuple(jax.random.normal(k, (n, 3)) for k in keys)
            x = batch[0]
            steps = {m: make_step(m, optimizer) for m in METHODS}
            vgls = {m: make_vgl(m) for m in METHODS}
            alone = {m: [] for m in METHODS}
            stepped = {m: [] for m in METHODS}
            for _ in range(repeats):  # interleave methods so drift hits all alike
                for m in METHODS:
                    alone[m] += time_call(vgls[m], model, x, repeats=1)
                    stepped[m] += time_call(steps[m], model, opt_state, batch, repeats=1)
            rate = matmul_rate(n, repeats)
            for m in METHODS:
                a, s = summary(alone[m]), summary(stepped[m])
                rows.append(
                    {
                        "batch": n,
                        "method": m,
                        "precision": precision,
                        "alone": a,
                        "step": s,
                        "step_gflops": step_flops(n) / (s["min_ms"] * 1e-3) / 1e9,
                        "matmul_gflops": rate,
                        "step_temp_bytes": temp_bytes(steps[m], model, opt_state, batch),
                    }
                )
            ref_alone = next(r for r in rows if r["batch"] == n and r["method"] == "hessian")
            for r in rows:
                if r["batch"] == n:
                    r["alone_ratio_to_hessian"] = (
                        r["alone"]["median_ms"] / ref_alone["alone"]["median_ms"]
                    )
                    r["step_ratio_to_hessian"] = (
                        r["step"]["median_ms"] / ref_alone["step"]["median_ms"]
                    )
                    r["fraction_of_matmul_rate"] = r["step_gflops"] / r["matmul_gflops"]
    return rows


def table(rows):
    head = (
        "| batch | method | precision | alone median ms | alone min ms | alone / hessian "
        "| step median ms | step min ms | step / hessian | step GFLOP/s | matmul GFLOP/s "
        "| fraction | temp MiB |"
    )
    lines = [head, "|" + "---|" * 13]
    for r in rows:
        mib = "" if r["step_temp_bytes"] is None else f"{r['step_temp_bytes'] / 2**20:.0f}"
        lines.append(
            f"| 2^{r['batch'].bit_length() - 1} | {r['method']} | {r['precision']} "
            f"| {r['alone']['median_ms']:.1f} | {r['alone']['min_ms']:.1f} "
            f"| {r['alone_ratio_to_hessian']:.2f} | {r['step']['median_ms']:.1f} "
            f"| {r['step']['min_ms']:.1f} | {r['step_ratio_to_hessian']:.2f} "
            f"| {r['step_gflops']:.1f} | {r['matmul_gflops']:.1f} "
            f"| {r['fraction_of_matmul_rate']:.2f} | {mib} |"
        )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[10, 12, 14])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tf32", action="store_true", help="also run with TF32 matmuls")
    args = parser.parse_args()
    precisions = ["highest"] + (["tensorfloat32"] if args.tf32 else [])
    rows = [r for p in precisions for r in run(args.batches, args.repeats, p)]
    info = machine() | {"dtype": "float32", "width": WIDTH, "depth": DEPTH}
    text = (
        f"Laplacian benchmark, {info['device']}, {info['cpu_count']} CPUs, jax {info['jax']}, "
        f"4x512 tanh MLP, float32\n\n" + table(rows)
    )
    print(text)
    path = write_results("laplacian", {"machine": info, "rows": rows, "argv": sys.argv}, text)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
