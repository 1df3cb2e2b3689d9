"""The per-stage subcommands are the stage records run on files (issue 25): `evaluate` is
the report stage, `fit-potential`'s fit quality is the potential stage's, and
`[scores] path` and the multi-host start are config keys the pipeline applies."""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import deeppot as dp
from deeppot import cli, pipeline
from deeppot.pipeline import stages
from deeppot.validity import region_for

from .test_failures import TINY

ROOT = Path(__file__).parents[2]


def _cli(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _config_file(path: Path, raw: dict) -> Path:
    path.write_text(pipeline.dumps_toml(pipeline.parse_config(raw).to_dict()))
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The TINY run in memory, and the same run with its scores streamed to an HDF5 file
    outside the run directory."""
    root = tmp_path_factory.mktemp("runs")
    memory = pipeline.run(pipeline.parse_config(TINY), root / "memory", log=None)
    streamed_cfg = {**TINY, "scores": {**TINY["scores"], "path": str(root / "s.h5")}}
    lines = []
    streamed = pipeline.run(pipeline.parse_config(streamed_cfg), root / "streamed",
                            log=lines.append)
    return root, memory, streamed, streamed_cfg, lines


# --- the subcommands are the records ----------------------------------------------------------


def test_each_stage_command_is_a_subcommand_with_the_records_inputs_and_output():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    commands = {s.command.name: s for s in stages.STAGES if s.command is not None}
    assert list(commands) == ["fit-df", "scores", "fit-potential", "evaluate"]
    assert list(sub.choices) == ["mock", "run", *commands, "demo"]
    for name, stage in commands.items():
        options = {a.dest: a for a in sub.choices[name]._actions}
        assert not options[stage.command.argument].option_strings  # the positional
        for other in (*stage.inputs, *stage.optional):
            if other != stage.command.argument:
                assert options[other].required == (other in stage.inputs)
        assert ("checkpoint_dir" in options) == bool(stage.checkpoints)
        assert ("out_dir" in options) == stage.command.out_dir


def test_a_new_stage_record_is_a_new_subcommand(tmp_path, capsys, monkeypatch):
    """A stage that keeps every other star of a catalogue, added as a record with a
    command, runs from the command line through `run_stage` with no change to the CLI."""

    def thin(ctx):
        cat = ctx.inputs["catalog"]
        return {"catalog": (dp.PhaseSpaceCatalog(x=cat.x[::2], v=cat.v[::2]), {})}

    command = stages.Command("thin", "keep every other star", "Keep every other star.",
                             "catalog", "catalog", stages._wrote)
    record = stages.Stage("thin", (), ("catalog",), ("catalog",), (), thin, command=command)
    monkeypatch.setattr(stages, "STAGES", (*stages.STAGES, record))
    cat = tmp_path / "cat.npz"
    dp.mocks.plummer(jax.random.key(0), 100).save(cat)
    code, out, err = _cli(capsys, "thin", cat, "-o", tmp_path / "half.npz")
    assert code == 0, err
    assert out == f"wrote {tmp_path / 'half.npz'}\n"
    half = dp.PhaseSpaceCatalog.load(tmp_path / "half.npz")
    np.testing.assert_array_equal(half.x, dp.PhaseSpaceCatalog.load(cat).x[::2])


# --- evaluate is the report stage; fit-potential's quality is the potential stage's --------


def test_evaluate_gives_the_report_stages_numbers(runs, tmp_path, capsys):
    root, memory, *_ = runs
    run_dir = root / "memory"
    config = _config_file(tmp_path / "tiny.toml", TINY)
    code, out, err = _cli(capsys, "evaluate", run_dir / "potential.eqx", "--catalog",
                          run_dir / "catalog.npz", "--df", run_dir / "df.eqx",
                          "--config", config, "--out-dir", tmp_path / "ev")
    assert code == 0, err
    assert out == pipeline.accuracy_table(memory) + "\n"
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    for key in ("accuracy", "fit_quality", "potential_check", "parameters", "warnings",
                "df_check"):
        assert metrics[key] == memory[key], key
    # without the model's recorded quality, --scores gives the same
    model, meta = pipeline.load_model(run_dir / "potential.eqx")
    assert meta["fit_quality"] == memory["fit_quality"]
    bare = dp.save_model(tmp_path / "bare.eqx", model, {"stage": "potential"})
    code, _, err = _cli(capsys, "evaluate", bare, "--catalog", run_dir / "catalog.npz",
                        "--scores", run_dir / "scores.npz", "--config", config,
                        "--out-dir", tmp_path / "ev2")
    assert code == 0, err
    again = json.loads((tmp_path / "ev2" / "metrics.json").read_text())
    assert again["fit_quality"] == memory["fit_quality"]


def test_evaluate_without_truth_and_of_a_df_file_are_one_line_errors(runs, tmp_path, capsys):
    root, *_ = runs
    run_dir = root / "memory"
    cat = tmp_path / "real.npz"
    real = dp.PhaseSpaceCatalog.load(run_dir / "catalog.npz")
    dp.PhaseSpaceCatalog(x=real.x, v=real.v).save(cat)  # no truth in meta
    code, out, err = _cli(capsys, "evaluate", run_dir / "potential.eqx", "--catalog", cat,
                          "--set", "evaluate.plots=false")
    assert code == 1 and out == ""
    assert err == f"deeppot: {cat} records no truth potential; nothing to compare with\n"
    code, _, err = _cli(capsys, "evaluate", run_dir / "df.eqx", "--catalog", cat)
    assert code == 1 and err == f"deeppot: {run_dir / 'df.eqx'} is a df model, not a potential\n"


def test_fit_potential_warns_of_a_poor_fit_from_the_stage(runs, tmp_path, capsys):
    """A Plummer sphere of a tenth of the true mass, not trained: the potential stage
    records its fit quality (residual 0.9/1.1 at every point) and the warning, which the
    command prints."""
    root, *_ = runs
    out = tmp_path / "p.eqx"
    code, stdout, err = _cli(capsys, "fit-potential", root / "memory" / "scores.npz", "-o", out,
                             "--no-progress", "--set", "fit.steps=0", "--set",
                             "potential.model=plummer", "--set", "potential.params={m_tot = 0.1}")
    assert code == 0 and stdout == f"wrote {out}\n"
    _, meta = pipeline.load_model(out)
    assert meta["fit_quality"]["median_relative_residual"] == pytest.approx(0.9 / 1.1)
    assert meta["warnings"] and meta["warnings"][0].startswith("the fit is poor")
    assert err == "".join(f"warning: {w}\n" for w in meta["warnings"])
    assert meta["scores"] == str(root / "memory" / "scores.npz")


# --- [scores] path ---------------------------------------------------------------------------


def test_streamed_scores_give_the_in_memory_run(runs):
    """The same points stream into the HDF5 file (same chunks: identical rows), the fit
    reads them a batch at a time (the same batches: the same potential up to float
    rounding), and the run directory records the file where the config put it."""
    root, memory, streamed, cfg, lines = runs
    h5 = Path(cfg["scores"]["path"])
    on_disk = dp.ScoreFile(h5)
    in_memory = dp.ScoreSample.load(root / "memory" / "scores.npz")
    for name in ("x", "v", "dlnf_dx", "dlnf_dv", "ln_f"):
        np.testing.assert_array_equal(getattr(on_disk.load(), name), getattr(in_memory, name))
    assert on_disk.meta["stage"] == "scores" and "fingerprint" in on_disk.meta
    assert not (root / "streamed" / "scores.npz").exists()
    state = json.loads((root / "streamed" / "state.json").read_text())
    assert list(state["scores"]["sha256"]) == ["s.h5"]
    a = pipeline.load_model(root / "memory" / "potential.eqx")[0]
    b = pipeline.load_model(root / "streamed" / "potential.eqx")[0]
    for u, w in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(w), np.asarray(u), rtol=1e-4, atol=1e-6)
    # each records the validity region of its score points, the same from file or memory
    assert a.region == b.region == region_for(a.potential, in_memory.x)
    for q in ("force", "density", "phi"):
        assert streamed["accuracy"][q]["median"] == pytest.approx(
            memory["accuracy"][q]["median"], rel=1e-3, abs=1e-5)
    # a rerun verifies the file and skips every stage; where the scores are kept is no
    # setting of their values: the fingerprints are the in-memory run's
    rerun = []
    pipeline.run(pipeline.parse_config(cfg), root / "streamed", log=rerun.append)
    assert all("skipped" in line for line in rerun[:5])
    assert (pipeline.rundir.fingerprints(pipeline.parse_config(cfg))
            == pipeline.rundir.fingerprints(pipeline.parse_config(TINY)))


def test_a_changed_score_file_is_redrawn(runs, tmp_path):
    root, memory, streamed, cfg, _ = runs
    run_dir = tmp_path / "run"
    shutil.copytree(root / "streamed", run_dir)
    h5 = tmp_path / "s.h5"
    shutil.copyfile(cfg["scores"]["path"], h5)
    moved = {**cfg, "scores": {**cfg["scores"], "path": str(h5)}}
    with open(h5, "r+b") as f:  # a flipped byte in the last row's data
        f.seek(-3, os.SEEK_END)
        byte = f.read(1)
        f.seek(-3, os.SEEK_END)
        f.write(bytes([byte[0] ^ 1]))
    lines = []
    again = pipeline.run(pipeline.parse_config(moved), run_dir, log=lines.append)
    notice = next(line for line in lines if line.startswith("scores: "))
    assert f"'{h5}' has changed or is corrupt" in notice
    assert again["accuracy"] == streamed["accuracy"]


def test_the_scores_command_streams_to_the_configured_file(runs, tmp_path, capsys):
    root, *_ = runs
    h5, out = tmp_path / "stream.h5", tmp_path / "s.npz"
    code, stdout, err = _cli(capsys, "scores", root / "memory" / "df.eqx", "-o", out,
                             "--no-progress", "--set", "scores.n=1024",
                             "--set", "scores.chunk_size=1024", "--set", "run.seed=5",
                             "--set", f"scores.path='{h5}'")
    assert code == 0, err
    assert stdout == f"wrote 1024 scores to {out}\n"
    expected = dp.ScoreSample.load(root / "memory" / "scores.npz")
    for got in (dp.ScoreFile(h5).load(), dp.ScoreSample.load(out)):
        np.testing.assert_array_equal(got.dlnf_dv, expected.dlnf_dv)


@pytest.mark.parametrize(("path", "message"), [
    ("s.npz", "stream into an HDF5 file"),
    ("missing/s.h5", "does not exist"),
    ("cat.h5", "exists and is not a score file"),
])
def test_a_score_file_path_is_checked_up_front(tmp_path, path, message):
    dp.mocks.plummer(jax.random.key(0), 10).save(tmp_path / "cat.h5")
    with pytest.raises(pipeline.ConfigError, match=f"key 'path' in \\[scores\\].*{message}"):
        pipeline.parse_config({"scores": {"path": path}}, base_dir=tmp_path)


# --- the multi-host start ----------------------------------------------------------------------


@pytest.mark.parametrize(("run", "message"), [
    ({"num_processes": 2}, "apply with a coordinator"),
    ({"coordinator": "auto", "process_id": 1}, "apply with a coordinator"),
    ({"coordinator": "host0", "num_processes": 2}, "must be host:port"),
    ({"coordinator": "host0:1234", "num_processes": 2, "process_id": 2},
     "must be below num_processes = 2"),
])
def test_multi_host_keys_are_checked(run, message):
    with pytest.raises(pipeline.ConfigError, match=message):
        pipeline.parse_config({"run": run})


def test_the_pipeline_joins_the_configured_run_first(tmp_path, capsys, monkeypatch):
    """`run` and every command pass [run] coordinator, num_processes and process_id to
    `jax.distributed.initialize` before anything else (recorded here: a real start
    needs a fresh process, below)."""
    calls = []

    def initialize(**kwargs):
        calls.append(kwargs)

    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: bool(calls))
    monkeypatch.setattr(jax.distributed, "initialize", initialize)
    raw = {**TINY, "run": {**TINY["run"], "coordinator": "host0:1234", "num_processes": 1}}
    lines = []
    pipeline.run(pipeline.parse_config(raw), tmp_path / "run", log=lines.append,
                 stop_after="data")
    expected = {"coordinator_address": "host0:1234", "num_processes": 1, "process_id": 0}
    assert calls == [expected]
    assert lines[0] == "multi-host run: process 0 of 1 (coordinator host0:1234)"
    calls.clear()
    code, _, err = _cli(capsys, "mock", "plummer", "--n", "64", "--out", tmp_path / "c.npz",
                        "--no-progress", "--set", "run.coordinator='host0:99'")
    assert code == 0, err
    assert calls == [{**expected, "coordinator_address": "host0:99"}]
    assert pipeline.start_processes(pipeline.parse_config({})) is None  # default: off


def test_a_one_process_start_runs_for_real(tmp_path):
    """A fresh process joins a one-process run through its own coordinator and runs the
    data stage (the two-process case is test_sharding's)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    raw = {**TINY, "run": {**TINY["run"], "coordinator": f"127.0.0.1:{port}"}}
    config = _config_file(tmp_path / "c.toml", raw)
    code = ("import jax, deeppot.pipeline as pl; "
            f"pl.run(pl.load_config({str(config)!r}), {str(tmp_path / 'run')!r}, "
            "stop_after='data'); print(jax.distributed.is_initialized(), jax.process_count())")
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines()[-1] == "True 1"
    log = (tmp_path / "run" / "run.log").read_text()
    assert f"multi-host run: process 0 of 1 (coordinator 127.0.0.1:{port})" in log


def test_processes_other_than_the_first_run_every_stage_and_write_nothing(tmp_path,
                                                                          monkeypatch):
    """In a multi-host run, process 0 writes the run directory; the others run the same
    stages (their devices take part in every step) and wait for its writes (simulated here
    as process 1 of a run whose process 0 is elsewhere)."""
    from deeppot import sharding, train

    barriers = []
    monkeypatch.setattr(sharding, "is_main_process", lambda: False)
    monkeypatch.setattr(train._loop, "is_main_process", lambda: False)  # process 0's checkpoints
    monkeypatch.setattr(sharding, "same_on_all_processes",
                        lambda value, what: barriers.append(what))
    lines = []
    states = pipeline.run(pipeline.parse_config(TINY), tmp_path / "run", log=lines.append)
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["checkpoints"]
    assert not list((tmp_path / "run" / "checkpoints").iterdir())
    assert all(states[s]["done"] for s in pipeline.rundir.STAGE_NAMES)
    assert [line.split(":")[0] for line in lines if "done in" in line] == list(states)
    assert barriers[0].startswith("the state of")
    written = [w for w in barriers if "before writing" in w]
    assert [Path(w.split("writing ")[1]).name for w in written] == [
        "catalog.npz", "df.eqx", "scores.npz", "potential.eqx", "metrics.json", "report.md"]


@pytest.mark.slow
def test_two_processes_run_the_pipeline_in_one_directory(runs, tmp_path):
    """`deeppot run` on two processes (one CPU device each, joined over localhost) with the
    scores streamed: process 0 writes the run directory, process 1 runs every stage beside
    it, and the result is the one-process run's up to the order of the sums over devices."""
    root, memory, *_ = runs
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    raw = {**TINY, "run": {**TINY["run"], "coordinator": f"127.0.0.1:{port}",
                           "num_processes": 2},
           "scores": {**TINY["scores"], "path": str(tmp_path / "s.h5")}}
    config = _config_file(tmp_path / "c.toml", raw)
    env = {**{k: v for k, v in os.environ.items() if k != "XLA_FLAGS"},
           "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    procs = [subprocess.Popen([sys.executable, "-m", "deeppot.cli", "run", str(config),
                               "--run-dir", str(tmp_path / "run"), "--set",
                               f"run.process_id={i}"], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for i in range(2)]
    try:
        outs = [p.communicate(timeout=600) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert all(p.returncode == 0 for p in procs), outs[0][1][-3000:] + outs[1][1][-3000:]
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert all(state[s]["done"] for s in pipeline.rundir.STAGE_NAMES)
    log = (tmp_path / "run" / "run.log").read_text()
    assert log.count("multi-host run: process 0 of 2") == 1  # process 1 writes no log
    assert "multi-host run: process 1 of 2" in outs[1][0]
    assert dp.ScoreFile(tmp_path / "s.h5").meta["stage"] == "scores"
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for q in ("force", "density", "phi"):
        assert metrics["accuracy"][q]["median"] == pytest.approx(
            memory["accuracy"][q]["median"], rel=1e-3, abs=1e-5)
