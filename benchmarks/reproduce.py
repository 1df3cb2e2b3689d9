"""Reproduce the paper's experiments and record accuracy tables.

    python benchmarks/reproduce.py --preset cpu [--cases a c] [--quick]

Cases:
  (a) Plummer sphere, exact scores (PlummerDF): the potential-fit error floor.
  (b) Plummer sphere, scores from a trained flow.
  (c) Miyamoto–Nagai disk, ideal: neural potential, and an analytic MN fit of (a, b)
      (paper: a = 0.996, b = 0.104).
  (d) MN disk non-stationary (n_dyn = 8; paper a = 1.013, b = 0.112), noisy, selected.

Each case prints its table and the whole run writes
benchmarks/results/reproduce_<preset>_<cases>.json and .md. Presets fix sizes and steps:
`cpu` fits in tens of minutes per case on 2 cores; `paper` uses the paper's sizes
(2^19 stars, 2^20 score points, a 4×512 network at batch 2^14) and wants a GPU.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

import deeppot as dp

RESULTS = Path(__file__).parent / "results"

PRESETS = {
    "cpu": {
        "n_stars": 2**16,
        "n_scores": 2**18,
        "width": 128,
        "depth": 3,
        "batch_size": 2048,
        "steps": 8000,
        "learning_rate": 2e-3,
        "warmup": 500,
        "patience": 1000,
        "df_steps": 15000,
        "df_batch_size": 2048,
        "df_learning_rate": 2e-3,
        "df_width": 128,
        "df_activation": "tanh",
        "analytic_steps": 1500,
        "analytic_batch_size": 4096,
        "analytic_learning_rate": 2e-2,
        "l2": 0.0,
        "neural": 1,
        "schedule": "cosine",
        "ema": 0.0,
        "validate_every": 10,
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
        "df_batch_size": 8192,
        "df_learning_rate": 2e-3,
        "df_width": 256,
        "df_activation": "tanh",
        "analytic_steps": 3000,
        "analytic_batch_size": 2**14,
        "analytic_learning_rate": 1e-2,
        "l2": 0.1,
        "neural": 1,
        "schedule": "plateau",
        "ema": 0.0,
        "validate_every": 1,
    },
}
QUICK = {"n_stars": 2**12, "n_scores": 2**13, "steps": 200, "df_steps": 100,
         "analytic_steps": 100, "batch_size": 1024, "df_batch_size": 1024,
         "analytic_batch_size": 1024, "df_width": 32, "warmup": 20, "patience": 100}


def _fit_kwargs(cfg, prefix=""):
    return dict(
        max_steps=cfg[prefix + "steps"], batch_size=cfg[prefix + "batch_size"],
        learning_rate=cfg[prefix + "learning_rate"], warmup_steps=cfg["warmup"],
        patience=cfg["patience"], lr_schedule=cfg["schedule"],
        validate_every=cfg["validate_every"], return_history=True,
        progress=sys.stderr.isatty(),
    )


def _history_info(history, seconds):
    return {"fit_seconds": round(seconds, 1), "steps": history.step[-1] + 1,
            "final_val_loss": history.val_loss[-1] if history.val_loss else None}


def fit_neural(scores, cfg, key, input_scale):
    """The paper's general neural potential, fitted with its loss (Eq. 13)."""
    model = dp.PotentialModel(
        dp.NeuralPotential(key=key, width=cfg["width"], depth=cfg["depth"],
                           input_scale=input_scale)
    )
    loss = dp.terms.Log(dp.terms.Stationarity() + dp.terms.PositiveDensity()) + \
        dp.terms.L2Weights(cfg["l2"])
    t0 = time.perf_counter()
    fitted, history = dp.fit_potential(
        model, scores, loss, key=jax.random.fold_in(key, 1),
        ema_decay=cfg["ema"] or None, **_fit_kwargs(cfg),
    )
    return fitted, _history_info(history, time.perf_counter() - t0)


def fit_miyamoto_nagai(scores, cfg, key):
    """Fit a Miyamoto–Nagai potential starting 30-50% away from the truth: (m_tot, a, b),
    and (a, b) with m_tot fixed at the truth, as in the paper's a–b loss landscape."""
    out = {}
    for label, m_tot, trainable in (
        ("free_mass", 1.3, None),
        ("fixed_mass", 1.0, lambda m: (m.potential.log_a, m.potential.log_b)),
    ):
        model = dp.PotentialModel(dp.MiyamotoNagai(m_tot=m_tot, a=1.5, b=0.15))
        t0 = time.perf_counter()
        fitted, history = dp.fit_potential(
            model, scores, dp.terms.Log(dp.terms.Stationarity()), key=key,
            trainable=trainable, **_fit_kwargs(cfg, "analytic_"),
        )
        pot = fitted.potential
        out[label] = {name: float(getattr(pot, name)) for name in ("m_tot", "a", "b")}
        out[label]["fit"] = _history_info(history, time.perf_counter() - t0)
    return out


def fit_flow(w, cfg, key):
    """Flow-matching FFJORD (the recommended CPU DF), evaluated with Heun x4 steps."""
    activation = {"tanh": jnp.tanh, "silu": jax.nn.silu}[cfg["df_activation"]]
    df = dp.flows.FFJORD(key, n_blocks=1, width=cfg["df_width"], depth=3,
                         activation=activation, chunk_size=4096)
    t0 = time.perf_counter()
    df, history = dp.fit_df(
        df, w, key=jax.random.fold_in(key, 1), objective="cfm", ema_decay=0.998,
        **_fit_kwargs(cfg, "df_"),
    )
    df = df.with_ode(dp.flows.ODESettings(solver=diffrax.Heun(), n_steps=4))
    return df, _history_info(history, time.perf_counter() - t0)


def flow_scores(df, cfg, key, keep=None):
    """Sample score points from the flow; `keep(x) -> mask` restricts them to a region."""
    t0 = time.perf_counter()
    if keep is None:
        scores = dp.sample_scores(df, key, cfg["n_scores"])
    else:
        parts, n = [], 0
        for i in range(64):
            s = dp.sample_scores(df, jax.random.fold_in(key, i), cfg["n_scores"] // 4)
            s = s[np.asarray(keep(s.x))]
            parts.append(s)
            n += len(s)
            if n >= cfg["n_scores"]:
                break
        scores = dp.ScoreSample(*(np.concatenate([getattr(p, f) for p in parts])[: cfg["n_scores"]]
                                  for f in ("x", "v", "dlnf_dx", "dlnf_dv", "ln_f")))
    return scores, {"n_scores": len(scores), "score_seconds": round(time.perf_counter() - t0, 1)}


def score_errors(df, key, n=2**14):
    """Median relative score errors of a DF against the exact Plummer DF at truth points."""
    truth = dp.flows.PlummerDF(r_max=10.0)
    w = truth.sample(key, n)
    exact = truth.score(w)
    approx = df.score(w)
    err = [np.linalg.norm(a - e, axis=-1) / np.linalg.norm(e, axis=-1)
           for a, e in zip(approx, exact)]
    return {"score_err_x": float(np.median(err[0])), "score_err_v": float(np.median(err[1]))}


def plummer_accuracy(model, key):
    """Force/density/Φ errors at 2^14 fresh Plummer tracers with r in [0.1, 3]."""
    w = dp.flows.PlummerDF(r_max=10.0).sample(key, 2**14)
    res = dp.evaluate.residuals(model, dp.Plummer(1.0, 1.0), w[:, :3])
    return dp.evaluate.summarise(res, dp.evaluate.radial_region(res, 0.1, 3.0))


def disk_accuracy(model, x):
    """Errors at disk tracers where the true density exceeds 10% of its maximum."""
    res = dp.evaluate.residuals(model, dp.MiyamotoNagai(1.0, 1.0, 0.1), x)
    return dp.evaluate.summarise(res, dp.evaluate.density_region(res, 0.1))


def case_a(cfg, key):
    with jax.enable_x64(True):
        scores = dp.sample_scores(dp.flows.PlummerDF(r_max=10.0), key, cfg["n_scores"])
    scores = dp.ScoreSample(*(jnp.asarray(a, jnp.float32) for a in
                              (scores.x, scores.v, scores.dlnf_dx, scores.dlnf_dv, scores.ln_f)))
    fitted, info = fit_neural(scores, cfg, jax.random.fold_in(key, 2), input_scale=3.0)
    return {"info": info, "accuracy": plummer_accuracy(fitted, jax.random.fold_in(key, 3))}


def case_b(cfg, key):
    stars = dp.mocks.plummer(key, cfg["n_stars"])
    df, df_info = fit_flow(stars.w, cfg, jax.random.fold_in(key, 1))
    scores, s_info = flow_scores(df, cfg, jax.random.fold_in(key, 2))
    fitted, info = fit_neural(scores, cfg, jax.random.fold_in(key, 3), input_scale=3.0)
    info = {"df": df_info | score_errors(df, jax.random.fold_in(key, 4)), "scores": s_info,
            "potential": info}
    return {"info": info, "accuracy": plummer_accuracy(fitted, jax.random.fold_in(key, 5))}


def _disk(cfg, key, n_dyn):
    return dp.mocks.miyamoto_nagai_disk(key, cfg["n_stars"], n_dyn=n_dyn, workers=2)


def case_c(cfg, key):
    stars = _disk(cfg, key, 128)
    df, df_info = fit_flow(stars.w, cfg, jax.random.fold_in(key, 1))
    scores, s_info = flow_scores(df, cfg, jax.random.fold_in(key, 2))
    info = {"df": df_info, "scores": s_info,
            "mn_fit": fit_miyamoto_nagai(scores, cfg, jax.random.fold_in(key, 3))}
    if not cfg["neural"]:
        return {"info": info}
    fitted, info["potential"] = fit_neural(scores, cfg, jax.random.fold_in(key, 4),
                                           input_scale=1.0)
    return {"info": info, "accuracy": disk_accuracy(fitted, stars.x[: 2**14])}


def case_d(cfg, key):
    """Analytic MN fits on the non-stationary, noisy and selected disk variants."""
    out = {}
    center, radius = np.array([1.0, 0.0, 0.0]), 1.0
    variants = {
        "non-stationary (n_dyn=8)": lambda k: _disk(cfg, k, 8),
        "noisy (Gaia-like errors)": lambda k: dp.mocks.observe(
            _disk(cfg, k, 128), jax.random.fold_in(k, 1)),
        "selected (unit sphere at (1,0,0))": lambda k: dp.mocks.sample_selected(
            lambda kk, m: dp.mocks.miyamoto_nagai_disk(kk, m, workers=2), k, cfg["n_stars"],
            dp.mocks.select_sphere),
    }
    for i, (name, make) in enumerate(variants.items()):
        k = jax.random.fold_in(key, i)
        t0 = time.perf_counter()
        stars = make(jax.random.fold_in(k, 0))
        keep = (lambda x: np.linalg.norm(x - center, axis=-1) <= radius) if "selected" in name \
            else None
        df, df_info = fit_flow(stars.w, cfg, jax.random.fold_in(k, 1))
        scores, s_info = flow_scores(df, cfg, jax.random.fold_in(k, 2), keep=keep)
        out[name] = {"mn_fit": fit_miyamoto_nagai(scores, cfg, jax.random.fold_in(k, 3)),
                     "df": df_info, "scores": s_info,
                     "wall_seconds": round(time.perf_counter() - t0, 1)}
    return {"info": out}


def _fmt(summary):
    rows = ["| quantity | median | p16 | p84 | p95 |", "|---|---|---|---|---|"]
    for name in ("phi", "force", "force_z", "density"):
        s = summary[name]
        rows.append(f"| {name} | {s['median']:.4f} | {s['p16']:.4f} | {s['p84']:.4f} "
                    f"| {s['p95']:.4f} |")
    return "\n".join(rows)


CASES = {"a": case_a, "b": case_b, "c": case_c, "d": case_d}


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
        kind = type(cfg[name])
        cfg[name] = value if kind is str else kind(float(value))
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
    tag = "_".join([args.preset, "".join(args.cases)] + (["quick"] if args.quick else [])
                   + (["custom"] if args.set else []))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"reproduce_{tag}.json").write_text(json.dumps(out, indent=2) + "\n")
    cmd = "python benchmarks/reproduce.py " + " ".join(sys.argv[1:])
    (RESULTS / f"reproduce_{tag}.md").write_text(f"Command: `{cmd}`\n\n" + "\n\n".join(text))


if __name__ == "__main__":
    main()
