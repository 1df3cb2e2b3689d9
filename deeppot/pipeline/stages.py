"""The stages of a run, each one record: name, config sections, inputs, outputs, function.

```
data (catalog) → df (df) → scores (scores) → potential (potential) → report (metrics, report)
```

A stage's function takes a `StageContext` (the config, its key, its loaded inputs, where to
checkpoint) and returns its outputs; it never reads or writes files of other stages. The
run directory (`deeppot.pipeline.run`) and every `deeppot` subcommand run stages through
`run_stage`, and read and write their artefacts through `ARTEFACTS`, so there is one
orchestration path for all of them. A stage's `Command` makes it a subcommand on files
(`deeppot fit-df`, `scores`, `fit-potential`, `evaluate`): `deeppot.cli` builds one from
each record that has one.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

from .. import train
from .._atomic import replacing
from .._errors import TrainingError
from ..scores import ScoreFile, VelocityScoreSample
from .build import build_catalog, build_df, build_loss, build_model, build_objective
from .config import (
    Config,
    DFConfig,
    FitConfig,
    PotentialConfig,
    ScoresConfig,
    section_dict,
    trainable,
)
from .report import (
    accuracy_table,
    band_table,
    evaluate_model,
    evaluate_replicas,
    plot_losses,
    quality_warnings,
    replica_warnings,
    write_replica_report,
    write_report,
)

__all__ = [
    "ARTEFACTS",
    "STAGES",
    "Artefact",
    "Command",
    "Stage",
    "StageContext",
    "check_replaceable",
    "draw_scores",
    "run_stage",
    "stage_key",
    "start_processes",
    "train_df",
    "train_potential",
    "write_artefact",
]


# ---------------------------------------------------------------------------------------------
# Artefacts: what stages exchange, and how each is stored


@dataclasses.dataclass(frozen=True)
class Artefact:
    """A stage output kind: its file name in a run directory, how it is stored, what a file
    of it is (for help texts), and `place`, the path a config gives it instead of the run
    directory's (`[scores] path`; `""`: none)."""

    filename: str
    save: Callable[[Any, Path, dict], None]
    load: Callable[[Path], tuple[Any, dict]]
    what: str = ""
    place: Callable[[Config], str] = lambda config: ""


def _save_catalog(cat, path, meta):
    check_replaceable("catalog", path)
    cat.save(path)


def _load_catalog(path):
    from ..catalog import PhaseSpaceCatalog

    return PhaseSpaceCatalog.load(path), {}


def _save_scores(scores, path, meta):
    check_replaceable("scores", path)
    scores.save(path, meta=meta)


def _load_scores(path):
    """An `.npz` sample in memory (a `ScoreSample`, or the `VelocityScoreSample` of
    `[scores] position = "free"`); an HDF5 one (what `[scores] path` streams) stays on disk
    and is read a batch at a time, as when the stage wrote it."""
    from ..scores import ScoreFile, load_scores

    if Path(path).suffix in (".h5", ".hdf5"):
        return ScoreFile(path), {}
    return load_scores(path), {}


def _save_model(kind, model, path, meta):
    from ..modelfile import save_model

    check_replaceable(kind, path)
    save_model(path, model, meta)


def _load_model(kind, label, path):
    from ..modelfile import load_model

    model, meta = load_model(path)
    if meta.get("stage", kind) != kind:
        raise ValueError(f"{path} is a {meta['stage']} model, not {label}")
    return model, meta


def _write_text(path: Path, text: str) -> None:
    with replacing(path) as tmp:
        tmp.write_text(text)


def _save_metrics(metrics, path, meta):
    _write_text(path, json.dumps(metrics, indent=2, default=_json_default) + "\n")


def _load_metrics(path):
    try:
        return json.loads(Path(path).read_text()), {}
    except ValueError as err:  # not JSON, or not text
        raise ValueError(f"metrics file '{path}' is corrupt ({err})") from None


def check_replaceable(kind: str, path: str | os.PathLike) -> None:
    """Refuse to replace an existing file that is not a `kind` artefact (`"catalog"`,
    `"df"`, `"potential"` or `"scores"`): an output never replaces a file of another kind.

    **Raises:** `FileExistsError` naming the file and what it holds.
    """
    from ..catalog import PhaseSpaceCatalog
    from ..modelfile import load_model
    from ..scores import load_scores

    path = Path(path)
    if not path.exists():
        return
    # what the file holds, read as each kind in turn (a score file is also readable as a
    # catalogue: it has x and v, so scores are tried first)
    readers = (("scores", lambda: load_scores(path, in_memory=False) and "scores"),
               ("model", lambda: load_model(path)[1].get("stage", "model of no stage")),
               ("catalog", lambda: PhaseSpaceCatalog.load(path, check_fit=False) and "catalog"))
    own = "model" if kind in ("df", "potential") else kind
    held = reason = None
    for family, read in readers:
        try:
            held = read()
            break
        except (ValueError, OSError) as err:  # CheckpointError is a ValueError
            if family == own:
                reason = str(err).splitlines()[0] if str(err) else type(err).__name__
    if held == kind:
        return
    what = f"a {held} file" if held else f"not a {kind} file ({reason})"
    raise FileExistsError(f"'{path}' exists and is {what}: refusing to replace it with a "
                          f"{kind} file; choose another output or delete it first")


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if hasattr(obj, "__array__"):
        return np.asarray(obj).tolist()
    raise TypeError(f"cannot serialise {type(obj).__name__}")


ARTEFACTS: dict[str, Artefact] = {
    "catalog": Artefact("catalog.npz", _save_catalog, _load_catalog,
                        "catalogue file (.npz, .h5, .csv)"),
    "df": Artefact("df.eqx", functools.partial(_save_model, "df"),
                   functools.partial(_load_model, "df", "a DF"), "DF model file (.eqx)"),
    "scores": Artefact("scores.npz", _save_scores, _load_scores,
                       "ScoreSample file (.npz; .h5/.hdf5 read a batch at a time)",
                       place=lambda config: config.scores.path),
    "potential": Artefact("potential.eqx", functools.partial(_save_model, "potential"),
                          functools.partial(_load_model, "potential", "a potential"),
                          "potential model file (.eqx)"),
    "metrics": Artefact("metrics.json", _save_metrics, _load_metrics, "metrics (JSON)"),
}


# ---------------------------------------------------------------------------------------------
# Stage functions (also usable on their own from Python)


def stage_key(seed: int, stage: str, replica: int | None = None):
    """The key of one stage: fixed by the seed and the stage, whatever else ran; in replica
    `replica` of a replica set (`[run] replicas`) that key folded with the replica's index
    (`None`: a run of one replica)."""
    key = jax.random.fold_in(jax.random.key(seed), [s.name for s in STAGES].index(stage))
    return key if replica is None else jax.random.fold_in(key, 1 + replica)


def _history_summary(history) -> dict[str, Any]:
    every = max(1, len(history.step) // 200)
    return {
        "steps": len(history.step),
        "final_train_loss": history.train_loss[-1] if history.train_loss else None,
        "best_val_loss": min(history.val_loss) if history.val_loss else None,
        "lr_drops": list(history.lr_drops),
        "stop_reason": history.stop_reason,
        "wall_time_s": history.wall_time,
        "curve": {"step": history.step[::every], "train_loss": history.train_loss[::every]},
    }


def check_df(df, catalog, *, n: int = 4096) -> dict[str, float]:
    """Sanity check of a trained DF: finite, and a better fit to the stars than a Gaussian.

    Compares the mean log-density of up to `n` catalogue stars under the DF with that under
    the Gaussian of the stars' mean and covariance; a DF that does worse, or gives
    non-finite values, is broken (a diverged or far too short training).

    **Returns:** `{"mean_log_prob", "gaussian_mean_log_prob"}`.

    **Raises:** `TrainingError` naming the problem.
    """
    w = np.asarray(catalog.w[:n], dtype=float)
    try:
        lp = np.asarray(df.log_prob(w))
    except Exception as err:  # e.g. an ODE solver that cannot finish (equinox's runtime error)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TrainingError(f"the trained DF cannot be evaluated ({first}); its training "
                            "failed: lower the learning rate or train longer") from None
    mean = w.mean(axis=0)
    cov = np.cov(w, rowvar=False)
    sign, logdet = np.linalg.slogdet(cov)
    d = w - mean
    maha = np.einsum("ni,ij,nj->n", d, np.linalg.pinv(cov), d)
    gauss = -0.5 * (maha + logdet + w.shape[1] * math.log(2 * math.pi))
    out = {"mean_log_prob": float(np.mean(lp)), "gaussian_mean_log_prob": float(np.mean(gauss))}
    bad = int(np.sum(~np.isfinite(lp)))
    if bad:
        raise TrainingError(f"the trained DF gives a non-finite log-density for {bad} of "
                            f"{len(lp)} stars; retrain it (a lower learning rate?)")
    if sign > 0 and out["mean_log_prob"] < out["gaussian_mean_log_prob"]:
        raise TrainingError(
            f"the trained DF fits the stars worse than a Gaussian (mean ln p "
            f"{out['mean_log_prob']:.3f} < {out['gaussian_mean_log_prob']:.3f}): its training "
            "failed; lower the learning rate or train longer")
    return out


# the keys of [df] and [fit] that are training settings, and their TrainSettings names
_TRAINING_KEYS = {"steps": "max_steps", "batch_size": "batch_size",
                  "learning_rate": "learning_rate", "warmup_steps": "warmup_steps",
                  "schedule": "lr_schedule", "patience": "patience",
                  "validate_every": "validate_every", "ema_decay": "ema_decay",
                  "checkpoint_every": "checkpoint_every", "optimizer": "optimizer"}


def _training_settings(section: DFConfig | FitConfig, recipe: train.TrainSettings,
                       n: int) -> train.TrainSettings:
    """The `TrainSettings` of a `[df]` or `[fit]` section: `recipe` (`DF_SETTINGS`,
    `POTENTIAL_SETTINGS`) with the section's training keys, batches no larger than the
    `n` points and `ema_decay = 0` meaning no average."""
    values = {name: getattr(section, key) for key, name in _TRAINING_KEYS.items()
              if hasattr(section, key)}
    values["batch_size"] = min(values["batch_size"], n)
    if "ema_decay" in values:
        values["ema_decay"] = values["ema_decay"] or None
    return dataclasses.replace(recipe, **values)


def train_df(cfg: DFConfig, catalog, key, *, checkpoint_dir=None, devices=None,
             progress: bool = False):
    """Build and train the DF of `[df]` on a catalogue, then check it (`check_df`).

    **Arguments:**

    - `cfg`: the `[df]` settings.
    - `catalog`: a `PhaseSpaceCatalog`.
    - `key`: a typed key.
    - `checkpoint_dir`: directory for `df.ckpt` (`df_<i>.ckpt` per ensemble member); an
      existing checkpoint is resumed.
    - `devices`: the devices each batch is sharded over (`deeppot.sharding.data_mesh`).
    - `progress`: show progress bars.

    **Returns:** `(df, summary)` with a JSON-able training summary per member.
    """
    from ..flows import Ensemble

    k_init, k_fit = jax.random.split(key)
    df = build_df(cfg, k_init, catalog=catalog)
    if not trainable(cfg.kind):
        return df, {"members": []}
    members = df.members if isinstance(df, Ensemble) else (df,)
    settings = _training_settings(cfg, train.DF_SETTINGS, len(catalog))
    trained, summaries = [], []
    for i, member in enumerate(members):
        ckpt = None
        if checkpoint_dir is not None:
            name = "df.ckpt" if len(members) == 1 else f"df_{i}.ckpt"
            ckpt = Path(checkpoint_dir) / name
        kwargs = dict(key=jax.random.fold_in(k_fit, i), settings=settings,
                      checkpoint_path=ckpt, devices=devices, progress=progress,
                      return_history=True)
        out, history = train.fit_df(member, catalog, objective=build_objective(cfg), **kwargs)
        trained.append(out)
        summaries.append(_history_summary(history))
    df = Ensemble(trained) if isinstance(df, Ensemble) else trained[0]
    return df, {"members": summaries, "check": check_df(df, catalog)}


def draw_scores(cfg: ScoresConfig, df, key, *, units: str = "dimensionless", devices=None,
                progress: bool = False, catalog=None):
    """Draw the `[scores]` sample by the route of `[scores] position`, and check it is finite.

    - `density`: points drawn from the DF with its scores there (`sample_scores`);
    - `selection`: the same, corrected for the known selection function of `[scores]
      selection` (∂ln f/∂x − ∂ln S/∂x);
    - `free`: `velocities_per_star` velocities drawn from a conditional DF's p(·|x) at
      each of `n` of the catalogue's positions (all of them when it has fewer; a fixed
      random subset when it has more), with that factor's scores
      (`sample_velocity_scores`): the sample `ProfiledStationarity` fits.

    The first two stream into the HDF5 file of `[scores] path` when it gives one.

    **Arguments:**

    - `cfg`: the `[scores]` settings.
    - `df`: a distribution function (a conditional one for `free`).
    - `key`: a typed key.
    - `units`: the run's unit system (`[run] units`), that of the selection's numbers.
    - `devices`: the devices the draws are sharded over (`deeppot.sharding.data_mesh`).
    - `progress`: show a progress bar.
    - `catalog`: the catalogue whose positions `free` draws at (needed there only).

    **Returns:** a `ScoreSample`, or a `ScoreFile` over `[scores] path`, or for `free` a
    `VelocityScoreSample`.

    **Raises:** `TrainingError` if any score or log-density is not finite (a broken DF);
    the file of `[scores] path` is then deleted. `ValueError` for a route the inputs do
    not allow (`free` without a catalogue or with a DF that is not conditional).
    """
    from ..scores import sample_scores
    from ..selection import selection_from_description

    if cfg.selection and cfg.position != "selection":
        raise ValueError(f"key 'selection' in [scores] applies with position = 'selection'; "
                         f"got position = {cfg.position!r}")
    if cfg.position == "selection" and not cfg.selection:
        raise ValueError("position = 'selection' in [scores] needs the selection function "
                         "(key 'selection' in [scores])")
    if cfg.position == "free":
        return _draw_velocity_scores(cfg, df, key, catalog)
    selection = (selection_from_description({**cfg.selection, "units": units})
                 if cfg.position == "selection" else None)
    chunk = min(cfg.chunk_size, cfg.n)
    scores = sample_scores(df, key, cfg.n, chunk_size=chunk, selection=selection,
                           devices=devices, progress=progress, path=cfg.path or None)
    bad = 0
    for start in range(0, cfg.n, chunk):  # a chunk at a time: a ScoreFile stays on disk
        part = scores[start : start + chunk]
        arrays = [np.asarray(a) for a in (part.x, part.v, part.dlnf_dx, part.dlnf_dv)]
        finite = np.all(np.concatenate([np.isfinite(a) for a in arrays], axis=1), axis=1)
        bad += int(np.sum(~(finite & np.isfinite(np.asarray(part.ln_f)))))
    if cfg.path:
        scores.close()  # reopened by the next read; none held while the file is written
    if bad:
        if cfg.path:
            Path(cfg.path).unlink(missing_ok=True)
        raise TrainingError(f"{bad} of {cfg.n} drawn points have non-finite "
                            "scores or log-densities: the DF is broken; retrain it")
    return scores


def _draw_velocity_scores(cfg: ScoresConfig, df, key, catalog):
    """The `free` route of `draw_scores`."""
    from ..flows import AbstractConditionalDF
    from ..scores import sample_velocity_scores

    if catalog is None:
        raise ValueError("position = 'free' in [scores] draws velocities at the catalogue's "
                         "positions: give the catalogue (deeppot scores --catalog FILE)")
    if not isinstance(df, AbstractConditionalDF):
        raise ValueError(f"position = 'free' in [scores] needs a conditional DF, f = ν(x) "
                         f"p(v|x) ([df] kind = 'conditional'); got {type(df).__name__}")
    x = np.asarray(catalog.x)
    if len(x) > cfg.n:  # a fixed random subset, the same for every key
        x = x[np.sort(np.random.default_rng(0).choice(len(x), cfg.n, replace=False))]
    scores = sample_velocity_scores(df, key, x, cfg.velocities_per_star)  # chunked by the DF
    finite = np.ones(len(scores), bool)
    for a in (scores.v, scores.dlnp_dx, scores.dlnp_dv):
        finite &= np.all(np.isfinite(np.asarray(a)), axis=(1, 2))
    bad = int(np.sum(~finite))
    if bad:
        raise TrainingError(f"{bad} of {len(scores)} catalogue positions have non-finite "
                            "velocity scores: the DF is broken; retrain it")
    return scores


def train_potential(pot_cfg: PotentialConfig, fit_cfg: FitConfig, scores, key, *,
                    units: str = "dimensionless", checkpoint_path=None, devices=None,
                    progress: bool = False):
    """Build the `[potential]` model and fit it to a score sample with the `[fit]` loss.

    **Arguments:**

    - `pot_cfg`, `fit_cfg`: the `[potential]` and `[fit]` settings.
    - `scores`: a `ScoreSample` (or `ScoreFile`), or a `VelocityScoreSample` (the
      `free` route of `[scores] position`), which the loss fits with
      `ProfiledStationarity` in place of `Stationarity`.
    - `key`: a typed key.
    - `units`: the run's unit system (`[run] units`).
    - `devices`: the devices each batch is sharded over (`deeppot.sharding.data_mesh`).
    - `checkpoint_path`: checkpoint file (resumed if it exists).
    - `progress`: show a progress bar.

    **Returns:** `(model, summary)`; `summary["check"]` holds the diagnostics of
    `deeppot.check_potential_fit`, which every fitted model must pass. The model carries
    the score points' validity region (`PotentialModel.region`).

    **Raises:** `FitFailed` (a `TrainingError`) when the fitted potential is dead (a zero,
    uniform or non-finite force, a negative density, a residual no better than Φ = 0).
    """
    from ..health import check_potential_fit

    k_init, k_fit = jax.random.split(key)
    model = build_model(pot_cfg, k_init, units=units)
    profiled = isinstance(scores, VelocityScoreSample)  # a selection-free sample
    model, history = train.fit_potential(
        model, scores, build_loss(fit_cfg, profiled=profiled), key=k_fit,
        settings=_training_settings(fit_cfg, train.POTENTIAL_SETTINGS, len(scores)),
        trainable=_trainable(model, pot_cfg), checkpoint_path=checkpoint_path,
        devices=devices, progress=progress, return_history=True,
    )
    advice = (f"lower [fit] learning_rate (it is {fit_cfg.learning_rate:g}) or raise [fit] "
              f"steps (it is {fit_cfg.steps})")
    check = check_potential_fit(model, scores, advice=advice)
    model = model.with_region(score_positions(scores))
    return model, {**_history_summary(history), "check": check}


def score_positions(scores, n: int = 2**17) -> np.ndarray:
    """The positions of a score sample (`ScoreSample` or `ScoreFile`), at most `n` of them
    (a fixed random subset of a larger sample), as a NumPy array (m, 3)."""
    m = len(scores)
    rows = np.arange(m) if m <= n else np.sort(
        np.random.default_rng(0).choice(m, n, replace=False))
    sample = scores.take(rows) if isinstance(scores, ScoreFile) else scores[rows]
    return np.asarray(sample.x)


def _trainable(model, pot_cfg: PotentialConfig):
    """Filter spec: `fit`'s default (`train.default_filter_spec`), less the frame's
    parameters that are not trained (all of them unless `train_frame`; those not in
    `train_frame_params` when it names some) and the fixed parameters (`log_<name>` fields
    of an analytic family)."""
    import equinox as eqx

    spec = train.default_filter_spec(model)
    if not pot_cfg.train_frame:
        spec = eqx.tree_at(lambda m: m.frame, spec,
                           replace=jax.tree.map(lambda _: False, spec.frame))
    elif pot_cfg.train_frame_params:
        for name in ("omega", "center", "u0"):
            if name not in pot_cfg.train_frame_params:
                spec = eqx.tree_at(lambda m: getattr(m.frame, name), spec, replace=False)
    for name in pot_cfg.fixed:
        spec = eqx.tree_at(lambda m: getattr(m.potential, f"log_{name}"), spec, replace=False)
    return spec


# ---------------------------------------------------------------------------------------------
# Stage records and the one way to run them


@dataclasses.dataclass
class StageContext:
    """What a stage function gets: the config, its key, its inputs and its places."""

    config: Config
    key: Any
    inputs: dict[str, Any]
    input_meta: dict[str, dict]
    checkpoint_dir: Path | None
    plot_dir: Path | None
    progress: bool

    @property
    def devices(self) -> int | None:
        """`[run] devices` as `deeppot.sharding.data_mesh` takes it (`None`: every device)."""
        return self.config.run.devices or None


@dataclasses.dataclass(frozen=True)
class Command:
    """A stage as a `deeppot` subcommand on files (`deeppot.cli` builds one per record).

    Its `argument` is the input named on the command line; the stage's other inputs are
    options `--NAME FILE` (required unless the stage lists them as optional); its `output`
    goes to `--out/-o FILE`, or with `out_dir` into an optional `--out-dir DIR` (under its
    run-directory name, beside the plots). A stage with checkpoints takes
    `--checkpoint-dir`. `summary(output, input paths, output path)` is the line printed
    when it is done (raising `ValueError` when the output answers nothing); the output's
    metadata `warnings` are printed before it.
    """

    name: str
    help: str
    description: str
    argument: str
    output: str
    summary: Callable[[Any, Mapping[str, str], Path | None], str]
    out_dir: bool = False


@dataclasses.dataclass(frozen=True)
class Stage:
    """One stage: the config sections it depends on, its inputs and outputs (names of
    `ARTEFACTS`; `optional` inputs are used when given), the checkpoint files it resumes
    from, its function, and the subcommand that runs it on files (`None`: none)."""

    name: str
    sections: tuple[str, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    checkpoints: tuple[str, ...]
    run: Callable[[StageContext], dict[str, tuple[Any, dict]]]
    optional: tuple[str, ...] = ()
    command: Command | None = None


def _data(ctx: StageContext):
    cat = build_catalog(ctx.config.data, ctx.key, units=ctx.config.run.units,
                        progress=ctx.progress)
    return {"catalog": (cat, {})}


def _df(ctx: StageContext):
    df, summary = train_df(ctx.config.df, ctx.inputs["catalog"], ctx.key,
                           checkpoint_dir=ctx.checkpoint_dir, devices=ctx.devices,
                           progress=ctx.progress)
    return {"df": (df, {"stage": "df", "config": section_dict("df", ctx.config.df),
                        "training": summary})}


def _scores(ctx: StageContext):
    scores = draw_scores(ctx.config.scores, ctx.inputs["df"], ctx.key,
                         units=ctx.config.run.units, devices=ctx.devices,
                         progress=ctx.progress, catalog=ctx.inputs.get("catalog"))
    return {"scores": (scores, {"stage": "scores", "position": ctx.config.scores.position})}


def _potential(ctx: StageContext):
    from ..evaluate import fit_quality

    ckpt = None if ctx.checkpoint_dir is None else ctx.checkpoint_dir / "potential.ckpt"
    model, summary = train_potential(ctx.config.potential, ctx.config.fit,
                                     ctx.inputs["scores"], ctx.key,
                                     units=ctx.config.run.units, checkpoint_path=ckpt,
                                     devices=ctx.devices, progress=ctx.progress)
    quality = {"fit_quality": fit_quality(model, ctx.inputs["scores"])}
    return {"potential": (model, {"stage": "potential",
                                  "config": section_dict("potential", ctx.config.potential),
                                  "fit": section_dict("fit", ctx.config.fit),
                                  "training": summary, **quality,
                                  "warnings": quality_warnings(quality)})}


def _report(ctx: StageContext):
    from ..replicas import ReplicaSet

    cfg = ctx.config
    cat, model = ctx.inputs["catalog"], ctx.inputs["potential"]
    if isinstance(model, ReplicaSet):
        return _report_replicas(ctx)
    quality = ctx.input_meta["potential"].get("fit_quality")  # the potential stage's
    ev = evaluate_model(cfg.evaluate, model, cat, out_dir=ctx.plot_dir,
                        scores=None if quality else ctx.inputs.get("scores"))
    if quality:
        ev["fit_quality"] = quality
    df_train = ctx.input_meta.get("df", {}).get("training", {})
    pot_train = ctx.input_meta["potential"].get("training", {})
    if ctx.plot_dir is not None and cfg.evaluate.plots:
        ctx.plot_dir.mkdir(parents=True, exist_ok=True)
        curves = {"potential fit": pot_train}
        for i, m in enumerate(df_train.get("members", [])):
            curves[f"DF fit {i}" if len(df_train["members"]) > 1 else "DF fit"] = m
        if plot_losses(curves, ctx.plot_dir / "training.png"):
            ev["plots"].append("training.png")

    def strip(s):
        return {k: v for k, v in s.items() if k not in ("curve", "check")}

    score_error = None
    if "df" in ctx.inputs and trainable(cfg.df.kind) and "truth_df" in cat.meta:
        from .. import evaluate, mocks

        w = np.asarray(cat.w[: cfg.evaluate.n_points])
        score_error = evaluate.score_errors(ctx.inputs["df"], mocks.truth_df(cat.meta), w)
    metrics = {
        "config": cfg.to_dict(),
        "catalog": {"n": len(cat), "generator": cat.meta.get("generator")},
        "df_training": [strip(m) for m in df_train.get("members", [])],
        "df_check": df_train.get("check"),
        "df_score_error": score_error,
        "potential_training": strip(pot_train),
        "potential_check": pot_train.get("check"),
        **ev,
        "warnings": quality_warnings(ev),
    }
    return {"metrics": (metrics, {}), "report": ((cfg, cat, metrics), {})}


def _report_replicas(ctx: StageContext):
    """The report of a replica set (a `ReplicaSet` model file): bands, their coverage of a
    mock's truth, the replicas' fit quality."""
    cfg = ctx.config
    cat, replicas = ctx.inputs["catalog"], ctx.inputs["potential"]
    meta = ctx.input_meta["potential"]
    ev = evaluate_replicas(cfg.evaluate, replicas, cat, out_dir=ctx.plot_dir,
                           fit_quality=meta.get("replica_fit_quality"))
    metrics = {"config": cfg.to_dict(),
               "catalog": {"n": len(cat), "generator": cat.meta.get("generator")},
               **ev, "replica_training": meta.get("replica_training", []),
               "warnings": replica_warnings(ev)}
    return {"metrics": (metrics, {}), "report": ((cfg, cat, metrics), {})}


def _save_report(value, path, meta):
    cfg, cat, metrics = value
    if metrics.get("replicas"):
        write_replica_report(Path(path), cfg, cat, metrics)
    else:
        write_report(Path(path), cfg, cat, metrics)


ARTEFACTS["report"] = Artefact("report.md", _save_report,
                               lambda path: (Path(path).read_text(), {}))


def _wrote(output, inputs, path) -> str:
    return f"wrote {path}"


def _wrote_scores(scores, inputs, path) -> str:
    return f"wrote {len(scores)} scores to {path}"


def _accuracy(metrics, inputs, path) -> str:
    if metrics["accuracy"] is None:
        raise ValueError(f"{inputs['catalog']} records no truth potential; nothing to "
                         "compare with")
    bands = band_table(metrics)
    return accuracy_table(metrics) + (f"\n\n{bands}" if bands else "")


STAGES: tuple[Stage, ...] = (
    Stage("data", ("data",), (), ("catalog",), (), _data),
    Stage("df", ("df",), ("catalog",), ("df",), ("df.ckpt", "df_*.ckpt"), _df,
          command=Command(
              "fit-df", "train the [df] distribution function on a catalogue",
              "Train the DF described by the config's [df] section on a catalogue and "
              "write it to OUT, one self-describing model file.", "catalog", "df", _wrote)),
    Stage("scores", ("scores",), ("df",), ("scores",), (), _scores, optional=("catalog",),
          command=Command(
              "scores", "draw the [scores] sample from a trained DF",
              "Draw points from a DF file and evaluate its scores there; write them to OUT "
              "(.npz, or .h5/.hdf5). With [scores] path they stream into that HDF5 file "
              "as they are drawn. With [scores] position = \"free\" velocities are drawn "
              "at the positions of the --catalog stars instead.", "df", "scores",
              _wrote_scores)),
    Stage("potential", ("potential", "fit"), ("scores",), ("potential",),
          ("potential.ckpt",), _potential,
          command=Command(
              "fit-potential", "fit the [potential] model to a score sample with the [fit] "
              "loss", "Fit the potential model of [potential] to a ScoreSample file with "
              "the loss of [fit]; write OUT, one self-describing model file.", "scores",
              "potential", _wrote)),
    Stage("report", ("evaluate",), ("catalog", "potential"), ("metrics", "report"), (),
          _report, optional=("scores", "df"),
          command=Command(
              "evaluate", "compare a fitted potential with a catalogue's true potential",
              "Evaluate a potential file against the truth recorded in a catalogue's meta "
              "(mocks record it) or, without one, its per-star truth (a snapshot's "
              "Acceleration and Potential), at the catalogue's positions: the report stage "
              "of a run. "
              "Print the accuracy table and optionally write metrics JSON and PNG plots; "
              "--scores adds the fit quality when the model file does not record it, --df "
              "the DF's score error against a mock's exact DF.", "potential", "metrics",
              _accuracy, out_dir=True)),
)
STAGE_NAMES = tuple(s.name for s in STAGES)


def get_stage(name: str) -> Stage:
    """The stage record called `name`."""
    for s in STAGES:
        if s.name == name:
            return s
    raise ValueError(f"unknown stage {name!r}; stages: {', '.join(STAGE_NAMES)}")


def run_stage(name: str, config: Config, inputs: Mapping[str, tuple[Any, dict]], *,
              checkpoint_dir=None, plot_dir=None, progress: bool = False,
              replica: int | None = None) -> dict[str, tuple[Any, dict]]:
    """Run one stage on in-memory inputs and return its outputs (nothing is saved).

    **Arguments:**

    - `name`: the stage (`"data"`, `"df"`, `"scores"`, `"potential"`, `"report"`).
    - `config`: the validated `Config`.
    - `inputs`: `{artefact name: (object, metadata)}` for each of the stage's inputs (and
      those of its optional inputs that are given).
    - `checkpoint_dir`: where training checkpoints go and are resumed from (`None`: none).
    - `plot_dir`: where the report's plots go (`None`: no plots).
    - `progress`: show progress bars.
    - `replica`: the index of the replica of a replica set this stage runs in (its key is
      `stage_key(seed, name, replica)`); `None`: a run of one replica.

    **Returns:** `{artefact name: (object, metadata)}`; save each with
    `ARTEFACTS[name].save(object, path, metadata)`.
    """
    stage = get_stage(name)
    missing = [i for i in stage.inputs if i not in inputs]
    if missing:
        raise ValueError(f"stage {name!r} needs {', '.join(missing)}")
    given = [k for k in (*stage.inputs, *stage.optional) if k in inputs]
    ctx = StageContext(
        config=config, key=stage_key(config.run.seed, name, replica),
        inputs={k: inputs[k][0] for k in given},
        input_meta={k: inputs[k][1] for k in given},
        checkpoint_dir=_directory(checkpoint_dir),
        plot_dir=None if plot_dir is None else Path(plot_dir), progress=progress)
    with _x64(config.run.x64):
        return stage.run(ctx)


def _directory(path) -> Path | None:
    """A checkpoint directory, created if it does not exist yet (None stays None)."""
    if path is None:
        return None
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_artefact(name: str, value, path: Path, meta: dict) -> None:
    """Save a stage's output with `ARTEFACTS[name].save`. In a multi-host run only process
    0 writes, once every process is done with the stage (so no other holds the file open)
    and before any goes on to read it."""
    from ..sharding import is_main_process, same_on_all_processes

    same_on_all_processes(0, f"the stages run before writing {path}")  # a barrier
    if is_main_process():
        ARTEFACTS[name].save(value, path, meta)
    same_on_all_processes(0, f"the stages run after writing {path}")


def start_processes(config: Config) -> str | None:
    """Join the multi-host run of `[run] coordinator`, `num_processes` and `process_id`
    (`deeppot.sharding.initialize_distributed`; `"auto"`: from the environment or the
    cluster). Call it before anything touches a device: `run` and every `deeppot` command
    do. A no-op without a coordinator, or in a process that has joined already.

    **Returns:** a line naming this process and the run, or `None` without a coordinator.
    """
    from ..sharding import initialize_distributed

    run = config.run
    if not run.coordinator:
        return None
    if run.coordinator == "auto":
        index = initialize_distributed()
    else:
        index = initialize_distributed(coordinator=run.coordinator,
                                       num_processes=run.num_processes,
                                       process_id=run.process_id)
    return f"process {index} of {jax.process_count()} (coordinator {run.coordinator})"


def _x64(x64: bool):
    import contextlib

    return jax.enable_x64(True) if x64 else contextlib.nullcontext()
