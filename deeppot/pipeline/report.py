"""What a run reports: accuracy against a known truth, fit quality, plots, report.md."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import replacing
from .config import Config, EvaluateConfig, dumps_toml

__all__ = ["accuracy_table", "evaluate_model", "quality_warnings", "write_report"]

# a fit whose median relative stationarity residual exceeds this is reported as poor
POOR_RESIDUAL = 0.5
# … or whose density is negative at more than this fraction of the score points
POOR_NEGATIVE_DENSITY = 0.05


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
                   f"{q['median_relative_residual']:.2f} (a good fit is well below "
                   f"{POOR_RESIDUAL}; 1 means the potential explains nothing); check the "
                   "training curve, lower the learning rate or train longer")
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
