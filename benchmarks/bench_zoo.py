"""The zoo: spherical systems sampled by galpy, each run end to end through `deeppot run`.

Every member of `benchmarks/_galpy_zoo.py` (isotropic, King, Osipkov–Merritt, constant-β,
tracers in a dominant halo, with and without an energy truncation) is drawn with galpy
(2^16 stars; the seed varies), written as a catalogue file and run through the CLI with a
config (default `deeppot/configs/sphere.toml`), one child process per member. The fitted
potential is then compared with galpy's own force and density at the stars in their 16–84%
radius range, and the run's own fit-quality signals (median relative stationarity residual,
fraction of score points with a negative density, whether it warned) are read from its
`metrics.json`. Each member's row is printed and appended to
`benchmarks/results/zoo_<tag>.jsonl` as it finishes; the table of every row in that file
(the newest per member and seed) goes to `zoo_<tag>.md` / `.json`, with the confusion table
of the warning against the force error (> 5%: must warn; < 3%: should not).

    python -m benchmarks.bench_zoo                       # every member, seed 0
    python -m benchmarks.bench_zoo --member king-w5 --seed 3
    python -m benchmarks.bench_zoo --quick --tag quick   # 2^13 stars, short training
    python -m benchmarks.bench_zoo --set df.ensemble=2 --tag ens2
    python -m benchmarks.bench_zoo --member nfw-om-ra3-rmax20 --uncorrected --tag uncorrected
    python -m benchmarks.bench_zoo --table-only --tag zoo
    python -m benchmarks.bench_zoo --where-negative runs/zoo/zoo/hernquist-iso-s0
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from . import _harness as harness

SPHERE = harness.ROOT / "deeppot" / "configs" / "sphere.toml"
# the short mode's settings (development only; the table says which rows used it)
QUICK = ["df.steps=2000", "df.warmup_steps=100", "df.batch_size=1024", "scores.n=8192",
         "scores.chunk_size=4096", "fit.steps=600", "fit.warmup_steps=20",
         "fit.batch_size=1024", "evaluate.n_points=4096"]
WARN_ABOVE, QUIET_BELOW = 0.05, 0.03
N_EVAL = 16384


def _child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def prepare(name: str, seed: int, n: int, out: Path, *, uncorrected: bool = False
            ) -> tuple[Path, float, float]:
    """Draw the member's catalogue into `out` (reused if there) and return its path and the
    stars' 16% and 84% radii. `uncorrected`: galpy's own radii for a truncated member (not
    a sample of its DF; `_galpy_zoo`'s docstring)."""
    import dataclasses

    import deeppot as dp

    from . import _galpy_zoo as zoo

    member = zoo.MEMBERS[name]
    if uncorrected:
        member = dataclasses.replace(member, rmax=None)
    path = out / f"{name}-s{seed}-n{n}{'-uncorrected' if uncorrected else ''}.npz"
    if not path.is_file():
        out.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            zoo.catalog(member, seed, n).save(path)
    cat = dp.PhaseSpaceCatalog.load(path)
    r = np.linalg.norm(np.asarray(cat.x), axis=-1)
    lo, hi = np.percentile(r, [16, 84])
    return path, float(lo), float(hi)


def accuracy(name: str, run_dir: Path, catalog_path: Path, r_lo: float, r_hi: float) -> dict:
    """Median |ΔF|/|F| and |Δρ|/ρ of the run's potential against galpy's truth at the
    catalogue's stars with r in [r_lo, r_hi] (at most `N_EVAL` of them)."""
    import jax.numpy as jnp

    import deeppot as dp

    from . import _galpy_zoo as zoo

    model, _ = dp.load_model(run_dir / "potential.eqx")
    x = np.asarray(dp.PhaseSpaceCatalog.load(catalog_path).x, np.float64)
    r = np.linalg.norm(x, axis=-1)
    x = x[(r >= r_lo) & (r <= r_hi)][:N_EVAL]
    _, grad, lap = model.value_grad_laplacian(jnp.asarray(x, jnp.float32))
    force = -np.asarray(grad, np.float64)
    rho = np.asarray(lap, np.float64) / (4 * np.pi * float(model.potential.G))
    f_true, rho_true = zoo.true_force_density(name, x)
    df = np.linalg.norm(force - f_true, axis=-1) / np.linalg.norm(f_true, axis=-1)
    dr = np.abs(rho - rho_true) / rho_true
    return {"force_median": float(np.median(df)), "force_p84": float(np.percentile(df, 84)),
            "density_median": float(np.median(dr)), "n_eval": int(len(x))}


RADIUS_PERCENTILES = (1, 16, 50, 84, 99)


def negative_by_radius(r: np.ndarray, laplacian: np.ndarray) -> dict:
    """Where ∇²Φ < 0: the fraction of points with a negative Laplacian in the bins of `r`
    between its `RADIUS_PERCENTILES` (below the first, between each pair, above the last),
    and within the 16–84% range the zoo's accuracy is measured in."""
    r, neg = np.asarray(r, np.float64), np.asarray(laplacian) < 0
    edges = np.percentile(r, RADIUS_PERCENTILES)
    which = np.searchsorted(edges, r, side="right")
    frac = [float(neg[which == k].mean()) if np.any(which == k) else float("nan")
            for k in range(len(edges) + 1)]
    lo, hi = np.percentile(r, [16, 84])
    return {"edges": edges.tolist(), "fraction": frac, "overall": float(neg.mean()),
            "in_16_84": float(neg[(r >= lo) & (r <= hi)].mean())}


def where_negative(run_dir: Path) -> str:
    """A run's negative fitted density at its score points (the first `N_EVAL`), by radius
    (`negative_by_radius`): one markdown row."""
    import jax.numpy as jnp

    import deeppot as dp

    model, _ = dp.load_model(run_dir / "potential.eqx")
    x = np.asarray(dp.ScoreSample.load(run_dir / "scores.npz").x)[:N_EVAL]
    _, _, lap = model.value_grad_laplacian(jnp.asarray(x, jnp.float32))
    w = negative_by_radius(np.linalg.norm(x, axis=-1), np.asarray(lap))
    cells = " | ".join(f"{100 * f:.0f}%" for f in w["fraction"])
    return (f"| {Path(run_dir).name} | {100 * w['overall']:.1f}% | {cells} | "
            f"{100 * w['in_16_84']:.1f}% | {', '.join(f'{e:.3g}' for e in w['edges'])} |")


def run_member(name: str, seed: int, *, config: Path, n: int, extra: list[str], tag: str,
               run_root: Path, uncorrected: bool = False) -> dict:
    """One member end to end: draw, `deeppot run` in a child process, compare."""
    from . import _galpy_zoo as zoo

    member = zoo.MEMBERS[name]
    t0 = time.perf_counter()
    cat_path, r_lo, r_hi = prepare(name, seed, n, run_root / "catalogs",
                                   uncorrected=uncorrected)
    run_dir = run_root / tag / f"{name}-s{seed}{'-uncorrected' if uncorrected else ''}"
    sets = [f"data.path={cat_path.resolve()}", f"run.seed={seed}", "evaluate.region=radial",
            f"evaluate.r_min={r_lo:.6g}", f"evaluate.r_max={r_hi:.6g}", *extra]
    cmd = [sys.executable, "-m", "deeppot.cli", "run", str(config), "--run-dir", str(run_dir),
           "--no-progress"]
    for s in sets:
        cmd += ["--set", s]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(harness.ROOT), env.get("PYTHONPATH", "")])
    c0, w0 = _child_cpu(), time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    cpu, wall = _child_cpu() - c0, time.perf_counter() - w0
    row = {"member": name, "label": member.label, "seed": seed, "n": n, "tag": tag,
           "config": str(Path(config).resolve().relative_to(harness.ROOT))
           if Path(config).resolve().is_relative_to(harness.ROOT) else str(config),
           "overrides": extra, "uncorrected": uncorrected,
           "relaxed_bar": member.relaxed, "r16": r_lo, "r84": r_hi,
           "run_cpu_s": round(cpu, 1), "run_wall_s": round(wall, 1),
           "total_wall_s": None, "returncode": proc.returncode}
    if proc.returncode != 0:
        row["error"] = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "?"
        row["total_wall_s"] = round(time.perf_counter() - t0, 1)
        return row
    metrics = json.loads((run_dir / "metrics.json").read_text())
    q = metrics.get("fit_quality") or {}
    row.update(accuracy(name, run_dir, cat_path, r_lo, r_hi))
    row.update({"median_relative_residual": q.get("median_relative_residual"),
                "negative_density_fraction": q.get("negative_density_fraction"),
                "warned": bool(metrics.get("warnings")), "warnings": metrics.get("warnings"),
                "df_score_error": metrics.get("df_score_error"),
                "total_wall_s": round(time.perf_counter() - t0, 1)})
    return row


def _pct(v):
    return "—" if v is None else f"{100 * v:.2f}%"


def _bar(row):
    return 0.05 if row["relaxed_bar"] else 0.03


def table(rows: list[dict]) -> str:
    """The markdown table of `rows` and the confusion table of the warning."""
    lines = ["| member | seed | n | force (median) | density (median) | bar | residual | "
             "ρ < 0 | warned | CPU s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("returncode"):
            lines.append(f"| {r['member']} | {r['seed']} | {r['n']} | failed: "
                         f"{r.get('error', '')[:80]} | | | | | | {r['run_cpu_s']} |")
            continue
        ok = "met" if r["force_median"] <= _bar(r) else "**missed**"
        lines.append(
            f"| {r['member']} | {r['seed']} | {r['n']} | {_pct(r['force_median'])} | "
            f"{_pct(r['density_median'])} | {100 * _bar(r):.0f}%: {ok} | "
            f"{r['median_relative_residual']:.3f} | "
            f"{100 * r['negative_density_fraction']:.1f}% | {'yes' if r['warned'] else 'no'} | "
            f"{r['run_cpu_s']:.0f} |")
    c = confusion(rows)
    lines += ["", "| force error | warned | did not warn |", "|---|---|---|"]
    for k in ("above 5%", "3–5%", "below 3%"):
        lines.append(f"| {k} | {c[k]['warned']} | {c[k]['quiet']} |")
    return "\n".join(lines)


def confusion(rows: list[dict]) -> dict:
    """Counts of runs that warned or not, by force error: above 5%, 3–5%, below 3%."""
    out = {k: {"warned": 0, "quiet": 0} for k in ("above 5%", "3–5%", "below 3%")}
    for r in rows:
        if r.get("returncode"):
            continue
        e = r["force_median"]
        k = "above 5%" if e > WARN_ABOVE else "below 3%" if e < QUIET_BELOW else "3–5%"
        out[k]["warned" if r["warned"] else "quiet"] += 1
    return out


def read_rows(tag: str) -> list[dict]:
    """The newest row per (member, seed, n, overrides) of `zoo_<tag>.jsonl`."""
    path = harness.RESULTS / f"zoo_{tag}.jsonl"
    if not path.is_file():
        return []
    rows = {}
    for line in path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            rows[(r["member"], r["seed"], r["n"], tuple(r["overrides"]),
                  r.get("uncorrected", False))] = r
    return list(rows.values())


def main(argv=None):
    from . import _galpy_zoo as zoo

    p = harness.parser(__doc__, __file__)
    p.add_argument("--member", action="append", help="run only this member (repeatable); "
                   "default: all")
    p.add_argument("--seed", type=int, action="append", help="seeds (repeatable; default 0)")
    p.add_argument("--config", type=Path, default=SPHERE, help="the run's config")
    p.add_argument("--set", dest="sets", action="append", default=[],
                   help="SECTION.KEY=VALUE passed to deeppot run (repeatable)")
    p.add_argument("--log2-stars", type=int, default=16)
    p.add_argument("--quick", action="store_true", help="2^13 stars and short training "
                   "(development; not the benchmark)")
    p.add_argument("--tag", default="zoo", help="results go to zoo_<tag>.*; runs to "
                   "runs/zoo/<tag>/")
    p.add_argument("--run-root", type=Path, default=harness.ROOT / "runs" / "zoo")
    p.add_argument("--uncorrected", action="store_true", help="truncated members: galpy's "
                   "own radii, which are not a sample of the DF (a diagnosis, not the zoo)")
    p.add_argument("--table-only", action="store_true", help="rewrite the table from the "
                   "rows already in zoo_<tag>.jsonl")
    p.add_argument("--where-negative", type=Path, nargs="+", metavar="RUN_DIR",
                   help="print where each run's fitted density is negative at its score "
                   "points, by radius, and stop")
    a = p.parse_args(argv)
    if a.where_negative:
        print("| run | ρ < 0, all | < r1 | r1–r16 | r16–r50 | r50–r84 | r84–r99 | > r99 | "
              "r16–r84 | r1, r16, r50, r84, r99 |\n|---|---|---|---|---|---|---|---|---|---|")
        for run_dir in a.where_negative:
            print(where_negative(run_dir), flush=True)
        return
    if not a.table_only:
        names = a.member or list(zoo.MEMBERS)
        n = 2**13 if a.quick else 2**a.log2_stars
        extra = (QUICK if a.quick else []) + a.sets
        for seed in a.seed or [0]:
            for name in names:
                row = run_member(name, seed, config=a.config, n=n, extra=extra, tag=a.tag,
                                 run_root=a.run_root, uncorrected=a.uncorrected)
                row["command"] = harness.command(__file__, [
                    "--member", name, "--seed", str(seed), "--tag", a.tag,
                    *(["--quick"] if a.quick else []),
                    *(["--uncorrected"] if a.uncorrected else []),
                    *([] if a.log2_stars == 16 else ["--log2-stars", str(a.log2_stars)]),
                    *([] if a.config == SPHERE else ["--config", str(a.config)]),
                    *[f"--set={s}" for s in a.sets]])
                harness.append_rows(f"zoo_{a.tag}.jsonl", [row])
    rows = read_rows(a.tag)
    text = table(rows)
    harness.write_results(f"zoo_{a.tag}", {"rows": rows, "confusion": confusion(rows),
                                          "machine": harness.machine()}, text)
    print(text)


if __name__ == "__main__":
    main()
