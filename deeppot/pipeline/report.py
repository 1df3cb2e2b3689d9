"""What a run reports: accuracy against a known truth, fit quality, plots, report.md."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import replacing
from .config import Config, EvaluateConfig, dumps_toml

__all__ = ["accuracy_table", "band_table", "calibration_setting", "evaluate_model",
           "evaluate_replicas", "quality_warnings", "replica_fields", "replica_warnings",
           "write_replica_report", "write_report"]

# A fit whose median relative stationarity residual exceeds this is reported as poor. On
# the zoo of spherical systems (docs/results.md) every run with a median force error above
# 3% had a residual above 0.08 and every run below 3% one under 0.06 (the demo: 0.02).
POOR_RESIDUAL = 0.08
# … or whose density is negative at more than this fraction of the score points (runs with
# force errors of 1–3% reach 9% on the zoo's cusped members, so 5% warned on good fits)
POOR_NEGATIVE_DENSITY = 0.15


def _truth_of(catalog):
    from ..mocks import truth_potential

    try:
        return truth_potential(catalog.meta)
    except ValueError:
        return None


def _region(cfg: EvaluateConfig, truth, res):
    from .. import evaluate
    from ..potentials import Plummer

    kind = cfg.region
    if kind == "auto":
        kind = "radial" if truth is None or isinstance(truth, Plummer) else "density"
    if kind == "density" and truth is None:
        raise ValueError("[evaluate] region = 'density' needs a true density; a per-star "
                         "truth (a snapshot's Acceleration, Potential) has none: use region "
                         "= 'radial' or 'cylinder'")
    if kind == "radial":
        return (evaluate.radial_region(res, cfg.r_min, cfg.r_max),
                f"r ∈ [{cfg.r_min:g}, {cfg.r_max:g}]")
    if kind == "cylinder":
        return (evaluate.cylinder_region(res, cfg.r_min, cfg.r_max, cfg.z_max),
                f"R ∈ [{cfg.r_min:g}, {cfg.r_max:g}], |z| ≤ {cfg.z_max:g}")
    return (evaluate.density_region(res, cfg.density_fraction),
            f"ρ > {cfg.density_fraction:g} ρ_max")


def evaluate_model(cfg: EvaluateConfig, model, catalog, *, out_dir=None, truth=None,
                   scores=None):
    """Accuracy of a fitted model against the catalogue's truth, fit quality, and plots.

    **Arguments:**

    - `cfg`: the `[evaluate]` settings.
    - `model`: a `PotentialModel`.
    - `catalog`: the catalogue; its first `n_points` positions are evaluated, and its
      `meta` supplies the truth potential (unless `truth` is given); without one, its
      per-star `truth` (a simulation's accelerations and potentials at the stars) is the
      truth, at those stars.
    - `out_dir`: where PNG plots go (`None`: no plots).
    - `truth`: the true potential, overriding the catalogue's.
    - `scores`: the score sample the model was fitted to; adds the truth-free fit quality
      (`deeppot.evaluate.fit_quality`).

    **Returns:** `{"truth": ..., "region": ..., "accuracy": summarise(...) or None,
    "frame": ..., "parameters": ..., "fit_quality": ... or None, "plots": [...]}`.
    """
    from .. import evaluate

    truth = _truth_of(catalog) if truth is None else truth
    star_truth = catalog.truth if truth is None else {}
    out: dict[str, Any] = {"truth": None, "region": None, "accuracy": None, "plots": [],
                           "fit_quality": None}
    frame = {k: np.asarray(getattr(model.frame, k)).tolist()
             for k in ("omega", "center", "u0") if hasattr(model.frame, k)}
    out["frame"] = {"type": type(model.frame).__name__, **frame}
    true_frame = catalog.meta.get("frame")
    if isinstance(true_frame, dict) and "omega" in true_frame and "omega" in frame:
        out["frame"]["omega_true"] = [float(w) for w in true_frame["omega"]]
    pot = model.potential
    out["parameters"] = {
        f.name[4:]: float(np.exp(getattr(pot, f.name)))
        for f in dataclasses.fields(pot) if f.name.startswith("log_")
    }
    if scores is not None:
        out["fit_quality"] = evaluate.fit_quality(model, scores)
    if truth is None and not star_truth:
        return out
    x = np.asarray(catalog.x[: cfg.n_points])
    if truth is None:
        res = evaluate.residuals_at(model, x, **{k: a[: cfg.n_points]
                                                 for k, a in star_truth.items()})
        out["truth"] = {"class": "per-star truth", "fields": sorted(star_truth)}
    else:
        res = evaluate.residuals(model, truth, x)
        out["truth"] = {"class": type(truth).__name__}
    mask, label = _region(cfg, truth, res)
    out["region"] = label
    out["accuracy"] = evaluate.summarise(res, mask)
    if out_dir is not None and cfg.plots and truth is None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        p = out_dir / "residuals_radial.png"
        evaluate.plot_radial(res, p, title="per-star truth, tracer positions",
                             region=(cfg.r_min, cfg.r_max) if label.startswith("r ∈") else None,
                             potential=pot)
        out["plots"].append(p.name)
    elif out_dir is not None and cfg.plots:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        radial = (cfg.r_min, cfg.r_max) if label.startswith("r ∈") else None
        p = out_dir / "residuals_radial.png"
        evaluate.plot_radial(res, p, title=f"{type(truth).__name__} truth, tracer positions",
                             region=radial, potential=pot)
        out["plots"].append(p.name)
        p = out_dir / "profiles.png"
        r_lo = cfg.r_min if cfg.r_min > 0 else cfg.r_max / 100
        evaluate.plot_profiles(pot, p, r=np.geomspace(r_lo / 3, cfg.r_max * 3, 64), truth=truth,
                               region=radial, title="Φ(r) and v_c(R) against the truth")
        out["plots"].append(p.name)
        grid = evaluate.midplane_grid(cfg.map_extent, n=48)
        g = evaluate.residuals(model, truth, grid)
        p = out_dir / "midplane.png"
        evaluate.plot_maps({"ΔF/|F| (|·|)": g["force"], "Δρ/ρ": g["density"],
                            "ΔΦ (offset removed)": g["phi"]},
                           (-cfg.map_extent, cfg.map_extent, -cfg.map_extent, cfg.map_extent),
                           p, title="midplane residuals", potential=pot)
        out["plots"].append(p.name)
    return out


def quality_warnings(evaluation: Mapping[str, Any]) -> list[str]:
    """Warnings about a poor fit, from `evaluate_model`'s truth-free fit quality."""
    q = evaluation.get("fit_quality")
    if not q:
        return []
    out = []
    if q["median_relative_residual"] > POOR_RESIDUAL:
        out.append(f"the fit is poor: the median relative stationarity residual is "
                   f"{q['median_relative_residual']:.2f}, above {POOR_RESIDUAL} (good fits are "
                   "at 0.02–0.06; 1 means the potential explains nothing); check the DF's "
                   "and the potential's training curves, lower the learning rate or train "
                   "longer")
    if q["negative_density_fraction"] > POOR_NEGATIVE_DENSITY:
        out.append(f"the fitted density is negative at {100 * q['negative_density_fraction']:.0f}"
                   f"% of the score points (more than {100 * POOR_NEGATIVE_DENSITY:.0f}%)")
    return out


def accuracy_table(evaluation: Mapping[str, Any]) -> str:
    """Markdown table of median / p16 / p84 force, density and Φ errors in the region.

    **Arguments:**

    - `evaluation`: the output of `evaluate_model` (or a run's `metrics.json`).

    **Returns:** the table (empty string when there is no truth).
    """
    acc = evaluation.get("accuracy")
    if not acc:
        return ""
    rows = [(label, key) for label, key in (
        ("force ΔF/F", "force"), ("density Δρ/ρ", "density"),
        ("potential ΔΦ/spread", "phi")) if key in acc]
    n = acc[rows[0][1]]["n"]
    truth = evaluation["truth"]
    against = (f"the catalogue's per-star truth ({', '.join(truth['fields'])} at each star)"
               if "fields" in truth else f"the true {truth['class']} potential")
    lines = [f"Accuracy against {against}, "
             f"{evaluation['region']} ({n} tracer positions; absolute relative errors):", "",
             "| quantity | median | p16 | p84 |", "|---|---|---|---|"]
    for label, key in rows:
        s = acc[key]
        lines.append(f"| {label} | {100 * s['median']:.2f}% | {100 * s['p16']:.2f}% | "
                     f"{100 * s['p84']:.2f}% |")
    return "\n".join(lines)


def plot_losses(summaries: Mapping[str, Mapping], path: Path) -> bool:
    """Training-loss curves of the DF members and the potential; False if there are none."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = [(k, s) for k, s in summaries.items() if s and s.get("curve", {}).get("step")]
    if not items:
        return False
    fig, axes = plt.subplots(1, len(items), figsize=(4.5 * len(items), 3.2),
                             constrained_layout=True, squeeze=False)
    for ax, (name, s) in zip(axes[0], items):
        ax.plot(s["curve"]["step"], s["curve"]["train_loss"], lw=1)
        ax.set(xlabel="step", ylabel="training loss", title=name)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def write_report(path: Path, cfg: Config, catalog, metrics: Mapping[str, Any]) -> None:
    """Write `report.md`: accuracy, fit quality and warnings, parameters, training, config."""
    ev = metrics
    table = accuracy_table(ev)
    lines = ["# deeppot run report", "",
             f"Catalogue: {len(catalog)} stars ({catalog.meta.get('generator', 'from file')}). "
             f"DF: {cfg.df.kind}. Potential: {cfg.potential.model}, frame: "
             f"{ev['frame']['type']}.", ""]
    if cfg.run.units != "dimensionless":
        from ..units import get_units

        lines += [f"Numbers are in the {get_units(cfg.run.units)!r} units (lengths, "
                  "velocities, masses; G as stated).", ""]
    lines += [table if table else "No truth potential is known for this catalogue, so there "
              "is no accuracy table.", ""]
    se = ev.get("df_score_error")
    if se:
        lines += [f"DF scores against the mock's exact DF: median relative error "
                  f"{100 * se['dlnf_dx']['median']:.1f}% (∂ln f/∂x), "
                  f"{100 * se['dlnf_dv']['median']:.1f}% (∂ln f/∂v) at "
                  f"{se['dlnf_dx']['n']} stars.", ""]
    q = ev.get("fit_quality")
    if q:
        lines += [f"Fit quality (no truth needed): median relative stationarity residual "
                  f"{q['median_relative_residual']:.3f} (p84 {q['p84_relative_residual']:.3f}); "
                  f"negative density at {100 * q['negative_density_fraction']:.1f}% of the "
                  "score points.", ""]
    c = ev.get("potential_check")
    if c:
        lines += [f"Health check passed: the median stationarity residual is "
                  f"{c['residual_ratio']:.3g} of that with Φ = 0; rms force "
                  f"{c['rms_force']:.3g} at the score points.", ""]
    for w in ev.get("warnings", []):
        lines += [f"**Warning:** {w}", ""]
    if ev["parameters"]:
        lines += ["Fitted parameters: " + ", ".join(f"{k} = {v:.4g}"
                                                    for k, v in ev["parameters"].items()), ""]
    if "omega" in ev["frame"]:
        line = f"Frame Ω = {ev['frame']['omega']}"
        if "omega_true" in ev["frame"]:
            w, w_true = (np.asarray(ev["frame"][k]) for k in ("omega", "omega_true"))
            line += f" (truth {ev['frame']['omega_true']}"
            if np.linalg.norm(w_true) > 0:
                line += (f"; pattern speed error "
                         f"{np.linalg.norm(w) / np.linalg.norm(w_true) - 1:+.2%}")
            line += ")"
        lines += [line, ""]
    lines += ["## Training", ""]
    for i, m in enumerate(metrics["df_training"]):
        lines.append(f"- DF member {i}: {m['steps']} steps, final loss "
                     f"{m['final_train_loss']:.4f}, {m['stop_reason']}")
    p = metrics["potential_training"]
    if p.get("steps"):
        lines.append(f"- potential: {p['steps']} steps, final loss {p['final_train_loss']:.4g}, "
                     f"{p['stop_reason']}")
    lines += ["", "## Plots", ""] + [f"![{n}](plots/{n})" for n in ev["plots"]]
    lines += ["", "## Config", "", "```toml", dumps_toml(cfg.to_dict()).rstrip(), "```", ""]
    with replacing(path) as tmp:
        tmp.write_text("\n".join(lines))


# ---------------------------------------------------------------------------------------------
# Replica sets: bands, their coverage of a truth, and their report


def _fields_of(pot, x):
    from ..evaluate import fields

    return fields(pot, x, 2**14)


def replica_fields(cfg: EvaluateConfig, replicas, catalog, *, truth=None) -> dict[str, Any]:
    """The values a replica set's bands are taken of, and their truth: one place for
    `evaluate_replicas` and calibration studies.

    At the catalogue's first `n_points` positions, restricted to the `[evaluate]` region
    when a truth is known: the force |∇Φ|, each force component, the density and Φ (each
    replica's offset removed: its median over the positions, as the truth's).

    **Arguments:**

    - `cfg`: the `[evaluate]` settings.
    - `replicas`: a `deeppot.ReplicaSet`.
    - `catalog`: the catalogue (its meta supplies the truth unless `truth` is given).
    - `truth`: the true potential, overriding the catalogue's.

    **Returns:** `{"x", "mask", "values", "true", "truth", "region", "accuracy",
    "negative_density"}`: the evaluated positions (n, 3) and the region's mask (n,);
    `values[name]` the replicas' values in the region (K, m[, 3]) and `true[name]` the
    truth's (`None` without a truth), for `name` in force, components, density, phi;
    the truth potential, the region's label and the accuracy of the bands' centre (the
    full-data replica or the median, `ReplicaSet.centre`; `None` without a truth); whether
    some replica's density is negative at each position (n,).
    """
    from .. import evaluate
    from ..replicas import band

    truth = _truth_of(catalog) if truth is None else truth
    x = np.asarray(catalog.x[: cfg.n_points])
    per = [_fields_of(m.potential, x) for m in replicas.models]
    phi = np.stack([p[0] for p in per])
    grad = np.stack([p[1] for p in per])
    rho = np.stack([p[2] for p in per])
    mask = np.ones(len(x), bool)
    out: dict[str, Any] = {"x": x, "truth": truth, "region": None, "accuracy": None,
                           "true": None, "negative_density": np.any(rho < 0, axis=0)}
    if truth is not None:
        phi_t, grad_t, rho_t = _fields_of(truth, x)
        def centre(v):  # as the set's bands take it (`deeppot.replicas.band`)
            return band(v, centre=replicas.centre).median

        res = evaluate.residuals_from_fields(centre(phi), centre(grad), centre(rho), phi_t,
                                             grad_t, rho_t, x)
        mask, out["region"] = _region(cfg, truth, res)
        out["accuracy"] = evaluate.summarise(res, mask)
        out["true"] = {"force": np.linalg.norm(grad_t, axis=-1)[mask],
                       "components": grad_t[mask], "density": rho_t[mask],
                       "phi": (phi_t - np.median(phi_t))[mask]}
    out["mask"] = mask
    out["values"] = {"force": np.linalg.norm(grad, axis=-1)[:, mask],
                     "components": grad[:, mask, :],
                     "density": rho[:, mask],
                     "phi": (phi - np.median(phi, axis=1, keepdims=True))[:, mask]}
    return out


def evaluate_replicas(cfg: EvaluateConfig, replicas, catalog, *, out_dir=None, truth=None,
                      fit_quality=None) -> dict[str, Any]:
    """Bands of a `ReplicaSet` at the catalogue's tracer positions, their coverage of the
    truth the catalogue records, and the calibration that truth implies.

    The centre and 68%/95% bands (`deeppot.replicas.band`, of kind `cfg.band`, centred as
    `replicas.centre`, inflated by
    `cfg.band_inflation`) are taken of each quantity of `replica_fields`. Against a truth,
    `coverage` is the fraction of positions whose true value lies inside each band, each
    analytic parameter gets its z-score (median − truth) / (half-width of the 68% band),
    and `calibration` is each quantity's per-level inflation (`deeppot.replicas.calibrate`
    of its uninflated band): what `band_inflation` would have to be for nominal coverage
    here, to be tested on another system.

    **Arguments:**

    - `cfg`: the `[evaluate]` settings.
    - `replicas`: a `deeppot.ReplicaSet`.
    - `catalog`: the run's catalogue (its meta supplies the truth unless `truth` is given).
    - `out_dir`: where PNG plots go (`None`: none).
    - `truth`: the true potential, overriding the catalogue's.
    - `fit_quality`: each replica's `deeppot.evaluate.fit_quality` (the truth-free signals).

    **Returns:** `{"replicas", "band", "truth", "region", "coverage", "calibration",
    "band_widths", "parameters", "fit_quality", "untrusted", "accuracy", "plots"}`
    (`coverage`, `calibration` and `accuracy` `None` without a truth).
    """
    from ..replicas import (
        analytic_parameters,
        band,
        calibrate,
        coverage,
        inflation_factors,
        z_scores,
    )

    k = len(replicas)
    opts = dict(kind=cfg.band, inflation=cfg.band_inflation, centre=replicas.centre)
    f = replica_fields(cfg, replicas, catalog, truth=truth)
    truth, values, true, mask = f["truth"], f["values"], f["true"], f["mask"]
    out: dict[str, Any] = {"replicas": k,
                           "band": {"kind": cfg.band, "centre": replicas.centre,
                                    "inflation": inflation_factors(cfg.band_inflation)},
                           "truth": None if truth is None else {"class": type(truth).__name__},
                           "region": f["region"], "coverage": None, "calibration": None,
                           "accuracy": f["accuracy"], "plots": [],
                           "fit_quality": list(fit_quality or [])}
    bands = {name: band(v, **opts) for name, v in values.items()}
    # the bands' relative half-widths: what a reader takes as the error bar
    scale = {"force": bands["force"].median, "density": np.abs(bands["density"].median),
             "components": np.linalg.norm(bands["components"].median, axis=-1)[:, None],
             "phi": np.percentile(np.abs(bands["phi"].median), 95)}
    out["band_widths"] = {
        name: {f"median_{lvl}": float(np.median(
            0.5 * (getattr(b, f"hi{lvl}") - getattr(b, f"lo{lvl}")) / scale[name]))
            for lvl in ("68", "95")} for name, b in bands.items()}
    if true is not None:
        out["coverage"] = {name: coverage(b, true[name]) for name, b in bands.items()}
        out["calibration"] = {name: calibrate(band(v, kind=cfg.band, centre=replicas.centre),
                                              true[name])
                              for name, v in values.items()}
    # truth-free flags: where some replica's density is negative, the band cannot be trusted
    out["untrusted"] = {"negative_density_any_replica": float(np.mean(
        f["negative_density"][mask])), "n": int(mask.sum())}
    params = replicas.parameters()
    true_params = analytic_parameters(truth) if truth is not None else {}
    out["parameters"] = {}
    for name, v in params.items():
        b = band(v, **opts)
        entry = {"values": v.tolist(), **{key: float(val) for key, val in b.as_dict().items()}}
        if name in true_params and type(truth) is type(replicas[0].potential):
            entry["truth"] = true_params[name]
            entry["z"] = float(z_scores(b, true_params[name]))
        out["parameters"][name] = entry
    if out_dir is not None and cfg.plots:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        p = out_dir / "bands.png"
        _plot_bands(replicas, cfg, catalog, truth, p)
        out["plots"].append(p.name)
    return out


def _plot_bands(replicas, cfg: EvaluateConfig, catalog, truth, path: Path) -> None:
    """Profiles with their 68% and 95% bands: Φ(r), |F|(r) and ρ(r) along the x axis,
    v_c(R) in the mid-plane and, for a flattened catalogue, K_z(z) at the median R."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..evaluate import unit_label as _unit_label
    from ..replicas import band

    opts = dict(kind=cfg.band, inflation=cfg.band_inflation, centre=replicas.centre)
    centre = ("full-data fit" if replicas.centre == "full" else f"median of {len(replicas)}")
    pot0 = replicas[0].potential
    r_lo = cfg.r_min if cfg.r_min > 0 else cfg.r_max / 100
    r = np.geomspace(r_lo / 3, cfg.r_max * 3, 64)
    ray = np.stack([r, np.zeros_like(r), np.zeros_like(r)], -1)
    xs = np.asarray(catalog.x)
    zs = np.abs(xs[:, 2])
    flat = np.percentile(zs, 90) < 0.5 * np.percentile(np.hypot(xs[:, 0], xs[:, 1]), 90)
    r_ref = float(np.median(np.hypot(xs[:, 0], xs[:, 1])))
    z = np.linspace(0, 3 * float(np.percentile(zs, 90)), 48)[1:]
    vert = np.stack([np.full_like(z, r_ref), np.zeros_like(z), z], -1)
    ref = np.array([[r_ref, 0.0, 0.0]])

    def profile(pot):
        phi, grad, rho = _fields_of(pot, ray)
        phi = phi - _fields_of(pot, ref)[0][0]
        vc = np.sqrt(np.maximum(np.sum(ray * grad, -1), 0))
        kz = _fields_of(pot, vert)[1][:, 2]
        return {"phi": phi, "force": np.linalg.norm(grad, axis=-1), "density": rho, "vc": vc,
                "kz": kz}

    per = [profile(m.potential) for m in replicas.models]
    curves = {k: np.stack([p[k] for p in per]) for k in per[0]}
    true = profile(truth) if truth is not None else None
    length = _unit_label(pot0, "length")
    panels = [("phi", r, f"r{length}", "Φ(r) − Φ(R_ref)" + _unit_label(pot0, "potential"),
               "linear"),
              ("force", r, f"r{length}", "|F|(r)" + _unit_label(pot0, "acceleration"), "log"),
              ("density", r, f"r{length}", "ρ(r)" + _unit_label(pot0, "density"), "log"),
              ("vc", r, f"R{length}", "v_c(R)" + _unit_label(pot0, "velocity"), "linear")]
    if flat:
        panels.append(("kz", z, f"z{length} at R = {r_ref:.3g}",
                       "K_z(z) = ∂Φ/∂z" + _unit_label(pot0, "acceleration"), "linear"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.4),
                             constrained_layout=True)
    for ax, (name, grid, xlabel, ylabel, yscale) in zip(axes, panels):
        b = band(curves[name], **opts)
        ax.fill_between(grid, b.lo95, b.hi95, color="tab:blue", alpha=0.15, lw=0,
                        label="95% band")
        ax.fill_between(grid, b.lo68, b.hi68, color="tab:blue", alpha=0.35, lw=0,
                        label="68% band")
        ax.plot(grid, b.median, color="tab:blue", lw=1.2, label=centre)
        if true is not None:
            ax.plot(grid, true[name], "k--", lw=1, label="truth")
        ax.set(xlabel=xlabel, ylabel=ylabel, xscale="linear" if name == "kz" else "log")
        if yscale == "log" and np.all(b.median > 0):
            ax.set_yscale("log")
    axes[0].legend(fontsize="small")
    fig.suptitle(f"{len(replicas)} replicas: the {centre} and bands along the x axis")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _inflation_text(f: Mapping[str, float]) -> str:
    if len(set(f.values())) == 1:
        return f"inflation {next(iter(f.values())):g}"
    return "inflation " + ", ".join(f"{v:.3g} ({k}%)" for k, v in f.items())


def calibration_setting(factors: Mapping[str, float]) -> str:
    """The `--set` override that applies a calibration (`{"68": f68, "95": f95}`) to another
    run: `evaluate.band_inflation={68 = …, 95 = …}`."""
    return "evaluate.band_inflation={" + ", ".join(
        f"{k} = {v:.4g}" for k, v in factors.items()) + "}"


def band_table(evaluation: Mapping[str, Any]) -> str:
    """Markdown table of a replica set's band widths and, on a mock, their coverage of the
    truth and the calibration it implies (empty string for a run of one replica)."""
    if not evaluation.get("replicas") or "band_widths" not in evaluation:
        return ""
    cov = evaluation.get("coverage")
    cal = evaluation.get("calibration")
    rows = [("force magnitude", "force"), ("force components", "components"),
            ("density ρ", "density"), ("potential Φ (offset removed)", "phi")]
    where = evaluation.get("region") or "all evaluated positions"
    n = evaluation["untrusted"]["n"]
    centred = ("the full-data replica" if evaluation["band"].get("centre") == "full"
               else "the median")
    lines = [f"Bands over {evaluation['replicas']} replicas ({evaluation['band']['kind']} bands "
             f"centred on {centred}, "
             f"{_inflation_text(evaluation['band']['inflation'])}), {where} ({n} tracer "
             "positions):", "",
             "| quantity | median 68% half-width | median 95% half-width | 68% coverage "
             "| 95% coverage | calibration f68, f95 |", "|---|---|---|---|---|---|"]
    for label, key in rows:
        w = evaluation["band_widths"][key]
        c = cov[key] if cov else None
        cells = ([f"{100 * c['68']:.1f}%", f"{100 * c['95']:.1f}%"] if c else ["–", "–"])
        f = cal[key] if cal else None
        lines.append(f"| {label} | {100 * w['median_68']:.2f}% | {100 * w['median_95']:.2f}% "
                     f"| {cells[0]} | {cells[1]} | "
                     + (f"{f['68']:.3g}, {f['95']:.3g} |" if f else "– |"))
    if not cov:
        return "\n".join([*lines, "", "No truth is known: no coverage."])
    lines += ["", "Half-widths are relative (to the force magnitude, for the force and its "
              "components; to ρ; to the spread of Φ); coverage is the fraction of positions "
              "where the truth lies inside the band (a calibrated band: 68% and 95%). The "
              "calibration is the inflation of each uninflated band that would make its "
              "coverage here nominal (`deeppot.replicas.calibrate`); to carry the force's to "
              "another system's replica set, run it with "
              f"`--set '{calibration_setting(cal['force'])}'`."]
    return "\n".join(lines)


def _parameter_lines(params: Mapping[str, Any]) -> list[str]:
    if not params:
        return []
    lines = ["| parameter | median | 68% band | 95% band | truth | z |",
             "|---|---|---|---|---|---|"]
    for name, p in params.items():
        lines.append(f"| {name} | {p['median']:.4g} | {p['lo68']:.4g} – {p['hi68']:.4g} | "
                     f"{p['lo95']:.4g} – {p['hi95']:.4g} | "
                     f"{p['truth']:.4g} | {p['z']:+.2f} |" if "z" in p else
                     f"| {name} | {p['median']:.4g} | {p['lo68']:.4g} – {p['hi68']:.4g} | "
                     f"{p['lo95']:.4g} – {p['hi95']:.4g} | – | – |")
    return lines + [""]


def replica_warnings(evaluation: Mapping[str, Any]) -> list[str]:
    """Warnings about the replicas a band is made of: those whose truth-free fit quality is
    poor (`quality_warnings`), and positions where some replica's density is negative."""
    out = []
    for k, q in enumerate(evaluation.get("fit_quality") or []):
        out += [f"replica {k}: {w}" for w in quality_warnings({"fit_quality": q})]
    neg = evaluation.get("untrusted", {}).get("negative_density_any_replica", 0.0)
    if neg > POOR_NEGATIVE_DENSITY:
        out.append(f"at {100 * neg:.0f}% of the evaluated positions some replica's density is "
                   "negative: the density band is not to be trusted there")
    return out


def write_replica_report(path: Path, cfg: Config, catalog, metrics: Mapping[str, Any]) -> None:
    """Write the `report.md` of a replica set: bands and their coverage, parameters with
    bands and z-scores, the replicas' fit quality, warnings, plots and config."""
    ev = metrics
    lines = ["# deeppot run report: a replica set", "",
             f"Catalogue: {len(catalog)} stars ({catalog.meta.get('generator', 'from file')}). "
             f"DF: {cfg.df.kind}. Potential: {cfg.potential.model}. {ev['replicas']} replicas, "
             "each with its own DF seed, "
             + ("replica 0 on every star once and the others on bootstrap resamples of the "
                "stars " if ev["band"].get("centre") == "full" else
                "each on a bootstrap resample of the stars ")
             + "(`replica_NN/` holds each one's run and report).", ""]
    if cfg.run.units != "dimensionless":
        from ..units import get_units

        lines += [f"Numbers are in the {get_units(cfg.run.units)!r} units.", ""]
    lines += [band_table(ev), ""]
    acc = accuracy_table(ev)
    if acc:
        what = ("The full-data replica (the bands' centre)" if ev["band"].get("centre") == "full"
                else "The median over the replicas")
        lines += [f"{what} against the truth:", "", acc, ""]
    lines += _parameter_lines(ev.get("parameters", {}))
    q = ev.get("fit_quality") or []
    if q:
        lines += ["Fit quality of each replica (no truth needed; a poor one flags a band that "
                  "cannot be trusted):", "",
                  "| replica | median relative residual | p84 | negative density |",
                  "|---|---|---|---|"]
        lines += [f"| {k} | {r['median_relative_residual']:.3f} | "
                  f"{r['p84_relative_residual']:.3f} | "
                  f"{100 * r['negative_density_fraction']:.1f}% |" for k, r in enumerate(q)]
        lines += ["", f"Some replica's density is negative at "
                  f"{100 * ev['untrusted']['negative_density_any_replica']:.1f}% of the "
                  "evaluated positions.", ""]
    for w in ev.get("warnings", []):
        lines += [f"**Warning:** {w}", ""]
    lines += ["## Plots", ""] + [f"![{n}](plots/{n})" for n in ev["plots"]]
    lines += ["", "## Config", "", "```toml", dumps_toml(cfg.to_dict()).rstrip(), "```", ""]
    with replacing(path) as tmp:
        tmp.write_text("\n".join(lines))
