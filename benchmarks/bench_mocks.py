"""Benchmark: phase-mixed Miyamoto–Nagai disk orbits (paper §3.2) against galpy's symplec6_c.

Times `deeppot.orbits.integrate_orbits` (Yoshida 6th order, float64) on 2^k disk stars
integrated for n_dyn dynamical times at 1/16 of the shortest period, and galpy's
`symplec6_c` on the same 2^10 initial conditions with the same number of steps, and reports
wall and CPU time per orbit-step (CPU time counts every thread of the process). Optionally
generates the full 2^19-star disk with `deeppot.mocks.miyamoto_nagai_disk`.

    python -m benchmarks.bench_mocks                      # 2^12, 2^16 and galpy on 2^10
    python -m benchmarks.bench_mocks --sizes 12 --full    # + a 2^19-star disk, end to end

Prints a table and writes JSON (and a Markdown table) to benchmarks/results/.
"""

import datetime
import os
import platform
import warnings

import jax
import numpy as np

from deeppot import mocks
from deeppot.orbits import integrate_orbits

from . import _harness as harness


def _timed(fn):
    with harness.Stage() as st:
        out = fn()
    return out, st.wall, st.cpu


def _row(what: str, n: int, steps: int, steps_per_orbit: int, wall: float, cpu: float,
         **extra) -> dict:
    """A result: `n` orbits of `steps` orbit-steps in all in `wall` and `cpu` seconds."""
    return {"what": what, "n_orbits": n, "orbit_steps": steps, "steps_per_orbit": steps_per_orbit,
            "wall_s": wall, "cpu_s": cpu, "us_per_orbit_step_wall": wall / steps * 1e6,
            "us_per_orbit_step_cpu": cpu / steps * 1e6, **extra}


def bench_deeppot(n: int, n_dyn: float, batch_size: int, workers: int, seed: int) -> dict:
    pot, x0, v0, dt, n_steps, _ = mocks.disk_initial_conditions(
        jax.random.key(seed), n, n_dyn=n_dyn
    )
    kw = {"batch_size": batch_size, "workers": workers}
    # compile (same shapes, zero steps), then time the integration alone
    _, compile_wall, _ = _timed(lambda: integrate_orbits(pot, x0, v0, dt, 0 * n_steps, **kw))
    _, wall, cpu = _timed(lambda: integrate_orbits(pot, x0, v0, dt, n_steps, **kw))
    steps = int(n_steps.sum())
    return _row(f"deeppot yoshida6, 2^{int(np.log2(n))} disk orbits", n, steps,
                int(n_steps.max()), wall, cpu, compile_wall_s=compile_wall,
                batch_size=batch_size, workers=workers)


def bench_galpy(n: int, n_dyn: float, batch_size: int, seed: int, numcores: int) -> list[dict]:
    from galpy.orbit import Orbit
    from galpy.potential import MiyamotoNagaiPotential
    from galpy.util import galpyWarningVerbose

    pot, x0, v0, dt, n_steps, _ = mocks.disk_initial_conditions(
        jax.random.key(seed), n, n_dyn=n_dyn
    )
    # galpy integrates a set of orbits on one time grid: use one step for all (the smallest,
    # so every orbit stays resolved), the same number of steps, and output every step so
    # that galpy takes exactly that step.
    step, n_step = float(dt.min()), int(n_steps.max())
    t = np.arange(n_step + 1) * step
    vxvv = np.stack([x0[:, 0], v0[:, 0], v0[:, 1], x0[:, 2], v0[:, 2], np.zeros(n)], axis=1)
    gpot = MiyamotoNagaiPotential(amp=1.0, a=1.0, b=0.1)
    orbits = Orbit(vxvv)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", galpyWarningVerbose)
        _, wall, cpu = _timed(
            lambda: orbits.integrate(
                t, gpot, method="symplec6_c", dt=step, numcores=numcores, progressbar=False
            )
        )
    steps = n * n_step
    ref = np.stack(
        [getattr(orbits, c)(t[-1], use_physical=False) for c in ("x", "y", "z", "vx", "vy", "vz")],
        axis=1,
    )
    # deeppot on the very same orbits and step, timed, and checked against galpy
    kw = {"batch_size": batch_size}
    integrate_orbits(pot, x0, v0, step, 0, **kw)
    (x1, v1), d_wall, d_cpu = _timed(lambda: integrate_orbits(pot, x0, v0, step, n_step, **kw))
    diff = float(np.abs(np.concatenate([x1, v1], axis=1) - ref).max())
    galpy_row = _row(f"galpy symplec6_c, 2^{int(np.log2(n))} disk orbits (numcores={numcores})",
                     n, steps, n_step, wall, cpu)
    same_row = _row(f"deeppot yoshida6, same 2^{int(np.log2(n))} orbits and step as galpy", n,
                    steps, n_step, d_wall, d_cpu, max_abs_diff_vs_galpy=diff,
                    speedup_cpu_vs_galpy=cpu / d_cpu, speedup_wall_vs_galpy=wall / d_wall,
                    batch_size=batch_size)
    return [galpy_row, same_row]


def bench_full_disk(n: int, n_dyn: float, batch_size: int, workers: int, seed: int) -> dict:
    cat, wall, cpu = _timed(
        lambda: mocks.miyamoto_nagai_disk(
            jax.random.key(seed),
            n,
            n_dyn=n_dyn,
            batch_size=batch_size,
            workers=workers,
            progress=True,
        )
    )
    steps = cat.meta["integration"]["orbit_steps"]
    return _row(f"mocks.miyamoto_nagai_disk, 2^{int(np.log2(n))} stars end to end", n, steps,
                cat.meta["integration"]["n_steps_max"], wall, cpu, batch_size=batch_size,
                workers=workers)


def _table(rows: list[dict]) -> str:
    return harness.markdown_table(
        ["run", "orbits", "orbit-steps", "wall s", "CPU s", "µs/orbit-step wall",
         "µs/orbit-step CPU"],
        ([r["what"], f"{r['n_orbits']}", f"{r['orbit_steps']:.3g}", f"{r['wall_s']:.3g}",
          f"{r['cpu_s']:.3g}", f"{r['us_per_orbit_step_wall']:.4f}",
          f"{r['us_per_orbit_step_cpu']:.4f}"] for r in rows))


def main(argv=None) -> int:
    p = harness.parser(__doc__, __file__)
    p.add_argument("--sizes", type=int, nargs="*", default=[12, 16], help="log2 orbit counts")
    p.add_argument("--galpy", type=int, default=10, help="log2 orbits for galpy (0: skip)")
    p.add_argument("--galpy-numcores", type=int, default=1)
    p.add_argument("--n-dyn", type=float, default=128)
    p.add_argument("--batch-size", type=int, default=2048)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--full", action="store_true", help="also generate a 2^19-star disk")
    p.add_argument("--full-log2", type=int, default=19)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tag", default="cpu", help="results file suffix: mocks_<tag>.json")
    p.add_argument("--note", default="", help="free text stored with the results")
    args = p.parse_args(argv)

    rows = []
    if args.galpy:
        rows += bench_galpy(
            2**args.galpy, args.n_dyn, args.batch_size, args.seed, args.galpy_numcores
        )
        print(_table(rows), flush=True)
    for k in args.sizes:
        rows.append(bench_deeppot(2**k, args.n_dyn, args.batch_size, args.workers, args.seed))
        print(_table(rows[-1:]), flush=True)
    if args.full:
        rows.append(
            bench_full_disk(2**args.full_log2, args.n_dyn, args.batch_size, args.workers, args.seed)
        )
    table = _table(rows)
    print()
    print(table)
    speed = [r for r in rows if "speedup_cpu_vs_galpy" in r]
    summary = ""
    if speed:
        r = speed[0]
        summary = (
            f"speed-up vs galpy symplec6_c per orbit-step: {r['speedup_cpu_vs_galpy']:.1f}x CPU, "
            f"{r['speedup_wall_vs_galpy']:.1f}x wall; "
            f"max |Δ| vs galpy {r['max_abs_diff_vs_galpy']:.1e}"
        )
        print(summary)
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    info = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": harness.command(__file__, argv),
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "load_average_at_end": load,
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "n_dyn": args.n_dyn,
        "note": args.note,
    }
    out = harness.write_results(
        f"mocks_{args.tag}", {"info": info, "rows": rows, "summary": summary},
        f"# Mock-orbit benchmark ({info['date']})\n\n`{info['command']}` on "
        f"{info['cpu_count']} CPUs, load average {load}\n\n{args.note}\n\n{table}\n\n"
        f"{summary}",
    )
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
