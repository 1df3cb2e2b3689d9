"""The `deeppot` command line.

Each subcommand is a pair of functions: `_add_<name>(subparsers)` registers its parser and
sets `func=_run_<name>`; `_run_<name>(args) -> int` does the work. Every subcommand takes
its settings from a config (`--config FILE` or the defaults) with `--set` overrides, and
runs the pipeline's stages (`deeppot.pipeline.run_stage`) on files: there is one
orchestration path. Errors reach the user as one line (`deeppot: …`) and a non-zero exit
status; `--traceback` shows the Python traceback instead.
"""

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["COMMANDS", "build_parser", "main"]


def _positive_int(text: str) -> int:
    try:
        value = int(float(text)) if "e" in text.lower() else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


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


def _config(args: argparse.Namespace, extra: Sequence[str] = ()):
    from . import pipeline

    overrides = list(extra) + list(args.overrides)
    if getattr(args, "no_progress", False):
        overrides.append("run.progress=false")
    path = getattr(args, "config", None)
    if path is None:  # the built-in defaults (docs/pipeline.md) with the overrides
        return pipeline.parse_config(pipeline.apply_overrides({}, overrides))
    return pipeline.load_config(path, overrides)


def _load(kind: str, path: str):
    """(object, metadata) of an artefact file, e.g. a catalogue or a DF model file."""
    from .pipeline import ARTEFACTS

    return ARTEFACTS[kind].load(Path(path))


def _check_output(path: str, *inputs: str, kind: str | None = None) -> Path:
    """The output path, checked before any work: not an input, in a directory that exists,
    and (for a `kind` of artefact) not replacing a file of another kind."""
    from .pipeline.stages import check_replaceable

    out = Path(path)
    for i in inputs:
        if Path(i).resolve() == out.resolve():
            raise ValueError(f"the output {path} is also an input: choose another file")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"the output's directory '{out.parent}' does not exist")
    if kind is not None:
        check_replaceable(kind, out)
    return out


def _stage(name: str, cfg, inputs, *, checkpoint_dir=None, plot_dir=None):
    from . import pipeline

    return pipeline.run_stage(name, cfg, inputs, checkpoint_dir=checkpoint_dir,
                              plot_dir=plot_dir, progress=cfg.run.progress)


def _add_mock(subparsers) -> None:
    from .pipeline.config import generates
    from .registry import sources

    kinds = [name for name in sources if generates(name)]
    p = subparsers.add_parser(
        "mock",
        help=f"generate a mock catalogue ({', '.join(kinds)})",
        description="Generate a mock phase-space catalogue with known truth and save it "
        "(.npz, .h5 or .csv): the data stage of a run with [data] source = KIND. With "
        "--select, enough parent stars are drawn that --n remain.",
    )
    p.add_argument("kind", metavar="KIND",
                   help=f"a registered mock source: {', '.join(kinds)}")
    p.add_argument("--n", type=_positive_int, default=None, help="number of stars")
    p.add_argument("--seed", type=int, default=None, help="random seed ([run] seed)")
    p.add_argument("--out", required=True, help="output file: .npz, .h5/.hdf5 or .csv")
    p.add_argument("--param", dest="params", action="append", default=[],
                   metavar="NAME=VALUE",
                   help="a parameter of the source's generator ([data.params]; "
                   "docs/pipeline.md lists them), e.g. --param n_dyn=8 (repeatable)")
    g = p.add_argument_group("observation")
    g.add_argument("--observe", action="store_true", help="add the paper's Gaia-like errors")
    g.add_argument("--observer", type=float, nargs=3, metavar=("X", "Y", "Z"),
                   help="observer position (1 0 0)")
    g.add_argument("--select", action="store_true",
                   help="keep only stars within --select-radius of --select-center")
    g.add_argument("--select-center", type=float, nargs=3, metavar=("X", "Y", "Z"),
                   help="selection sphere centre (1 0 0)")
    g.add_argument("--select-radius", type=float, default=1.0, help="selection radius (1)")
    _add_config_options(p)
    p.set_defaults(func=_run_mock)


def _run_mock(args: argparse.Namespace) -> int:
    flags = {"n": args.n, "observer": None if args.observer is None else list(args.observer),
             "select_center": None if args.select_center is None else list(args.select_center)}
    extra = [f"data.source={args.kind}"]
    extra += [f"data.{k}={_toml(v)}" for k, v in flags.items() if v is not None]
    for item in args.params:
        if "=" not in item:
            raise ValueError(f"--param {item!r} must look like name=value")
        extra.append(f"data.params.{item}")
    if args.observe:
        extra.append("data.observe=true")
    if args.select:
        if not args.select_radius > 0:
            raise ValueError(f"--select-radius must be positive, got {args.select_radius}")
        extra.append(f"data.select_radius={args.select_radius!r}")
    if args.seed is not None:
        extra.append(f"run.seed={args.seed}")
    cfg = _config(args, extra)
    out = _check_output(args.out)
    t0 = time.perf_counter()
    cat, _ = _stage("data", cfg, {})["catalog"]
    cat = cat.with_meta(seed=cfg.run.seed, command=" ".join(["deeppot", *sys.argv[1:]]))
    cat.save(out)
    print(f"wrote {len(cat)} stars to {out} in {time.perf_counter() - t0:.1f} s")
    return 0


def _toml(value) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(repr(float(v)) for v in value) + "]"
    return repr(value)


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


def _print_run(metrics, run_dir) -> None:
    from . import pipeline

    table = pipeline.accuracy_table(metrics)
    print(table if table else "no truth potential: no accuracy table")
    for warning in metrics.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    print(f"report: {Path(run_dir) / 'report.md'}")


def _run_run(args: argparse.Namespace) -> int:
    from . import pipeline

    cfg = _config(args)
    run_dir = args.run_dir or str(Path("runs") / Path(args.config).stem)
    metrics = pipeline.run(cfg, run_dir)
    _print_run(metrics, run_dir)
    return 0


def _add_fit_df(subparsers) -> None:
    p = subparsers.add_parser(
        "fit-df",
        help="train the [df] distribution function on a catalogue",
        description="Train the DF described by the config's [df] section on a catalogue and "
        "write it to OUT, one self-describing model file.",
    )
    p.add_argument("catalog", help="catalogue file (.npz, .h5, .csv)")
    p.add_argument("--out", "-o", required=True, help="output model file (.eqx)")
    p.add_argument("--checkpoint-dir", default=None,
                   help="directory for training checkpoints (resumed from if present)")
    _add_config_options(p)
    p.set_defaults(func=_run_fit_df)


def _run_fit_df(args: argparse.Namespace) -> int:
    from .pipeline import ARTEFACTS

    cfg = _config(args)
    out = _check_output(args.out, args.catalog, kind="df")
    df, meta = _stage("df", cfg, {"catalog": _load("catalog", args.catalog)},
                      checkpoint_dir=args.checkpoint_dir)["df"]
    ARTEFACTS["df"].save(df, out, {**meta, "catalog": str(args.catalog)})
    print(f"wrote {out}")
    return 0


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
    from .pipeline import ARTEFACTS

    cfg = _config(args)
    out = _check_output(args.out, args.df, kind="scores")
    df = _load("df", args.df)
    if df[1].get("stage", "df") != "df":
        raise ValueError(f"{args.df} is a {df[1]['stage']} model, not a DF")
    scores, meta = _stage("scores", cfg, {"df": df})["scores"]
    ARTEFACTS["scores"].save(scores, out, {**meta, "df": str(args.df)})
    print(f"wrote {len(scores)} scores to {out}")
    return 0


def _add_fit_potential(subparsers) -> None:
    p = subparsers.add_parser(
        "fit-potential",
        help="fit the [potential] model to a score sample with the [fit] loss",
        description="Fit the potential model of [potential] to a ScoreSample file with the "
        "loss of [fit]; write OUT, one self-describing model file.",
    )
    p.add_argument("scores", help="ScoreSample file (.npz)")
    p.add_argument("--out", "-o", required=True, help="output model file (.eqx)")
    p.add_argument("--checkpoint-dir", default=None,
                   help="directory for training checkpoints (resumed from if present)")
    _add_config_options(p)
    p.set_defaults(func=_run_fit_potential)


def _run_fit_potential(args: argparse.Namespace) -> int:
    from . import evaluate
    from .pipeline import ARTEFACTS
    from .pipeline.report import quality_warnings

    cfg = _config(args)
    out = _check_output(args.out, args.scores, kind="potential")
    scores = _load("scores", args.scores)
    model, meta = _stage("potential", cfg, {"scores": scores},
                         checkpoint_dir=args.checkpoint_dir)["potential"]
    quality = evaluate.fit_quality(model, scores[0])
    ARTEFACTS["potential"].save(model, out, {**meta, "scores": str(args.scores),
                                             "fit_quality": quality})
    for warning in quality_warnings({"fit_quality": quality}):
        print(f"warning: {warning}", file=sys.stderr)
    print(f"wrote {out}")
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

    from . import pipeline

    cfg = _config(args)
    model, meta = _load("potential", args.potential)
    if meta.get("stage", "potential") != "potential":
        raise ValueError(f"{args.potential} is a {meta['stage']} model, not a potential")
    cat, _ = _load("catalog", args.catalog)
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
        description="Run deeppot/configs/demo.toml: a Plummer mock, a flow-matching DF, "
        "2^16 scores and a spherical network potential, then print the accuracy table "
        "(median, p16 and p84 of the force, density and potential errors for r in [0.1, 3]). "
        "Rerunning resumes from the run directory.",
    )
    p.add_argument("--quick", action="store_true",
                   help="short settings (deeppot/configs/demo-quick.toml): what CI runs")
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

    name = "demo-quick" if args.quick else "demo"
    args.config = pipeline.default_config_path(name)
    cfg = _config(args)
    run_dir = args.run_dir or f"runs/{name}"
    t0 = time.perf_counter()
    metrics = pipeline.run(cfg, run_dir)
    print()
    _print_run(metrics, run_dir)
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


def _version() -> str:
    from . import __version__

    return f"deeppot {__version__}"


def build_parser() -> argparse.ArgumentParser:
    """The `deeppot` argument parser with every registered subcommand.

    **Returns:** an `argparse.ArgumentParser`.
    """
    parser = argparse.ArgumentParser(
        prog="deeppot",
        description="Recover gravitational potentials from phase-space snapshots.",
    )
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument("--traceback", action="store_true",
                        help="show the Python traceback of an error (for developers)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in COMMANDS:
        add(sub)
    return parser


def _one_line(err: BaseException) -> str:
    from ._errors import DeeppotError

    text = str(err).strip() or type(err).__name__
    if not isinstance(err, DeeppotError) and "\n" in text:  # keep the first line
        text = text.splitlines()[0]
    if isinstance(err, DeeppotError | ValueError | TypeError | OSError | FloatingPointError
                  | KeyError | RuntimeError):
        return text
    return f"internal error ({type(err).__name__}: {text}); rerun with --traceback and report it"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `deeppot` console script.

    **Arguments:**

    - `argv`: arguments without the program name (default: `sys.argv[1:]`).

    **Returns:** the exit status: 0 on success, 2 for a configuration error, 1 for any other
    error (printed as one line on standard error).
    """
    from ._errors import ConfigError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("deeppot: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception as err:
        if args.traceback:
            raise
        print(f"deeppot: {_one_line(err)}", file=sys.stderr)
        return 2 if isinstance(err, ConfigError) else 1


if __name__ == "__main__":
    raise SystemExit(main())
