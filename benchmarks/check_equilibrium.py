"""Are a mock's stars an equilibrium of its potential, and are its exact scores theirs?

    python -m benchmarks.check_equilibrium            # the halo mocks of bench_df_systems
    python -m benchmarks.check_equilibrium --n 16384 --time 30

Two checks per mock, each independent of any flow:

1. **Stationarity.** Integrate every star in the truth potential
   (`deeppot.orbits.integrate_orbits`, leapfrog, dt = 0.005, float64) and compare, in
   radial shells, the star counts and the radial-velocity dispersion σ_r at t = 0 and at
   later times. An equilibrium keeps both within Monte-Carlo noise (the count's √n, σ_r's
   σ_r/√(2n)); the largest drift in units of that noise is printed.
2. **Stein's identity.** For the density p of the stars and a test field φ,
   E_p[∇ln p · φ + ∇·φ] = 0. With φ = x h(r) and φ = v h(r), h a log-normal bump around
   r₀, the mean of the identity over the stars, in units of its standard error, tests
   whether the "exact" scores are the scores of the stars (|z| ≲ 3 if they are).

Mocks: galpy's Osipkov–Merritt Hernquist halo (r_a = 1, exact scores from
`deeppot.flows.HernquistDF`), deeppot's own `HernquistDF(r_a=1)` sampler (the control),
and galpy's Osipkov–Merritt NFW truncated at 30 r_s (exact scores from galpy's f(Q)).
Rows print as they are measured and go to benchmarks/results/equilibrium_cpu.{json,md}.
"""

from __future__ import annotations

import json

import jax
import numpy as np

import deeppot as dp

from . import _galpy_halo as halos
from . import _harness as harness

EDGES = (0.3, 1.0, 3.0, 10.0, 30.0)
STEIN_RADII = (0.3, 1.0, 3.0, 10.0)


def _mocks(n):
    """name → (w, truth potential, exact-score function)."""
    own = dp.flows.HernquistDF(r_a=1.0)
    return {
        "galpy OM Hernquist (r_a = 1)": (
            np.asarray(halos.hernquist_halo(0, n)[0].w), dp.Hernquist(1.0, 1.0),
            halos.hernquist_exact_scores()),
        "deeppot HernquistDF(r_a = 1) (control)": (
            np.asarray(own.sample(jax.random.key(0), n)), own.potential,
            halos.hernquist_exact_scores()),
        "galpy OM NFW (r_a = 2, truncated at 30)": (
            np.asarray(halos.nfw_halo(0, n)[0].w), dp.NFW(1.0, 1.0), halos.NFWGalpyScores()),
    }


def shell_statistics(x, v):
    r = np.linalg.norm(x, axis=-1)
    v_r = np.sum(x * v, -1) / r
    out = []
    for lo, hi in zip(EDGES[:-1], EDGES[1:]):
        m = (r >= lo) & (r < hi)
        out.append((int(m.sum()), float(np.std(v_r[m]))))
    return out


def stationarity(w, potential, t_end, dt=0.005, every=10.0):
    """Largest drift of shell counts and σ_r over the integration, in noise units."""
    x, v = w[:, :3], w[:, 3:]
    start = shell_statistics(x, v)
    worst_n = worst_s = 0.0
    history = []
    for _ in range(round(t_end / every)):
        x, v = dp.orbits.integrate_orbits(potential, x, v, dt, round(every / dt),
                                          method="leapfrog", workers=2)
        now = shell_statistics(x, v)
        history.append(now)
        for (n0, s0), (n1, s1) in zip(start, now):
            worst_n = max(worst_n, abs(n1 - n0) / np.sqrt(n0))
            worst_s = max(worst_s, abs(s1 - s0) / (s0 / np.sqrt(2 * n0)))
    return {"shells": [f"{lo:g}-{hi:g}" for lo, hi in zip(EDGES[:-1], EDGES[1:])],
            "start": start, "end": history[-1], "max_count_drift_sigma": round(worst_n, 1),
            "max_sigma_r_drift_sigma": round(worst_s, 1)}


def stein(w, exact):
    """z-scores of Stein's identity for φ = x h(r) and φ = v h(r), per r₀."""
    x, v = w[:, :3], w[:, 3:]
    s_x, s_v = exact(w)
    ok = np.all(np.isfinite(s_x), -1) & np.all(np.isfinite(s_v), -1)
    x, v, s_x, s_v = x[ok], v[ok], s_x[ok], s_v[ok]
    r = np.linalg.norm(x, axis=-1)
    out = {}
    for r0 in STEIN_RADII:
        lr, width = np.log(r / r0), 0.3
        h = np.exp(-(lr**2) / (2 * width**2))
        dh_dr = -h * lr / (width**2 * r)
        for name, t in (("x", np.sum(s_x * x, -1) * h + 3 * h + r * dh_dr),
                        ("v", np.sum(s_v * v, -1) * h + 3 * h)):
            out[f"{name}@{r0:g}"] = round(float(t.mean() / (t.std() / np.sqrt(len(t)))), 1)
    return out


def main(argv=None):
    p = harness.parser(__doc__, __file__)
    p.add_argument("--n", type=int, default=2**14)
    p.add_argument("--time", type=float, default=30.0, help="integration time (G = M = 1)")
    args = p.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    rows = []
    for name, (w, potential, exact) in _mocks(args.n).items():
        row = {"mock": name, "n": args.n, "t_end": args.time,
               **stationarity(w, potential, args.time), "stein_z": stein(w, exact)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    command = harness.command(__file__, argv)
    lines = [f"# Equilibrium checks of the halo mocks\n\nCommand: `{command}`\n",
             "| mock | max drift of shell counts (σ) | max drift of σ_r (σ) | "
             "Stein z, φ = x h(r) at r₀ = " + ", ".join(f"{r:g}" for r in STEIN_RADII)
             + " | Stein z, φ = v h(r) |", "|---|---|---|---|---|"]
    for r in rows:
        z = r["stein_z"]
        lines.append(f"| {r['mock']} | {r['max_count_drift_sigma']} | "
                     f"{r['max_sigma_r_drift_sigma']} | "
                     + ", ".join(str(z[f'x@{r0:g}']) for r0 in STEIN_RADII) + " | "
                     + ", ".join(str(z[f'v@{r0:g}']) for r0 in STEIN_RADII) + " |")
    harness.write_results("equilibrium_cpu", {"command": command, "rows": rows},
                          "\n".join(lines))
    print("\n".join(lines[2:]))


if __name__ == "__main__":
    main()
