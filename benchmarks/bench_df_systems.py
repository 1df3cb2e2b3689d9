"""Distribution-function recipes on the disk and on a cusped halo, end to end.

    python -m benchmarks.bench_df_systems --system disk --variants general axisymmetric
    python -m benchmarks.bench_df_systems --system disk8 --variants axisymmetric
    python -m benchmarks.bench_df_systems --system halo --variants spherical spherical-vector

Systems:
  disk      the paper's case (c): `dp.mocks.miyamoto_nagai_disk`, n_dyn = 128 (2^16 stars);
  disk8     case (d): the non-stationary disk, n_dyn = 8;
  halo      an Osipkov–Merritt Hernquist halo sampled by galpy (r_a = r_s: radial orbits
            outside r_s; stars from 0.1 to 200 r_s between the 1st and 99th percentiles),
            exact scores from `deeppot.flows.HernquistDF(r_a=1)` (see benchmarks/_galpy_halo.py);
  halo-nfw  galpy's Osipkov–Merritt NFW truncated at 30 r_s, the halo of earlier rows. Not
            an equilibrium (`python -m benchmarks.check_equilibrium`): its "exact" scores (galpy's
            f(Q)) are not its stars' and no potential makes its stars stationary.

Variants (the DF trained by conditional flow matching, FFJORD 1 × (depth × width)), each
a `[df]` section built by `deeppot.pipeline.build_df` (`benchmarks._systems.VARIANTS`):
  general                  the 6-D flow (`symmetry = "none"`)
  general-aug              the 6-D flow on batches transformed by the system's symmetry
                           group (`augment`: axisymmetric + z-mirror / spherical)
  axisymmetric[-q<Q>]      `AxisymmetricDF` on (ln R, asinh(z/z0), v_R, v_z, v_φ), z0 the
                           Q-quantile of |z| (default 0.2; not a `[df]` setting)
  axisymmetric-mirror      `AxisymmetricDF` trained on z-mirrored batches too
                           (`augment = "mirror_z"`)
  spherical                `SphericalDF` on (ln r, v_r, ln v_t) (`tangential = "speed"`)
  spherical-vector         `SphericalDF(tangential="vector")` on (ln r, v_r, v_t as a 2-D
                           vector), the inner flow exactly invariant under its rotations
  spherical[-vector]-scaled  the same with `scale_velocities = true`: the velocities divided
                           by smooth dispersion profiles σ_r(r), σ_t(r) fitted to the data
  <variant>-reflect        `reflect = true`: the trained DF averaged over the velocity
                           reflection every stationary DF of its symmetry has (`Reflected`:
                           v_r → −v_r for the spherical DFs, (v_R, v_z) → −(v_R, v_z) for
                           the axisymmetric ones); trained as the DF without it

`--load-tag T` skips training: each variant's flow is read from
`<save-dir>/<system>_<T>_<variant without -reflect>.eqx` (written by `--save-dir`).

Metrics per row: training wall and CPU seconds; the stationarity residual of the flow's
scores in the true potential (median of |∇Φ·∂ln f/∂v − v·∂ln f/∂x| / (|∇Φ||∂ln f/∂v| +
|v||∂ln f/∂x|); 0 for exact scores; the vertical part alone for the disk); for the disk,
the analytic Miyamoto–Nagai fits of `benchmarks/configs/case-c-mn*.toml` (mass free and fixed) and
optionally (`--neural`) its neural-potential force/density errors; for the halos, median
score errors against the exact scores, an analytic fit of the truth's family (Hernquist
m_tot, r_s or NFW m_s, r_s free) and a `Spherical` neural potential's median force error
at fresh stars (with the exact scores as the fit's floor). Each row is printed when
measured; JSON and markdown go to benchmarks/results/df_<system>_<tag>.*
"""

from __future__ import annotations

import json
import os
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import deeppot as dp
from deeppot import pipeline

from . import _harness as harness
from ._harness import cpu_seconds
from ._systems import (
    HEUN4,
    case_config,
    fit_miyamoto_nagai,
    load_system,
    make_df,
    map_ffjords,
)


def disk_accuracy(model, x):
    """Errors at disk tracers where the true density exceeds 10% of its maximum."""
    res = dp.evaluate.residuals(model, dp.MiyamotoNagai(1.0, 1.0, 0.1), x)
    return dp.evaluate.summarise(res, dp.evaluate.density_region(res, 0.1))


def stationarity_residual(truth, scores, vertical: bool):
    """Median relative CBE residual of the scores in the true (static) potential."""
    grad = np.asarray(truth.gradient(jnp.asarray(scores.x)))
    v, sx, sv = np.asarray(scores.v), np.asarray(scores.dlnf_dx), np.asarray(scores.dlnf_dv)
    out = {}
    res = np.sum(grad * sv, -1) - np.sum(v * sx, -1)
    scale = np.linalg.norm(grad, axis=-1) * np.linalg.norm(sv, axis=-1) + \
        np.linalg.norm(v, axis=-1) * np.linalg.norm(sx, axis=-1)
    out["cbe_residual"] = float(np.median(np.abs(res) / scale))
    if vertical:
        res_z = grad[:, 2] * sv[:, 2] - v[:, 2] * sx[:, 2]
        scale_z = np.abs(grad[:, 2] * sv[:, 2]) + np.abs(v[:, 2] * sx[:, 2])
        out["cbe_residual_z"] = float(np.median(np.abs(res_z) / scale_z))
    return out


def halo_evaluation(df, scores, test, truth, cfg, key, exact):
    """Score errors against the exact scores, an analytic fit and a Spherical fit."""
    w = np.asarray(test.w[:8192])
    ex_x, ex_v = exact(w)
    got_x, got_v = (np.asarray(a) for a in df.score(jnp.asarray(w, jnp.float32)))
    rel = [np.linalg.norm(g - e, axis=-1) / np.linalg.norm(e, axis=-1)
           for g, e in ((got_x, ex_x), (got_v, ex_v))]
    r = np.linalg.norm(w[:, :3], axis=-1)
    inner = r < 1.0
    out = {"score_err_x": float(np.median(rel[0])), "score_err_v": float(np.median(rel[1])),
           "score_err_x_r<1": float(np.median(rel[0][inner])),
           "score_err_v_r<1": float(np.median(rel[1][inner]))}
    out |= fit_halo_potentials(scores, test, truth, cfg, key)
    return out


def fit_halo_potentials(scores, test, truth, cfg, key):
    """The truth's analytic family (mass and scale free, started at (1.5, 2)) and a
    Spherical MLP fit."""
    family = type(truth)
    mass, scale = ("m_s", "r_s") if family is dp.NFW else ("m_tot", "r_s")
    model = dp.PotentialModel(family(**{mass: 1.5, scale: 2.0}))
    fit = case_config("case-c-mn", cfg["quick"]).fit  # the disk's analytic-fit settings
    fitted = dp.fit_potential(model, scores, dp.terms.Log(dp.terms.Stationarity()),
                              key=key, progress=False, max_steps=fit.steps,
                              batch_size=fit.batch_size, learning_rate=fit.learning_rate,
                              warmup_steps=fit.warmup_steps, lr_schedule=fit.schedule,
                              patience=fit.patience, validate_every=fit.validate_every)
    out = {"fit_mass": float(getattr(fitted.potential, mass)),
           "fit_scale": float(getattr(fitted.potential, scale))}
    pot = dp.Spherical.mlp(key=jax.random.fold_in(key, 1), width=cfg["sph_width"], depth=3,
                           input_scale=cfg["sph_input_scale"])
    loss = dp.terms.Log(dp.terms.Stationarity() + dp.terms.PositiveDensity())
    t0 = time.perf_counter()
    fitted = dp.fit_potential(
        dp.PotentialModel(pot), scores, loss, key=jax.random.fold_in(key, 2),
        max_steps=cfg["sph_steps"], batch_size=2048, learning_rate=3e-3, warmup_steps=100,
        lr_schedule="cosine", validate_every=50, progress=False)
    res = dp.evaluate.residuals(fitted, truth, np.asarray(test.x))
    out["spherical_fit_s"] = round(time.perf_counter() - t0, 1)
    out["force_err_median"] = float(np.median(res["force"]))
    out["force_err_median_r<1"] = float(np.median(res["force"][res["r"] < 1.0]))
    out["density_err_median"] = float(np.median(np.abs(res["density"])))
    return out


def train(df, data, k, args):
    """Flow matching (then optional exact-trace likelihood); returns the DF with Heun×4
    scores, wall and CPU seconds and the last validation loss."""
    t, cpu = time.perf_counter(), cpu_seconds()
    df, hist = dp.fit_df(df, data.w, key=jax.random.fold_in(k, 1), objective="cfm",
                         max_steps=args.steps, batch_size=2048, learning_rate=2e-3,
                         warmup_steps=min(500, args.steps // 4), lr_schedule="cosine",
                         validate_every=50, ema_decay=0.998, progress=False,
                         return_history=True)
    df = map_ffjords(df, lambda f: f.with_ode(HEUN4))
    if args.nll_finetune:
        df = dp.fit_df(df, data.w, key=jax.random.fold_in(k, 2),
                       objective=dp.objectives.MaximumLikelihood(trace="exact"),
                       standardise=False, max_steps=args.nll_finetune, batch_size=512,
                       learning_rate=2e-4, warmup_steps=50, lr_schedule="cosine",
                       ema_decay=0.99, validate_every=50, progress=False)
    return (df, round(time.perf_counter() - t, 1), round(cpu_seconds() - cpu, 1),
            hist.val_loss[-1] if hist.val_loss else None)


def main(argv=None):
    p = harness.parser(__doc__, __file__)
    p.add_argument("--system", choices=("disk", "disk8", "halo", "halo-nfw"), required=True)
    p.add_argument("--variants", nargs="*", default=[],
                   help="none: the halo's exact-score floor alone")
    p.add_argument("--n-stars", type=int, default=2**16)
    p.add_argument("--n-scores", type=int, default=2**18)
    p.add_argument("--steps", type=int, default=15000, help="flow-matching steps")
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--activation", choices=("tanh", "silu"), default="tanh")
    p.add_argument("--nll-finetune", type=int, default=0,
                   help="steps of exact-trace maximum likelihood after flow matching")
    p.add_argument("--neural", action="store_true",
                   help="also fit the disk's neural potential (slow: 8000 steps)")
    p.add_argument("--sph-steps", type=int, default=3000, help="halo Spherical fit steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-dir", default=None, help="write each trained DF here")
    p.add_argument("--load-tag", default=None,
                   help="read each flow from --save-dir (saved under this tag) instead of "
                        "training it")
    p.add_argument("--tag", default="cpu")
    p.add_argument("--note", default="")
    p.add_argument("--quick", action="store_true", help="tiny smoke run")
    args = p.parse_args(argv)
    if args.load_tag and not args.save_dir:
        p.error("--load-tag reads from --save-dir: give both")
    if args.quick:
        args.n_stars, args.n_scores, args.steps, args.width = 2**12, 2**12, 50, 16
        args.sph_steps = 50
    cfg = {"quick": args.quick, "sph_width": 64, "sph_input_scale": 3.0,
           "sph_steps": args.sph_steps}
    train_data, truth, test, exact = load_system(args.system, args.n_stars)
    halo = args.system.startswith("halo")
    rows = []
    key = jax.random.key(args.seed)
    for i, variant in enumerate(args.variants):
        k = jax.random.fold_in(key, i)
        base = variant.removesuffix("-reflect")
        df = make_df(variant, args.system, jax.random.fold_in(k, 0), args.width, args.depth,
                     args.activation)
        row = {"system": args.system, "variant": variant,
               "flow": f"1x({args.depth}x{args.width} {args.activation}), {args.steps} cfm"
                       + (f" + {args.nll_finetune} nll_exact" if args.nll_finetune else "")}
        if args.load_tag:
            path = os.path.join(args.save_dir, f"{args.system}_{args.load_tag}_{base}.eqx")
            df = eqx.tree_deserialise_leaves(path, map_ffjords(df, lambda f: f.with_ode(HEUN4)))
            row["loaded"] = path
        else:
            df, row["train_s"], row["train_cpu_s"], row["final_val_loss"] = train(
                df, train_data, k, args)
            if args.save_dir:
                os.makedirs(args.save_dir, exist_ok=True)
                eqx.tree_serialise_leaves(
                    os.path.join(args.save_dir, f"{args.system}_{args.tag}_{base}.eqx"), df)
        w_test = jnp.asarray(test.w[:8192], jnp.float32)
        row["heldout_nll"] = float(-jnp.mean(df.log_prob(w_test)))
        t = time.perf_counter()
        scores = dp.sample_scores(df, jax.random.fold_in(k, 3), args.n_scores)
        row["score_s"] = round(time.perf_counter() - t, 1)
        row |= stationarity_residual(truth, scores, vertical=not halo)
        if halo:
            row |= halo_evaluation(df, scores, test, truth, cfg, jax.random.fold_in(k, 4),
                                   exact)
        else:
            row["mn_fit"] = fit_miyamoto_nagai(scores, jax.random.fold_in(k, 4), args.quick)
            if args.neural:
                neural = case_config("case-c", args.quick)
                fitted, info = pipeline.train_potential(neural.potential, neural.fit, scores,
                                                        jax.random.fold_in(k, 5))
                row["neural"] = {"fit": info, "accuracy": disk_accuracy(
                    fitted, jnp.asarray(test.x))}
        rows.append(row)
        print(json.dumps(row), flush=True)
    if halo and not args.quick:
        # the fit's floor: the same fits from exact scores at true stars
        w = np.asarray(train_data.w)
        ex_x, ex_v = exact(w)
        # galpy's NFW f is 0 at the truncation (ln f = -inf there): keep the finite rows
        ok = np.all(np.isfinite(ex_x), -1) & np.all(np.isfinite(ex_v), -1)
        scores = dp.ScoreSample(w[ok, :3], w[ok, 3:], ex_x[ok], ex_v[ok])
        row = {"system": args.system, "variant": "exact scores", "flow": "-",
               "dropped_non_finite": int((~ok).sum()),
               **fit_halo_potentials(scores, test, truth, cfg, jax.random.fold_in(key, 99))}
        rows.append(row)
        print(json.dumps(row), flush=True)
    write(args, rows, argv)


def _md(args, rows):
    if args.system.startswith("halo"):
        head = ("| variant | flow | train s (CPU s) | NLL | CBE resid. | err ∂x | err ∂v | "
                "err ∂x, ∂v (r<1) | analytic fit: mass, scale | Spherical force err (r<1) |")
        lines = [head, "|" + "---|" * 10]
        for r in rows:
            tr = f"{r['train_s']:.0f} ({r['train_cpu_s']:.0f})" if "train_s" in r else "-"
            nll = f"{r['heldout_nll']:.4f}" if "heldout_nll" in r else "-"
            cbe = f"{r['cbe_residual']:.3f}" if "cbe_residual" in r else "-"
            err = (f"{r['score_err_x']:.3f} | {r['score_err_v']:.3f} | "
                   f"{r['score_err_x_r<1']:.3f}, {r['score_err_v_r<1']:.3f}"
                   if "score_err_x" in r else "- | - | -")
            lines.append(f"| {r['variant']} | {r['flow']} | {tr} | {nll} | {cbe} | {err} | "
                         f"{r['fit_mass']:.3f}, {r['fit_scale']:.3f} | "
                         f"{r['force_err_median']:.4f} ({r['force_err_median_r<1']:.4f}) |")
        return "\n".join(lines)
    head = ("| variant | flow | train s (CPU s) | NLL | CBE resid. (z) | MN free: m, a, b "
            "| MN fixed mass: a, b | neural force / density |")
    lines = [head, "|" + "---|" * 8]
    for r in rows:
        f, x = r["mn_fit"]["free_mass"], r["mn_fit"]["fixed_mass"]
        tr = f"{r['train_s']:.0f} ({r['train_cpu_s']:.0f})" if "train_s" in r else "-"
        neural = "-"
        if "neural" in r:
            acc = r["neural"]["accuracy"]
            neural = f"{acc['force']['median']:.4f} / {acc['density']['median']:.4f}"
        lines.append(
            f"| {r['variant']} | {r['flow']} | {tr} | "
            f"{r['heldout_nll']:.4f} | {r['cbe_residual']:.3f} ({r['cbe_residual_z']:.3f}) | "
            f"{f['m_tot']:.3f}, {f['a']:.3f}, {f['b']:.4f} | {x['a']:.3f}, {x['b']:.4f} | "
            f"{neural} |")
    return "\n".join(lines)


def write(args, rows, argv=None):
    command = harness.command(__file__, argv)
    payload = {"command": command, "note": args.note, "machine": harness.machine(),
               "rows": rows}
    table = _md(args, rows)
    print(table)
    harness.write_results(
        f"df_{args.system}_{args.tag}{'_quick' if args.quick else ''}", payload,
        f"# DF recipes: {args.system} ({args.tag})\n\nCommand: `{command}`\n\n"
        + (f"Note: {args.note}\n\n" if args.note else "") + table)


if __name__ == "__main__":
    main()
