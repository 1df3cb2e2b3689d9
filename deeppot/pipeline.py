"""The end-to-end pipeline: catalogue → DF → scores → potential → report.

A run is described by a TOML file with one table per stage (`[run]`, `[data]`, `[df]`,
`[scores]`, `[potential]`, `[fit]`, `[evaluate]`; see `docs/pipeline.md`). `load_config`
validates the whole file before any work starts, with messages that name the section, the
key and the bad value. `run(config, run_dir)` executes the stages and writes everything into
`run_dir`; a stage whose outputs exist (for the same settings) is skipped, and training
resumes from its checkpoint, so rerunning an interrupted or finished run picks up where it
stopped.

The stage functions (`make_catalog`, `train_df`, `draw_scores`, `train_potential`,
`evaluate_model`) are public so that the `deeppot` subcommands can run one stage on files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import inspect
import json
import math
import os
import shutil
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import numpy as np

from .train import LR_SCHEDULES

__all__ = [
    "Config",
    "ConfigError",
    "DataConfig",
    "DFConfig",
    "EvaluateConfig",
    "FitConfig",
    "PotentialConfig",
    "RunConfig",
    "ScoresConfig",
    "DEMO_QUICK_OVERRIDES",
    "accuracy_table",
    "apply_overrides",
    "build_df",
    "build_loss",
    "build_model",
    "default_config_path",
    "draw_scores",
    "evaluate_model",
    "load_config",
    "load_model",
    "make_catalog",
    "parse_config",
    "run",
    "save_model",
    "train_df",
    "train_potential",
]

_FORMAT_VERSION = 1


class ConfigError(ValueError):
    """A configuration problem; the message names the section, key and value."""


# ---------------------------------------------------------------------------------------------
# Schema: each section is a frozen dataclass; `_opt` records a field's kind and its limits.


def _opt(default, kind: str, doc: str, *, choices=None, lo=None, hi=None, lo_open=False,
         only: tuple[str, ...] | None = None):
    """A config field: `kind` in int|float|str|bool|vec3|table|path|float?."""
    meta = dict(kind=kind, doc=doc, choices=choices, lo=lo, hi=hi, lo_open=lo_open, only=only)
    if isinstance(default, (list, dict, tuple)):
        return dataclasses.field(default_factory=lambda: _copy(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _copy(value):
    return json.loads(json.dumps(value))


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """`[run]`: settings of the whole run."""

    seed: int = _opt(0, "int", "random seed; every stage derives its key from it", lo=0)
    x64: bool = _opt(False, "bool", "run in float64 (slower; float32 is enough for the demo)")
    progress: bool = _opt(True, "bool", "show progress bars")


_DATA_SOURCES = ("plummer", "disk", "file")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """`[data]`: the catalogue, a mock (`plummer`, `disk`) or a file."""

    source: str = _opt("plummer", "str", "plummer | disk | file", choices=_DATA_SOURCES)
    n: int = _opt(65536, "int", "number of mock stars", lo=2, only=("plummer", "disk"))
    path: str = _opt("", "path", "catalogue file (.npz, .h5, .csv) for source = file",
                     only=("file",))
    r_max: float = _opt(10.0, "float", "Plummer truncation radius", lo=0, lo_open=True,
                        only=("plummer",))
    a: float = _opt(1.0, "float", "Miyamoto–Nagai a", lo=0, lo_open=True, only=("disk",))
    b: float = _opt(0.1, "float", "Miyamoto–Nagai b", lo=0, lo_open=True, only=("disk",))
    h_R: float = _opt(1.0, "float", "disk radial scale length", lo=0, lo_open=True,
                      only=("disk",))
    h_z: float = _opt(0.1, "float", "disk vertical scale length", lo=0, lo_open=True,
                      only=("disk",))
    n_dyn: float = _opt(128.0, "float", "dynamical times integrated (8: non-stationary)",
                        lo=0, lo_open=True, only=("disk",))
    workers: int = _opt(1, "int", "threads integrating orbits", lo=1, only=("disk",))
    observe: bool = _opt(False, "bool", "add the paper's Gaia-like errors",
                         only=("plummer", "disk"))
    observer: list = _opt([1.0, 0.0, 0.0], "vec3", "observer position",
                          only=("plummer", "disk"))
    select_radius: float = _opt(0.0, "float", "keep stars within this radius of "
                                "select_center (0: no selection)", lo=0,
                                only=("plummer", "disk"))
    select_center: list = _opt([1.0, 0.0, 0.0], "vec3", "selection sphere centre",
                               only=("plummer", "disk"))


_DF_KINDS = ("spline", "ffjord", "exact")
_ACTIVATIONS = {"tanh": jax.numpy.tanh, "silu": jax.nn.silu}
_SCHEDULE_DOC = "learning-rate schedule: plateau halves on plateaus, cosine decays to 1% of peak"


@dataclasses.dataclass(frozen=True)
class DFConfig:
    """`[df]`: the distribution-function model and its training."""

    kind: str = _opt("spline", "str", "spline | ffjord | exact (analytic PlummerDF)",
                     choices=_DF_KINDS)
    ensemble: int = _opt(1, "int", "members averaged (log-prob mean)", lo=1,
                         only=("spline", "ffjord"))
    objective: str = _opt("", "str", "training objective ('' = the model's default)",
                          only=("spline", "ffjord"))
    steps: int = _opt(2000, "int", "training steps", lo=0, only=("spline", "ffjord"))
    batch_size: int = _opt(2048, "int", "batch size", lo=1, only=("spline", "ffjord"))
    learning_rate: float = _opt(1e-3, "float", "peak learning rate", lo=0, lo_open=True,
                                only=("spline", "ffjord"))
    warmup_steps: int = _opt(200, "int", "linear warm-up steps", lo=0,
                             only=("spline", "ffjord"))
    schedule: str = _opt("plateau", "str", _SCHEDULE_DOC,
                         choices=LR_SCHEDULES, only=("spline", "ffjord"))
    patience: int = _opt(1000, "int", "steps without improvement before halving the rate",
                         lo=1, only=("spline", "ffjord"))
    validate_every: int = _opt(10, "int", "steps between validation batches", lo=1,
                               only=("spline", "ffjord"))
    ema_decay: float = _opt(0.0, "float", "EMA of the weights (0: off)", lo=0, hi=0.99999,
                            only=("spline", "ffjord"))
    checkpoint_every: int = _opt(500, "int", "steps between checkpoints", lo=1,
                                 only=("spline", "ffjord"))
    flow_layers: int = _opt(4, "int", "spline layers", lo=1, only=("spline",))
    knots: int = _opt(8, "int", "spline knots", lo=2, only=("spline",))
    interval: float = _opt(5.0, "float", "spline half-width (standard deviations)", lo=0,
                           lo_open=True, only=("spline",))
    spline_kind: str = _opt("coupling", "str", "coupling | autoregressive",
                            choices=("coupling", "autoregressive"), only=("spline",))
    nn_width: int = _opt(64, "int", "conditioner width", lo=1, only=("spline",))
    nn_depth: int = _opt(2, "int", "conditioner depth", lo=0, only=("spline",))
    n_blocks: int = _opt(1, "int", "FFJORD blocks", lo=1, only=("ffjord",))
    width: int = _opt(64, "int", "FFJORD vector-field width", lo=1, only=("ffjord",))
    depth: int = _opt(3, "int", "FFJORD vector-field depth", lo=1, only=("ffjord",))
    activation: str = _opt("tanh", "str", "FFJORD vector-field activation",
                           choices=tuple(_ACTIVATIONS), only=("ffjord",))
    ode_steps: int = _opt(4, "int", "fixed Tsit5 steps per block (0: adaptive Dopri5)",
                          lo=0, only=("ffjord",))


@dataclasses.dataclass(frozen=True)
class ScoresConfig:
    """`[scores]`: the sample on which the potential is fitted."""

    n: int = _opt(65536, "int", "points drawn from the DF", lo=1)
    chunk_size: int = _opt(8192, "int", "points drawn and differentiated at a time", lo=1)


_NEURAL = ("neural", "spherical", "axisymmetric")
_ANALYTIC = {
    "plummer": "Plummer",
    "hernquist": "Hernquist",
    "isochrone": "Isochrone",
    "nfw": "NFW",
    "kepler": "Kepler",
    "miyamoto_nagai": "MiyamotoNagai",
    "logarithmic": "Logarithmic",
}


@dataclasses.dataclass(frozen=True)
class PotentialConfig:
    """`[potential]`: the potential model and its frame."""

    model: str = _opt("spherical", "str", "neural | spherical | axisymmetric | an analytic "
                      "family", choices=_NEURAL + tuple(_ANALYTIC))
    width: int = _opt(64, "int", "hidden width", lo=1, only=_NEURAL)
    depth: int = _opt(3, "int", "hidden layers", lo=1, only=_NEURAL)
    input_scale: float = _opt(1.0, "float", "length dividing the positions", lo=0,
                              lo_open=True, only=_NEURAL)
    params: dict = _opt({}, "table", "initial parameters of an analytic family",
                        only=tuple(_ANALYTIC))
    frame: str = _opt("inertial", "str", "inertial | moving | rotating",
                      choices=("inertial", "moving", "rotating"))
    omega: list = _opt([0.0, 0.0, 0.0], "vec3", "initial Ω of a rotating frame")
    center: list = _opt([0.0, 0.0, 0.0], "vec3", "rotation centre")
    u0: list = _opt([0.0, 0.0, 0.0], "vec3", "frame velocity")
    train_frame: bool = _opt(True, "bool", "fit the frame's parameters too")
    laplacian_method: str = _opt("forward", "str", "forward | hessian | hvp",
                                 choices=("forward", "hessian", "hvp"))


@dataclasses.dataclass(frozen=True)
class FitConfig:
    """`[fit]`: the potential fit (loss and optimiser)."""

    steps: int = _opt(2000, "int", "training steps", lo=0)
    batch_size: int = _opt(4096, "int", "batch size", lo=1)
    learning_rate: float = _opt(1e-3, "float", "peak learning rate", lo=0, lo_open=True)
    warmup_steps: int = _opt(200, "int", "linear warm-up steps", lo=0)
    schedule: str = _opt("plateau", "str", _SCHEDULE_DOC,
                         choices=LR_SCHEDULES)
    patience: int = _opt(1000, "int", "steps without improvement before halving the rate",
                         lo=1)
    validate_every: int = _opt(10, "int", "steps between validation batches", lo=1)
    checkpoint_every: int = _opt(500, "int", "steps between checkpoints", lo=1)
    alpha: float = _opt(1.0, "float", "Stationarity α", lo=0, lo_open=True)
    beta: float = _opt(1.0, "float", "PositiveDensity β", lo=0, lo_open=True)
    density_weight: float = _opt(1.0, "float", "weight λ of PositiveDensity", lo=0)
    l2: float = _opt(0.0, "float", "L2Weights ℓ2 (0: off)", lo=0)
    form: str = _opt("ln_f", "str", "ln_f | f (the residual Stationarity uses)",
                     choices=("ln_f", "f"))
    log: bool = _opt(False, "bool", "minimise ln(Stationarity + λ PositiveDensity) (Eq. 13)")


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    """`[evaluate]`: accuracy against the truth (when the catalogue records one) and plots."""

    region: str = _opt("auto", "str", "auto | radial | density (auto: radial for spherical "
                       "truths, density otherwise)", choices=("auto", "radial", "density"))
    r_min: float = _opt(0.1, "float", "inner radius of the radial region", lo=0)
    r_max: float = _opt(3.0, "float", "outer radius of the radial region", lo=0, lo_open=True)
    density_fraction: float = _opt(0.1, "float", "density region: ρ > fraction · ρ_max",
                                   lo=0, hi=1)
    n_points: int = _opt(16384, "int", "tracer positions evaluated", lo=1)
    map_extent: float = _opt(3.0, "float", "half-width of the midplane maps", lo=0,
                             lo_open=True)
    plots: bool = _opt(True, "bool", "write PNG plots")


_SECTIONS: dict[str, type] = {
    "run": RunConfig,
    "data": DataConfig,
    "df": DFConfig,
    "scores": ScoresConfig,
    "potential": PotentialConfig,
    "fit": FitConfig,
    "evaluate": EvaluateConfig,
}
# the field that decides which `only=` keys apply in each section
_SELECTOR = {"data": "source", "df": "kind", "potential": "model"}


@dataclasses.dataclass(frozen=True)
class Config:
    """A validated pipeline configuration: one dataclass per TOML table.

    Build it with `load_config` (a file) or `parse_config` (a dictionary); both validate
    everything up front and raise `ConfigError` naming the section, key and value.
    """

    run: RunConfig = dataclasses.field(default_factory=RunConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    df: DFConfig = dataclasses.field(default_factory=DFConfig)
    scores: ScoresConfig = dataclasses.field(default_factory=ScoresConfig)
    potential: PotentialConfig = dataclasses.field(default_factory=PotentialConfig)
    fit: FitConfig = dataclasses.field(default_factory=FitConfig)
    evaluate: EvaluateConfig = dataclasses.field(default_factory=EvaluateConfig)
    raw: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Every section with every applicable key (defaults filled in), as TOML values."""
        return {name: _section_dict(name, getattr(self, name)) for name in _SECTIONS}


def _section_dict(name: str, section) -> dict[str, Any]:
    """The keys of a section that apply to its chosen kind (e.g. no disk keys for Plummer)."""
    selector = _SELECTOR.get(name)
    chosen = getattr(section, selector) if selector else None
    return {
        f.name: _copy(getattr(section, f.name)) for f in dataclasses.fields(section)
        if selector is None or f.metadata["only"] is None or chosen in f.metadata["only"]
    }


def _typename(value) -> str:
    return {bool: "boolean", int: "integer", float: "float", str: "string", list: "array",
            dict: "table"}.get(type(value), type(value).__name__)


def _check_value(where: str, kind: str, value, meta) -> tuple[Any, str | None]:
    """Convert and check one value; returns (value, error message or None)."""
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            return value, f"{where} must be an integer, got {_typename(value)} {value!r}"
    elif kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            return value, f"{where} must be a number, got {_typename(value)} {value!r}"
        value = float(value)
        if not math.isfinite(value):
            return value, f"{where} must be finite, got {value!r}"
    elif kind in ("str", "path"):
        if not isinstance(value, str):
            return value, f"{where} must be a string, got {_typename(value)} {value!r}"
    elif kind == "bool":
        if not isinstance(value, bool):
            return value, f"{where} must be true or false, got {_typename(value)} {value!r}"
    elif kind == "vec3":
        ok = isinstance(value, list) and len(value) == 3 and all(
            isinstance(c, int | float) and not isinstance(c, bool) for c in value)
        if not ok:
            return value, f"{where} must be an array of 3 numbers, got {value!r}"
        value = [float(c) for c in value]
    elif kind == "table":
        if not isinstance(value, dict):
            return value, f"{where} must be a table, got {_typename(value)} {value!r}"
        for k, v in value.items():
            if isinstance(v, bool) or not isinstance(v, int | float) or not v > 0:
                return value, f"{where}: parameter {k!r} must be a positive number, got {v!r}"
        value = {k: float(v) for k, v in value.items()}
    choices = meta["choices"]
    if choices is not None and value not in choices:
        return value, f"{where} must be one of {', '.join(map(repr, choices))}; got {value!r}"
    lo, hi = meta["lo"], meta["hi"]
    if kind in ("int", "float"):
        if lo is not None and (value <= lo if meta["lo_open"] else value < lo):
            rel = ">" if meta["lo_open"] else "≥"
            return value, f"{where} must be {rel} {lo}, got {value!r}"
        if hi is not None and value > hi:
            return value, f"{where} must be ≤ {hi}, got {value!r}"
    return value, None


def _parse_section(name: str, cls: type, table, base_dir: Path, errors: list[str]):
    if not isinstance(table, dict):
        errors.append(f"[{name}] must be a table, got {_typename(table)} {table!r}")
        return cls()
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = {}
    for key, value in table.items():
        if key not in fields:
            errors.append(f"unknown key {key!r} in [{name}]; valid keys: {', '.join(fields)}")
            continue
        meta = fields[key].metadata
        value, err = _check_value(f"key {key!r} in [{name}]", meta["kind"], value, meta)
        if err:
            errors.append(err)
            continue
        if meta["kind"] == "path" and value:
            value = str((base_dir / value).expanduser()) if not os.path.isabs(value) else value
        values[key] = value
    selector = _SELECTOR.get(name)
    if selector is not None:
        chosen = values.get(selector, fields[selector].default)
        for key in values:
            only = fields[key].metadata["only"]
            if only is not None and chosen not in only:
                which = " or ".join(repr(o) for o in only)
                errors.append(f"key {key!r} in [{name}] applies only when {selector} = {which}; "
                              f"this config has {selector} = {chosen!r}")
    return cls(**{k: v for k, v in values.items() if k in fields})


def _cross_checks(cfg: Config, errors: list[str]) -> None:
    if cfg.data.source == "file":
        if not cfg.data.path:
            errors.append("key 'path' in [data] is required when source = 'file'")
        elif not os.path.isfile(cfg.data.path):
            errors.append(f"key 'path' in [data]: catalogue file {cfg.data.path!r} not found")
        elif Path(cfg.data.path).suffix.lower() not in (".npz", ".h5", ".hdf5", ".csv"):
            errors.append(f"key 'path' in [data]: {cfg.data.path!r} is not a .npz, .h5/.hdf5 "
                          "or .csv file")
    if cfg.df.kind == "exact" and (cfg.data.source != "plummer" or cfg.data.observe
                                   or cfg.data.select_radius > 0):
        errors.append("kind = 'exact' in [df] (the analytic PlummerDF) needs source = "
                      "'plummer' in [data] without observe or selection")
    if cfg.df.kind in ("spline", "ffjord") and cfg.df.objective:
        from .flows import FFJORD, SplineFlow

        allowed = (SplineFlow if cfg.df.kind == "spline" else FFJORD).objectives
        if cfg.df.objective not in allowed:
            errors.append(f"key 'objective' in [df] must be one of {allowed} for kind = "
                          f"{cfg.df.kind!r}; got {cfg.df.objective!r}")
    if cfg.potential.model in _ANALYTIC:
        from . import potentials

        cls = getattr(potentials, _ANALYTIC[cfg.potential.model])
        names = [p for p in inspect.signature(cls).parameters if p != "G"]
        for k in cfg.potential.params:
            if k not in names:
                errors.append(f"key 'params' in [potential]: {cfg.potential.model} has no "
                              f"parameter {k!r}; valid: {', '.join(names)}")
    if cfg.evaluate.r_min >= cfg.evaluate.r_max:
        errors.append(f"[evaluate] needs r_min < r_max; got r_min = {cfg.evaluate.r_min}, "
                      f"r_max = {cfg.evaluate.r_max}")


def parse_config(raw: Mapping[str, Any], base_dir: str | os.PathLike = ".") -> Config:
    """Validate a configuration dictionary (as read from TOML).

    **Arguments:**

    - `raw`: `{section: {key: value}}`; missing sections and keys take their defaults.
    - `base_dir`: directory against which relative paths (`[data] path`) are resolved.

    **Returns:** a `Config`.

    **Raises:** `ConfigError` listing every problem, each naming its section and key.
    """
    errors: list[str] = []
    if not isinstance(raw, Mapping):
        raise ConfigError(f"a config is a table of sections, got {_typename(raw)}")
    base = Path(base_dir)
    sections = {}
    for name, table in raw.items():
        if name not in _SECTIONS:
            kind = "section" if isinstance(table, dict) else "top-level key"
            errors.append(f"unknown {kind} [{name}]; valid sections: "
                          + ", ".join(f"[{s}]" for s in _SECTIONS))
            continue
        sections[name] = _parse_section(name, _SECTIONS[name], table, base, errors)
    cfg = Config(**sections, raw=_copy(dict(raw)))
    if not errors:
        _cross_checks(cfg, errors)
    if errors:
        raise ConfigError("invalid config:\n  " + "\n  ".join(errors))
    return cfg


def _parse_override(item: str) -> tuple[str, str, Any]:
    if "=" not in item or "." not in item.split("=", 1)[0]:
        raise ConfigError(f"override {item!r} must look like section.key=value")
    lhs, text = item.split("=", 1)
    section, key = lhs.strip().split(".", 1)
    try:
        value = tomllib.loads(f"v = {text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = text.strip()  # bare words are strings: df.kind=spline
    return section, key, value


def apply_overrides(raw: Mapping[str, Any], overrides: Iterable[str] | Mapping[str, Any]):
    """Copy of a raw config with `section.key` values replaced.

    **Arguments:**

    - `raw`: the raw config dictionary.
    - `overrides`: strings `"section.key=value"` (the value is read as TOML, or as a bare
      string) or a mapping `{"section.key": value}`.

    **Returns:** a new dictionary (not yet validated).
    """
    out = _copy(dict(raw))
    if isinstance(overrides, Mapping):
        items = []
        for lhs, value in overrides.items():
            section, key = lhs.split(".", 1)
            items.append((section, key, value))
    else:
        items = [_parse_override(o) for o in overrides]
    for section, key, value in items:
        table = out.setdefault(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"cannot override {section}.{key}: [{section}] is not a table")
        table[key] = value
    return out


def load_config(path: str | os.PathLike, overrides: Iterable[str] | Mapping = ()) -> Config:
    """Read and validate a TOML config file.

    **Arguments:**

    - `path`: the `.toml` file.
    - `overrides`: `"section.key=value"` strings (or a mapping) applied before validation.

    **Returns:** a `Config`.

    **Raises:** `ConfigError` (file missing, TOML syntax, or invalid keys and values).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} not found")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: TOML syntax error: {err}") from None
    return parse_config(apply_overrides(raw, overrides), path.parent)


def default_config_path(name: str = "demo") -> Path:
    """Path of a config shipped in `deeppot/configs/` (e.g. `"demo"`, `"disk"`)."""
    return Path(str(resources.files("deeppot") / "configs" / f"{name}.toml"))


# The demo's short mode (`deeppot demo --quick`): the demo config with these overrides.
DEMO_QUICK_OVERRIDES = {
    "data.n": 8192,
    "df.steps": 2000,
    "df.warmup_steps": 100,
    "df.batch_size": 1024,
    "scores.n": 4096,
    "scores.chunk_size": 4096,
    "potential.width": 32,
    "potential.depth": 2,
    "fit.steps": 600,
    "fit.warmup_steps": 20,
    "fit.batch_size": 1024,
    "evaluate.n_points": 4096,
}


def _dumps_toml(d: Mapping[str, Mapping[str, Any]]) -> str:
    """TOML text for a two-level dictionary of scalars, arrays and inline tables."""

    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + "}"
        raise TypeError(f"cannot write {v!r} as TOML")

    lines = []
    for section, table in d.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {value(v)}" for k, v in table.items()]
        lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Builders and model files


def build_df(cfg: DFConfig, key, *, r_max: float = 10.0):
    """An untrained DF as described by `[df]` (the skeleton that model files are read into).

    **Arguments:**

    - `cfg`: the `[df]` settings.
    - `key`: a typed key for the initial weights.
    - `r_max`: truncation radius for `kind = "exact"` (the Plummer mock's `r_max`).

    **Returns:** a `deeppot.flows` DF (an `Ensemble` if `cfg.ensemble > 1`).
    """
    from . import flows

    if cfg.kind == "exact":
        return flows.PlummerDF(r_max=r_max)

    def one(k):
        if cfg.kind == "spline":
            return flows.SplineFlow(k, kind=cfg.spline_kind, flow_layers=cfg.flow_layers,
                                    knots=cfg.knots, interval=cfg.interval,
                                    nn_width=cfg.nn_width, nn_depth=cfg.nn_depth)
        import diffrax

        ode = (flows.ODESettings() if cfg.ode_steps == 0
               else flows.ODESettings(solver=diffrax.Tsit5(), n_steps=cfg.ode_steps))
        return flows.FFJORD(k, n_blocks=cfg.n_blocks, width=cfg.width, depth=cfg.depth,
                            activation=_ACTIVATIONS[cfg.activation], ode=ode)

    if cfg.ensemble == 1:
        return one(key)
    return flows.Ensemble([one(k) for k in jax.random.split(key, cfg.ensemble)])


def build_model(cfg: PotentialConfig, key):
    """An untrained `PotentialModel` as described by `[potential]`.

    **Arguments:**

    - `cfg`: the `[potential]` settings.
    - `key`: a typed key for the initial weights.

    **Returns:** a `PotentialModel`.
    """
    from . import frames, potentials
    from .model import PotentialModel

    if cfg.model == "neural":
        pot = potentials.NeuralPotential(key=key, width=cfg.width, depth=cfg.depth,
                                         input_scale=cfg.input_scale)
    elif cfg.model == "spherical":
        pot = potentials.Spherical.mlp(key=key, width=cfg.width, depth=cfg.depth,
                                       input_scale=cfg.input_scale)
    elif cfg.model == "axisymmetric":
        pot = potentials.Axisymmetric.mlp(key=key, width=cfg.width, depth=cfg.depth,
                                          input_scale=cfg.input_scale)
    else:
        pot = getattr(potentials, _ANALYTIC[cfg.model])(**cfg.params)
    if cfg.frame == "inertial":
        frame = None
    elif cfg.frame == "moving":
        frame = frames.MovingFrame(u0=cfg.u0)
    else:
        frame = frames.RotatingFrame(omega=cfg.omega, center=cfg.center, u0=cfg.u0)
    return PotentialModel(pot, frame, laplacian_method=cfg.laplacian_method)


def build_loss(cfg: FitConfig):
    """The loss term described by `[fit]`.

    `Stationarity(alpha, form) + density_weight · PositiveDensity(beta)`, wrapped in `Log`
    when `log = true`, plus `L2Weights(l2)` when `l2 > 0`.

    **Arguments:**

    - `cfg`: the `[fit]` settings.

    **Returns:** a `deeppot.terms` term.
    """
    from . import terms

    loss = terms.Stationarity(alpha=cfg.alpha, form=cfg.form)
    if cfg.density_weight > 0:
        loss = loss + cfg.density_weight * terms.PositiveDensity(beta=cfg.beta)
    if cfg.log:
        loss = terms.Log(loss)
    if cfg.l2 > 0:
        loss = loss + terms.L2Weights(l2=cfg.l2)
    return loss


def _x64_context(x64: bool):
    return jax.enable_x64(True) if x64 else contextlib.nullcontext()


def save_model(path: str | os.PathLike, model, description: Mapping[str, Any]) -> Path:
    """Write a model's arrays (`eqx.tree_serialise_leaves`) and its JSON description.

    **Arguments:**

    - `path`: the `.eqx` file; the description goes to the same name with `.json`.
    - `model`: the DF or `PotentialModel`.
    - `description`: `{"kind": "df" | "potential", "config": {...}, "x64": bool, ...}`,
      enough for `load_model` to rebuild the skeleton.

    **Returns:** the path of the `.eqx` file.
    """
    path = Path(path)
    desc = {"format": _FORMAT_VERSION, **_copy(dict(description))}
    tmp = path.with_name(path.name + ".tmp")
    eqx.tree_serialise_leaves(tmp, model)
    os.replace(tmp, path)
    _write_json(path.with_suffix(".json"), desc)
    return path


def load_model(path: str | os.PathLike):
    """Read a model written by `save_model` (or a pipeline run).

    **Arguments:**

    - `path`: the `.eqx` file (its `.json` description must sit next to it).

    **Returns:** `(model, description)`. A model saved with `x64 = true` must be loaded
    with x64 enabled (the `deeppot` commands do this).
    """
    path = Path(path)
    desc_path = path.with_suffix(".json")
    if not path.is_file() or not desc_path.is_file():
        raise FileNotFoundError(f"need both {path} and {desc_path}")
    desc = json.loads(desc_path.read_text())
    if desc.get("format") != _FORMAT_VERSION:
        raise ValueError(f"{desc_path}: unsupported model file format {desc.get('format')}")
    if desc["kind"] == "df":
        cfg = parse_config({"df": desc["config"]}).df
        skeleton = build_df(cfg, jax.random.key(0), r_max=desc.get("r_max", 10.0))
    elif desc["kind"] == "potential":
        cfg = parse_config({"potential": desc["config"]}).potential
        skeleton = build_model(cfg, jax.random.key(0))
    else:
        raise ValueError(f"{desc_path}: unknown model kind {desc['kind']!r}")
    with _x64_context(bool(desc.get("x64", False))):
        return eqx.tree_deserialise_leaves(path, skeleton), desc


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")
    os.replace(tmp, path)


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if hasattr(obj, "__array__"):
        return np.asarray(obj).tolist()
    raise TypeError(f"cannot serialise {type(obj).__name__}")


# ---------------------------------------------------------------------------------------------
# Stages


def _stage_key(seed: int, stage: str):
    return jax.random.fold_in(jax.random.key(seed), _STAGES.index(stage))


def make_catalog(cfg: DataConfig, key):
    """The catalogue described by `[data]`: a mock (with noise and selection) or a file.

    **Arguments:**

    - `cfg`: the `[data]` settings.
    - `key`: a typed key (mocks only).

    **Returns:** a `PhaseSpaceCatalog`; mocks record their truth potential in `meta`.
    """
    from . import mocks
    from .catalog import PhaseSpaceCatalog

    if cfg.source == "file":
        return PhaseSpaceCatalog.load(cfg.path)
    k_draw, k_noise = jax.random.split(key)

    def sampler(k, m):
        if cfg.source == "plummer":
            return mocks.plummer(k, m, r_max=cfg.r_max)
        return mocks.miyamoto_nagai_disk(k, m, a=cfg.a, b=cfg.b, h_R=cfg.h_R, h_z=cfg.h_z,
                                         n_dyn=cfg.n_dyn, workers=cfg.workers)

    if cfg.select_radius > 0:
        cat = mocks.sample_selected(
            sampler, k_draw, cfg.n,
            lambda c: mocks.select_sphere(c, cfg.select_center, cfg.select_radius))
    else:
        cat = sampler(k_draw, cfg.n)
    if cfg.observe:
        cat = mocks.observe(cat, k_noise, cfg.observer)
    return cat


def _history_summary(history) -> dict[str, Any]:
    return {
        "steps": len(history.step),
        "final_train_loss": history.train_loss[-1] if history.train_loss else None,
        "best_val_loss": min(history.val_loss) if history.val_loss else None,
        "lr_drops": list(history.lr_drops),
        "stop_reason": history.stop_reason,
        "wall_time_s": history.wall_time,
        "curve": {"step": history.step[:: max(1, len(history.step) // 200)],
                  "train_loss": history.train_loss[:: max(1, len(history.step) // 200)]},
    }


def train_df(cfg: DFConfig, catalog, key, *, checkpoint_dir=None, progress: bool = False,
             r_max: float = 10.0):
    """Build and train the DF of `[df]` on a catalogue.

    **Arguments:**

    - `cfg`: the `[df]` settings.
    - `catalog`: a `PhaseSpaceCatalog`.
    - `key`: a typed key.
    - `checkpoint_dir`: directory for `df.ckpt` (`df_<i>.ckpt` per ensemble member); an
      existing checkpoint is resumed.
    - `progress`: show progress bars.
    - `r_max`: truncation radius for `kind = "exact"`.

    **Returns:** `(df, summary)` with a JSON-able training summary per member.
    """
    from .flows import Ensemble
    from .train import fit_df

    k_init, k_fit = jax.random.split(key)
    df = build_df(cfg, k_init, r_max=r_max)
    if cfg.kind == "exact":
        return df, {"members": []}
    members = df.members if isinstance(df, Ensemble) else (df,)
    trained, summaries = [], []
    for i, member in enumerate(members):
        ckpt = None
        if checkpoint_dir is not None:
            name = "df.ckpt" if len(members) == 1 else f"df_{i}.ckpt"
            ckpt = Path(checkpoint_dir) / name
        kwargs = dict(key=jax.random.fold_in(k_fit, i), max_steps=cfg.steps,
                      batch_size=min(cfg.batch_size, len(catalog)),
                      learning_rate=cfg.learning_rate, warmup_steps=cfg.warmup_steps,
                      lr_schedule=cfg.schedule, patience=cfg.patience,
                      validate_every=cfg.validate_every,
                      ema_decay=cfg.ema_decay or None, checkpoint_path=ckpt,
                      checkpoint_every=cfg.checkpoint_every, progress=progress,
                      return_history=True)
        if cfg.objective:
            kwargs["objective"] = cfg.objective
        out, history = fit_df(member, catalog, **kwargs)
        trained.append(out)
        summaries.append(_history_summary(history))
    df = Ensemble(trained) if isinstance(df, Ensemble) else trained[0]
    return df, {"members": summaries}


def draw_scores(cfg: ScoresConfig, df, key, *, progress: bool = False):
    """Draw the `[scores]` sample from a DF (`sample_scores`).

    **Arguments:**

    - `cfg`: the `[scores]` settings.
    - `df`: a distribution function.
    - `key`: a typed key.
    - `progress`: show a progress bar.

    **Returns:** a `ScoreSample`.
    """
    from .scores import sample_scores

    return sample_scores(df, key, cfg.n, chunk_size=min(cfg.chunk_size, cfg.n),
                         progress=progress)


def train_potential(pot_cfg: PotentialConfig, fit_cfg: FitConfig, scores, key, *,
                    checkpoint_path=None, progress: bool = False):
    """Build the `[potential]` model and fit it to a score sample with the `[fit]` loss.

    **Arguments:**

    - `pot_cfg`, `fit_cfg`: the `[potential]` and `[fit]` settings.
    - `scores`: a `ScoreSample`.
    - `key`: a typed key.
    - `checkpoint_path`: checkpoint file (resumed if it exists).
    - `progress`: show a progress bar.

    **Returns:** `(model, summary)`.
    """
    from . import train

    k_init, k_fit = jax.random.split(key)
    model = build_model(pot_cfg, k_init)
    trainable = None
    if not pot_cfg.train_frame:
        trainable = lambda m: m.potential  # noqa: E731
    model, history = train.fit_potential(
        model, scores, build_loss(fit_cfg), key=k_fit, max_steps=fit_cfg.steps,
        batch_size=min(fit_cfg.batch_size, len(scores)), learning_rate=fit_cfg.learning_rate,
        warmup_steps=fit_cfg.warmup_steps, lr_schedule=fit_cfg.schedule,
        patience=fit_cfg.patience, trainable=trainable,
        validate_every=fit_cfg.validate_every, checkpoint_path=checkpoint_path,
        checkpoint_every=fit_cfg.checkpoint_every, progress=progress, return_history=True,
    )
    return model, _history_summary(history)


def _truth_of(catalog):
    from .mocks import truth_potential

    try:
        return truth_potential(catalog.meta)
    except ValueError:
        return None


def _region(cfg: EvaluateConfig, truth, res):
    from . import evaluate
    from .potentials import Plummer

    kind = cfg.region
    if kind == "auto":
        kind = "radial" if isinstance(truth, Plummer) else "density"
    if kind == "radial":
        return (evaluate.radial_region(res, cfg.r_min, cfg.r_max),
                f"r ∈ [{cfg.r_min:g}, {cfg.r_max:g}]")
    return (evaluate.density_region(res, cfg.density_fraction),
            f"ρ > {cfg.density_fraction:g} ρ_max")


def evaluate_model(cfg: EvaluateConfig, model, catalog, *, out_dir=None, truth=None):
    """Accuracy of a fitted model against the catalogue's truth, and plots.

    **Arguments:**

    - `cfg`: the `[evaluate]` settings.
    - `model`: a `PotentialModel`.
    - `catalog`: the catalogue; its first `n_points` positions are evaluated, and its
      `meta` supplies the truth potential (unless `truth` is given).
    - `out_dir`: where PNG plots go (`None`: no plots).
    - `truth`: the true potential, overriding the catalogue's.

    **Returns:** `{"truth": ..., "region": ..., "accuracy": summarise(...) or None,
    "frame": ..., "plots": [...]}`.
    """
    from . import evaluate

    truth = _truth_of(catalog) if truth is None else truth
    out: dict[str, Any] = {"truth": None, "region": None, "accuracy": None, "plots": []}
    frame = {k: np.asarray(getattr(model.frame, k)).tolist()
             for k in ("omega", "center", "u0") if hasattr(model.frame, k)}
    out["frame"] = {"type": type(model.frame).__name__, **frame}
    pot = model.potential
    out["parameters"] = {
        f.name[4:]: float(np.exp(getattr(pot, f.name)))
        for f in dataclasses.fields(pot) if f.name.startswith("log_")
    }
    if truth is None:
        return out
    x = np.asarray(catalog.x[: cfg.n_points])
    res = evaluate.residuals(model, truth, x)
    mask, label = _region(cfg, truth, res)
    out["truth"] = {"class": type(truth).__name__}
    out["region"] = label
    out["accuracy"] = evaluate.summarise(res, mask)
    if out_dir is not None and cfg.plots:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        p = out_dir / "residuals_radial.png"
        evaluate.plot_radial(res, p, title=f"{type(truth).__name__} truth, tracer positions")
        out["plots"].append(p.name)
        grid = evaluate.midplane_grid(cfg.map_extent, n=48)
        g = evaluate.residuals(model, truth, grid)
        p = out_dir / "midplane.png"
        evaluate.plot_maps({"ΔF/|F| (|·|)": g["force"], "Δρ/ρ": g["density"],
                            "ΔΦ (offset removed)": g["phi"]},
                           (-cfg.map_extent, cfg.map_extent, -cfg.map_extent, cfg.map_extent),
                           p, title="midplane residuals")
        out["plots"].append(p.name)
    return out


def accuracy_table(evaluation: Mapping[str, Any]) -> str:
    """Markdown table of median / p16 / p84 force, density and Φ errors in the region.

    **Arguments:**

    - `evaluation`: the output of `evaluate_model`.

    **Returns:** the table (empty string when there is no truth).
    """
    acc = evaluation.get("accuracy")
    if not acc:
        return ""
    rows = [("force ΔF/F", "force"), ("density Δρ/ρ", "density"),
            ("potential ΔΦ/spread", "phi")]
    n = acc["force"]["n"]
    lines = [f"Accuracy against the true {evaluation['truth']['class']} potential, "
             f"{evaluation['region']} ({n} tracer positions; absolute relative errors):", "",
             "| quantity | median | p16 | p84 |", "|---|---|---|---|"]
    for label, key in rows:
        s = acc[key]
        lines.append(f"| {label} | {100 * s['median']:.2f}% | {100 * s['p16']:.2f}% | "
                     f"{100 * s['p84']:.2f}% |")
    return "\n".join(lines)


def _plot_losses(summaries: Mapping[str, Mapping], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = [(k, s) for k, s in summaries.items() if s and s.get("curve", {}).get("step")]
    if not items:
        return
    fig, axes = plt.subplots(1, len(items), figsize=(4.5 * len(items), 3.2),
                             constrained_layout=True, squeeze=False)
    for ax, (name, s) in zip(axes[0], items):
        ax.plot(s["curve"]["step"], s["curve"]["train_loss"], lw=1)
        ax.set(xlabel="step", ylabel="training loss", title=name)
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# The run directory


_STAGES = ("data", "df", "scores", "potential", "report")
# sections each stage depends on (cumulatively with the stages before it)
_STAGE_SECTIONS = {
    "data": ("data",),
    "df": ("df",),
    "scores": ("scores",),
    "potential": ("potential", "fit"),
    "report": ("evaluate",),
}
_STAGE_OUTPUTS = {
    "data": ("catalog.npz",),
    "df": ("df.eqx", "df.json"),
    "scores": ("scores.npz",),
    "potential": ("potential.eqx", "potential.json"),
    "report": ("metrics.json", "report.md"),
}


def _fingerprints(cfg: Config) -> dict[str, str]:
    h = hashlib.sha256()
    h.update(json.dumps({"seed": cfg.run.seed, "x64": cfg.run.x64}, sort_keys=True).encode())
    out = {}
    for stage in _STAGES:
        for section in _STAGE_SECTIONS[stage]:
            d = dataclasses.asdict(getattr(cfg, section))
            if section == "data" and cfg.data.source == "file":
                st = os.stat(cfg.data.path)
                d["file"] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
            h.update(json.dumps({section: d}, sort_keys=True).encode())
        out[stage] = h.copy().hexdigest()[:16]
    return out


def _checkpoints_of(stage: str, ckpt_dir: Path) -> list[Path]:
    if stage == "df":
        return sorted(ckpt_dir.glob("df*.ckpt"))
    if stage == "potential":
        return [p for p in [ckpt_dir / "potential.ckpt"] if p.exists()]
    return []


def run(config: Config | str | os.PathLike, run_dir: str | os.PathLike, *,
        progress: bool | None = None, log: Callable[[str], None] | None = print,
        stop_after: str | None = None) -> dict[str, Any]:
    """Run the pipeline (catalogue → DF → scores → potential → report) in a directory.

    Each stage writes its outputs into `run_dir` and records a fingerprint of the settings
    it depends on in `state.json`. On a rerun a stage is skipped when it finished with the
    same fingerprint and its outputs are present; a stage that was interrupted resumes from
    its checkpoint; a stage whose settings changed (or that follows a stage that reran) is
    redone from scratch. Every event is appended to `run.log`.

    **Arguments:**

    - `config`: a `Config` or the path of a TOML file.
    - `run_dir`: the run directory (created if missing).
    - `progress`: show progress bars (default: `[run] progress`).
    - `log`: called with one line per stage event (`None`: silent; `run.log` is always
      written).
    - `stop_after`: run the stages up to and including this one (`"data"`, `"df"`,
      `"scores"`, `"potential"`); default all.

    **Returns:** the metrics dictionary (also in `metrics.json`; only the stages run so far
    when `stop_after` is given).
    """
    if not isinstance(config, Config):
        config = load_config(config)
    if stop_after is not None and stop_after not in _STAGES:
        raise ValueError(f"stop_after must be one of {_STAGES}; got {stop_after!r}")
    cfg = config
    progress = cfg.run.progress if progress is None else progress
    run_dir = Path(run_dir)
    ckpt_dir = run_dir / "checkpoints"
    plot_dir = run_dir / "plots"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    state_path = run_dir / "state.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    (run_dir / "config.toml").write_text(_dumps_toml(cfg.to_dict()))
    fps = _fingerprints(cfg)
    log_file = run_dir / "run.log"

    def note(msg: str) -> None:
        with open(log_file, "a") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}\n")
        if log is not None:
            log(msg)

    loaded: dict[str, Any] = {}

    def get(stage: str):
        if stage not in loaded:
            if stage == "data":
                from .catalog import PhaseSpaceCatalog

                loaded[stage] = PhaseSpaceCatalog.load(run_dir / "catalog.npz")
            elif stage == "scores":
                from .scores import ScoreSample

                loaded[stage] = ScoreSample.load(run_dir / "scores.npz")
            else:
                model, desc = load_model(run_dir / f"{stage}.eqx")
                loaded[stage] = model
        return loaded[stage]

    def desc_of(stage: str) -> dict:
        return json.loads((run_dir / f"{stage}.json").read_text())

    upstream_reran = False
    t_run = time.perf_counter()
    with _x64_context(cfg.run.x64):
        for stage in _STAGES:
            rec = state.get(stage, {})
            outputs = [run_dir / o for o in _STAGE_OUTPUTS[stage]]
            same = rec.get("fingerprint") == fps[stage] and not upstream_reran
            if same and rec.get("done") and all(p.exists() for p in outputs):
                note(f"{stage}: skipped (done, outputs present)")
            else:
                if not same:
                    for p in outputs + _checkpoints_of(stage, ckpt_dir):
                        p.unlink(missing_ok=True)
                    if stage == "report" and plot_dir.exists():
                        shutil.rmtree(plot_dir)
                resuming = same and bool(_checkpoints_of(stage, ckpt_dir))
                state[stage] = {"fingerprint": fps[stage], "done": False}
                _write_json(state_path, state)
                note(f"{stage}: {'resuming from checkpoint' if resuming else 'running'}")
                t0 = time.perf_counter()
                _run_stage(stage, cfg, run_dir, get, desc_of, loaded, progress, fps)
                dt = time.perf_counter() - t0
                state[stage] = {"fingerprint": fps[stage], "done": True, "seconds": dt}
                _write_json(state_path, state)
                note(f"{stage}: done in {dt:.1f} s")
                upstream_reran = True
            if stage == stop_after:
                break
    note(f"run finished in {time.perf_counter() - t_run:.1f} s")
    metrics_path = run_dir / "metrics.json"
    if metrics_path.exists() and stop_after in (None, "report"):
        return json.loads(metrics_path.read_text())
    return {s: state.get(s) for s in _STAGES}


def _run_stage(stage, cfg: Config, run_dir: Path, get, desc_of, loaded, progress, fps):
    seed = cfg.run.seed
    ckpt_dir = run_dir / "checkpoints"
    if stage == "data":
        cat = make_catalog(cfg.data, _stage_key(seed, "data"))
        cat.save(run_dir / "catalog.npz")
        loaded["data"] = cat
    elif stage == "df":
        cat = get("data")
        df, summary = train_df(cfg.df, cat, _stage_key(seed, "df"), checkpoint_dir=ckpt_dir,
                               progress=progress, r_max=cfg.data.r_max)
        save_model(run_dir / "df.eqx", df, {
            "kind": "df", "config": _section_dict("df", cfg.df), "r_max": cfg.data.r_max,
            "x64": cfg.run.x64, "fingerprint": fps["df"], "training": summary})
        loaded["df"] = df
    elif stage == "scores":
        scores = draw_scores(cfg.scores, get("df"), _stage_key(seed, "scores"),
                             progress=progress)
        scores.save(run_dir / "scores.npz", meta={"fingerprint": fps["scores"]})
        loaded["scores"] = scores
    elif stage == "potential":
        model, summary = train_potential(
            cfg.potential, cfg.fit, get("scores"), _stage_key(seed, "potential"),
            checkpoint_path=ckpt_dir / "potential.ckpt", progress=progress)
        save_model(run_dir / "potential.eqx", model, {
            "kind": "potential", "config": _section_dict("potential", cfg.potential),
            "fit": _section_dict("fit", cfg.fit), "x64": cfg.run.x64,
            "fingerprint": fps["potential"], "training": summary})
        loaded["potential"] = model
    elif stage == "report":
        _report(cfg, run_dir, get, desc_of)


def _report(cfg: Config, run_dir: Path, get, desc_of) -> None:
    cat = get("data")
    model = get("potential")
    plot_dir = run_dir / "plots"
    ev = evaluate_model(cfg.evaluate, model, cat, out_dir=plot_dir)
    df_train = desc_of("df").get("training", {})
    pot_train = desc_of("potential").get("training", {})
    if cfg.evaluate.plots:
        plot_dir.mkdir(parents=True, exist_ok=True)
        curves = {"potential fit": pot_train}
        for i, m in enumerate(df_train.get("members", [])):
            curves[f"DF fit {i}" if len(df_train["members"]) > 1 else "DF fit"] = m
        _plot_losses(curves, plot_dir / "training.png")
        if (plot_dir / "training.png").exists():
            ev["plots"].append("training.png")

    def strip(s):
        return {k: v for k, v in s.items() if k != "curve"}

    metrics = {
        "config": cfg.to_dict(),
        "catalog": {"n": len(cat), "generator": cat.meta.get("generator")},
        "df_training": [strip(m) for m in df_train.get("members", [])],
        "potential_training": strip(pot_train),
        **ev,
    }
    _write_json(run_dir / "metrics.json", metrics)
    table = accuracy_table(ev)
    lines = ["# deeppot run report", "",
             f"Catalogue: {len(cat)} stars ({cat.meta.get('generator', 'from file')}). "
             f"DF: {cfg.df.kind}. Potential: {cfg.potential.model}, frame: "
             f"{ev['frame']['type']}.", ""]
    lines += [table if table else "No truth potential is known for this catalogue, so there "
              "is no accuracy table.", ""]
    if ev["parameters"]:
        lines += ["Fitted parameters: " + ", ".join(f"{k} = {v:.4g}"
                                                    for k, v in ev["parameters"].items()), ""]
    if "omega" in ev["frame"]:
        lines += [f"Frame Ω = {ev['frame']['omega']}", ""]
    lines += ["## Training", ""]
    for i, m in enumerate(metrics["df_training"]):
        lines.append(f"- DF member {i}: {m['steps']} steps, final loss "
                     f"{m['final_train_loss']:.4f}, {m['stop_reason']}")
    p = metrics["potential_training"]
    if p.get("steps"):
        lines.append(f"- potential: {p['steps']} steps, final loss {p['final_train_loss']:.4g}, "
                     f"{p['stop_reason']}")
    lines += ["", "## Plots", ""] + [f"![{n}](plots/{n})" for n in ev["plots"]]
    lines += ["", "## Config", "", "```toml", _dumps_toml(cfg.to_dict()).rstrip(), "```", ""]
    tmp = run_dir / "report.md.tmp"
    tmp.write_text("\n".join(lines))
    os.replace(tmp, run_dir / "report.md")
