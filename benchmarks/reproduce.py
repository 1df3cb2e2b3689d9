"""Reproduce the paper's experiments from the TOML configs in benchmarks/configs/.

    python -m benchmarks.reproduce a c              # cases (a) and (c); all by default
    python -m benchmarks.reproduce c --set df.steps=30000 --tag c-30k
    python -m benchmarks.reproduce --quick          # tiny sizes: a smoke run of every case

Each case is one or more configs run by `deeppot.pipeline.run` (exactly what
`deeppot run benchmarks/configs/<config>.toml` does); the configs of one case share a run
directory, so a flow trained for the neural fit is reused by the analytic fits. Each
config's row is printed as soon as it finishes, and the whole run writes
benchmarks/results/reproduce_<tag>.json and .md.

Cases: (a) Plummer, exact scores; (b) Plummer, flow scores; (c) ideal Miyamoto–Nagai disk:
neural potential, and analytic fits with the mass free and fixed; (d) non-stationary and
noisy disks, analytic fits.
"""

import json
import time
from pathlib import Path

from deeppot import pipeline

from . import _harness as harness
from ._harness import CONFIGS

# case -> groups of configs; the configs of a group share one run directory
CASES = {
    "a": [["case-a"]],
    "b": [["case-b"]],
    "c": [["case-c", "case-c-mn", "case-c-mn-fixed"]],
    "d": [["case-d-nonstationary"], ["case-d-noisy"]],
}
QUICK = ["data.n=4096", "scores.n=4096", "scores.chunk_size=4096", "df.steps=200",
         "df.warmup_steps=20", "df.batch_size=512", "fit.steps=100", "fit.warmup_steps=10",
         "fit.batch_size=512", "evaluate.n_points=2048", "evaluate.plots=false"]


def _row(name: str, metrics: dict, state: dict) -> dict:
    seconds = {s: round(v.get("seconds", 0.0), 1) for s, v in state.items() if v}
    row = {"config": name, "seconds": seconds, "parameters": metrics.get("parameters"),
           "fit_quality": metrics.get("fit_quality"), "warnings": metrics.get("warnings")}
    if metrics.get("accuracy"):
        row["accuracy"] = {k: metrics["accuracy"][k] for k in ("force", "density", "phi")}
        row["region"] = metrics["region"]
    if metrics.get("df_score_error"):
        row["df_score_error"] = metrics["df_score_error"]
    return row


def _line(row: dict) -> str:
    parts = [f"**{row['config']}**"]
    acc = row.get("accuracy")
    if acc:
        parts.append(f"force {100 * acc['force']['median']:.2f}% "
                     f"({100 * acc['force']['p16']:.2f}–{100 * acc['force']['p84']:.2f}%), "
                     f"density {100 * acc['density']['median']:.2f}%, "
                     f"Φ {100 * acc['phi']['median']:.3f}% at {row['region']}")
    if row.get("parameters"):
        parts.append(", ".join(f"{k} = {v:.4g}" for k, v in row["parameters"].items()))
    se = row.get("df_score_error")
    if se:
        parts.append(f"score errors {100 * se['dlnf_dx']['median']:.1f}% / "
                     f"{100 * se['dlnf_dv']['median']:.1f}%")
    parts.append("stage seconds " + ", ".join(f"{k} {v}" for k, v in row["seconds"].items()))
    return "- " + "; ".join(parts)


def main(argv=None) -> None:
    parser = harness.parser(__doc__, __file__)
    parser.add_argument("cases", nargs="*", metavar="CASE", help="a, b, c, d (default: all)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a config value in every case (repeatable)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--runs-dir", default="runs/reproduce", help="where run dirs go")
    parser.add_argument("--tag", default=None, help="results file suffix")
    args = parser.parse_args(argv)
    cases = args.cases or sorted(CASES)
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f"unknown cases {unknown}; choose from {sorted(CASES)}")
    overrides = (QUICK if args.quick else []) + args.set
    tag = args.tag or "_".join(["".join(cases)] + (["quick"] if args.quick else [])
                               + (["custom"] if args.set else []))
    runs = Path(args.runs_dir) / tag
    out = {"command": harness.command(__file__, argv),
           "overrides": overrides, "rows": []}
    lines = [f"Command: `{out['command']}`", ""]
    for case in cases:
        for group in CASES[case]:
            run_dir = runs / group[0]
            for name in group:
                cfg = pipeline.load_config(CONFIGS / f"{name}.toml", overrides)
                t0 = time.perf_counter()
                metrics = pipeline.run(cfg, run_dir, log=None)
                state = json.loads((run_dir / "state.json").read_text())
                row = _row(name, metrics, state) | {"wall_s": time.perf_counter() - t0}
                out["rows"].append(row)
                lines.append(_line(row))
                print(lines[-1], flush=True)
                harness.write_results(f"reproduce_{tag}", out, "\n".join(lines))


if __name__ == "__main__":
    main()
