"""The `deeppot` command line.

Each subcommand is a pair of functions: `_add_<name>(subparsers)` registers its parser and
sets `func=_run_<name>`; `_run_<name>(args) -> int` does the work. To add a subcommand
(`run`, `fit-df`, `scores`, `fit-potential`, `evaluate`, `demo`, …), write the pair and append
the registrar to `COMMANDS`.
"""

import argparse
import sys
import time
from collections.abc import Callable, Sequence

__all__ = ["COMMANDS", "build_parser", "main"]


def _positive_int(text: str) -> int:
    value = int(float(text)) if "e" in text.lower() else int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _add_mock(subparsers) -> None:
    p = subparsers.add_parser(
        "mock",
        help="generate a mock catalogue (Plummer sphere or Miyamoto–Nagai disk)",
        description="Generate a mock phase-space catalogue with known truth and save it "
        "(.npz, .h5 or .csv). With --select, enough parent stars are drawn that --n remain.",
    )
    p.add_argument("kind", choices=["plummer", "disk"], help="which mock")
    p.add_argument("--n", type=_positive_int, default=2**19, help="number of stars (2^19)")
    p.add_argument("--seed", type=int, default=0, help="random seed (jax.random.key)")
    p.add_argument("--out", required=True, help="output file: .npz, .h5/.hdf5 or .csv")
    g = p.add_argument_group("plummer")
    g.add_argument("--r-max", type=float, default=10.0, help="truncation radius (10)")
    g = p.add_argument_group("disk")
    g.add_argument("--a", type=float, default=1.0, help="Miyamoto–Nagai a (1.0)")
    g.add_argument("--b", type=float, default=0.1, help="Miyamoto–Nagai b (0.1)")
    g.add_argument("--h-R", dest="h_R", type=float, default=1.0, help="radial scale (1.0)")
    g.add_argument("--h-z", dest="h_z", type=float, default=0.1, help="vertical scale (0.1)")
    g.add_argument(
        "--n-dyn",
        type=float,
        default=128,
        help="dynamical times (128; 8 = the paper's non-stationary disk)",
    )
    g.add_argument("--method", choices=["yoshida6", "leapfrog"], default="yoshida6")
    g.add_argument(
        "--batch-size", type=_positive_int, default=2048, help="orbits integrated together (2048)"
    )
    g.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        help="threads integrating blocks concurrently (set to the CPU cores)",
    )
    g = p.add_argument_group("observation")
    g.add_argument("--observe", action="store_true", help="add the paper's Gaia-like errors")
    g.add_argument(
        "--observer",
        type=float,
        nargs=3,
        default=(1.0, 0.0, 0.0),
        metavar=("X", "Y", "Z"),
        help="observer position (1 0 0)",
    )
    g.add_argument(
        "--select",
        action="store_true",
        help="keep only stars within --select-radius of --select-center",
    )
    g.add_argument(
        "--select-center",
        type=float,
        nargs=3,
        default=(1.0, 0.0, 0.0),
        metavar=("X", "Y", "Z"),
        help="selection sphere centre (1 0 0)",
    )
    g.add_argument("--select-radius", type=float, default=1.0, help="selection radius (1)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_run_mock)


def _run_mock(args: argparse.Namespace) -> int:
    import jax

    from . import mocks

    progress = not args.no_progress
    key = jax.random.key(args.seed)
    k_draw, k_noise = jax.random.split(key)

    def sampler(k, m):
        if args.kind == "plummer":
            return mocks.plummer(k, m, r_max=args.r_max)
        return mocks.miyamoto_nagai_disk(
            k,
            m,
            a=args.a,
            b=args.b,
            h_R=args.h_R,
            h_z=args.h_z,
            n_dyn=args.n_dyn,
            method=args.method,
            batch_size=args.batch_size,
            workers=args.workers,
            progress=progress,
        )

    def select(c):
        return mocks.select_sphere(c, args.select_center, args.select_radius)

    t0 = time.perf_counter()
    if args.select:
        cat = mocks.sample_selected(sampler, k_draw, args.n, select)
    else:
        cat = sampler(k_draw, args.n)
    if args.observe:
        cat = mocks.observe(cat, k_noise, args.observer)
    cat = cat.with_meta(seed=args.seed, command=" ".join(["deeppot", *sys.argv[1:]]))
    path = cat.save(args.out)
    print(f"wrote {len(cat)} stars to {path} in {time.perf_counter() - t0:.1f} s")
    return 0


COMMANDS: list[Callable] = [_add_mock]


def build_parser() -> argparse.ArgumentParser:
    """The `deeppot` argument parser with every registered subcommand.

    **Returns:** an `argparse.ArgumentParser`.
    """
    parser = argparse.ArgumentParser(
        prog="deeppot",
        description="Recover gravitational potentials from phase-space snapshots.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `deeppot` console script.

    **Arguments:**

    - `argv`: arguments without the program name (default: `sys.argv[1:]`).

    **Returns:** the exit status.
    """
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
