"""Where a halo DF's score error sits: by radius, radial against tangential components,
and whether the velocity profiles put the velocities on unit scale.

    python -m benchmarks.halo_score_anatomy \
        runs/halo_hq/halo_cpu_hq128tanh_scaled_spherical-vector-scaled.eqx

Reads a `SphericalDF(tangential="vector", scale_velocities=True)` (3×128 tanh) written by
`python -m benchmarks.bench_df_systems --system halo --variants spherical-vector-scaled
--save-dir ...`, and for the 8192 held-out stars of that benchmark prints, per radial bin:
the median error of the radial and tangential components of ∂ln f/∂x and ∂ln f/∂v (each
relative to the exact score's norm) and the exact radial share; then the rms of v_r/σ_r(r)
and of |v_t|/(√2 σ_t(r)) over the 2^16 training stars per bin (1 where the fitted profiles
are right). Written to `benchmarks/results/halo_anatomy_cpu.json`.
"""

from __future__ import annotations

import json

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from . import _harness as harness
from ._systems import HEUN4, load_system, make_df, map_ffjords

BINS = ((0, 1), (1, 3), (3, 10), (10, 30), (30, 100))


def _split(a, unit):
    radial = np.sum(a * unit, 1)
    return radial, np.linalg.norm(a - radial[:, None] * unit, axis=1)


def main(argv=None):
    p = harness.parser(__doc__, __file__)
    p.add_argument("model", help="the saved spherical-vector-scaled DF (.eqx)")
    path = p.parse_args(argv).model
    train, _, test, exact = load_system("halo", 2**16)
    like = make_df("spherical-vector-scaled", "halo", jax.random.key(0), 128, 3, "tanh")
    df = eqx.tree_deserialise_leaves(path, map_ffjords(like, lambda f: f.with_ode(HEUN4)))
    w = np.asarray(test.w[:8192])
    ex, ev = exact(w)
    gx, gv = (np.asarray(a) for a in df.score(jnp.asarray(w, jnp.float32)))
    r = np.linalg.norm(w[:, :3], axis=1)
    unit = w[:, :3] / r[:, None]
    rows = []
    for lo, hi in BINS:
        m = (r >= lo) & (r < hi)
        nx, nv = np.linalg.norm(ex[m], axis=1), np.linalg.norm(ev[m], axis=1)
        row = {"r": [lo, hi], "n": int(m.sum())}
        for name, got, true, norm in (("x", gx, ex, nx), ("v", gv, ev, nv)):
            d_rad, d_tan = _split(got[m] - true[m], unit[m])
            t_rad, _ = _split(true[m], unit[m])
            row[f"err_{name}_radial"] = float(np.median(np.abs(d_rad) / norm))
            row[f"err_{name}_tangential"] = float(np.median(d_tan / norm))
            row[f"exact_{name}_radial_share"] = float(np.median(np.abs(t_rad) / norm))
        rows.append(row)
        print(json.dumps(row), flush=True)
    wt = np.asarray(train.w)
    rt = np.linalg.norm(wt[:, :3], axis=1)
    vr = np.sum(wt[:, :3] * wt[:, 3:], 1) / rt
    vt = np.sqrt(np.maximum(np.sum(wt[:, 3:] ** 2, 1) - vr**2, 0.0))
    ls_r, ls_t = (np.asarray(a) for a in df.profile.log_sigma(jnp.asarray(rt, jnp.float32)))
    profile = []
    for lo, hi in (*BINS, (100, np.inf)):
        m = (rt >= lo) & (rt < hi)
        profile.append({"r": [lo, float(hi)], "n": int(m.sum()),
                        "rms_vr_over_sigma_r": float(np.sqrt(np.mean((vr[m] / np.exp(
                            ls_r[m])) ** 2))),
                        "rms_vt_over_sqrt2_sigma_t": float(np.sqrt(np.mean((vt[m] / np.exp(
                            ls_t[m])) ** 2) / 2))})
        print(json.dumps(profile[-1]), flush=True)
    harness.write_results("halo_anatomy_cpu", {"command": harness.command(__file__, [path]),
                                               "scores": rows, "profiles": profile})


if __name__ == "__main__":
    main()
