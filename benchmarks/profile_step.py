"""Where the potential training step's time goes: a per-op profile of the compiled step.

Runs `fit_potential`'s step (`benchmarks._step.fit_potential_step`, 4×512 tanh) under
`jax.profiler`, reads the XLA:CPU thunk events back with `jax.profiler.ProfileData`, matches
them to the optimised HLO's instructions and sums their times by kind: the matrix products
over the batch, the weight-gradient products, elementwise work over the batch, and
parameter-sized work (optimiser, clipping, L2, finite checks). Two paths:

- `batched`: the default, `TanhMLP.forward_laplacian_batch` (one product per layer over the
  stacked value / Jacobian / Laplacian row-sets, hand-derived backward pass);
- `per-point`: the per-point rule `TanhMLP.forward_laplacian` under `vmap`, differentiated
  by autodiff (what `value_grad_laplacian` ran before the batched rule).

On XLA:CPU, products that XLA hands to Eigen (the weight gradients of the batched path) run
asynchronously: their events are short and their time shows up in the products that run
beside them; thunks on the two threads overlap, so op times can add up to more than the
wall time. Wall times on a shared machine are inflated; the shares are what to read.

    python -m benchmarks.profile_step --batch-log2 14 --calls 1
    python -m benchmarks.profile_step --batch-log2 12 --times 4   # before/after, no profile

`--times N` instead times both paths' steps and fields and the matmul floor's products
interleaved in one process, N rounds, wall and process CPU time.
"""

import collections
import glob
import re
import tempfile
from typing import final

import equinox as eqx
import jax
from jax.profiler import ProfileData

import deeppot as dp

from . import _harness as harness
from ._step import fit_potential_step, matmul_floor_fns, scores


@final
class PerPoint(dp.AbstractPotential):
    """A network potential seen only through its per-point rule (no batched rule)."""

    inner: dp.NeuralPotential
    units: dp.units.UnitSystem = eqx.field(default=dp.units.dimensionless, static=True)

    def _potential(self, x):
        return self.inner._potential(x)

    def _value_grad_laplacian(self, x):
        return self.inner._value_grad_laplacian(x)


def categorise(shape: str, kind: str, name: str, n: int) -> str:
    over_batch = any(str(m * n) in shape for m in (1, 3, 5))
    is_product = name.startswith("ynn_fusion") or kind in ("dot", "custom-call")
    if is_product:
        if shape.startswith(("f32[512,512]", "f32[512,3]")):
            return "matmul: weight gradients"
        if over_batch:
            return "matmul: products over the batch"
        return "small products and reductions"
    if over_batch:
        return "elementwise over the batch"
    return "parameter-sized (optimiser, clipping, L2, checks)"


def profile(path: str, log2: int, calls: int) -> dict:
    n = 2**log2
    pot = dp.NeuralPotential(key=jax.random.key(0), width=512, depth=4, features=("x",))
    model = dp.PotentialModel(PerPoint(pot) if path == "per-point" else pot)
    step, args = fit_potential_step(model, scores(jax.random.key(0), 4 * n), n)
    compiled = eqx.filter_jit(lambda *a: step(*a)).lower(*args).compile()
    hlo = getattr(compiled, "compiled", compiled).as_text()
    instructions = {}
    for line in hlo[hlo.index("ENTRY"):].splitlines():
        m = re.match(r"\s*(?:ROOT )?%(\S+) = (\S+?)(?:\{[^}]*\})? (\w[\w-]*)\(", line)
        if m:
            instructions[m.group(1)] = (m.group(2), m.group(3))
    for _ in range(2):
        jax.block_until_ready(step(*args))
    with tempfile.TemporaryDirectory() as tmp:
        jax.profiler.start_trace(tmp)
        for _ in range(calls):
            jax.block_until_ready(step(*args))
        jax.profiler.stop_trace()
        data = ProfileData.from_file(glob.glob(f"{tmp}/**/*.xplane.pb", recursive=True)[0])
    per_op = collections.Counter()
    wall = 0.0
    for plane in data.planes:
        for line in plane.lines:
            for ev in line.events:
                if ev.name in instructions:
                    per_op[ev.name] += ev.duration_ns / calls / 1e6
                elif ev.name.startswith("$_jit.py") and ev.name.endswith(" _call"):
                    wall += ev.duration_ns / calls / 1e6
    by_kind = collections.Counter()
    count = collections.Counter()
    for name, ms in per_op.items():
        kind = categorise(*instructions[name], name, n)
        by_kind[kind] += ms
        count[kind] += 1
    total = sum(per_op.values())
    return {
        "path": path,
        "batch": n,
        "wall_ms_per_call": wall,
        "ops_ms": total,
        "kinds": [
            {"kind": k, "ops": count[k], "ms": ms, "share": ms / total}
            for k, ms in by_kind.most_common()
        ],
        "top_ops": [
            {"op": k, "shape": instructions[k][0], "ms": ms} for k, ms in per_op.most_common(10)
        ],
    }


def times(log2: int, rounds: int) -> list[str]:
    """Both paths' steps and fields and the floor's products, interleaved, min over rounds."""
    n = 2**log2
    pot = dp.NeuralPotential(key=jax.random.key(0), width=512, depth=4, features=("x",))
    data = scores(jax.random.key(0), 4 * n)
    fields = eqx.filter_jit(dp.value_grad_laplacian)
    calls = {
        "step, per-point (before)": fit_potential_step(dp.PotentialModel(PerPoint(pot)), data, n),
        "step, batched (now)": fit_potential_step(dp.PotentialModel(pot), data, n),
        "fields, per-point (before)": (fields, (PerPoint(pot), data.x[:n])),
        "fields, batched (now)": (fields, (pot, data.x[:n])),
        **matmul_floor_fns(n),
    }
    t = harness.interleaved(calls, rounds)
    wall, cpu = t["wall_ms"], t["cpu_ms"]
    floor_w = 3 * (2 * min(wall["matmul_fwd"]) + min(wall["matmul_wgrad"]))
    floor_c = 3 * (2 * min(cpu["matmul_fwd"]) + min(cpu["matmul_wgrad"]))
    lines = ["| | wall min ms | CPU min ms | step CPU / floor CPU |", "|---|---|---|---|"]
    for k in calls:
        if k.startswith("matmul"):
            continue
        ratio = f"{min(cpu[k]) / floor_c:.2f}" if k.startswith("step") else ""
        lines.append(f"| {k} | {min(wall[k]):.0f} | {min(cpu[k]):.0f} | {ratio} |")
    lines.append(f"| matmul floor (3 × (2 fwd + 1 wgrad)) | {floor_w:.0f} | {floor_c:.0f} | 1 |")
    return lines


def main(argv=None):
    parser = harness.parser(__doc__, __file__)
    parser.add_argument("--batch-log2", type=int, default=14)
    parser.add_argument("--calls", type=int, default=1)
    parser.add_argument("--paths", nargs="+", default=["batched", "per-point"],
                        choices=["batched", "per-point"])
    parser.add_argument("--times", type=int, default=0, help="time instead of profiling")
    args = parser.parse_args(argv)
    info = harness.machine()
    kind = harness.device_platform(info)
    if args.times:
        lines = times(args.batch_log2, args.times)
        print("\n".join(lines), flush=True)
        head = [f"Step before/after, batch 2^{args.batch_log2}, {info['device']}", "",
                "    " + harness.command(__file__, argv), ""]
        harness.write_results(f"step_times_2e{args.batch_log2}_{kind}",
                              {"machine": info, "argv": harness.invocation(__file__, argv),
                               "table": lines}, "\n".join(head + lines))
        return
    results = []
    lines = [
        f"Per-op profile of the `fit_potential` step, 4x512 tanh, batch 2^{args.batch_log2}, "
        f"{info['device']}, {info['cpu_count']} CPUs, jax {info['jax']}", "",
        "    " + harness.command(__file__, argv), "",
        "| path | kind | ops | ms per step | share of op time |", "|---|---|---|---|---|",
    ]
    for path in args.paths:
        r = profile(path, args.batch_log2, args.calls)
        results.append(r)
        for k in r["kinds"]:
            row = (f"| {path} | {k['kind']} | {k['ops']} | {k['ms']:.0f} "
                   f"| {100 * k['share']:.0f}% |")
            lines.append(row)
            print(row, flush=True)
        total = (f"| {path} | all ops (wall per call {r['wall_ms_per_call']:.0f} ms) | "
                 f"{sum(k['ops'] for k in r['kinds'])} | {r['ops_ms']:.0f} | 100% |")
        lines.append(total)
        print(total, flush=True)
    path = harness.write_results(f"step_profile_{kind}",
                                 {"machine": info, "argv": harness.invocation(__file__, argv),
                                  "runs": results}, "\n".join(lines))
    print(f"wrote {path}", flush=True)


if __name__ == "__main__":
    main()
