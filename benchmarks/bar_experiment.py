"""Barred galaxies end to end: the pattern speed and the bar's force from a snapshot.

Each stage is one niced call that reads and writes a run directory (`runs/bar/<name>`), so
the stages run one at a time on a shared machine and resume:

```
python -m benchmarks.bar_experiment mock   RUN --source bar_jacobi --n 65536
python -m benchmarks.bar_experiment df     RUN --steps 20000 [--augment]
python -m benchmarks.bar_experiment scores RUN --n 262144 [--exact]
python -m benchmarks.bar_experiment fit    RUN --scores flow --model composite --tag T
python -m benchmarks.bar_experiment report RUN --tag T      # JSON + .md + plots
python -m benchmarks.bar_experiment moments RUN             # stationarity of the mock
```

`fit` trains the potential and the frame's Ω jointly (`trainable = (potential,
frame.omega)`), starting from Ω = `--omega0`; `--model` is `composite` (Axisymmetric
network + NeuralPotential, the library's `axisymmetric_plus_neural`), `neural` (one free
network) or `analytic` (the truth's families, disk + halo + Long–Murali bar, started away
from the truth). Reports go to `benchmarks/results/bar_<run>_<tag>.{json,md}`; CPU times
come from `resource.getrusage` (the machine is shared, so wall times are upper bounds).
"""

import inspect
import json
from pathlib import Path

import equinox as eqx
import jax
import numpy as np

import deeppot as dp
from deeppot import evaluate, mocks

from . import _harness as harness

RUNS = harness.ROOT / "runs" / "bar"


def _run_dir(name: str) -> Path:
    d = RUNS / name
    d.mkdir(parents=True, exist_ok=True)
    return d


def _log(run: Path, stage: str, record: dict) -> None:
    path = run / "log.json"
    log = json.loads(path.read_text()) if path.exists() else {}
    log[stage] = record
    path.write_text(json.dumps(log, indent=2, default=float) + "\n")
    print(json.dumps({stage: record}, default=float), flush=True)


def _timed(fn):
    with harness.Stage() as st:
        out = fn()
    return out, st.info()


def _catalog(run: Path) -> dp.PhaseSpaceCatalog:
    return dp.PhaseSpaceCatalog.load(run / "catalog.npz")


def cmd_mock(args):
    run = _run_dir(args.run)
    params = json.loads(args.params) if args.params else {}
    source = dp.registry.sources[args.source]
    cat, t = _timed(lambda: source(jax.random.key(args.seed), args.n, **params))
    cat.save(run / "catalog.npz")
    _log(run, "mock", {"source": args.source, "n": args.n, "seed": args.seed, "params": params,
                       **t, "integration": cat.meta.get("integration"),
                       "bar": cat.meta.get("bar")})


def _augmented(w: np.ndarray) -> np.ndarray:
    """The stars and their copies rotated by π about z (the bar's symmetry)."""
    flipped = w * np.array([-1, -1, 1, -1, -1, 1])
    return np.concatenate([w, flipped])


def cmd_df(args):
    run = _run_dir(args.run)
    cat = _catalog(run)
    w = np.asarray(cat.w, dtype=np.float32)
    if args.augment:
        w = _augmented(w)
    df = dp.flows.FFJORD(jax.random.key(args.seed), width=args.width)
    kw = {"max_steps": args.steps, "progress": False, "return_history": True,
          "checkpoint_path": str(run / f"df{args.suffix}.ckpt"), "checkpoint_every": 1000}
    (df, history), t = _timed(lambda: dp.fit_df(df, w, key=jax.random.key(args.seed + 1), **kw))
    dp.save_model(run / f"df{args.suffix}.eqx", df)
    record = {"steps": args.steps, "augment": args.augment, "width": args.width, **t,
              "final_train_loss": history.train_loss[-1]}
    if "truth_df" in cat.meta:
        truth = mocks.truth_df(cat.meta)
        pts = np.asarray(truth.sample(jax.random.key(99), 8192))
        record["score_error"] = evaluate.score_errors(df, truth, pts)
    _log(run, f"df{args.suffix}", record)


def _ode_df(df):
    import diffrax

    return eqx.tree_at(lambda d: [b.ode for b in d.blocks], df,
                       [dp.flows.ODESettings(solver=diffrax.Tsit5(), n_steps=4)
                        for _ in df.blocks])


def cmd_scores(args):
    run = _run_dir(args.run)
    cat = _catalog(run)
    if args.exact:
        df, name = mocks.truth_df(cat.meta), "scores_exact.npz"
    else:
        df, name = _ode_df(dp.load_model(run / f"df{args.suffix}.eqx")[0]), \
            f"scores{args.suffix}.npz"
    scores, t = _timed(lambda: dp.sample_scores(df, jax.random.key(args.seed), args.n,
                                                chunk_size=8192))
    scores.save(run / name)
    record = {"n": args.n, **t, **_omega_at_truth(cat, scores)}
    if not args.exact and "truth_df" in cat.meta:
        truth = mocks.truth_df(cat.meta)
        w = np.concatenate([np.asarray(scores.x[:8192]), np.asarray(scores.v[:8192])], 1)
        record["score_error_at_flow_samples"] = evaluate.score_errors(df, truth, w)
        sx, sv = truth.score(w)
        g_true = _rotation_generator(w, sx, sv)
        g_flow = _rotation_generator(w, scores.dlnf_dx[:8192], scores.dlnf_dv[:8192])
        rms = float(np.sqrt(np.mean(g_true**2)))
        record["rotation_derivative_error"] = {
            "median_abs_over_rms": float(np.median(np.abs(g_flow - g_true)) / rms),
            "regression_slope": float(np.sum(g_flow * g_true) / np.sum(g_true**2)),
            "correlation": float(np.corrcoef(g_flow, g_true)[0, 1])}
    _log(run, name.removesuffix(".npz"), record)


def _rotation_generator(w, sx, sv):
    """(x × ∂ln f/∂x + v × ∂ln f/∂v)_z = −∂ln f/∂φ under a rigid rotation of x and v: the
    part of the scores that the pattern speed multiplies in the stationarity residual."""
    w, sx, sv = (np.asarray(a, dtype=float) for a in (w, sx, sv))
    return (w[:, 0] * sx[:, 1] - w[:, 1] * sx[:, 0]) + (w[:, 3] * sv[:, 1]
                                                       - w[:, 4] * sv[:, 0])


def _omega_at_truth(cat, scores):
    """The pattern speed that the scores alone imply: the minimum of the stationarity loss
    over Ω at the true potential (isolates the scores' effect from the potential fit's)."""
    truth, omega_true = _truth(cat)
    model = dp.PotentialModel(truth, dp.RotatingFrame(omega=[0, 0, omega_true]))
    grid = omega_true * np.linspace(0.7, 1.3, 121)
    land = evaluate.omega_landscape(model, scores, dp.terms.Log(dp.terms.Stationarity()),
                                    grid, max_points=2**16)
    best = float(grid[np.argmin(land["loss"])])
    return {"omega_at_true_potential": best,
            "omega_at_true_potential_error": best / omega_true - 1}


def _truth(cat):
    return mocks.truth_potential(cat.meta), float(cat.meta["frame"]["omega"][2])


def _model(kind: str, omega0: float, key, input_scale: float):
    frame = dp.RotatingFrame(omega=[0.0, 0.0, omega0])
    if kind == "composite":
        pot = dp.potentials.axisymmetric_plus_neural(key=key, width=128, depth=3,
                                                     input_scale=input_scale)
    elif kind == "neural":
        pot = dp.NeuralPotential(key=key, width=128, depth=3, input_scale=input_scale)
    elif kind == "analytic":  # the truth's families, every parameter started off
        p = {k: q.default for k, q in
             inspect.signature(mocks.barred_potential).parameters.items()}
        start = {k: v * f for (k, v), f in zip(
            ((k, p[k]) for k in ("disk_mass", "disk_a", "disk_b", "halo_mass", "halo_r_s",
                                 "bar_mass", "bar_a", "bar_b", "bar_c")),
            (1.2, 0.85, 1.3, 0.8, 1.25, 1.4, 0.8, 1.3, 0.75))}
        pot = mocks.barred_potential(**{**p, **start, "bar_angle": 0.2})
    else:
        raise ValueError(kind)
    return dp.PotentialModel(pot, frame)


def cmd_fit(args):
    run = _run_dir(args.run)
    name = "_exact" if args.scores == "exact" else args.suffix
    scores = dp.ScoreSample.load(run / f"scores{name}.npz")
    if args.max_scores:
        scores = scores[: args.max_scores]
    model = _model(args.model, args.omega0, jax.random.key(args.seed), args.input_scale)
    if args.model == "analytic":
        loss = dp.terms.Log(dp.terms.Stationarity())
        kw = {"max_steps": args.steps or 1500, "batch_size": 4096, "learning_rate": 2e-2}
    else:
        loss = dp.terms.Log(dp.terms.Stationarity() + dp.terms.PositiveDensity())
        if args.split > 0:
            loss = loss + args.split * dp.terms.AzimuthalMeanPenalty()
        kw = {"max_steps": args.steps or 8000}
        if args.warmup is not None:
            kw["warmup_steps"] = args.warmup
        if args.batch_size:
            kw["batch_size"] = args.batch_size
    (model, history), t = _timed(lambda: dp.fit_potential(
        model, scores, loss, key=jax.random.key(args.seed + 1), progress=False,
        return_history=True, trainable=lambda m: (m.potential, m.frame.omega),
        checkpoint_path=str(run / f"fit_{args.tag}.ckpt"), **kw))
    dp.save_model(run / f"fit_{args.tag}.eqx", model)
    _log(run, f"fit_{args.tag}", {"scores": args.scores, "model": args.model,
                                  "omega0": args.omega0, "n_scores": len(scores),
                                  "split": args.split, **kw, **t,
                                  "omega": np.asarray(model.frame.omega).tolist(),
                                  "final_train_loss": history.train_loss[-1]})


def _regions(res, r_bar):
    return {
        f"0.2 ≤ R ≤ {r_bar:g}, |z| ≤ 0.3": evaluate.cylinder_region(res, 0.2, r_bar, 0.3),
        f"R ≤ {r_bar:g}, |z| ≤ 0.3": evaluate.cylinder_region(res, 0.0, r_bar, 0.3),
        "all tracers": np.ones(np.shape(res["R"]), bool),
    }


def cmd_report(args):
    run = _run_dir(args.run)
    cat = _catalog(run)
    truth, omega_true = _truth(cat)
    model = dp.load_model(run / f"fit_{args.tag}.eqx")[0]
    log = json.loads((run / "log.json").read_text())
    fit = log[f"fit_{args.tag}"]
    scores = dp.ScoreSample.load(
        run / f"scores{'_exact' if fit['scores'] == 'exact' else args.suffix}.npz")
    omega = float(model.frame.omega[2])
    x = np.asarray(cat.x[: args.n_points])
    res = evaluate.residuals(model, truth, x)
    r_bar = float(cat.meta["params"].get("bar_a", 1.0))
    accuracy = {name: evaluate.summarise(res, mask) for name, mask in _regions(res, r_bar).items()}
    bar = evaluate.bar_force_residuals(model, truth, x[: min(4096, len(x))])
    in_bar = (bar["R"] >= 0.2) & (bar["R"] <= r_bar) & (np.abs(bar["z"]) <= 0.3)
    loss = dp.terms.Log(dp.terms.Stationarity())
    grid = omega_true * np.linspace(0.8, 1.2, 41)
    land = evaluate.omega_landscape(model, scores, loss, grid, max_points=2**15)
    payload = {
        "run": args.run, "tag": args.tag, "catalog": {"n": len(cat), **cat.meta["params"]},
        "fit": fit, "df": {k: v for k, v in log.items() if k.startswith("df")},
        "omega_true": omega_true, "omega": omega,
        "omega_error": omega / omega_true - 1,
        "omega_xy": np.asarray(model.frame.omega[:2]).tolist(),
        "accuracy": accuracy,
        "bar_force_error_vs_total_median": float(np.median(bar["bar_force"][in_bar])),
        "bar_force_error_vs_bar_median": float(np.median(bar["bar_force_rel"][in_bar])),
        "landscape": {"omega": land["omega"].tolist(), "loss": land["loss"].tolist(),
                      "argmin": float(land["omega"][np.argmin(land["loss"])])},
        "fit_quality": evaluate.fit_quality(model, scores),
    }
    command = harness.command(__file__, ["report", args.run, "--tag", args.tag])
    lines = [f"# Bar run `{args.run}`, fit `{args.tag}`", "",
             f"Command: `{command}`"
             " (after the mock/df/scores/fit stages in runs/bar/<run>/log.json).", "",
             f"Pattern speed: **{omega:.5f}** (truth {omega_true:g}, error "
             f"**{100 * payload['omega_error']:+.2f}%**); scores: {fit['scores']}, model: "
             f"{fit['model']}, fit {fit['wall_s']} s wall / {fit['cpu_s']} s CPU (shared "
             "machine).", "",
             "| region | in-plane force | force | density | Φ | n |", "|---|---|---|---|---|---|"]
    for name, acc in accuracy.items():
        def fmt(q):
            return (f"{100 * acc[q]['median']:.2f}% ({100 * acc[q]['p16']:.2f}–"
                    f"{100 * acc[q]['p84']:.2f}%)")
        cell = name.replace("|", "\\|")  # |z| in a markdown table cell
        lines.append(f"| {cell} | {fmt('force_plane')} | {fmt('force')} | {fmt('density')} |"
                     f" {fmt('phi')} | {acc['force']['n']} |")
    lines += ["", f"Non-axisymmetric (bar) in-plane force at 0.2 ≤ R ≤ {r_bar:g}: median error "
              f"{100 * payload['bar_force_error_vs_total_median']:.2f}% of the total in-plane "
              f"force, {100 * payload['bar_force_error_vs_bar_median']:.1f}% of the bar's own.",
              f"Loss landscape in Ω_p at the fitted potential: minimum at "
              f"{payload['landscape']['argmin']:.4f}."]
    harness.write_results(f"bar_{args.run}_{args.tag}", payload, "\n".join(lines),
                          default=float)
    print("\n".join(lines))
    if args.plots:
        _plots(run, args, model, truth, omega_true, scores, land, r_bar)


def _plots(run, args, model, truth, omega_true, scores, land, r_bar):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    extent = 1.5 * r_bar
    grid = evaluate.midplane_grid(extent, n=48)
    fb = evaluate.nonaxisymmetric_force(model, grid)
    fb_t = evaluate.nonaxisymmetric_force(truth, grid)
    res = evaluate.residuals(model, truth, grid)
    maps = evaluate.frame_dfdt_maps(
        truth, scores[: 2**16],
        {"inertial": dp.InertialFrame(),
         f"rotating, true Ω_p = {omega_true:g}": dp.RotatingFrame(omega=[0, 0, omega_true])},
        extent=extent)
    fig, axes = plt.subplots(2, 3, figsize=(13, 8), constrained_layout=True)
    ext = (-extent, extent, -extent, extent)
    u = np.linspace(-extent, extent, 48)
    s = slice(None, None, 4)
    for ax, f, title in ((axes[0, 0], fb_t, "true bar force"),
                         (axes[0, 1], fb, "recovered bar force")):
        ax.quiver(u[s], u[s], f[s, s, 0], f[s, s, 1])
        ax.set(title=title, aspect="equal")
    im = axes[0, 2].imshow(res["force_plane"], origin="lower", extent=ext, vmin=0, vmax=0.1)
    axes[0, 2].set_title("|ΔF_xy| / |F_xy|, z = 0")
    fig.colorbar(im, ax=axes[0, 2])
    for ax, (label, image) in zip(axes[1, :2], ((k, v) for k, v in maps.items()
                                                 if k != "edges")):
        lim = np.nanpercentile(np.abs(maps["inertial"]), 98) or 1.0
        im = ax.imshow(image, origin="lower", extent=ext, cmap="RdBu_r", vmin=-lim, vmax=lim)
        ax.set_title(f"∂ln f/∂t (relative), {label}")
        fig.colorbar(im, ax=ax)
    axes[1, 2].plot(land["omega"], land["loss"])
    axes[1, 2].axvline(omega_true, color="k", ls=":")
    axes[1, 2].axvline(float(model.frame.omega[2]), color="r", ls="--")
    axes[1, 2].set(xlabel="Ω_p", ylabel="ln L_stationarity", title="loss landscape")
    fig.savefig(harness.RESULTS / f"bar_{args.run}_{args.tag}.png", dpi=90)


def cmd_moments(args):
    run = _run_dir(args.run)
    cat = _catalog(run)
    truth, omega_true = _truth(cat)
    with jax.enable_x64(True):
        out = {name: evaluate.stationarity_moments(truth, frame, cat.x, cat.v)
               for name, frame in (("inertial", dp.InertialFrame()),
                                   ("rotating", dp.RotatingFrame(omega=[0, 0, omega_true])))}
    _log(run, "moments", out)
    lines = ["| moment g | d⟨g⟩/dt inertial (z) | d⟨g⟩/dt rotating (z) |", "|---|---|---|"]
    for g in out["inertial"]:
        a, b = out["inertial"][g], out["rotating"][g]
        lines.append(f"| {g} | {a['rate']:+.2e} ({a['z']:+.1f}) | {b['rate']:+.2e} "
                     f"({b['z']:+.1f}) |")
    header = [f"# Stationarity of the mock `{args.run}` ({cat.meta['generator']}, "
              f"n = {len(cat)})", "",
              f"Command: `{harness.command(__file__, ['moments', args.run])}`. "
              "d⟨g⟩/dt from the true potential and the stars alone "
              "(`evaluate.stationarity_moments`), with its z-score; inertial frame vs the "
              f"frame rotating at the true Ω_p = {omega_true:g}.", ""]
    harness.write_results(f"bar_{args.run}_moments", out, "\n".join(header + lines),
                          default=float)
    print("\n".join(lines))


def main(argv=None):
    p = harness.parser(__doc__, __file__)
    sub = p.add_subparsers(dest="cmd", required=True)

    def command(name, *, seed=None, suffix=False):
        """A subcommand on the run directory `run`, with the seed of its keys and the suffix
        of the DF and score files it reads or writes."""
        c = sub.add_parser(name)
        c.add_argument("run")
        if seed is not None:
            c.add_argument("--seed", type=int, default=seed)
        if suffix:
            c.add_argument("--suffix", default="")
        return c

    m = command("mock", seed=0)
    m.add_argument("--source", default="bar_jacobi")
    m.add_argument("--n", type=int, default=65536)
    m.add_argument("--params", default="", help="JSON of the source's parameters")
    d = command("df", seed=0, suffix=True)
    d.add_argument("--steps", type=int, default=20000)
    d.add_argument("--width", type=int, default=256)
    d.add_argument("--augment", action="store_true")
    s = command("scores", seed=2, suffix=True)
    s.add_argument("--n", type=int, default=262144)
    s.add_argument("--exact", action="store_true")
    f = command("fit", seed=0, suffix=True)
    f.add_argument("--scores", choices=("exact", "flow"), default="flow")
    f.add_argument("--model", choices=("composite", "neural", "analytic"), default="composite")
    f.add_argument("--omega0", type=float, default=0.45)
    f.add_argument("--steps", type=int, default=0)
    f.add_argument("--split", type=float, default=0.0, help="AzimuthalMeanPenalty weight")
    f.add_argument("--input-scale", type=float, default=1.0)
    f.add_argument("--max-scores", type=int, default=0)
    f.add_argument("--warmup", type=int, default=None, help="warm-up steps (networks)")
    f.add_argument("--batch-size", type=int, default=0, help="batch size (networks)")
    f.add_argument("--tag", required=True)
    r = command("report", suffix=True)
    r.add_argument("--tag", required=True)
    r.add_argument("--n-points", type=int, default=16384)
    r.add_argument("--plots", action="store_true")
    command("moments")
    args = p.parse_args(argv)
    {"mock": cmd_mock, "df": cmd_df, "scores": cmd_scores, "fit": cmd_fit,
     "report": cmd_report, "moments": cmd_moments}[args.cmd](args)


if __name__ == "__main__":
    main()
