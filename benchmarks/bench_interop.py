"""Agreement of exported potentials with deeppot (galpy, gala, agama plugins).

For each model of `tests.models.EXPORTED` (every analytic family, three trained networks, a
composite and a tilted axisymmetric network): the largest relative difference, over 256
points with 0.1 < R < 4, |z| < 2, between deeppot's and the exported potential's Φ, forces,
density (and Hessian for gala), in float64. Then `from_galpy(MWPotential2014)` against
galpy, and one disk orbit integrated by galpy (dop853) in the exported potential against
`deeppot.orbits.integrate_orbits` (Yoshida 6th order, 400 steps per period) after
`--periods` orbital periods. With agama installed, the agama rows (expansion force error over
the data region) are added. Rows print as they are measured.

    python -m benchmarks.bench_interop [--periods 100] [--quick]
"""

import time

import jax
import numpy as np

import deeppot as dp
from tests.models import EXPORTED, EXPORTED_FAST, exported_model

from . import _harness as harness


def _points(n=256, seed=3):
    rng = np.random.default_rng(seed)
    R, z, phi = rng.uniform(0.1, 4.0, n), rng.uniform(-2.0, 2.0, n), rng.uniform(0, 2 * np.pi, n)
    return R, z, phi, np.stack([R * np.cos(phi), R * np.sin(phi), z], -1)


def _rel(ours, theirs):
    ours, theirs = np.asarray(ours, float), np.asarray(theirs, float)
    return float(np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs)))


def galpy_row(name, pot):
    from deeppot_galpy import to_galpy

    g = to_galpy(pot)
    R, z, phi, x = _points()
    kw = dict(phi=phi, use_physical=False)
    grad = np.asarray(pot.gradient(x))
    c, s = np.cos(phi), np.sin(phi)
    return {"phi": _rel(g(R, z, **kw), pot.potential(x)),
            "force": max(_rel(g.Rforce(R, z, **kw), -(grad[:, 0] * c + grad[:, 1] * s)),
                         _rel(g.zforce(R, z, **kw), -grad[:, 2])),
            "density": _rel(g.dens(R, z, **kw), np.asarray(pot.density(x)) * pot.G)}


def gala_row(name, pot):
    from deeppot_gala import to_gala

    g = to_gala(pot)
    *_, x = _points()
    q = x.T
    return {"phi": _rel(g.energy(q).value, pot.potential(x)),
            "force": _rel(g.acceleration(q).value, np.asarray(pot.acceleration(x)).T),
            "density": _rel(g.density(q).value, np.asarray(pot.density(x)) * pot.G),
            "hessian": _rel(g.hessian(q).value, np.moveaxis(np.asarray(pot.hessian(x)), 0, -1))}


def mw_row():
    import galpy.potential as gp

    from deeppot_galpy import from_galpy

    mw = from_galpy(gp.MWPotential2014)
    R, z, phi, x = _points()
    kw = dict(phi=phi, use_physical=False)
    acc = np.asarray(mw.acceleration(x))
    c, s = np.cos(phi), np.sin(phi)
    return {"force": max(_rel(acc[:, 0] * c + acc[:, 1] * s,
                              gp.evaluateRforces(gp.MWPotential2014, R, z, **kw)),
                         _rel(acc[:, 2], gp.evaluatezforces(gp.MWPotential2014, R, z, **kw))),
            "density": _rel(mw.density(x), gp.evaluateDensities(gp.MWPotential2014, R, z, **kw))}


def orbit_row(pot, periods, steps_per_period=400):
    from galpy.orbit import Orbit

    from deeppot_galpy import to_galpy

    g = to_galpy(pot)
    vc = float(g.vcirc(1.0, use_physical=False))
    period = 2 * np.pi / vc
    w0 = [1.0, 0.05, 0.95 * vc, 0.05, 0.02, 0.3]
    o = Orbit(w0)
    ts = np.array([0.0, periods * period])
    t0 = time.perf_counter()
    o.integrate(np.linspace(0, periods * period, 10 * periods + 1), g, method="dop853",
                progressbar=False)
    t_galpy = time.perf_counter() - t0
    theirs = np.array([o.x(ts[1]), o.y(ts[1]), o.z(ts[1])])
    R, vR, vT, z, vz, ph = w0
    c, s = np.cos(ph), np.sin(ph)
    x0 = np.array([[R * c, R * s, z]])
    v0 = np.array([[vR * c - vT * s, vR * s + vT * c, vz]])
    ours, _ = dp.orbits.integrate_orbits(pot, x0, v0, period / steps_per_period,
                                         periods * steps_per_period)
    return {"periods": periods, "max_abs_position_difference":
            float(np.max(np.abs(np.asarray(ours)[0] - theirs))), "galpy_wall_s": t_galpy}


def agama_rows():
    try:
        import agama
    except ImportError:
        return None
    from deeppot_agama import to_agama

    agama.setUnits()
    rows = {}
    for name, kind in (("plummer", "multipole"), ("trained_spherical", "multipole"),
                       ("miyamoto_nagai", "cylspline"), ("trained_axisymmetric", "cylspline")):
        pot = exported_model(name)
        exp = to_agama(pot, kind, r_min=0.02, r_max=30.0, z_min=0.01, z_max=30.0)
        rng = np.random.default_rng(0)
        R = np.exp(rng.uniform(np.log(0.1), np.log(3.0), 2000))
        ph = rng.uniform(0, 2 * np.pi, 2000)
        x = np.stack([R * np.cos(ph), R * np.sin(ph), rng.uniform(-1, 1, 2000)], -1)
        ours = np.asarray(pot.acceleration(x))
        err = np.linalg.norm(exp.force(x) - ours, axis=-1) / np.linalg.norm(ours, axis=-1)
        rows[name] = {"kind": kind, "median": float(np.median(err)), "max": float(err.max())}
        print(f"agama {name:22s} {kind:10s} median {rows[name]['median']:.2e} "
              f"max {rows[name]['max']:.2e}", flush=True)
    return rows


def main(argv=None):
    ap = harness.parser(__doc__, __file__)
    ap.add_argument("--periods", type=int, default=100)
    ap.add_argument("--quick", action="store_true", help="only the models make test checks")
    args = ap.parse_args(argv)
    jax.config.update("jax_enable_x64", True)
    names = EXPORTED_FAST if args.quick else EXPORTED
    t0 = time.perf_counter()
    out = {"machine": harness.machine(),
           "command": harness.command(__file__, (["--quick"] if args.quick else [])
                                      + ["--periods", str(args.periods)]),
           "galpy": {}, "gala": {}}
    for name in names:
        pot = exported_model(name)
        out["galpy"][name] = galpy_row(name, pot)
        out["gala"][name] = gala_row(name, pot)
        print(f"{name:22s} galpy {out['galpy'][name]}  gala {out['gala'][name]}", flush=True)
    out["from_galpy_MWPotential2014"] = mw_row()
    print(f"from_galpy(MWPotential2014) {out['from_galpy_MWPotential2014']}", flush=True)
    out["orbits"] = {}
    for name in ("miyamoto_nagai", "trained_axisymmetric"):
        out["orbits"][name] = orbit_row(exported_model(name), args.periods)
        print(f"orbit {name}: {out['orbits'][name]}", flush=True)
    out["agama"] = agama_rows()
    out["cpu_s"] = harness.cpu_seconds()
    out["wall_s"] = time.perf_counter() - t0
    lines = [f"`{out['command']}` (float64; shared 2-core machine, wall {out['wall_s']:.0f} s, "
             f"CPU {out['cpu_s']:.0f} s)", "",
             "| model | galpy Φ | galpy F | galpy ρ | gala Φ | gala F | gala ρ | gala Hessian |",
             "|---|---|---|---|---|---|---|---|"]
    for name in names:
        a, b = out["galpy"][name], out["gala"][name]
        lines.append(f"| {name} | {a['phi']:.1e} | {a['force']:.1e} | {a['density']:.1e} | "
                     f"{b['phi']:.1e} | {b['force']:.1e} | {b['density']:.1e} | "
                     f"{b['hessian']:.1e} |")
    mw = out["from_galpy_MWPotential2014"]
    lines += ["", f"from_galpy(MWPotential2014) vs galpy: forces {mw['force']:.1e}, "
              f"density {mw['density']:.1e} (max relative)", "",
              "| orbit (galpy dop853 vs deeppot yoshida6) | periods | max abs Δx |",
              "|---|---|---|"]
    for name, row in out["orbits"].items():
        lines.append(f"| {name} | {row['periods']} | {row['max_abs_position_difference']:.1e} |")
    if out["agama"] is None:
        lines += ["", "agama: not installed, not measured."]
    else:
        lines += ["", "| agama expansion | kind | median rel. force error | max |",
                  "|---|---|---|---|"]
        lines += [f"| {n} | {r['kind']} | {r['median']:.1e} | {r['max']:.1e} |"
                  for n, r in out["agama"].items()]
    print(harness.write_results(f"interop_{harness.device_platform(out['machine'])}", out,
                                "\n".join(lines)), flush=True)


if __name__ == "__main__":
    main()
