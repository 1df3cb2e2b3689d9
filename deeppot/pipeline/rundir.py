"""The run directory: stages run in order, skipped when done, resumed when interrupted.

Each stage's fingerprint hashes the settings it depends on, cumulatively (and the content
of a catalogue file). A finished stage records the SHA-256 of each output it wrote. A
stage is skipped when it finished with the same fingerprint and each of its outputs is
present and matches its recorded checksum; resumed from its checkpoints when it started
with the same fingerprint; otherwise its checkpoints are deleted and it runs from scratch,
as does every later stage.

An output that is missing, altered or corrupt since its stage wrote it (or that has no
recorded checksum) is never used: its stage runs again — resuming from its checkpoint when
its settings are unchanged — with a notice naming the file, and so does every later stage.
Before a stage runs, its outputs and everything derived from them (later stages' outputs,
records, checkpoints and plots) are deleted, so a stage that fails never leaves an older
run's results beside it that look current.

A lock keeps a second process out of a directory in use; a corrupt checkpoint is set aside
(renamed `*.corrupt-<time>`) and its stage starts over. In a multi-host run (`[run]
coordinator`) every process runs the stages in the same directory, on a file system they
all read, and process 0 alone holds the lock and writes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._errors import CheckpointError, RunDirectoryBusy
from .config import Config, dumps_toml, load_config
from .stages import ARTEFACTS, STAGE_NAMES, STAGES, run_stage, start_processes, write_artefact

__all__ = ["run"]


def _file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _settings(section) -> dict[str, Any]:
    """The keys of a section that change what its stage computes (not those declared with
    `fingerprint=False`: progress bars, devices, processes, where the scores are kept; nor
    those declared `"unless_default"` while they hold their default, nor those declared with
    a predicate while it is false of their value)."""
    def counts(f) -> bool:
        rule, value = f.metadata["fingerprint"], getattr(section, f.name)
        if callable(rule):
            return bool(rule(value))
        if rule != "unless_default":
            return bool(rule)
        default = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
        return value != default

    return {f.name: getattr(section, f.name) for f in dataclasses.fields(section) if counts(f)}


def fingerprints(cfg: Config, salt: dict | None = None) -> dict[str, str]:
    """Per stage, a hash of every setting (and input file) it and the stages before it
    depend on, and of `salt` (a replica's index and its parent catalogue's checksum)."""
    h = hashlib.sha256()
    h.update(json.dumps(_settings(cfg.run), sort_keys=True).encode())
    if salt:
        h.update(json.dumps(salt, sort_keys=True).encode())
    out = {}
    for stage in STAGES:
        for section in stage.sections:
            d = _settings(getattr(cfg, section))
            if section == "data" and cfg.data.path:  # a source that reads a file
                d["file_sha256"] = _file_digest(cfg.data.path)
            h.update(json.dumps({section: d}, sort_keys=True).encode())
        out[stage.name] = h.copy().hexdigest()[:16]
    return out


@contextlib.contextmanager
def _locked(run_dir: Path):
    """Hold `run_dir/lock` for the duration, or raise `RunDirectoryBusy`."""
    path = run_dir / "lock"
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "?"
        f.close()
        raise RunDirectoryBusy(f"run directory '{run_dir}' is in use by another deeppot "
                               f"process (pid {holder}); wait for it to finish") from None
    try:
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        yield
    finally:
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()


def _unverified(rec: dict, outputs: list[Path]) -> str | None:
    """Why a finished stage's outputs cannot be trusted (missing, or not the files it
    wrote), or `None` if each matches the checksum recorded when it was written."""
    recorded = rec.get("sha256", {})
    for path in outputs:
        if not path.exists():
            return f"'{path}' is missing"
        if path.name not in recorded:
            return f"'{path}' has no recorded checksum (an older deeppot wrote it)"
        if _file_digest(path) != recorded[path.name]:
            return (f"'{path}' has changed or is corrupt since its stage wrote it: its "
                    "checksum does not match")
    return None


def _places(cfg: Config, run_dir: Path) -> dict[str, Path]:
    """Where each artefact of the run is: in the run directory under its file name, or
    where the config places it (`[scores] path`)."""
    return {name: Path(a.place(cfg) or run_dir / a.filename) for name, a in ARTEFACTS.items()}


def _invalidate(stages, run_dir: Path, places: dict[str, Path], ckpt_dir: Path,
                plot_dir: Path, state: dict) -> None:
    """Delete the outputs of `stages` (a stage about to run and every later one) — where
    the config places them and in the run directory — and the records and checkpoints of
    the later ones, so that nothing derived from an old result survives a failure of the
    new one."""
    for k, stage in enumerate(stages):
        for name in stage.outputs:
            places[name].unlink(missing_ok=True)
            (run_dir / ARTEFACTS[name].filename).unlink(missing_ok=True)
        if stage.name == "report" and plot_dir is not None and plot_dir.exists():
            shutil.rmtree(plot_dir)
        if k > 0:
            state.pop(stage.name, None)
            for pattern in stage.checkpoints:
                for p in ckpt_dir.glob(pattern):
                    p.unlink()


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


def run(config: Config | str | os.PathLike, run_dir: str | os.PathLike, *,
        progress: bool | None = None, log: Callable[[str], None] | None = print,
        stop_after: str | None = None) -> dict[str, Any]:
    """Run the pipeline (catalogue → DF → scores → potential → report) in a directory.

    Each stage writes its outputs into `run_dir` and records a fingerprint of the settings
    it depends on and the checksums of its outputs in `state.json`. On a rerun a stage is
    skipped when it finished with the same fingerprint and its outputs match their
    checksums; a stage that was interrupted, or whose outputs are missing or altered, runs
    again (from its checkpoint when there is one); a stage whose settings changed (or that
    follows a stage that reran) is redone from scratch. A stage about to run first deletes
    its outputs and everything derived from them; one that fails (a diverged training, bad
    data) is never marked done. Every event is appended to `run.log`.

    **Arguments:**

    - `config`: a `Config` or the path of a TOML file.
    - `run_dir`: the run directory (created if missing).
    - `progress`: show progress bars (default: `[run] progress`).
    - `log`: called with one line per stage event (`None`: silent; `run.log` is always
      written).
    - `stop_after`: run the stages up to and including this one (`"data"`, `"df"`,
      `"scores"`, `"potential"`); default all.

    **Returns:** the metrics dictionary (also in `metrics.json`; only the stages' states
    when `stop_after` ends the run early).

    **Raises:** `RunDirectoryBusy` if another process is running in `run_dir`; the error of
    a failed stage (`TrainingError`, `ValueError`, …); `ValueError` if the processes of a
    multi-host run see different states of `run_dir`.
    """
    from ..sharding import is_main_process

    cfg = config if isinstance(config, Config) else load_config(config)
    if stop_after is not None and stop_after not in STAGE_NAMES:
        raise ValueError(f"stop_after must be one of {STAGE_NAMES}; got {stop_after!r}")
    progress = cfg.run.progress if progress is None else progress
    joined = start_processes(cfg)  # before anything touches a device
    run_dir = Path(run_dir)
    ckpt_dir, plot_dir = run_dir / "checkpoints", run_dir / "plots"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    main = is_main_process()
    with _locked(run_dir) if main else contextlib.nullcontext():
        if cfg.run.replicas > 1:
            return _run_replicas(cfg, run_dir, plot_dir, progress, log, stop_after, joined,
                                 main)
        return _run_locked(cfg, run_dir, ckpt_dir, plot_dir, progress, log, stop_after,
                           joined, main)


def _run_locked(cfg, run_dir, ckpt_dir, plot_dir, progress, log, stop_after, joined, main,
                *, stages=STAGES, replica=None, given=None, salt=None):
    """The stages in order; `main` is false in the processes of a multi-host run other
    than process 0, which run every stage and write nothing. A replica of a replica set
    runs `stages` (all but `data`) with its index `replica`, the `given` artefacts
    (its catalogue) and `salt` in its fingerprints."""
    from ..sharding import same_on_all_processes

    log_file = run_dir / "run.log"

    def note(msg: str) -> None:
        if main:
            with open(log_file, "a") as f:
                f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}\n")
        if log is not None:
            log(msg)

    if joined is not None:
        note(f"multi-host run: {joined}")

    state_path = run_dir / "state.json"
    try:
        state = json.loads(state_path.read_text()) if state_path.exists() else {}
    except (ValueError, OSError):
        note("state.json is unreadable: every stage runs again")
        state = {}
    # every process decides from the same state, read before process 0 writes
    digest = hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()
    same_on_all_processes(int(digest[:15], 16), f"the state of '{run_dir}' (a run "
                          "directory must be on a file system that every process reads)")
    if main:
        (run_dir / "config.toml").write_text(dumps_toml(cfg.to_dict()))
    fps = fingerprints(cfg, salt)
    places = _places(cfg, run_dir)
    loaded: dict[str, tuple[Any, dict]] = dict(given or {})

    def artefact(name: str):
        if name not in loaded:
            loaded[name] = ARTEFACTS[name].load(places[name])
        return loaded[name]

    upstream_reran = False
    t_run = time.perf_counter()
    for i, stage in enumerate(stages):
        rec = state.get(stage.name, {})
        outputs = [places[o] for o in stage.outputs]
        same = rec.get("fingerprint") == fps[stage.name] and not upstream_reran
        why = _unverified(rec, outputs) if same and rec.get("done") else None
        if same and rec.get("done") and why is None:
            note(f"{stage.name}: skipped (done, outputs verified)")
        else:
            checkpoints = [p for pattern in stage.checkpoints for p in ckpt_dir.glob(pattern)]
            if not same:
                for p in checkpoints if main else ():
                    p.unlink()
                checkpoints = []
            if main:
                _invalidate(stages[i:], run_dir, places, ckpt_dir, plot_dir, state)
            resuming = bool(checkpoints)
            state[stage.name] = {"fingerprint": fps[stage.name], "done": False}
            if main:
                _write_json(state_path, state)
            event = "resuming from checkpoint" if resuming else "running"
            note(f"{stage.name}: {event}" + (f" ({why})" if why else ""))
            t0 = time.perf_counter()
            inputs = {name: artefact(name) for name in (*stage.inputs, *stage.optional)}
            kwargs = dict(checkpoint_dir=ckpt_dir, plot_dir=plot_dir, progress=progress,
                          replica=replica)
            try:
                produced = run_stage(stage.name, cfg, inputs, **kwargs)
            except CheckpointError as err:
                stamp = time.strftime("%Y%m%d-%H%M%S")
                for p in checkpoints if main else ():
                    p.rename(p.with_name(f"{p.name}.corrupt-{stamp}"))
                same_on_all_processes(i, "the stage whose checkpoint is set aside")
                note(f"{stage.name}: {err}; set it aside and starting the stage over")
                produced = run_stage(stage.name, cfg, inputs, **kwargs)
            sums = {}
            for name, (obj, meta) in produced.items():
                path = places[name]
                write_artefact(name, obj, path, {**meta, "fingerprint": fps[stage.name]})
                if main:
                    sums[path.name] = _file_digest(path)
                loaded[name] = (obj, meta)
            dt = time.perf_counter() - t0
            state[stage.name] = {"fingerprint": fps[stage.name], "done": True, "seconds": dt,
                                 "sha256": sums}
            if main:
                _write_json(state_path, state)
            note(f"{stage.name}: done in {dt:.1f} s")
            if stage.name == "report":
                for warning in produced["metrics"][0].get("warnings", []):
                    note(f"warning: {warning}")
            upstream_reran = True
        if stage.name == stop_after:
            break
    note(f"run finished in {time.perf_counter() - t_run:.1f} s")
    metrics_path = places["metrics"]
    if metrics_path.exists() and stop_after in (None, "report"):
        return json.loads(metrics_path.read_text())
    return {s: state.get(s) for s in STAGE_NAMES}


def _run_replicas(cfg, run_dir, plot_dir, progress, log, stop_after, joined, main):
    """A replica set (`[run] replicas` = K > 1): the data stage in `run_dir`, then each
    replica's other stages in `run_dir/replica_NN/` — skipped, resumed or rerun as those
    of a run, with the replica's key, bootstrap catalogue and fingerprints
    (`deeppot.pipeline.replicas`) — then the set: its model file (a `ReplicaSet` of the
    replicas' potentials), metrics and report, rebuilt from the replicas' models every
    time (they are cheap next to a replica)."""
    from ..catalog import PhaseSpaceCatalog
    from ..modelfile import load_model
    from ..replicas import ReplicaSet
    from .replicas import replica_catalog, replica_config, replica_dir, replica_salt

    places = _places(cfg, run_dir)
    if main:  # nothing of an older set (or of a run of one replica here) looks current
        for stage in STAGES[1:]:
            for name in stage.outputs:
                (run_dir / ARTEFACTS[name].filename).unlink(missing_ok=True)
        if plot_dir.exists():
            shutil.rmtree(plot_dir)
    states = _run_locked(cfg, run_dir, run_dir / "checkpoints", plot_dir, progress, log,
                         "data", joined, main, stages=STAGES[:1])
    if stop_after == "data":
        return states
    parent = PhaseSpaceCatalog.load(places["catalog"])
    digest = _file_digest(places["catalog"])
    k_set, centre = cfg.run.replicas, cfg.run.replica_centre
    models, metas = [], []
    for k in range(k_set):
        rdir = run_dir / replica_dir(k)
        rdir.mkdir(parents=True, exist_ok=True)

        def replica_log(msg, k=k):
            if log is not None:
                log(f"replica {k + 1}/{k_set}: {msg}")

        states = _run_locked(
            replica_config(cfg, k), rdir, rdir / "checkpoints", None, progress, replica_log,
            stop_after, None, main, stages=STAGES[1:], replica=k,
            given={"catalog": (replica_catalog(parent, cfg.run.seed, k, centre), {})},
            salt=replica_salt(k, digest, centre))
        if stop_after in (None, "report", "potential"):
            model, meta = load_model(rdir / ARTEFACTS["potential"].filename)
            models.append(model)
            metas.append(meta)
    if stop_after not in (None, "report", "potential"):
        return states
    replicas = ReplicaSet(models, centre=centre)
    meta = {"stage": "potential", "replicas": k_set, "replica_centre": centre,
            "config": metas[0].get("config"), "fit": metas[0].get("fit"),
            "replica_fit_quality": [m.get("fit_quality") for m in metas],
            "replica_training": [{k: v for k, v in m.get("training", {}).items()
                                  if k not in ("curve", "check")} for m in metas]}
    write_artefact("potential", replicas, places["potential"], meta)
    if stop_after == "potential":
        return {"replicas": k_set}
    (run_dir / "checkpoints").mkdir(exist_ok=True)
    produced = run_stage("report", cfg, {"catalog": (parent, {}), "potential": (replicas, meta)},
                         plot_dir=plot_dir, progress=progress)
    for name, (obj, m) in produced.items():
        write_artefact(name, obj, places[name], m)
    metrics = produced["metrics"][0]
    if log is not None:
        for warning in metrics.get("warnings", []):
            log(f"warning: {warning}")
    return json.loads(places["metrics"].read_text())
