"""The `deeppot` command line.

`mock`, `run` and `demo` are each a pair of functions: `_add_<name>(subparsers)` registers
its parser and sets `func=_run_<name>`; `_run_<name>(args) -> int` does the work. The
per-stage subcommands (`fit-df`, `scores`, `fit-potential`, `evaluate`) are built from the
stage records (`deeppot.pipeline.STAGES`, each with a `Command`): one parser each from the
record's inputs, output and help, and one function, `_run_stage_command`, that runs any of
them through `run_stage`, so a new stage with a command is a new subcommand. Every
subcommand takes its settings from a config (`--config FILE` or the defaults) with `--set`
overrides, and runs the pipeline's stages (`deeppot.pipeline.run_stage`) on files: there
is one orchestration path. Errors reach the user as one line (`deeppot: …`) and a non-zero
exit status; `--traceback` shows the Python traceback instead.
"""

import argparse
import functools
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
    _add_overrides(p, "override one config value, e.g. --set fit.steps=500 (repeatable)")


def _add_overrides(p, help: str) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="SECTION.KEY=VALUE", help=help)
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def _config(args: argparse.Namespace, extra: Sequence[str] = ()):
    """The validated config of a command; a multi-host run of `[run] coordinator` is
    joined here, before any command touches a device."""
    from . import pipeline

    overrides = list(extra) + list(args.overrides)
    if getattr(args, "no_progress", False):
        overrides.append("run.progress=false")
    path = getattr(args, "config", None)
    if path is None:  # the built-in defaults (docs/pipeline.md) with the overrides
        cfg = pipeline.parse_config(pipeline.apply_overrides({}, overrides))
    else:
        cfg = pipeline.load_config(path, overrides)
    pipeline.start_processes(cfg)
    return cfg


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
    from .pipeline.stages import write_artefact

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
    write_artefact("catalog", cat, out, {})
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
    bands = pipeline.band_table(metrics)
    if bands:
        print(f"\n{bands}")
    for warning in metrics.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    print(f"report: {Path(run_dir) / 'report.md'}")


def _run_run(args: argparse.Namespace) -> int:
    from . import pipeline

    run_dir = args.run_dir or str(Path("runs") / Path(args.config).stem)
    _print_run(pipeline.run(_config(args), run_dir), run_dir)
    return 0


def _add_stage_commands(subparsers) -> None:
    """One subcommand per stage record with a `Command` (`deeppot.pipeline.STAGES`), in
    the order of the stages."""
    from .pipeline import stages

    for stage in stages.STAGES:
        if stage.command is not None:
            _add_stage_command(subparsers, stage)


def _add_stage_command(subparsers, stage) -> None:
    from .pipeline import ARTEFACTS

    cmd = stage.command
    p = subparsers.add_parser(cmd.name, help=cmd.help, description=cmd.description)
    p.add_argument(cmd.argument, help=ARTEFACTS[cmd.argument].what)
    for name in (*stage.inputs, *stage.optional):
        if name != cmd.argument:
            required = name in stage.inputs
            p.add_argument(f"--{name}", required=required, default=None,
                           help=ARTEFACTS[name].what + ("" if required else " (optional)"))
    if cmd.out_dir:
        p.add_argument("--out-dir", default=None,
                       help=f"write {ARTEFACTS[cmd.output].filename} and the plots here")
    else:
        p.add_argument("--out", "-o", required=True,
                       help=f"output {ARTEFACTS[cmd.output].what}")
    if stage.checkpoints:
        p.add_argument("--checkpoint-dir", default=None,
                       help="directory for training checkpoints (resumed from if present)")
    _add_config_options(p)
    p.set_defaults(func=functools.partial(_run_stage_command, stage))


def _run_stage_command(stage, args: argparse.Namespace) -> int:
    """Run a stage on files: check the output, load the inputs (the argument first), run
    the stage, write its output with the input paths in its metadata, print its warnings
    and its summary line."""
    from .pipeline import ARTEFACTS
    from .pipeline.stages import write_artefact

    cmd = stage.command
    cfg = _config(args)
    names = (cmd.argument, *stage.inputs, *stage.optional)
    paths = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    if cmd.out_dir:
        out = None if args.out_dir is None else Path(args.out_dir, ARTEFACTS[cmd.output].filename)
    else:
        out = _check_output(args.out, *paths.values(), kind=cmd.output)
    inputs = {name: ARTEFACTS[name].load(Path(path)) for name, path in paths.items()}
    produced = _stage(stage.name, cfg, inputs, plot_dir=getattr(args, "out_dir", None),
                      checkpoint_dir=getattr(args, "checkpoint_dir", None))
    value, meta = produced[cmd.output]
    summary = cmd.summary(value, paths, out)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_artefact(cmd.output, value, out, {**meta, **paths})
    for warning in meta.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    print(summary)
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
    _add_overrides(p, "override one demo setting, e.g. --set fit.steps=3000 (repeatable)")
    p.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from . import pipeline

    name = "demo-quick" if args.quick else "demo"
    args.config = pipeline.default_config_path(name)
    run_dir = args.run_dir or f"runs/{name}"
    t0 = time.perf_counter()
    metrics = pipeline.run(_config(args), run_dir)
    print()
    _print_run(metrics, run_dir)
    force = metrics["accuracy"]["force"]["median"]
    print()
    print(f"Plummer median force error at {metrics['region']}: {100 * force:.2f}%")
    print(f"demo finished in {time.perf_counter() - t0:.0f} s; report: {run_dir}/report.md")
    return 0


# the functions that add the subcommands, in the order `deeppot --help` lists them
COMMANDS: list[Callable] = [_add_mock, _add_run, _add_stage_commands, _add_demo]


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
