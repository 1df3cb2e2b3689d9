"""Calibration of replica bands: how the bands of a stored replica set cover a mock's truth.

Reads run directories of `deeppot run CONFIG --set run.replicas=K` on mocks (catalogues that
record their truth; nothing is retrained) and, with the values and truth of the report
(`deeppot.pipeline.replica_fields`), for the force |F| and the density ρ:

- the raw coverage of t and percentile bands (`deeppot.replicas.band`), centred as the set
  was built (`[run] replica_centre`: the full-data replica, or the replicas' median), and
  the centre's median relative error;
- the standardised error z = (truth − centre) / s: for a median-centred set s is the
  replicas' standard deviation × √(1 + 1/K), for a full-data-centred one the bootstrap
  replicas' rms distance from the centre — its histogram in |z| against a normal's and
  against Student-t(K − 1)'s (what a t band assumes), and the 68% and 95% coverage in bins
  of radius (where the misses are);
- the per-level calibration (`deeppot.replicas.calibrate`) of each quantity, its in-sample
  coverage, and, with `--calibrate-on RUN`, the coverage of every other run's bands
  inflated by that run's calibration (learned on one mock, tested on another): the
  factors as learned, floored at 1, and scaled by the ratio of a truth-free signal (the
  target's over the source's median relative stationarity residual of the centre's fit:
  replica 0 of a full-data-centred set, the replicas' median otherwise).

Results go to `benchmarks/results/bands_<tag>.json` / `.md`. `--draw-halo RA` writes the
second mock of docs/results.md first — an Osipkov–Merritt Hernquist sphere with anisotropy
radius RA (galpy, `benchmarks/_galpy_zoo.py`; not a zoo member, no config was tuned on it)
— and prints the command that fits its replica set.

    python -m benchmarks.bench_bands --draw-halo 2 --out runs/catalogs/hernquist-om-ra2.npz
    python -m benchmarks.bench_bands runs/demo8
    python -m benchmarks.bench_bands runs/demo8 runs/om2_8 --calibrate-on runs/demo8 --tag transfer
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from . import _harness as harness

QUANTITIES = ("force", "density")
KINDS = ("t", "percentile")
Z_EDGES = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, math.inf)
N_RADIUS_BINS = 8


def load(run_dir: Path) -> dict:
    """A replica set's run directory: its config, `ReplicaSet` and `replica_fields`."""
    import deeppot as dp
    from deeppot.pipeline import load_config, replica_fields
    from deeppot.pipeline.replicas import replica_dir

    cfg = load_config(run_dir / "config.toml")
    replicas, _ = dp.load_model(run_dir / "potential.eqx")
    if not isinstance(replicas, dp.ReplicaSet):
        raise SystemExit(f"{run_dir} holds one model, not a replica set ([run] replicas > 1)")
    cat = dp.PhaseSpaceCatalog.load(run_dir / "catalog.npz")
    f = replica_fields(cfg.evaluate, replicas, cat)
    if f["true"] is None:
        raise SystemExit(f"{run_dir}: its catalogue records no truth: nothing to calibrate on")
    r = np.linalg.norm(f["x"][f["mask"]], axis=-1)
    residuals = [json.loads((run_dir / replica_dir(k) / "metrics.json").read_text())
                 ["fit_quality"]["median_relative_residual"] for k in range(len(replicas))]
    signal = residuals[0] if replicas.centre == "full" else float(np.median(residuals))
    return {"run": str(run_dir), "k": len(replicas), "centre": replicas.centre,
            "region": f["region"], "r": r, "residuals": residuals, "signal": signal,
            "values": {q: f["values"][q] for q in QUANTITIES},
            "true": {q: f["true"][q] for q in QUANTITIES},
            "generator": cat.meta.get("generator")}


def _centre(v: np.ndarray, centre: str) -> np.ndarray:
    return v[0] if centre == "full" else np.median(v, axis=0)


def _t_cdf(z: float, dof: int) -> float:
    """P(|T| ≤ z) of Student's t with `dof` degrees of freedom."""
    import jax
    from jax.scipy.special import betainc

    if math.isinf(z):
        return 1.0
    with jax.enable_x64(True):
        tail = float(betainc(np.float64(dof / 2), np.float64(0.5),
                             np.float64(dof / (dof + z * z))))
    return 1.0 - tail


def z_histogram(v: np.ndarray, truth: np.ndarray, centre: str = "median") -> dict:
    """Fractions of |z| in the bins of `Z_EDGES`, with a normal's and Student-t(K − 1)'s."""
    k = v.shape[0]
    if centre == "full":
        s = np.sqrt(np.mean((v[1:] - v[0]) ** 2, axis=0))
    else:
        s = np.std(v, axis=0, ddof=1) * math.sqrt(1 + 1 / k)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.abs(truth - _centre(v, centre)) / s
    z = z[np.isfinite(truth)]
    edges = np.array(Z_EDGES)
    counts = np.array([np.sum((z >= a) & (z < b)) for a, b in zip(edges[:-1], edges[1:])])
    normal = [math.erf(b / math.sqrt(2)) - math.erf(a / math.sqrt(2)) if not math.isinf(b)
              else 1 - math.erf(a / math.sqrt(2)) for a, b in zip(edges[:-1], edges[1:])]
    student = [_t_cdf(b, k - 1) - _t_cdf(a, k - 1) for a, b in zip(edges[:-1], edges[1:])]
    return {"edges": list(Z_EDGES), "observed": (counts / len(z)).tolist(), "normal": normal,
            f"t{k - 1}": student, "median_abs_z": float(np.median(z)),
            "p68_abs_z": float(np.quantile(z, 0.68)), "p95_abs_z": float(np.quantile(z, 0.95))}


def by_radius(r: np.ndarray, v: np.ndarray, truth: np.ndarray, kind: str,
              inflation=1.0, centre: str = "median") -> list[dict]:
    """Coverage of the bands in `N_RADIUS_BINS` bins of equal counts in r."""
    from deeppot.replicas import band, coverage

    edges = np.quantile(r, np.linspace(0, 1, N_RADIUS_BINS + 1))
    which = np.clip(np.searchsorted(edges, r, side="right") - 1, 0, N_RADIUS_BINS - 1)
    b = band(v, kind=kind, inflation=inflation, centre=centre)
    out = []
    for i in range(N_RADIUS_BINS):
        sel = which == i
        sub = type(b)(*(np.asarray(getattr(b, n))[sel]
                        for n in ("median", "lo68", "hi68", "lo95", "hi95")), b.n_replicas)
        c = coverage(sub, truth[sel])
        rel = np.median(np.abs(np.asarray(b.median)[sel] - truth[sel]) / np.abs(truth[sel]))
        out.append({"r_lo": float(edges[i]), "r_hi": float(edges[i + 1]), "68": c["68"],
                    "95": c["95"], "n": c["n"], "median_rel_error": float(rel)})
    return out


def study(run: dict) -> dict:
    """Raw coverage, z histogram, coverage by radius and the calibration of one run."""
    from deeppot.replicas import band, calibrate, coverage

    c = run["centre"]
    out = {"run": run["run"], "k": run["k"], "centre": c, "region": run["region"],
           "generator": run["generator"], "n": int(run["r"].size),
           "residuals": run["residuals"], "signal": run["signal"], "quantities": {}}
    for q in QUANTITIES:
        v, t = run["values"][q], run["true"][q]
        err = np.abs(_centre(v, c) - t) / np.abs(t)
        entry = {"z": z_histogram(v, t, c), "centre_median_rel_error": float(np.median(err)),
                 "kinds": {}}
        for kind in KINDS:
            raw = band(v, kind=kind, centre=c)
            try:
                cal = calibrate(raw, t)
            except ValueError as err:  # a basic bootstrap band that no factor widens enough
                cal, why = None, str(err)
            width = 0.5 * (np.asarray(raw.hi68) - np.asarray(raw.lo68)) / np.abs(t)
            entry["kinds"][kind] = {
                "raw": coverage(raw, t), "calibration": cal,
                "median_rel_half_width_68": float(np.median(width)),
                "calibrated_in_sample": None if cal is None else coverage(
                    band(v, kind=kind, inflation=cal, centre=c), t),
                "by_radius": by_radius(run["r"], v, t, kind, centre=c)}
            if cal is None:
                entry["kinds"][kind]["no_calibration"] = why
        out["quantities"][q] = entry
    return out


def transfer(source: dict, run: dict) -> dict:
    """Coverage of `run`'s bands inflated by `source`'s calibration: each quantity by its
    own, every quantity by the force's, by the force's with no factor below 1 (a
    calibration that never narrows a band), and by each quantity's own scaled by the ratio
    of the truth-free signals (`run`'s over `source`'s), as learned and floored at 1."""
    from deeppot.replicas import band, coverage

    out = {}
    ratio = run["signal"] / source["signal"]
    for kind in KINDS:
        for q in QUANTITIES:
            v, t, c = run["values"][q], run["true"][q], run["centre"]
            own = source["quantities"][q]["kinds"][kind]["calibration"]
            force = source["quantities"]["force"]["kinds"][kind]["calibration"]
            if own is None or force is None:  # the source's band could not be calibrated
                continue
            floored = {lvl: max(1.0, f) for lvl, f in force.items()}
            own_floored = {lvl: max(1.0, f) for lvl, f in own.items()}
            scaled = {lvl: f * ratio for lvl, f in own.items()}
            scaled_floored = {lvl: max(1.0, f) for lvl, f in scaled.items()}

            def cov(inflation, v=v, t=t, c=c, kind=kind):
                return coverage(band(v, kind=kind, inflation=inflation, centre=c), t)

            out[f"{kind}/{q}"] = {
                "own": cov(own), "own_floored": cov(own_floored),
                "by_force": cov(force), "by_force_floored": cov(floored),
                "by_signal": cov(scaled), "by_signal_floored": cov(scaled_floored),
                "own_factors": own, "force_factors": force, "signal_ratio": ratio,
                "signal_factors": scaled}
    return out


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def table(studies: list[dict], transfers: dict, source: str | None) -> str:
    lines = ["| run | K | centre | quantity | band | centre's median error | median 68% "
             "half-width | raw 68% / 95% | calibration f68, f95 | in-sample calibrated "
             "68% / 95% |", "|---|---|---|---|---|---|---|---|---|---|"]
    for s in studies:
        for q, e in s["quantities"].items():
            for kind, c in e["kinds"].items():
                cal, ins = c["calibration"], c["calibrated_in_sample"]
                lines.append(
                    f"| {s['run']} | {s['k']} | {s['centre']} | {q} | {kind} | "
                    f"{_pct(e['centre_median_rel_error'])} | "
                    f"{_pct(c['median_rel_half_width_68'])} | {_pct(c['raw']['68'])} / "
                    f"{_pct(c['raw']['95'])} | "
                    + ("none reaches the level |  – |" if cal is None else
                       f"{cal['68']:.3f}, {cal['95']:.3f} | {_pct(ins['68'])} / "
                       f"{_pct(ins['95'])} |"))
    lines += ["", "Truth-free signal (the centre's median relative stationarity residual): "
              + "; ".join(f"{s['run']}: {s['signal']:.4f}" for s in studies), "",
              "Standardised errors |z| = |truth − centre| / s (s: the spread a t band uses, "
              "without its t quantile): fraction per bin (observed; normal; "
              "Student-t(K − 1)):", ""]
    edges = Z_EDGES
    head = " | ".join(f"{a:g}–{b:g}" for a, b in zip(edges[:-1], edges[1:]))
    lines += [f"| run | quantity | {head} |", "|---|---|" + "---|" * (len(edges) - 1)]
    for s in studies:
        for q, e in s["quantities"].items():
            z = e["z"]
            tkey = next(k for k in z if k.startswith("t") and k[1:].isdigit())
            cells = " | ".join(f"{100 * o:.1f} ({100 * n:.1f}; {100 * t:.1f})"
                               for o, n, t in zip(z["observed"], z["normal"], z[tkey]))
            lines.append(f"| {s['run']} | {q} | {cells} |")
    lines += ["", "Coverage of the raw t bands (68% / 95%) and the centre's relative error, "
              "in bins of r with equal counts:", ""]
    for s in studies:
        for q, e in s["quantities"].items():
            rows = e["kinds"]["t"]["by_radius"]
            lines.append(f"- {s['run']}, {q}: " + "; ".join(
                f"r {b['r_lo']:.3g}–{b['r_hi']:.3g}: {_pct(b['68'])} / {_pct(b['95'])} "
                f"(err {_pct(b['median_rel_error'])})" for b in rows))
    if transfers:
        lines += ["", f"Calibration learned on {source}, applied to the other runs (68% / 95% "
                  "coverage):", "",
                  "| run | band/quantity | factors (own quantity's) | own | own, none below 1 "
                  "| the force's | the force's, none below 1 | own × signal ratio | own × "
                  "signal ratio, none below 1 |", "|---|---|---|---|---|---|---|---|---|"]

        def pair(c):
            return f"{_pct(c['68'])} / {_pct(c['95'])}"

        for run, t in transfers.items():
            for key, c in t.items():
                f = c["own_factors"]
                lines.append(f"| {run} | {key} | {f['68']:.3f}, {f['95']:.3f} | "
                             f"{pair(c['own'])} | {pair(c['own_floored'])} | "
                             f"{pair(c['by_force'])} | {pair(c['by_force_floored'])} | "
                             f"{pair(c['by_signal'])} (× {c['signal_ratio']:.3f}) | "
                             f"{pair(c['by_signal_floored'])} |")
    return "\n".join(lines)


def draw_halo(ra: float, out: Path, *, seed: int = 0, n: int = 2**16) -> str:
    """Write `n` stars of the Osipkov–Merritt Hernquist sphere (M = a = 1) with anisotropy
    radius `ra` to `out`; return the `deeppot run` command of its replica set (the
    accuracy region: the stars' 16–84% radii, as the zoo's)."""
    import warnings

    from . import _galpy_zoo as zoo

    def build(pot, _):
        from galpy.df import osipkovmerrittHernquistdf

        return osipkovmerrittHernquistdf(pot=pot, ra=ra)

    member = zoo.Member(f"hernquist-om-ra{ra:g}", f"Osipkov–Merritt Hernquist r_a = {ra:g} r_s",
                        build, zoo.MEMBERS["hernquist-iso"].pot,
                        dict(zoo.MEMBERS["hernquist-iso"].truth))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cat = zoo.catalog(member, seed, n)
    out.parent.mkdir(parents=True, exist_ok=True)
    cat.save(out)
    lo, hi = np.percentile(np.linalg.norm(np.asarray(cat.x), axis=-1), [16, 84])
    return (f"deeppot run deeppot/configs/sphere.toml --run-dir runs/om{ra:g}_8 "
            f"--set data.path={out.resolve()} --set run.replicas=8 --set evaluate.region=radial "
            f"--set evaluate.r_min={lo:.6g} --set evaluate.r_max={hi:.6g}")


def main(argv: list[str] | None = None) -> None:
    p = harness.parser(__doc__, __file__)
    p.add_argument("runs", nargs="*", type=Path, help="run directories of replica sets")
    p.add_argument("--draw-halo", type=float, default=None, metavar="RA",
                   help="write the Osipkov–Merritt Hernquist mock of anisotropy radius RA to "
                   "--out and print its run command")
    p.add_argument("--out", type=Path, default=Path("runs/catalogs/hernquist-om.npz"),
                   help="the catalogue --draw-halo writes")
    p.add_argument("--calibrate-on", type=Path, default=None,
                   help="learn the calibration on this run (one of RUNS) and apply it to "
                   "the others")
    p.add_argument("--tag", default="study", help="results file: bands_<tag>.json / .md")
    args = p.parse_args(argv)
    if args.draw_halo is not None:
        print(draw_halo(args.draw_halo, args.out))
        return
    if not args.runs:
        p.error("give the run directories of replica sets (or --draw-halo)")
    runs = {str(r): load(r) for r in args.runs}
    studies = {k: study(v) for k, v in runs.items()}
    transfers = {}
    if args.calibrate_on is not None:
        src = str(args.calibrate_on)
        if src not in studies:
            raise SystemExit(f"--calibrate-on {src} is not one of the runs given")
        transfers = {k: transfer(studies[src], v) for k, v in runs.items() if k != src}
    md = table(list(studies.values()), transfers, str(args.calibrate_on))
    print(md)
    harness.write_results(f"bands_{args.tag}", {
        "command": harness.command(__file__, argv), "studies": list(studies.values()),
        "calibrated_on": None if args.calibrate_on is None else str(args.calibrate_on),
        "transfers": transfers}, md)


if __name__ == "__main__":
    main()
