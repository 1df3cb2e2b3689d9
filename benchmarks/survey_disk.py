"""A survey-like Miyamoto–Nagai disk end to end, in physical units (issue 12).

    python -m benchmarks.survey_disk [--quick] [--variants reference survey selected]

A phase-mixed Miyamoto–Nagai disk (a = 3 kpc, b = 0.3 kpc, m_tot = 1e11 M☉: the paper's
disk scaled by 3 kpc) rotating like the Milky Way is observed from the Sun (astropy's
v4.0 solar parameters) through a smooth magnitude limit in heliocentric distance
(`DistanceSelection`, half-completeness at 3 kpc, σ_m = 0.5 mag) with Gaia-like errors
(0.02 mas, 0.02 mas/yr, 1 km/s), written as a Gaia-column FITS table, read back with a
parallax-over-error cut, and fitted: a flow-matching FFJORD (the recommended CPU DF), scores
with and without the selection correction, and an analytic `MiyamotoNagai` fit, reported in
kpc and M☉. Variants (each one DF):

- `reference`: 2^16 stars of the same disk, no selection, no errors. Its scores are fitted
  as they are, and once more with each score point weighted by S(x) (the survey's region,
  same DF).
- `survey`: the selected, observed, cut stars (2^16), scores corrected for S and not.
- `selected`: the same selection without errors (isolates the errors' effect).

The mock, the table and the trained DFs are cached under `runs/survey_disk/` (rerunning
skips what exists). Each row is printed as it is measured; the results go to
`benchmarks/results/survey_disk_cpu[_quick].{json,md}`. Run it niced and alone:
the DF training is ~20 min CPU per variant on 2 cores.
"""

import json
import sys
from pathlib import Path

import astropy.units as u
import diffrax
import equinox as eqx
import jax
import numpy as np

import deeppot as dp
from deeppot import survey

from . import _harness as harness
from ._harness import Stage

CACHE = harness.ROOT / "runs" / "survey_disk"

CONFIG = {
    "n_stars": 2**16,
    "n_parent": 1_250_000,
    "a_kpc": 3.0,
    "b_kpc": 0.3,
    "m_tot_msun": 1e11,
    "h_R_kpc": 3.0,
    "h_z_kpc": 0.3,
    "n_dyn": 128.0,
    "d_half_kpc": 3.0,
    "sigma_mag": 0.5,
    "parallax_error_mas": 0.02,
    "pm_error_mas_per_yr": 0.02,
    "position_error_mas": 0.02,
    "rv_error_km_s": 1.0,
    "min_parallax_over_error": 5.0,
    "df_width": 256,
    "df_steps": 20000,
    "df_batch_size": 2048,
    "df_learning_rate": 2e-3,
    "df_warmup": 500,
    "df_ema": 0.998,
    "n_scores": 2**18,
    "fit_steps": 1500,
    "fit_batch_size": 4096,
    "fit_learning_rate": 2e-2,
    "fit_warmup": 500,
}
VARIANTS = ("reference", "survey", "selected")
QUICK = {"n_stars": 2048, "n_parent": 60000, "df_width": 32, "df_steps": 200,
         "df_batch_size": 512, "df_warmup": 20, "n_scores": 4096, "fit_steps": 100,
         "fit_batch_size": 1024, "fit_warmup": 20}


def truth(cfg):
    return dp.MiyamotoNagai(m_tot=cfg["m_tot_msun"] * u.Msun, a=cfg["a_kpc"] * u.kpc,
                            b=cfg["b_kpc"] * u.kpc)


def selection(cfg, sun):
    return dp.DistanceSelection(sun.position() * u.kpc, d_half=cfg["d_half_kpc"] * u.kpc,
                                sigma_mag=cfg["sigma_mag"])


def parent_disk(cfg, key, cache: Path) -> dp.PhaseSpaceCatalog:
    """The parent disk, mirrored (y → −y) so it rotates clockwise seen from +z, like the
    Milky Way in astropy's Galactocentric frame (the potential is unchanged)."""
    path = cache / "parent.npz"
    if path.exists():
        return dp.PhaseSpaceCatalog.load(path)
    disk = dp.mocks.miyamoto_nagai_disk(
        key, cfg["n_parent"], a=cfg["a_kpc"] * u.kpc, b=cfg["b_kpc"] * u.kpc,
        m_tot=cfg["m_tot_msun"] * u.Msun, h_R=cfg["h_R_kpc"] * u.kpc,
        h_z=cfg["h_z_kpc"] * u.kpc, n_dyn=cfg["n_dyn"], workers=2,
    )
    flip = np.array([1.0, -1.0, 1.0])
    mirrored = dp.PhaseSpaceCatalog(disk.x * flip, disk.v * flip, meta={
        **disk.meta, "mirrored": "y -> -y (clockwise rotation, like the Milky Way)"})
    mirrored.save(path)
    return mirrored


def catalogs(cfg, key, cache: Path, sun):
    """(reference, survey, selected) catalogues and the survey's bookkeeping."""
    parent = parent_disk(cfg, jax.random.fold_in(key, 0), cache)
    n = cfg["n_stars"]
    reference = parent.subset(np.arange(n), role="reference")
    sel = selection(cfg, sun)
    selected_all = dp.mocks.select(parent, sel, jax.random.fold_in(key, 1))
    table_path = cache / "gaia.fits"
    if not table_path.exists():
        errors = survey.GaiaLikeErrors(
            position=cfg["position_error_mas"] * u.mas, parallax=cfg["parallax_error_mas"] * u.mas,
            pm=cfg["pm_error_mas_per_yr"] * u.mas / u.yr,
            radial_velocity=cfg["rv_error_km_s"] * u.km / u.s)
        table = survey.to_observables(selected_all, sun=sun, errors=errors,
                                      key=jax.random.fold_in(key, 2))
        survey.write_table(table, table_path)
    observed = survey.from_observables(table_path, sun=sun,
                                       min_parallax_over_error=cfg["min_parallax_over_error"])
    if len(observed) < n:
        raise RuntimeError(f"only {len(observed)} stars survive; raise n_parent")
    survey_cat = observed.subset(np.arange(n))
    selected = selected_all.subset(np.arange(n), role="selected without errors")
    book = {"n_parent": len(parent), "n_selected": len(selected_all),
            "selected_fraction": len(selected_all) / len(parent),
            "table": str(table_path.relative_to(CACHE.parent.parent)),
            "survey_meta": observed.meta["survey"],
            "median_distance_error_frac": float(np.median(
                np.linalg.norm(survey_cat.errors[:, :3], axis=1)
                / np.linalg.norm(survey_cat.x - sun.position(), axis=1)))}
    return {"reference": reference, "survey": survey_cat, "selected": selected}, book


def build_df(cfg, key):
    return dp.flows.FFJORD(key, n_blocks=1, width=cfg["df_width"], depth=3,
                           activation=jax.nn.silu, chunk_size=4096)


def train_df(cfg, cat, key, path: Path):
    """The recommended CPU DF: FFJORD-CFM 1×(3×256 SiLU), cosine schedule, EMA; Heun×4."""
    df = build_df(cfg, key)
    info = {}
    if path.exists():
        df = eqx.tree_deserialise_leaves(path, df)
        info["cached"] = True
    else:
        with Stage() as st:
            df = dp.fit_df(
                df, cat, key=jax.random.fold_in(key, 1), objective="cfm",
                max_steps=cfg["df_steps"], batch_size=cfg["df_batch_size"],
                learning_rate=cfg["df_learning_rate"], warmup_steps=cfg["df_warmup"],
                lr_schedule="cosine", validate_every=10, ema_decay=cfg["df_ema"],
                progress=sys.stderr.isatty(),
            )
        eqx.tree_serialise_leaves(path, df)
        info.update(st.info())
    return df.with_ode(dp.flows.ODESettings(solver=diffrax.Heun(), n_steps=4)), info


def fit_mn(cfg, scores, key, weights=None):
    """MiyamotoNagai fits from 30–50% off the truth: (m_tot, a, b) free, and (a, b) with the
    mass fixed at the truth. α = the disk's time unit sqrt(a³/GM), which makes the loss the
    dimensionless recipe of reproduce.py's case (c)."""
    t = truth(cfg)
    alpha = float(np.sqrt(t.a**3 / (t.G * t.m_tot)))
    loss = dp.terms.Log(dp.terms.Stationarity(alpha=alpha))
    out = {}
    for label, m_tot, trainable in (
        ("free_mass", 1.3 * cfg["m_tot_msun"], None),
        ("fixed_mass", cfg["m_tot_msun"], lambda m: (m.potential.log_a, m.potential.log_b)),
    ):
        model = dp.PotentialModel(dp.MiyamotoNagai(m_tot=m_tot * u.Msun,
                                                   a=1.5 * cfg["a_kpc"] * u.kpc,
                                                   b=1.5 * cfg["b_kpc"] * u.kpc))
        with Stage() as st:
            fitted = dp.fit_potential(
                model, scores, loss, key=key, trainable=trainable,
                max_steps=cfg["fit_steps"], batch_size=cfg["fit_batch_size"],
                learning_rate=cfg["fit_learning_rate"], warmup_steps=cfg["fit_warmup"],
                lr_schedule="cosine", validate_every=10, weights=weights, progress=False,
            )
        pot = fitted.potential
        q = pot.units.quantity
        out[label] = {"a_kpc": float(q(pot.a, "length").to_value(u.kpc)),
                      "b_kpc": float(q(pot.b, "length").to_value(u.kpc)),
                      "m_tot_msun": float(q(pot.m_tot, "mass").to_value(u.Msun)),
                      "v_c_8kpc_km_s": float(pot.circular_velocity([8.0, 0, 0] * u.kpc)
                                             .to_value(u.km / u.s)),
                      **st.info()}
    return out


def compare(rows):
    """Relative differences of a and b from the reference run, per mass setting."""
    by = {(r["variant"], r["scores"], r["mass"]): r for r in rows}
    comparisons = []
    for mass in ("free_mass", "fixed_mass"):
        for ref_scores in ("all", "weighted by S(x)"):
            ref = by.get(("reference", ref_scores, mass))
            for variant in ("survey", "selected"):
                for sc in ("corrected for S", "not corrected"):
                    r = by.get((variant, sc, mass))
                    if ref is None or r is None:
                        continue
                    comparisons.append({
                        "mass": mass, "reference": ref_scores, "variant": variant, "scores": sc,
                        "da_rel": r["a_kpc"] / ref["a_kpc"] - 1,
                        "db_rel": r["b_kpc"] / ref["b_kpc"] - 1})
    lines = []
    if comparisons:
        lines += ["", "Relative to the reference run:", "",
                  "| mass | reference scores | variant | scores | Δa/a | Δb/b | within 2% |",
                  "|---|---|---|---|---|---|---|"]
        for c in comparisons:
            ok = abs(c["da_rel"]) <= 0.02 and abs(c["db_rel"]) <= 0.02
            lines.append(f"| {c['mass'].replace('_', ' ')} | {c['reference']} | {c['variant']} "
                         f"| {c['scores']} | {c['da_rel']:+.2%} | {c['db_rel']:+.2%} | "
                         f"{'yes' if ok else 'no'} |")
    return comparisons, lines


def write(out, lines, quick, tag_suffix="", argv=None):
    """Write the JSON and markdown results (called after every variant)."""
    comparisons, comp_lines = compare(out["rows"])
    out["comparisons"] = comparisons
    tag = "survey_disk_cpu" + ("_quick" if quick else "") + tag_suffix
    cmd = harness.command(__file__, argv)
    md = [f"Command: `{cmd}`", "", out["machine"], "", f"Data: {json.dumps(out['data'])}", "",
          f"Truth: {json.dumps(out['truth'])}", "", *lines, *comp_lines]
    harness.write_results(tag, out | {"command": cmd}, "\n".join(md))
    return comp_lines


def main(argv=None):
    parser = harness.parser(__doc__, __file__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a smoke run")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="override CONFIG entries (e.g. df_steps=8000 df_width=128)")
    parser.add_argument("--tag", default="", help="suffix of the results and cache names")
    args = parser.parse_args(argv)
    cfg = CONFIG | (QUICK if args.quick else {})
    for item in args.set:
        name, _, value = item.partition("=")
        if name not in CONFIG:
            parser.error(f"--set: unknown key {name!r}; one of {sorted(CONFIG)}")
        cfg[name] = type(CONFIG[name])(float(value)) if "e" in value else type(CONFIG[name])(value)
    cache = CACHE / (("quick" if args.quick else "full") + args.tag)
    cache.mkdir(parents=True, exist_ok=True)
    key = jax.random.key(args.seed)
    sun = survey.Sun()
    sel = selection(cfg, sun)
    t = truth(cfg)
    out = {"config": cfg, "sun": sun.to_dict(), "selection": sel.describe(),
           "truth": {"a_kpc": cfg["a_kpc"], "b_kpc": cfg["b_kpc"], "m_tot_msun": cfg["m_tot_msun"],
                     "v_c_8kpc_km_s": float(t.circular_velocity([8.0, 0, 0] * u.kpc).value)},
           "machine": "shared 2-core CPU (other jobs running; wall times are upper bounds)",
           "rows": []}
    with Stage() as st:
        cats, book = catalogs(cfg, jax.random.fold_in(key, 0), cache, sun)
    out["data"] = book | st.info()
    print(json.dumps({"data": out["data"]}), flush=True)

    header = ("| variant | scores | mass | a [kpc] | b [kpc] | m_tot [M☉] | v_c(8 kpc) [km/s] |\n"
              "|---|---|---|---|---|---|---|")
    print(header, flush=True)
    lines = [header]

    def row(variant, scores_label, fits, extra):
        for label, f in fits.items():
            entry = {"variant": variant, "scores": scores_label, "mass": label, **f, **extra}
            out["rows"].append(entry)
            line = (f"| {variant} | {scores_label} | {label.replace('_', ' ')} | "
                    f"{f['a_kpc']:.4f} | {f['b_kpc']:.4f} | {f['m_tot_msun']:.4g} | "
                    f"{f['v_c_8kpc_km_s']:.2f} |")
            print(line, flush=True)
            lines.append(line)

    for variant in args.variants:
        k = jax.random.fold_in(key, 10 + VARIANTS.index(variant))
        df, df_info = train_df(cfg, cats[variant], jax.random.fold_in(k, 0),
                               cache / f"df_{variant}.eqx")
        with Stage() as st:
            scores = dp.sample_scores(df, jax.random.fold_in(k, 1), cfg["n_scores"],
                                      chunk_size=min(8192, cfg["n_scores"]))
        extra = {"df": df_info, "score_sampling": st.info(), "n_stars": len(cats[variant])}
        k_fit = jax.random.fold_in(k, 2)
        if variant == "reference":
            row(variant, "all", fit_mn(cfg, scores, k_fit), extra)
            weights = np.asarray(sel.probability(np.asarray(scores.x)))
            row(variant, "weighted by S(x)", fit_mn(cfg, scores, k_fit, weights), extra)
        else:
            corrected = dp.correct_selection(scores, sel)
            row(variant, "corrected for S", fit_mn(cfg, corrected, k_fit), extra)
            row(variant, "not corrected", fit_mn(cfg, scores, k_fit), extra)
        comp_lines = write(out, lines, args.quick, args.tag, argv)
    print("\n".join(comp_lines), flush=True)


if __name__ == "__main__":
    main()
