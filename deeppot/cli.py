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


def _add_config_options(p, *, config_required: bool = False) -> None:
    if config_required:
        p.add_argument("config", help="the run's TOML config (see docs/pipeline.md)")
    else:
        p.add_argument(
            "--config",
            default=None,
            help="TOML config whose sections supply the settings (default: the built-in "
            "defaults of docs/pipeline.md)",
        )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config value, e.g. --set fit.steps=500 (repeatable)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def _config(args: argparse.Namespace):
    from . import pipeline

    overrides = list(args.overrides)
    if getattr(args, "no_progress", False):
        overrides.append("run.progress=false")
    path = getattr(args, "config", None)
    if path is None:  # the built-in defaults (docs/pipeline.md) with the overrides
        return pipeline.parse_config(pipeline.apply_overrides({}, overrides))
    return pipeline.load_config(path, overrides)


def _config_error(err: Exception) -> int:
    print(f"deeppot: {err}", file=sys.stderr)
    return 2


def _x64(cfg):
    import contextlib

    import jax

    return jax.enable_x64(True) if cfg.run.x64 else contextlib.nullcontext()


def _add_run(subparsers) -> None:
    p = subparsers.add_parser(
        "run",
        help="run the whole pipeline from a TOML config (catalogue → DF → scores → potential)",
        description="Run catalogue → DF → scores → potential → report into a run directory. "
        "Rerunning resumes: finished stages are skipped and training continues from its "
        "checkpoints.",
    )
    _add_config_options(p, config_required=True)
    p.add_argument("--run-dir", default=None, help="run directory (default: runs/<config name>)")
    p.set_defaults(func=_run_run)


def _run_run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from . import pipeline

    cfg = _config(args)
    run_dir = args.run_dir or str(Path("runs") / Path(args.config).stem)
    metrics = pipeline.run(cfg, run_dir)
    table = pipeline.accuracy_table(metrics)
    print(table if table else "no truth potential: no accuracy table")
    print(f"report: {Path(run_dir) / 'report.md'}")
    return 0


def _add_fit_df(subparsers) -> None:
    p = subparsers.add_parser(
        "fit-df",
        help="train the [df] distribution function on a catalogue",
        description="Train the DF described by the config's [df] section on a catalogue and "
        "write it as OUT (.eqx) with its JSON description next to it.",
    )
    p.add_argument("catalog", help="catalogue file (.npz, .h5, .csv)")
    p.add_argument("--out", "-o", required=True, help="output model file (.eqx)")
    p.add_argument("--checkpoint", default=None, help="checkpoint file (resumed if present)")
    _add_config_options(p)
    p.set_defaults(func=_run_fit_df)


def _run_fit_df(args: argparse.Namespace) -> int:
    from . import pipeline
    from .catalog import PhaseSpaceCatalog

    cfg = _config(args)
    cat = PhaseSpaceCatalog.load(args.catalog)
    with _x64(cfg):
        ckpt_dir = None
        if args.checkpoint:
            ckpt_dir = _checkpoint_dir(args.checkpoint, "df.ckpt")
        r_max = float(cat.meta.get("params", {}).get("r_max", 10.0))
        df, summary = pipeline.train_df(
            cfg.df, cat, pipeline._stage_key(cfg.run.seed, "df"), checkpoint_dir=ckpt_dir,
            progress=cfg.run.progress, r_max=r_max,
        )
        pipeline.save_model(args.out, df, {
            "kind": "df", "config": pipeline._section_dict("df", cfg.df), "r_max": r_max,
            "x64": cfg.run.x64, "training": summary, "catalog": str(args.catalog),
        })
    print(f"wrote {args.out}")
    return 0


def _checkpoint_dir(path: str, expected: str) -> str:
    import os

    if os.path.basename(path) != expected:
        raise SystemExit(f"deeppot: --checkpoint must be a file named {expected}")
    return os.path.dirname(path) or "."


def _add_scores(subparsers) -> None:
    p = subparsers.add_parser(
        "scores",
        help="draw the [scores] sample from a trained DF",
        description="Draw points from a DF file and evaluate its scores there; write .npz.",
    )
    p.add_argument("df", help="DF model file (.eqx, from fit-df or a run directory)")
    p.add_argument("--out", "-o", required=True, help="output ScoreSample file (.npz)")
    _add_config_options(p)
    p.set_defaults(func=_run_scores)


def _run_scores(args: argparse.Namespace) -> int:
    from . import pipeline

    cfg = _config(args)
    df, desc = pipeline.load_model(args.df)
    if desc["kind"] != "df":
        return _config_error(ValueError(f"{args.df} is a {desc['kind']} model, not a DF"))
    with _x64(cfg):
        scores = pipeline.draw_scores(cfg.scores, df, pipeline._stage_key(cfg.run.seed, "scores"),
                                      progress=cfg.run.progress)
    scores.save(args.out)
    print(f"wrote {len(scores)} scores to {args.out}")
    return 0


def _add_fit_potential(subparsers) -> None:
    p = subparsers.add_parser(
        "fit-potential",
        help="fit the [potential] model to a score sample with the [fit] loss",
        description="Fit the potential model of [potential] to a ScoreSample file with the "
        "loss of [fit]; write OUT (.eqx) and its JSON description.",
    )
    p.add_argument("scores", help="ScoreSample file (.npz)")
    p.add_argument("--out", "-o", required=True, help="output model file (.eqx)")
    p.add_argument("--checkpoint", default=None, help="checkpoint file (resumed if present)")
    _add_config_options(p)
    p.set_defaults(func=_run_fit_potential)


def _run_fit_potential(args: argparse.Namespace) -> int:
    from . import pipeline
    from .scores import ScoreSample

    cfg = _config(args)
    with _x64(cfg):
        scores = ScoreSample.load(args.scores)
        model, summary = pipeline.train_potential(
            cfg.potential, cfg.fit, scores, pipeline._stage_key(cfg.run.seed, "potential"),
            checkpoint_path=args.checkpoint, progress=cfg.run.progress,
        )
        pipeline.save_model(args.out, model, {
            "kind": "potential", "config": pipeline._section_dict("potential", cfg.potential),
            "fit": pipeline._section_dict("fit", cfg.fit), "x64": cfg.run.x64,
            "training": summary, "scores": str(args.scores),
        })
    print(f"wrote {args.out}")
    return 0


def _add_evaluate(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="compare a fitted potential with a catalogue's true potential",
        description="Evaluate a potential file against the truth recorded in a catalogue's "
        "meta (mocks record it), at the catalogue's positions; print the accuracy table and "
        "optionally write metrics JSON and PNG plots.",
    )
    p.add_argument("potential", help="potential model file (.eqx)")
    p.add_argument("--catalog", required=True, help="catalogue with a truth potential in meta")
    p.add_argument("--out-dir", default=None, help="write metrics.json and plots here")
    _add_config_options(p)
    p.set_defaults(func=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from . import pipeline
    from .catalog import PhaseSpaceCatalog

    cfg = _config(args)
    model, desc = pipeline.load_model(args.potential)
    if desc["kind"] != "potential":
        return _config_error(ValueError(f"{args.potential} is a {desc['kind']} model"))
    cat = PhaseSpaceCatalog.load(args.catalog)
    with _x64(cfg):
        ev = pipeline.evaluate_model(cfg.evaluate, model, cat, out_dir=args.out_dir)
    if ev["accuracy"] is None:
        print(f"{args.catalog} records no truth potential; nothing to compare with")
        return 1
    print(pipeline.accuracy_table(ev))
    if args.out_dir:
        out = Path(args.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(ev, indent=2) + "\n")
    return 0


def _add_demo(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run the Plummer demo (≤ 10 minutes on 2 CPU cores) and print its accuracy",
        description="Run deeppot/configs/demo.toml: a Plummer mock, an FFJORD DF trained by "
        "flow matching, 2^16 scores and a spherical network potential, then print the "
        "accuracy table (median, p16 and p84 of the force, density and potential errors for "
        "r in [0.1, 3]). "
        "Rerunning resumes from the run directory.",
    )
    p.add_argument("--quick", action="store_true",
                   help="short settings (about a minute): what CI runs")
    p.add_argument("--run-dir", default=None,
                   help="run directory (default: runs/demo or runs/demo-quick)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one demo setting, e.g. --set fit.steps=3000 (repeatable)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from . import pipeline

    overrides = [f"{k}={v}" for k, v in pipeline.DEMO_QUICK_OVERRIDES.items()] if args.quick \
        else []
    overrides += list(args.overrides)
    if args.no_progress:
        overrides.append("run.progress=false")
    cfg = pipeline.load_config(pipeline.default_config_path("demo"), overrides)
    run_dir = args.run_dir or ("runs/demo-quick" if args.quick else "runs/demo")
    t0 = time.perf_counter()
    metrics = pipeline.run(cfg, run_dir)
    print()
    print(pipeline.accuracy_table(metrics))
    force = metrics["accuracy"]["force"]["median"]
    print()
    print(f"Plummer median force error at {metrics['region']}: {100 * force:.2f}%")
    print(f"demo finished in {time.perf_counter() - t0:.0f} s; report: {run_dir}/report.md")
    return 0


COMMANDS: list[Callable] = [
    _add_mock,
    _add_run,
    _add_fit_df,
    _add_scores,
    _add_fit_potential,
    _add_evaluate,
    _add_demo,
]


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
    from .pipeline import ConfigError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as err:  # every subcommand's config is validated before any work
        return _config_error(err)


if __name__ == "__main__":
    raise SystemExit(main())
