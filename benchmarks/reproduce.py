"""Reproduce the paper's experiments and record accuracy tables.

    python benchmarks/reproduce.py --preset cpu [--cases a c] [--quick]

Cases:
  (a) Plummer sphere, exact scores (PlummerDF): the potential-fit error floor.
  (b) Plummer sphere, scores from a trained flow.
  (c) Miyamoto–Nagai disk, ideal: neural potential, and an analytic MN fit of (a, b)
      (paper: a = 0.996, b = 0.104).
  (d) MN disk non-stationary (n_dyn = 8; paper a = 1.013, b = 0.112), noisy, selected.

Each case prints its table and the whole run writes
benchmarks/results/reproduce_<preset>.json and .md. Presets fix sizes and steps:
`cpu` fits in tens of minutes per case on 2 cores; `paper` uses the paper's sizes
(2^19 stars, 2^20 score points, a 4×512 network at batch 2^14) and wants a GPU.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

import deeppot as dp

RESULTS = Path(__file__).parent / "results"

PRESETS = {
    "cpu": {
        "n_stars": 2**16,
        "n_scores": 2**18,
        "width": 128,
        "depth": 3,
        "batch_size": 4096,
        "steps": 6000,
        "learning_rate": 2e-3,
        "warmup": 500,
        "patience": 1000,
        "df_steps": 6000,
        "analytic_steps": 1500,
        "l2": 0.1,
    },
    "paper": {
        "n_stars": 2**19,
        "n_scores": 2**20,
        "width": 512,
        "depth": 4,
        "batch_size": 2**14,
        "steps": 40000,
        "learning_rate": 1e-3,
        "warmup": 2048,
        "patience": 2048,
        "df_steps": 40000,
        "analytic_steps": 3000,
        "l2": 0.1,
    },
}
QUICK = {"n_stars": 2**12, "n_scores": 2**13, "steps": 200, "df_steps": 100,
         "analytic_steps": 100, "batch_size": 1024, "warmup": 20, "patience": 100}


def fit_neural(scores, cfg, key, input_scale):
    model = dp.PotentialModel(
        dp.NeuralPotential(key=key, width=cfg["width"], depth=cfg["depth"],
                           input_scale=input_scale)
    )
    loss = dp.terms.Log(dp.terms.Stationarity() + dp.terms.PositiveDensity()) + \
        dp.terms.L2Weights(cfg["l2"])
    t0 = time.perf_counter()
    fitted, history = dp.fit_potential(
        model, scores, loss, key=jax.random.fold_in(key, 1), max_steps=cfg["steps"],
        batch_size=cfg["batch_size"], learning_rate=cfg["learning_rate"],
        warmup_steps=cfg["warmup"], patience=cfg["patience"], return_history=True,
        progress=sys.stderr.isatty(),
    )
    return fitted, {"fit_seconds": time.perf_counter() - t0, "steps": history.step[-1] + 1,
                    "final_val_loss": history.val_loss[-1] if history.val_loss else None}


def plummer_accuracy(model, key):
    """Force/density/Φ errors at 2^14 fresh Plummer tracers with r in [0.1, 3]."""
    w = dp.flows.PlummerDF(r_max=10.0).sample(key, 2**14)
    res = dp.evaluate.residuals(model, dp.Plummer(1.0, 1.0), w[:, :3])
    return dp.evaluate.summarise(res, dp.evaluate.radial_region(res, 0.1, 3.0))


def case_a(cfg, key):
    with jax.enable_x64(True):
        scores = dp.sample_scores(dp.flows.PlummerDF(r_max=10.0), key, cfg["n_scores"])
    scores = dp.ScoreSample(*(jnp.asarray(a, jnp.float32) for a in
                              (scores.x, scores.v, scores.dlnf_dx, scores.dlnf_dv, scores.ln_f)))
    fitted, info = fit_neural(scores, cfg, jax.random.fold_in(key, 2), input_scale=3.0)
    return {"info": info, "accuracy": plummer_accuracy(fitted, jax.random.fold_in(key, 3))}


def _fmt(summary):
    rows = ["| quantity | median | p16 | p84 | p95 |", "|---|---|---|---|---|"]
    for name in ("phi", "force", "force_z", "density"):
        s = summary[name]
        rows.append(f"| {name} | {s['median']:.4f} | {s['p16']:.4f} | {s['p84']:.4f} "
                    f"| {s['p95']:.4f} |")
    return "\n".join(rows)


CASES = {"a": case_a}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--cases", nargs="+", default=sorted(CASES), choices=sorted(CASES))
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a smoke run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a preset value, e.g. --set steps=3000")
    args = parser.parse_args()
    cfg = PRESETS[args.preset] | (QUICK if args.quick else {})
    for item in args.set:
        name, _, value = item.partition("=")
        if name not in cfg:
            parser.error(f"unknown preset key {name!r}; valid keys: {sorted(cfg)}")
        cfg[name] = type(cfg[name])(float(value)) if value else cfg[name]
    key = jax.random.key(args.seed)
    out, text = {"preset": args.preset, "quick": args.quick, "config": cfg, "cases": {}}, []
    for name in args.cases:
        t0 = time.perf_counter()
        result = CASES[name](cfg, jax.random.fold_in(key, ord(name)))
        result["wall_seconds"] = time.perf_counter() - t0
        out["cases"][name] = result
        block = f"## case ({name})\n\n{json.dumps(result['info'])}\n\n"
        block += _fmt(result["accuracy"]) if "accuracy" in result else ""
        print(block, flush=True)
        text.append(block)
    tag = args.preset + ("_quick" if args.quick else "") + ("_custom" if args.set else "")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"reproduce_{tag}.json").write_text(json.dumps(out, indent=2) + "\n")
    cmd = "python benchmarks/reproduce.py " + " ".join(sys.argv[1:])
    (RESULTS / f"reproduce_{tag}.md").write_text(f"Command: `{cmd}`\n\n" + "\n\n".join(text))


if __name__ == "__main__":
    main()
