"""Potential fits on exact scores: how good is the fit itself, and which recipe is best?

    python -m benchmarks.bench_fit_exact --rows plummer_paper hernquist_default [--tag T]
    python -m benchmarks.bench_fit_exact --row system=hernquist,features=x+log_r,steps=4000

Scores come from analytic DFs (`PlummerDF`, `HernquistDF`, isotropic or Osipkov–Merritt),
so the truth makes the loss vanish and what is left is the fit: network inputs, schedule,
loss form, optimiser, precision. Each row prints as soon as it is measured (median force,
density and Φ errors at fresh tracers from the same DF, wall and CPU seconds of the fit)
and the run writes benchmarks/results/fit_exact_<tag>.json and .md. The machine is shared:
wall times are upper bounds, CPU times (user + system of this process) are the cost.

A row is a recipe: `key=value` pairs (see `BASE`) joined by commas; `features` joins
feature names with `+`. `steps=0` skips Adam; `lbfgs_steps` adds the L-BFGS finish.
"""

import math
import sys
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import deeppot as dp

from . import _harness as harness
from ._harness import cpu_seconds

BASE = {
    "system": "plummer",  # plummer | hernquist | hernquist_om
    "n_scores": 2**18,
    "width": 128,
    "depth": 3,
    "features": "x",
    "input_scale": 0.0,  # 0: the system's default (Plummer 3, Hernquist 1)
    "loss": "paper",  # see LOSSES
    "steps": 4000,
    "batch_size": 2048,
    "learning_rate": 2e-3,
    "warmup": 500,
    "schedule": "cosine",
    "lbfgs_steps": 0,
    "lbfgs_batch": 8192,
    "lbfgs_segment": 0,  # evaluate the accuracy every this many L-BFGS iterations
    "lbfgs_loss": "",  # loss for the L-BFGS finish ("" = the same as Adam's)
    "lbfgs_x64": 0,  # 1: the L-BFGS finish in float64 (model and scores cast up)
    "x64": 0,
    "defaults": 0,  # 1: call fit_potential with nothing but max_steps (the default recipe)
    "seed": 0,
}

NAMED = {
    # the reproduce.py case (a) recipe
    "plummer_paper": "system=plummer,steps=8000",
    "plummer_default": "system=plummer,defaults=1,steps=4000",
    "hernquist_paper": "system=hernquist,steps=4000",
    "hernquist_plateau": "system=hernquist,steps=4000,schedule=plateau",
    "hernquist_default": "system=hernquist,defaults=1,steps=4000",
    "hernquist_om_default": "system=hernquist_om,defaults=1,steps=4000",
}

SYSTEMS = {
    # df, truth, default input scale, regions (name -> (r_min, r_max)); the first is the bar's
    "plummer": (
        lambda: dp.flows.PlummerDF(r_max=10.0), lambda: dp.Plummer(1.0, 1.0), 3.0,
        {"0.1-3": (0.1, 3.0), "0.01-0.1": (0.01, 0.1), "3-10": (3.0, 10.0)},
    ),
    "hernquist": (
        lambda: dp.flows.HernquistDF(r_max=100.0), lambda: dp.Hernquist(1.0, 1.0), 1.0,
        {"0.1-10": (0.1, 10.0), "0.01-0.1": (0.01, 0.1), "0.1-1": (0.1, 1.0),
         "1-10": (1.0, 10.0), "10-100": (10.0, 100.0)},
    ),
    "hernquist_om": (
        lambda: dp.flows.HernquistDF(r_a=1.0, r_max=100.0), lambda: dp.Hernquist(1.0, 1.0), 1.0,
        {"0.1-10": (0.1, 10.0), "0.01-0.1": (0.01, 0.1), "0.1-1": (0.1, 1.0),
         "1-10": (1.0, 10.0), "10-100": (10.0, 100.0)},
    ),
}


def _loss(name):
    t = dp.terms
    return {
        "paper": t.Log(t.Stationarity() + t.PositiveDensity()),
        "asinh": t.Stationarity() + t.PositiveDensity(),
        "cauchy": t.Stationarity(penalty="cauchy") + t.PositiveDensity(),
        "log_cauchy": t.Log(t.Stationarity(penalty="cauchy") + t.PositiveDensity()),
        "square": t.Stationarity(penalty="square") + t.PositiveDensity(),
        "relative": t.Log(t.Stationarity(relative=True) + t.PositiveDensity()),
        "relative_cauchy": t.Stationarity(relative=True, penalty="cauchy") + t.PositiveDensity(),
        "default": None,
    }[name]


def parse_row(text: str) -> dict:
    row = dict(BASE)
    for item in filter(None, text.split(",")):
        name, _, value = item.partition("=")
        if name not in BASE:
            raise SystemExit(f"unknown key {name!r}; keys: {sorted(BASE)}")
        kind = type(BASE[name])
        row[name] = value if kind is str else kind(float(value))
    return row


def _scores(row):
    make_df = SYSTEMS[row["system"]][0]
    with jax.enable_x64(True):
        s = dp.sample_scores(make_df(), jax.random.key(row["seed"]), row["n_scores"])
    dtype = jnp.float64 if row["x64"] else jnp.float32
    return dp.ScoreSample(*(jnp.asarray(getattr(s, f), dtype)
                            for f in ("x", "v", "dlnf_dx", "dlnf_dv", "ln_f")))


def accuracy(model, row) -> dict:
    """Median (p16, p84) errors at 2^15 fresh tracers, in each radial region."""
    make_df, make_truth, _, regions = SYSTEMS[row["system"]]
    with jax.enable_x64(True):
        x = np.asarray(make_df().sample(jax.random.key(10_000 + row["seed"]), 2**15)[:, :3])
    res = dp.evaluate.residuals(model, make_truth(), x)
    out = {}
    for name, (lo, hi) in regions.items():
        s = dp.evaluate.summarise(res, dp.evaluate.radial_region(res, lo, hi))
        out[name] = {q: {k: s[q][k] for k in ("median", "p16", "p84", "n")}
                     for q in ("force", "density", "phi")}
    return out


def _main_errors(acc) -> tuple[float, float, float]:
    a = next(iter(acc.values()))
    return tuple(round(100 * a[q]["median"], 4) for q in ("force", "density", "phi"))


def run_row(row) -> dict:
    x64 = bool(row["x64"])
    with jax.enable_x64(x64):
        scores = _scores(row)
        _, _, scale0, _ = SYSTEMS[row["system"]]
        scale = row["input_scale"] or scale0
        key = jax.random.key(row["seed"])
        pot = dp.NeuralPotential(key=jax.random.fold_in(key, 1), width=row["width"],
                                 depth=row["depth"], input_scale=scale,
                                 features=tuple(row["features"].split("+")))
        model = dp.PotentialModel(pot)
        t0, c0 = time.perf_counter(), cpu_seconds()
        history = None
        if row["defaults"]:
            model, history = dp.fit_potential(model, scores, key=jax.random.fold_in(key, 2),
                                              max_steps=row["steps"], return_history=True,
                                              progress=False)
        elif row["steps"]:
            model, history = dp.fit_potential(
                model, scores, _loss(row["loss"]), key=jax.random.fold_in(key, 2),
                max_steps=row["steps"], batch_size=row["batch_size"],
                learning_rate=row["learning_rate"], warmup_steps=row["warmup"],
                lr_schedule=row["schedule"], patience=1000, validate_every=10,
                return_history=True, progress=False,
            )
        t1, c1 = time.perf_counter(), cpu_seconds()
        lbfgs_info = None
        x64_finish = row["lbfgs_x64"] and not x64
        if row["lbfgs_steps"] and x64_finish:
            jax.config.update("jax_enable_x64", True)
            scores = _scores(row | {"x64": 1})
            model = jax.tree.map(
                lambda a: a.astype(jnp.float64) if eqx.is_inexact_array(a) else a, model)
        if row["lbfgs_steps"]:
            # in segments (each restarts L-BFGS's memory on the same fixed batch), with the
            # accuracy before and after each, so one row shows the whole trajectory
            lbfgs_info = {"trajectory": [], "loss": []}
            segment = row["lbfgs_segment"] or row["lbfgs_steps"]
            done = 0
            lbfgs_loss = _loss(row["lbfgs_loss"] or row["loss"]) if not row["defaults"] \
                else None
            eval_s = 0.0
            while done < row["lbfgs_steps"]:
                e0 = time.perf_counter()
                a = accuracy(model, row)
                eval_s += time.perf_counter() - e0
                lbfgs_info["trajectory"].append((done, _main_errors(a)))
                m = min(segment, row["lbfgs_steps"] - done)
                model, lh = dp.refine_potential(
                    model, scores, lbfgs_loss, key=jax.random.fold_in(key, 3),
                    max_steps=m, batch_size=row["lbfgs_batch"], return_history=True,
                )
                lbfgs_info["loss"].append((done, lh.train_loss[0], lh.train_loss[-1]))
                done += m
                if lh.stop_reason != "max_steps":
                    break
        t2, c2 = time.perf_counter(), cpu_seconds()
        acc = accuracy(model, row)
        if x64_finish:
            jax.config.update("jax_enable_x64", False)
        if lbfgs_info:
            lbfgs_info["trajectory"].append((done, _main_errors(acc)))
            lbfgs_info["eval_wall_s"] = round(eval_s, 1)
            print(f"  L-BFGS trajectory (iteration, force/density/phi %): "
                  f"{lbfgs_info['trajectory']}", flush=True)
    return {
        "row": row,
        "accuracy": acc,
        "adam": {"wall_s": round(t1 - t0, 1), "cpu_s": round(c1 - c0, 1),
                 "steps": (history.step[-1] + 1) if history and history.step else 0,
                 "final_val_loss": history.val_loss[-1] if history and history.val_loss
                 else None},
        "lbfgs": lbfgs_info and lbfgs_info | {"wall_s": round(t2 - t1, 1),
                                              "cpu_s": round(c2 - c1, 1)},
        "adam_accuracy": lbfgs_info and lbfgs_info["trajectory"][0][1],
        "fit_wall_s": round(t2 - t0, 1),
        "fit_cpu_s": round(c2 - c0, 1),
    }


def _describe(row) -> str:
    diff = {k: v for k, v in row.items() if v != BASE[k] and k != "system"}
    return ", ".join(f"{k}={v}" for k, v in diff.items()) or "base"


def md_row(result) -> str:
    row, acc = result["row"], result["accuracy"]
    main = next(iter(acc))
    a = acc[main]

    def pct(q):
        return f"{100 * a[q]['median']:.3g}% ({100 * a[q]['p16']:.2g}–{100 * a[q]['p84']:.2g})"

    decades = " / ".join(f"{100 * v['force']['median']:.2g}" for k, v in acc.items()
                         if k != main)
    recipe = _describe(row)
    if result.get("adam_accuracy"):
        f, d, _ = result["adam_accuracy"]
        recipe += f" (before L-BFGS: force {f:.3g}%, density {d:.3g}%)"
    return (f"| {row['system']} | {recipe} | {pct('force')} | {pct('density')} "
            f"| {100 * a['phi']['median']:.2g}% | {decades} | {result['fit_wall_s']:.0f} "
            f"| {result['fit_cpu_s']:.0f} |")


HEADER = ("| system | recipe (differences from BASE) | force, main region | density | Φ "
          "| force in the other regions (%) | wall s | CPU s |\n"
          "|---|---|---|---|---|---|---|---|")


def main(argv=None):
    parser = harness.parser(__doc__, __file__)
    parser.add_argument("--rows", nargs="*", default=[], choices=sorted(NAMED))
    parser.add_argument("--row", action="append", default=[], help="ad hoc recipe key=value,...")
    parser.add_argument("--tag", default="cpu")
    args = parser.parse_args(argv)
    rows = [parse_row(NAMED[n]) for n in args.rows] + [parse_row(t) for t in args.row]
    if not rows:
        parser.error("give --rows and/or --row")
    cmd = harness.command(__file__, argv)
    results = []
    print(HEADER, flush=True)
    for row in rows:
        result = run_row(row)
        results.append(result)
        print(md_row(result), flush=True)
        regions = {name: f"r ∈ [{lo}, {hi}]" for name, (lo, hi, *_) in
                   ((n, v) for n, v in SYSTEMS[row["system"]][3].items())}
        payload = {"command": cmd, "machine": {"cpu_count": 2, "shared": True,
                                               "jax": jax.__version__}, "results": results}
        table = "\n".join([HEADER] + [md_row(r) for r in results])
        harness.write_results(
            f"fit_exact_{args.tag}", payload,
            f"Command: `{cmd}`\n\nMedian (p16–p84) relative errors at 2^15 fresh tracers; "
            f"main region first ({regions}); shared 2-core CPU.\n\n{table}"
        )
    if not math.isfinite(results[-1]["fit_wall_s"]):
        sys.exit(1)


if __name__ == "__main__":
    main()
