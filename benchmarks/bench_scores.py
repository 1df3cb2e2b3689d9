"""Benchmark distribution-function models on a Plummer sphere: likelihood, scores, speed.

For each DF kind and training mode, train on 2^16 exact Plummer stars (r_max = 10) on CPU and
report the held-out NLL against the ideal (5.0785), the median relative error of the scores
∂ln f/∂x and ∂ln f/∂v against `PlummerDF` at 2^14 points drawn from the truth, the training
wall time and the score throughput. Also times FFJORD log-prob + input gradient for 1024
points at the TensorFlow reference size and tolerances (chain of 3, 3×128 tanh, Dopri5,
rtol 1e-7, atol 1e-5, untrained; reference 4.1 s).

    python -m benchmarks.bench_scores            # full run (long)
    python -m benchmarks.bench_scores --quick    # GPU preset (< 60 s there): TF-size timing
                                                 # and the CFM flow on 2^12 stars, 60 steps

Rows are printed as they are measured; the device, the matmul precision (float32
"highest" by default, `--precision tensorfloat32` for TF32 on a GPU) and the dtype are
recorded.

Options for the flow-matching case: `--symmetry spherical` models the DF as
`SphericalDF(FFJORD(dim=3))` on (ln r, v_r, ln v_t); `--augment` trains the general 6-D flow
on randomly rotated batches (`Augmented(..., "spherical")`); `--nll-finetune N` continues
with N steps of exact-trace maximum likelihood (the evaluation solver's discretisation).
Rows report wall and CPU seconds of training (the machine is shared: CPU time is the
fairer figure).
"""

from __future__ import annotations

import json
import math
import os
import platform
import time

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp

from deeppot.flows import (
    FFJORD,
    Augmented,
    Ensemble,
    ODESettings,
    PlummerDF,
    SphericalDF,
    SplineFlow,
)
from deeppot.objectives import MaximumLikelihood
from deeppot.train import fit_df

from . import _harness as harness
from ._harness import cpu_seconds, time_call
from ._systems import map_ffjords

IDEAL_NLL = 5.0785
TF_REFERENCE_S = 4.1
EVAL_CHUNK = 2048


def _score_eval(df, w):
    """Scores of `w` in fixed chunks; returns (scores, throughput excluding compilation)."""
    outs, times = [], []
    for i in range(0, w.shape[0], EVAL_CHUNK):
        t = time.perf_counter()
        s = jnp.concatenate(df.score(w[i : i + EVAL_CHUNK]), -1)
        s.block_until_ready()
        times.append(time.perf_counter() - t)
        outs.append(s)
    warm = times[1:] if len(times) > 1 else times
    return jnp.concatenate(outs), EVAL_CHUNK * len(warm) / sum(warm)


def _metrics(df, truth, w_test):
    lp = jnp.concatenate([df.log_prob(w_test[i : i + EVAL_CHUNK])
                          for i in range(0, w_test.shape[0], EVAL_CHUNK)])
    s, throughput = _score_eval(df, w_test)
    t = jnp.concatenate(truth.score(w_test), -1)

    def rel(a, b):
        return jnp.linalg.norm(a - b, axis=-1) / jnp.linalg.norm(b, axis=-1)

    ex, ev = rel(s[:, :3], t[:, :3]), rel(s[:, 3:], t[:, 3:])
    return {
        "heldout_nll": float(-jnp.mean(lp)),
        "nll_minus_ideal": float(-jnp.mean(lp) - IDEAL_NLL),
        "median_err_dlnf_dx": float(jnp.median(ex)),
        "median_err_dlnf_dv": float(jnp.median(ev)),
        "p90_err_dlnf_dx": float(jnp.quantile(ex, 0.9)),
        "p90_err_dlnf_dv": float(jnp.quantile(ev, 0.9)),
        "score_points_per_s": throughput,
    }


def _tf_reference_timing(n_repeat: int, autodiff: bool = True):
    df = FFJORD(jax.random.key(0), n_blocks=3, width=128, depth=3, chunk_size=1024,
                ode=ODESettings(solver=diffrax.Dopri5(), rtol=1e-7, atol=1e-5))
    w = jax.random.normal(jax.random.key(1), (1024, 6))

    with_autodiff, autodiff = autodiff, df.with_score_method("autodiff")

    def both():  # what the reference timed: log-density and its input gradient
        return df.log_prob_and_score(w)

    def best_s(fn):
        return min(time_call(fn, repeats=n_repeat)) / 1e3

    t = time.perf_counter()
    jax.block_until_ready(both())
    compile_s = time.perf_counter() - t
    best = best_s(lambda: df.score(w))
    return {
        "log_prob_only_s": best_s(lambda: df.log_prob(w)),
        "score_autodiff_s": best_s(lambda: autodiff.score(w)) if with_autodiff else math.nan,
        "config": "chain of 3 FFJORD blocks, 3x128 tanh, Dopri5 rtol=1e-7 atol=1e-5, float32, "
                  "untrained, 1024 points",
        "first_call_s_incl_compile": compile_s,
        "log_prob_plus_score_s": best_s(both),
        "score_only_s": best,
        "tf_reference_s": TF_REFERENCE_S,
        "speedup_vs_tf": TF_REFERENCE_S / best,
    }


def _wrapper(symmetry: str, augment: bool, precondition):
    """(dimension of the flow, function wrapping it) for the CFM case."""
    if symmetry == "spherical":
        kinds = precondition or ("log", "identity", "log")
        return 3, lambda f: SphericalDF(f, precondition=kinds)
    if augment:
        return 6, lambda f: Augmented(f, "spherical")
    return 6, lambda f: f


def _cases(quick: bool, scale: float, cfm_steps: int, cfm_width: int = 128,
           cfm_activation: str = "tanh", schedule: str = "plateau", cfm_depth: int = 3,
           symmetry: str = "none", augment: bool = False, precondition=None):
    s = 0.02 if quick else scale  # step scale
    fast_ode = ODESettings(solver=diffrax.Tsit5(), n_steps=4)
    train_ode = ODESettings(solver=diffrax.Tsit5(), n_steps=4)
    heun = ODESettings(solver=diffrax.Heun(), n_steps=4)
    common = dict(batch_size=2048, warmup_steps=max(1, int(500 * s)), patience=2000,
                  min_delta=0.005, smoothing=0.98, lr_schedule=schedule)
    act = {"tanh": jnp.tanh, "silu": jax.nn.silu}[cfm_activation]
    dim, wrap = _wrapper(symmetry, augment, precondition)
    label = {"spherical": "spherical ", "none": "augmented " if augment else ""}[symmetry]
    return [
        dict(name="spline-coupling", mode="nll",
             make=lambda k: SplineFlow(k, kind="coupling"),
             fit=dict(max_steps=int(500 * s), learning_rate=1e-3, **common)),
        dict(name="spline-maf", mode="nll",
             make=lambda k: SplineFlow(k, kind="autoregressive"),
             fit=dict(max_steps=int(500 * s), learning_rate=1e-3, **common)),
        dict(name=f"{label}ffjord-cfm-1x({cfm_depth}x{cfm_width} {cfm_activation})", mode="cfm",
             eval_ode=fast_ode,
             make=lambda k: wrap(FFJORD(k, dim=dim, n_blocks=1, width=cfm_width,
                                        depth=cfm_depth, activation=act, chunk_size=EVAL_CHUNK)),
             fit=dict(max_steps=int(cfm_steps * s), learning_rate=2e-3, ema_decay=0.998, **common),
             alts={"Heun x4": lambda d: map_ffjords(d, lambda f: f.with_ode(heun)),
                   "adaptive Dopri5": lambda d: map_ffjords(d, lambda f: f.with_ode(
                       ODESettings()))}),
        dict(name="ffjord-nll-hutchinson-1x(3x64 tanh)", mode="nll", eval_ode=fast_ode,
             make=lambda k: FFJORD(k, n_blocks=1, width=64, depth=3, ode=train_ode,
                                   chunk_size=EVAL_CHUNK),
             fit=dict(max_steps=int(120 * s), learning_rate=2e-3, ema_decay=0.99,
                      **{**common, "batch_size": 1024, "warmup_steps": max(1, int(100 * s))})),
    ]


def main(argv=None):
    p = harness.parser(__doc__, __file__)
    p.add_argument("--quick", action="store_true",
                   help="GPU preset: the TF-size timing and the CFM flow, small (< 60 s)")
    p.add_argument("--precision", default="highest",
                   choices=("highest", "tensorfloat32", "default"),
                   help="float32 matmul precision (TF32 is tensorfloat32)")
    p.add_argument("--n-train", type=int, default=2**16)
    p.add_argument("--n-test", type=int, default=2**14)
    p.add_argument("--ensemble", type=int, default=3, help="CFM flows in the ensemble")
    p.add_argument("--steps-scale", type=float, default=1.0,
                   help="multiply every training budget (e.g. 0.4 for a shorter run)")
    p.add_argument("--cfm-steps", type=int, default=3000, help="CFM training steps")
    p.add_argument("--cfm-width", type=int, default=128, help="CFM vector-field width")
    p.add_argument("--cfm-activation", choices=("tanh", "silu"), default="tanh")
    p.add_argument("--cfm-depth", type=int, default=3, help="CFM vector-field hidden layers")
    p.add_argument("--symmetry", choices=("none", "spherical"), default="none",
                   help="model the CFM flow's DF as SphericalDF(FFJORD(dim=3))")
    p.add_argument("--precondition", default=None,
                   help="SphericalDF precondition kinds, comma-separated "
                        "(default log,identity,log)")
    p.add_argument("--augment", action="store_true",
                   help="train the 6-D CFM flow on randomly rotated batches")
    p.add_argument("--nll-finetune", type=int, default=0,
                   help="steps of exact-trace maximum likelihood after flow matching")
    p.add_argument("--nll-batch", type=int, default=512)
    p.add_argument("--save-dir", default=None,
                   help="write each trained DF to <dir>/<tag>_<case>_<seed>.eqx")
    p.add_argument("--nll-lr", type=float, default=2e-4)
    p.add_argument("--schedule", choices=("plateau", "cosine"), default="plateau",
                   help="learning-rate schedule of every fit")
    p.add_argument("--only", nargs="*", default=None,
                   help="run only the cases whose name starts with one of these")
    p.add_argument("--skip-reference", action="store_true", help="skip the TF-size timing")
    p.add_argument("--tag", default=None, help="results file tag (default: the platform)")
    p.add_argument("--note", default="")
    args = p.parse_args(argv)
    if args.quick:
        args.n_train, args.n_test, args.ensemble = 2**12, 2**14, 1
        args.only = args.only or ["ffjord-cfm"]
    jax.config.update("jax_default_matmul_precision", args.precision)
    info = harness.machine() | {"precision": args.precision, "dtype": str(jnp.zeros(()).dtype)}
    args.tag = args.tag or harness.device_platform(info)
    print(f"score benchmark on {info['device']} ({info['n_devices']} device(s)), "
          f"{info['dtype']}, matmul precision {args.precision}", flush=True)

    truth = PlummerDF(r_max=10.0)
    w_train = truth.sample(jax.random.key(2024), args.n_train)
    w_test = truth.sample(jax.random.key(7), args.n_test)
    ideal = float(-truth.log_prob(w_test).mean())
    rows = []
    tf = (_tf_reference_timing(1 if args.quick else 2, autodiff=not args.quick)
          if not args.skip_reference else None)
    if tf is None:
        tf = {"score_only_s": float("nan"), "log_prob_plus_score_s": float("nan"),
              "speedup_vs_tf": float("nan"), "skipped": True}
    print(f"FFJORD reference timing: {tf['score_only_s']:.2f} s per 1024 scores "
          f"({tf['speedup_vs_tf']:.2f}x the TF reference)", flush=True)

    rows.append({"model": "PlummerDF (exact)", "mode": "-", "train_s": 0.0,
                 **_metrics(truth, truth, w_test)})
    cfm_members = []
    precondition = tuple(args.precondition.split(",")) if args.precondition else None
    for i, case in enumerate(_cases(args.quick, args.steps_scale, args.cfm_steps, args.cfm_width,
                                      args.cfm_activation, args.schedule, args.cfm_depth,
                                      args.symmetry, args.augment, precondition)):
        if args.only and not any(case["name"].startswith(o) for o in args.only):
            continue
        n_seeds = args.ensemble if case["mode"] == "cfm" else 1
        for seed in range(n_seeds):
            df = case["make"](jax.random.key(100 + 10 * i + seed))
            t, cpu = time.perf_counter(), cpu_seconds()
            df, hist = fit_df(df, w_train, key=jax.random.key(200 + 10 * i + seed),
                              objective=case["mode"], progress=False, return_history=True,
                              **case["fit"])
            if "eval_ode" in case:
                df = map_ffjords(df, lambda f: f.with_ode(case["eval_ode"]))
            name = case["name"]
            if case["mode"] == "cfm" and args.nll_finetune > 0:
                # exact-trace maximum likelihood of the flow as the evaluation solver
                # discretises it, starting from the flow-matching weights
                df = fit_df(df, w_train, key=jax.random.key(300 + 10 * i + seed),
                            objective=MaximumLikelihood(trace="exact"),
                            standardise=False, progress=False,
                            max_steps=int(args.nll_finetune * (0.02 if args.quick else 1)),
                            batch_size=args.nll_batch, learning_rate=args.nll_lr,
                            warmup_steps=50, lr_schedule="cosine", ema_decay=0.99,
                            validate_every=50)
                name += f" + {args.nll_finetune} nll_exact"
            train_s, train_cpu_s = time.perf_counter() - t, cpu_seconds() - cpu
            if args.save_dir:
                os.makedirs(args.save_dir, exist_ok=True)
                eqx.tree_serialise_leaves(
                    os.path.join(args.save_dir, f"{args.tag}_{i}_{seed}.eqx"), df)
            if case["mode"] == "cfm":
                cfm_members.append((df, train_s))
                cfm_name = name
                if seed > 0:
                    continue
            row = {"model": name, "mode": case["mode"], "train_s": train_s,
                   "train_cpu_s": train_cpu_s, "steps": len(hist.step),
                   "stop": hist.stop_reason, **_metrics(df, truth, w_test)}
            rows.append(row)
            print(json.dumps(row), flush=True)
            for label, variant in case.get("alts", {}).items():
                alt = {**row, "model": f"{name} eval {label}",
                       **_metrics(variant(df), truth, w_test)}
                rows.append(alt)
                print(json.dumps(alt), flush=True)
    if len(cfm_members) > 1:
        ens = Ensemble([m for m, _ in cfm_members], chunk_size=EVAL_CHUNK)
        row = {"model": f"ensemble of {len(cfm_members)} {cfm_name}", "mode": "cfm",
               "train_s": sum(t for _, t in cfm_members), **_metrics(ens, truth, w_test)}
        rows.append(row)
        print(json.dumps(row), flush=True)

    t_2_20 = {r["model"]: 2**20 / r["score_points_per_s"] / 60 for r in rows}
    result = {
        "command": harness.command(__file__, argv),
        "note": args.note,
        "platform": platform.platform(), "cpu_count": os.cpu_count(),
        "jax": jax.__version__, "devices": [str(d) for d in jax.devices()],
        "machine": info,
        "n_train": args.n_train, "n_test": args.n_test,
        "ideal_nll_quoted": IDEAL_NLL, "ideal_nll_on_test_points": ideal,
        "tf_reference": tf, "rows": rows, "minutes_for_2^20_scores": t_2_20,
    }
    table = harness.markdown_table(
        ["model", "mode", "train s (CPU s)", "held-out NLL", "NLL − ideal", "med err ∂x",
         "med err ∂v", "p90 ∂x", "p90 ∂v", "scores/s", "2^20 scores (min)"],
        ([r["model"], r["mode"], f"{r['train_s']:.0f} ({r.get('train_cpu_s', 0):.0f})",
          f"{r['heldout_nll']:.4f}", f"{r['nll_minus_ideal']:+.4f}",
          f"{r['median_err_dlnf_dx']:.3f}", f"{r['median_err_dlnf_dv']:.3f}",
          f"{r['p90_err_dlnf_dx']:.3f}", f"{r['p90_err_dlnf_dv']:.3f}",
          f"{r['score_points_per_s']:.0f}", f"{t_2_20[r['model']]:.1f}"] for r in rows))
    print(table)
    print(f"TF-reference FFJORD: {tf['score_only_s']:.2f} s (score) / "
          f"{tf['log_prob_plus_score_s']:.2f} s (log-prob + score) vs 4.1 s → "
          f"{tf['speedup_vs_tf']:.2f}x")
    text = (f"# Score benchmark ({args.tag})\n\nCommand: `{result['command']}`\n\n"
            f"{info['device']}, {info['dtype']}, matmul precision {args.precision}.\n\n"
            + (f"Note: {args.note}\n\n" if args.note else "")
            + f"Trained on {args.n_train} exact Plummer stars (r_max = 10); metrics on "
            f"{args.n_test} fresh truth points (ideal NLL there {ideal:.4f}; quoted "
            f"{IDEAL_NLL}).\n\n{table}\n\n"
            f"FFJORD at the TF reference size/tolerances, 1024 points: score "
            f"{tf['score_only_s']:.2f} s, log-prob + score (`log_prob_and_score`) "
            f"{tf['log_prob_plus_score_s']:.2f} s, reference 4.1 s → "
            f"{tf['speedup_vs_tf']:.2f}x (score by the score ODE; "
            f"by autodiff through the solver {tf.get('score_autodiff_s', float('nan')):.2f}"
            f" s; log-prob alone {tf.get('log_prob_only_s', float('nan')):.2f} s).")
    harness.write_results(f"scores_{args.tag}{'_quick' if args.quick else ''}", result, text)
    return result


if __name__ == "__main__":
    main()
