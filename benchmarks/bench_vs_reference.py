"""The potential training step against the TensorFlow reference, interleaved on one machine.

Alternates separate processes — reference, deeppot, reference, deeppot, … — for `--rounds`
rounds, logging `uptime` before each round, as `../shared/anchors/README.md` prescribes.

- reference: the anchors' own `bench_tf_reference.py --only pot` (its `pot_step`: the
  reference's 4×512 tanh `PhiNN` loss, nested-tape gradient and Laplacian, gradient,
  `clip_by_global_norm(1.0)` and RAdam), run with the reference's Python (`--tf-python`,
  a separate venv built by the anchors' recipe; never part of this project);
- deeppot: the step `fit_potential` runs (`benchmarks._step.fit_potential_step`: default
  loss `Log(Stationarity() + PositiveDensity()) + L2Weights(0.1)`, batch gather, clip 1,
  RAdam), with the three same-shape matrix products of a hidden layer timed in the same
  process to give the matmul floor (3 layers × (forward + input gradient + weight gradient)).

Each process times `--reps` calls after warm-up; a round's ratio is reference median /
deeppot median, and the result is the median of the rounds' ratios (and of the
deeppot step / floor ratios). Results go to `benchmarks/results/vs_reference_cpu.{json,md}`.

    nice -n -5 python -m benchmarks.bench_vs_reference --tf-python /work/tfvenv/bin/python \\
        --rounds 5 --batch-log2 14
"""

import argparse
import json
import os
import statistics
import subprocess
import tempfile
from pathlib import Path

from . import _harness as harness

# the anchors sit in shared/ beside the checkout (../shared from main, ../../shared from a
# worktree under wt/); DEEPPOT_ANCHORS overrides
_CANDIDATES = [Path(os.environ["DEEPPOT_ANCHORS"])] if "DEEPPOT_ANCHORS" in os.environ else []
_CANDIDATES += [p / "shared" / "anchors" for p in harness.ROOT.parents[0:2]]
ANCHORS = next((p for p in _CANDIDATES if p.is_dir()), _CANDIDATES[-1]) / "bench_tf_reference.py"


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def deeppot_child(log2: int, reps: int, warmup: int) -> dict:
    """Time fit_potential's step and the floor's matrix products in this process."""
    import jax

    import deeppot as dp

    from ._step import fit_potential_step, matmul_floor_fns, scores, step_flops

    n = 2**log2
    pot = dp.NeuralPotential(key=jax.random.key(0), width=512, depth=4, features=("x",))
    step, args = fit_potential_step(dp.PotentialModel(pot), scores(jax.random.key(log2), 4 * n), n)
    calls = {"step": (step, args), **matmul_floor_fns(n)}
    out = {"batch": n, "device": str(jax.devices()[0]), "jax": jax.__version__}
    t = harness.interleaved(calls, reps, warmup)
    out |= {f"{name}_first_call_s": s for name, s in t["first_call_s"].items()}
    wall, cpu = ({name: [ms / 1e3 for ms in v] for name, v in t[k].items()}
                 for k in ("wall_ms", "cpu_ms"))
    out["wall_s"], out["cpu_s"] = wall, cpu
    floor = 3 * (2 * min(wall["matmul_fwd"]) + min(wall["matmul_wgrad"]))
    out["floor_s"] = floor
    out["step_median_s"] = statistics.median(wall["step"])
    out["step_min_s"] = min(wall["step"])
    out["step_gflop"] = step_flops(n) / 1e9
    return out


def run_reference(tf_python: str, script: Path, log2: int, reps: int, warmup: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ref.json"
        cmd = [tf_python, str(script), "--only", "pot", "--pot-batch", str(2**log2),
               "--reps", str(reps), "--warmup", str(warmup), "--threads", "2",
               "--skip-fwdrev", "--json", str(path)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"reference failed:\n{proc.stderr[-3000:]}")
        return json.loads(path.read_text())


def run_deeppot(log2: int, reps: int, warmup: int) -> dict:
    return harness.run_child(__file__, ["--child", "--batch-log2", str(log2), "--reps",
                                        str(reps), "--warmup", str(warmup)])


def write(rounds, args, argv=None):
    """Summarise the rounds so far and write JSON + markdown (after every round)."""
    summary = {
        "median_ratio": statistics.median(r["ratio"] for r in rounds),
        "median_deeppot_over_floor": statistics.median(r["deeppot_over_floor"] for r in rounds),
        "quietest_reference_s": min(r["reference"]["pot_step"]["median_s"] for r in rounds),
        "quietest_deeppot_s": min(r["deeppot"]["step_median_s"] for r in rounds),
        "min_floor_s": min(r["deeppot"]["floor_s"] for r in rounds),
        "step_gflop": rounds[0]["deeppot"]["step_gflop"],
    }
    print(f"median of ratios (reference / deeppot): {summary['median_ratio']:.2f}; "
          f"median deeppot / floor: {summary['median_deeppot_over_floor']:.2f}", flush=True)
    lines = [
        f"Potential training step vs the TF reference, batch 2^{args.batch_log2}, interleaved "
        f"({len(rounds)} of {args.rounds} rounds, nice {os.nice(0)})", "",
        "    " + harness.command(__file__, argv), "",
        "| round | load (1, 5, 15 min) | reference step s | deeppot step s | reference / deeppot "
        "| floor s | deeppot / floor |", "|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(rounds):
        lines.append(
            f"| {i} | {r['uptime'].split('load average:')[-1].strip()} "
            f"| {r['reference']['pot_step']['median_s']:.3f} | {r['deeppot']['step_median_s']:.3f} "
            f"| {r['ratio']:.2f} | {r['deeppot']['floor_s']:.3f} | {r['deeppot_over_floor']:.2f} |"
        )
    lines += ["", f"median of ratios: **{summary['median_ratio']:.2f}**; median deeppot / floor: "
              f"**{summary['median_deeppot_over_floor']:.2f}**"]
    payload = {"argv": harness.invocation(__file__, argv), "rounds": rounds, "summary": summary}
    path = harness.write_results(args.name, payload, "\n".join(lines))
    print(f"wrote {path.with_suffix('.md')}", flush=True)


def main(argv=None):
    parser = harness.parser(__doc__, __file__)
    parser.add_argument("--tf-python",
                        default=os.environ.get("TFVENV_PYTHON", "/work/tfvenv/bin/python"))
    parser.add_argument("--reference-script", type=Path, default=ANCHORS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-log2", type=int, default=14)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--name", default="vs_reference_cpu")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(deeppot_child(args.batch_log2, args.reps, args.warmup)), flush=True)
        return

    rounds = []
    print(f"interleaved: reference then deeppot, {args.rounds} rounds, batch "
          f"2^{args.batch_log2}, {args.reps} timed calls each after {args.warmup} warm-up; "
          f"nice {os.nice(0)}", flush=True)
    print("| round | uptime | reference step s (median) | deeppot step s (median) | ratio "
          "| floor s | deeppot / floor |\n|---|---|---|---|---|---|---|", flush=True)
    for r in range(args.rounds):
        load = uptime()
        ref = run_reference(args.tf_python, args.reference_script, args.batch_log2, args.reps,
                            args.warmup)
        ours = run_deeppot(args.batch_log2, args.reps, args.warmup)
        ratio = ref["pot_step"]["median_s"] / ours["step_median_s"]
        over_floor = ours["step_median_s"] / ours["floor_s"]
        rounds.append({"uptime": load, "reference": ref, "deeppot": ours, "ratio": ratio,
                       "deeppot_over_floor": over_floor})
        print(f"| {r} | {load.split('load average:')[-1].strip()} "
              f"| {ref['pot_step']['median_s']:.3f} | {ours['step_median_s']:.3f} "
              f"| {ratio:.2f} | {ours['floor_s']:.3f} | {over_floor:.2f} |", flush=True)
        write(rounds, args, argv)


if __name__ == "__main__":
    main()
