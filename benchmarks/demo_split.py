"""The Plummer demo's error split in two: the fit on exact scores against the fit on the
flow's, at the same score points, by radius.

    deeppot run deeppot/configs/demo.toml --run-dir runs/demo-sphere-s1 \
        --set df.scale_velocities=true --set run.seed=1
    python -m benchmarks.demo_split runs/demo-sphere-s1 [runs/demo-sphere-s0 ...] [--tag T]

For each run directory of a Plummer run (`[data] source = "plummer"`), the run's own score
points (`scores.npz`) are given the exact scores of `PlummerDF(r_max)` and the run's
`[potential]` model is fitted to them with the run's `[fit]` settings and the same stage
key; with `--hybrid`, also to the exact ∂ln f/∂v with the flow's ∂ln f/∂x and the other way
round. Every fit, and the run's own `potential.eqx`, is then measured against the truth at
fresh Plummer stars (seed 12345, 2^16) by radius: the median |ΔF|/|F| in r ∈ [0.1, 0.3],
[0.3, 1], [1, 3] and the demo's range [0.1, 3]. The flow's score error at its own points is
printed by the same bins (the median of |Δ∂ln f/∂x| / |∂ln f/∂x| and of the same for v,
the exact score's norm in the denominator). Rows go to
`benchmarks/results/demo_split_<tag>.json` / `.md`.
"""

from __future__ import annotations

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import deeppot as dp
from deeppot.pipeline import load_config, load_model, run_stage

from . import _harness as harness

BINS = {"0.1-0.3": (0.1, 0.3), "0.3-1": (0.3, 1.0), "1-3": (1.0, 3.0), "0.1-3": (0.1, 3.0)}


def _by_bin(r, err) -> dict[str, float]:
    return {name: float(np.median(err[(r >= lo) & (r < hi)])) for name, (lo, hi) in BINS.items()}


def force_errors(model, x, truth) -> dict[str, float]:
    """Median |ΔF|/|F| of `model` against `truth` at `x`, per radial bin."""
    f = np.asarray(model.potential.acceleration(jnp.asarray(x)))
    t = np.asarray(truth.acceleration(jnp.asarray(x)))
    err = np.linalg.norm(f - t, axis=1) / np.linalg.norm(t, axis=1)
    return _by_bin(np.linalg.norm(x, axis=1), err)


def _relative(a, exact):
    return np.linalg.norm(a - exact, axis=1) / np.linalg.norm(exact, axis=1)


def score_errors(sample, exact_x, exact_v) -> dict[str, dict[str, float]]:
    """The flow's relative score errors at its own points, per radial bin."""
    r = np.linalg.norm(np.asarray(sample.x), axis=1)
    ex = _relative(np.asarray(sample.dlnf_dx), exact_x)
    ev = _relative(np.asarray(sample.dlnf_dv), exact_v)
    count = {name: int(np.sum((r >= lo) & (r < hi))) for name, (lo, hi) in BINS.items()}
    return {"dx": _by_bin(r, ex), "dv": _by_bin(r, ev), "points": count}


def _fit(config, sample):
    t0 = time.perf_counter()
    model = run_stage("potential", config, {"scores": (sample, {})})["potential"][0]
    return model, time.perf_counter() - t0


def split(run_dir: Path, hybrid: bool) -> dict:
    config = load_config(run_dir / "config.toml")
    if config.data.source != "plummer":
        raise SystemExit(f"{run_dir}: not a Plummer run ([data] source = {config.data.source!r})")
    r_max = float(config.data.params.get("r_max", 10.0))
    flow = dp.ScoreSample.load(run_dir / "scores.npz")
    exact_df = dp.flows.PlummerDF(r_max=r_max, chunk_size=8192)
    w = jnp.concatenate([flow.x, flow.v], axis=1)
    ex, ev = (np.asarray(a) for a in exact_df.score(w))
    truth = dp.Plummer(1.0, 1.0)
    tracers = np.asarray(dp.mocks.plummer(jax.random.key(12345), 2**16, r_max=r_max).x)

    row = {"run": str(run_dir), "seed": config.run.seed,
           "scale_velocities": config.df.scale_velocities,
           "score_error": score_errors(flow, ex, ev)}
    own, _ = load_model(run_dir / "potential.eqx")
    row["flow"] = force_errors(own, tracers, truth)
    fits = {"exact": (ex, ev)}
    if hybrid:
        fits["exact_v"] = (np.asarray(flow.dlnf_dx), ev)
        fits["exact_x"] = (ex, np.asarray(flow.dlnf_dv))
    for name, (sx, sv) in fits.items():
        sample = dp.ScoreSample(flow.x, flow.v, jnp.asarray(sx, flow.x.dtype),
                                jnp.asarray(sv, flow.x.dtype), flow.ln_f)
        model, seconds = _fit(config, sample)
        row[name] = force_errors(model, tracers, truth)
        row[f"{name}_seconds"] = seconds
    return row


def md_rows(row) -> list[str]:
    lines = []
    for name in ("flow", "exact", "exact_v", "exact_x"):
        if name in row:
            e = row[name]
            lines.append(f"| {row['run']} | {row['seed']} | {name} | "
                         + " | ".join(f"{100 * e[b]:.2f}%" for b in BINS) + " |")
    s = row["score_error"]
    lines.append(f"| {row['run']} | {row['seed']} | flow's score error ∂x / ∂v (points) | "
                 + " | ".join(f"{100 * s['dx'][b]:.1f}% / {100 * s['dv'][b]:.1f}% "
                              f"({s['points'][b]})" for b in BINS) + " |")
    return lines


def main(argv=None):
    p = harness.parser(__doc__, __file__)
    p.add_argument("runs", nargs="+", help="run directories of Plummer runs")
    p.add_argument("--hybrid", action="store_true",
                   help="also fit exact ∂v with the flow's ∂x, and exact ∂x with the flow's ∂v")
    p.add_argument("--tag", default="cpu")
    args = p.parse_args(argv)
    rows = []
    header = ["| run | seed | scores | " + " | ".join(f"force r ∈ {b}" for b in BINS) + " |",
              "|---" * (3 + len(BINS)) + "|"]
    print("\n".join(header), flush=True)
    for run in args.runs:
        row = split(Path(run), args.hybrid)
        rows.append(row)
        print("\n".join(md_rows(row)), flush=True)
    md = "\n".join(header + [line for row in rows for line in md_rows(row)])
    harness.write_results(f"demo_split_{args.tag}",
                          {"command": harness.command(__file__, argv), "rows": rows}, md)


if __name__ == "__main__":
    main()
