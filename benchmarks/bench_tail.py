"""The disk's learned potential beyond its data: the Keplerian tail and the agama export.

    python -m benchmarks.bench_tail runs/disk_full --tag disk_full

Reads a run of `deeppot/configs/disk.toml` (its `potential.eqx`, `scores.npz` and the mock's
truth, a Miyamoto–Nagai disk a = 1, b = 0.1, m_tot = 1, G = 1). The model's validity region
is the one the potential stage records (measured again from the scores for runs made
before it did). It reports, in float64:

- the region (radius quantiles, the (R, z) scales);
- v_c of the model with its tail (`to_galpy(..., tail=True)`'s potential) in the plane at
  R from 1× to 10× the data's outer radius (the region's outer radius `radii[2]`), against
  the truth's v_c: the largest relative difference (the bar: ≤ 5%);
- the radial force x̂·∇Φ on 64 directions × 400 radii from 10⁻³× to 100× the outer
  radius: how many points point outwards (the bar: none), by where they are (the region's
  label; in the tail's join or beyond it), and as many for the network without its tail;
- with agama installed, the `to_agama(model, "multipole")` (default orders, and
  `l_max=64, grid_size_R=100`) and `"cylspline"` expansions' median relative force
  difference to the model at the score points inside the region (the bar: ≤ 1e-3).

Rows go to `benchmarks/results/tail_<tag>.json`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import numpy as np

RESULTS = Path(__file__).parent / "results"
# agama expansions measured: the defaults, and a multipole of high enough order for a thin disc
EXPANSIONS = (("multipole", "multipole", {}),
              ("multipole_l64", "multipole", {"l_max": 64, "grid_size_R": 100}),
              ("cylspline", "cylspline", {}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--tag", default="disk")
    args = parser.parse_args()
    jax.config.update("jax_enable_x64", True)
    import deeppot as dp
    from deeppot.export import as_float64, for_export
    from deeppot.pipeline.stages import score_positions
    from deeppot.validity import INSIDE, LABELS, fibonacci_directions

    model, _ = dp.load_model(args.run_dir / "potential.eqx")
    scores = dp.load_scores(args.run_dir / "scores.npz")
    x_scores = score_positions(scores)
    if model.region is None:
        model = model.with_region(x_scores)
    model = dp.PotentialModel(as_float64(model.potential), model.frame,
                              model.laplacian_method, model.region)
    region = model.region
    truth = dp.MiyamotoNagai(m_tot=1.0, a=1.0, b=0.1)
    tailed, _ = for_export(model, tail=True)
    out = {"run": str(args.run_dir), "region": region.to_dict(),
           "tail": {"amplitude": float(tailed.amplitude), "offset": float(tailed.offset),
                    "join": list(tailed.join)}}
    print(f"region: {region.kind}, radii {region.radii}, scales {region.scales}", flush=True)
    print(f"tail: GM = {out['tail']['amplitude']:.4f}, c = {out['tail']['offset']:.4f}, "
          f"over r in {tailed.join}", flush=True)

    r_out = region.radii[2]
    R = np.geomspace(r_out, 10 * r_out, 200)
    xs = np.stack([R, np.zeros_like(R), np.zeros_like(R)], -1)
    v_model = np.asarray(tailed.circular_velocity(xs))
    v_true = np.asarray(truth.circular_velocity(xs))
    v_kepler = np.sqrt(R ** -1.0)  # G m_tot / R, the truth's Keplerian limit
    rel = np.abs(v_model / v_true - 1)
    out["vc"] = {"max_rel_vs_truth": float(rel.max()),
                 "at_1x": float(v_model[0] / v_true[0] - 1),
                 "at_10x": float(v_model[-1] / v_true[-1] - 1),
                 "max_rel_vs_kepler_limit": float(np.max(np.abs(v_model / v_kepler - 1))),
                 "untailed_max_rel_vs_truth": float(np.nanmax(np.abs(
                     np.asarray(model.potential.circular_velocity(xs)) / v_true - 1)))}
    print(f"v_c, R in [1, 10] x {r_out:.3f}: max |model/truth - 1| = "
          f"{out['vc']['max_rel_vs_truth']:.4f} (1x: {out['vc']['at_1x']:+.4f}, 10x: "
          f"{out['vc']['at_10x']:+.4f}); untailed network: "
          f"{out['vc']['untailed_max_rel_vs_truth']:.4f}", flush=True)

    radii = np.geomspace(1e-3 * r_out, 100 * r_out, 400)
    dirs = fibonacci_directions(64)
    pts = (radii[:, None, None] * dirs[None]).reshape(-1, 3)
    g_r = np.sum(np.asarray(tailed.gradient(pts)) * pts, -1) / np.linalg.norm(pts, axis=-1)
    r_pts = np.linalg.norm(pts, axis=-1)
    outward = g_r <= 0
    labels = np.asarray(region.classify(pts))
    out["force"] = {
        "n_points": len(pts), "n_outward": int(np.sum(outward)),
        # where they are: by the region's label, and by the tail's join in r
        "n_outward_by_label": {LABELS[k]: int(np.sum(outward & (labels == k))) for k in range(3)},
        "n_outward_in_join": int(np.sum(outward & (r_pts >= region.radii[1])
                                        & (r_pts <= region.radii[2]))),
        "n_outward_beyond_join": int(np.sum(outward & (r_pts > region.radii[2]))),
        "n_outward_untailed": int(np.sum(np.sum(np.asarray(model.potential.gradient(pts))
                                                * pts, -1) <= 0)),
        "min_radial_force_beyond_join": float(g_r[r_pts > region.radii[2]].min())}
    print(f"radial force to 100x: {out['force']['n_outward']} of {len(pts)} points point "
          f"outwards (by label {out['force']['n_outward_by_label']}; in the join "
          f"{out['force']['n_outward_in_join']}, beyond it "
          f"{out['force']['n_outward_beyond_join']}; untailed network "
          f"{out['force']['n_outward_untailed']})", flush=True)

    try:
        import agama
    except ImportError:
        print("agama: not installed, skipped", flush=True)
    else:
        from deeppot_agama import to_agama

        agama.setUnits()
        inside = x_scores[np.asarray(region.classify(x_scores)) == INSIDE]
        inside = inside[np.linalg.norm(inside, axis=-1) >= region.radii[0]]
        out["agama"] = {}
        for name, expansion, opts in EXPANSIONS:
            _, report = to_agama(model, expansion, points=inside, return_report=True, **opts)
            _, default = to_agama(model, expansion, return_report=True, **opts)
            out["agama"][name] = {
                "median_at_scores": report["median_force_difference"],
                "p90_at_scores": report["p90_force_difference"],
                "median_at_region_points": default["median_force_difference"],
                "n_scores_inside": report["n_points"], "grid": report["grid"]}
            print(f"agama {name}: median force difference "
                  f"{report['median_force_difference']:.2e} at {report['n_points']} score "
                  f"points inside the region (p90 {report['p90_force_difference']:.2e}); "
                  f"{default['median_force_difference']:.2e} at the default region points",
                  flush=True)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"tail_{args.tag}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
