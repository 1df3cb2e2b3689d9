"""Actions in a learned potential, by agama: the Miyamoto–Nagai reproduction case (issue 16).

    deeppot run deeppot/configs/disk.toml --run-dir runs/disk      # the case (~35 min)
    python -m benchmarks.bench_agama_actions --run runs/disk [--n 1000]

For `n` stars of the case's catalogue inside the accuracy region (ρ > 10% ρ_max), agama's
`actions` (Stäckel fudge with one focal distance `--fd` for every potential, so that the
differences come from the potentials; agama's `ActionFinder` would also tabulate circular
orbits over all radii, where a learned Φ is unconstrained) computes (J_R, J_z, J_φ) in

- the true potential, agama's own analytic `MiyamotoNagai` (the reference);
- the true potential exported by `to_agama` (a CylSpline of deeppot's Φ): the export's own
  error, isolated;
- the learned potential of the run, exported the same way with `offset="kepler"` (a learned
  Φ has an arbitrary constant; agama's action finder needs Φ(0) < 0 and Φ → 0 far out):
  what a user gets (its grid ends at the data region's edge, `--learned-r-max`, beyond
  which a learned Φ is unconstrained and agama extrapolates it as a power law);
- for a model with a validity region, the same learned potential exported as a user gets it
  (`to_agama(model)`: its region's grid, its Keplerian tail, the default expansion, a
  CylSpline for the disc; and a multipole with its default orders);
- the truth with every force scaled by 1 + ε, ε the learned potential's median force error
  at these stars: the action error a force error of that size implies, for comparison.

Each row gives the median and 84th percentile of |ΔJ|/J over the stars. Results go to
`benchmarks/results/agama_actions.{json,md}`. Needs agama (`make agama`).
"""

import time
from pathlib import Path

import jax
import numpy as np

import deeppot as dp
from deeppot import evaluate, mocks

from . import _harness as harness

GRID = dict(r_min=0.02, r_max=30.0, z_min=0.01, z_max=30.0)  # beyond the data on all sides


def action_errors(J, J_ref):
    """Median and p84 of |ΔJ|/|J| per action (J_R, J_z, J_φ)."""
    rel = np.abs(J - J_ref) / np.abs(J_ref)
    return {name: {"median": float(np.median(rel[:, i])),
                   "p84": float(np.percentile(rel[:, i], 84))}
            for i, name in enumerate(("J_R", "J_z", "J_phi"))}


def main(argv=None):
    ap = harness.parser(__doc__, __file__)
    ap.add_argument("--run", required=True, help="run directory of the disk case")
    ap.add_argument("--n", type=int, default=1000, help="stars")
    ap.add_argument("--tag", default="")
    ap.add_argument("--fd", type=float, default=1.0,
                    help="focal distance of the Stäckel fudge, the same for every potential")
    ap.add_argument("--learned-r-max", type=float, default=6.0,
                    help="outer radius of the learned potential's grid: the data region (beyond "
                         "it a learned Φ is unconstrained; agama extrapolates as a power law)")
    args = ap.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    import agama

    from deeppot_agama import to_agama

    agama.setUnits()
    run = Path(args.run)
    cat = dp.PhaseSpaceCatalog.load(run / "catalog.npz")
    model, _ = dp.load_model(run / "potential.eqx")
    learned = model.potential
    truth = mocks.truth_potential(cat.meta)
    if not isinstance(truth, dp.MiyamotoNagai):
        raise SystemExit(f"{run}: the catalogue's truth is {type(truth).__name__}, not the "
                         "Miyamoto–Nagai case")
    res = evaluate.residuals(model, truth, np.asarray(cat.x))
    inside = np.flatnonzero(evaluate.density_region(res, 0.1))[: args.n]
    x, v = np.asarray(cat.x)[inside], np.asarray(cat.v)[inside]
    w = np.concatenate([x, v], axis=1)
    eps = float(np.median(res["force"][inside]))
    print(f"{len(inside)} stars in ρ > 0.1 ρ_max; learned median force error ε = {eps:.4f}",
          flush=True)

    t0 = time.perf_counter()
    potentials = {
        "true (agama MiyamotoNagai)": agama.Potential(
            type="MiyamotoNagai", mass=float(truth.m_tot), scaleRadius=float(truth.a),
            scaleHeight=float(truth.b)),
        "true, exported by to_agama": to_agama(truth, "cylspline", **GRID),
        # agama's action finder needs Φ(0) < 0, Φ → 0 far out and mirror symmetry in z:
        # fix the learned Φ's arbitrary constant by continuing it as a point mass beyond
        # the grid, and drop its part odd in z (which the disk does not have)
        "learned, exported by to_agama": to_agama(
            learned, "cylspline", offset="kepler", symmetry="a",
            **(GRID | {"r_max": args.learned_r_max, "z_max": args.learned_r_max})),
        # the export as a user gets it: the model with its validity region and Keplerian
        # tail, on to_agama's default grid and expansion (a CylSpline for the disc's flat
        # region), and a multipole with its default orders for that region
        **({} if model.region is None else {
            "learned with its tail, to_agama(model)": to_agama(model, symmetry="a"),
            "learned with its tail, to_agama(model, \"multipole\")": to_agama(
                model, "multipole", symmetry="a")}),
        "true with forces × (1 + ε)": agama.Potential(
            type="MiyamotoNagai", mass=float(truth.m_tot) * (1 + eps),
            scaleRadius=float(truth.a), scaleHeight=float(truth.b)),
    }
    build_s = time.perf_counter() - t0
    actions = {}
    for name, pot in potentials.items():
        t0 = time.perf_counter()
        actions[name] = np.asarray(agama.actions(pot, w, fd=args.fd))
        print(f"{name}: actions of {len(w)} stars in {time.perf_counter() - t0:.1f} s",
              flush=True)
    ref = actions["true (agama MiyamotoNagai)"]
    bound = np.all(np.isfinite(np.concatenate(list(actions.values()), axis=1)), axis=1)
    rows = {name: action_errors(J[bound], ref[bound])
            for name, J in actions.items() if J is not ref}
    force = {}
    for name, key in (("true, exported by to_agama", "true"),
                      ("learned, exported by to_agama", "learned"),
                      *((n, "learned") for n in potentials if "with its tail" in n)):
        ours = np.asarray((truth if key == "true" else learned).acceleration(x))
        theirs = np.asarray(potentials[name].force(x))
        force[name] = float(np.median(np.linalg.norm(theirs - ours, axis=-1)
                                      / np.linalg.norm(ours, axis=-1)))
    out = {"run": str(run), "n_stars": int(len(inside)), "n_finite": int(bound.sum()),
           "learned_median_force_error": eps, "expansion_build_s": round(build_s, 1),
           "export_force_error_vs_its_source": force, "action_errors": rows,
           "command": harness.command(__file__, argv)}
    lines = [f"Command: `{out['command']}`", "",
             f"{out['n_stars']} stars of `{run}` in ρ > 0.1 ρ_max ({out['n_finite']} with "
             f"finite actions in every potential); the learned potential's median force "
             f"error there ε = {100 * eps:.2f}%. Expansion force error against its source "
             "(median): " + ", ".join(f"{k} {v:.1e}" for k, v in force.items()) + ".", "",
             "| actions in | J_R median (p84) | J_z median (p84) | J_φ median |",
             "|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {100 * r['J_R']['median']:.3g}% "
                     f"({100 * r['J_R']['p84']:.3g}%) | {100 * r['J_z']['median']:.3g}% "
                     f"({100 * r['J_z']['p84']:.3g}%) | {100 * r['J_phi']['median']:.2g}% |")
    print("\n".join(lines), flush=True)
    harness.write_results("agama_actions" + args.tag, out, "\n".join(lines))


if __name__ == "__main__":
    main()
