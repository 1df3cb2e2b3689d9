"""The run configuration: one validated, frozen dataclass per TOML table.

`load_config` (a file) and `parse_config` (a dictionary) validate the whole configuration
before any work starts and report every problem at once, each naming its section, key and
value. Choices that name models (`[data] source`, `[df] kind`, `[potential] model`) come
from `deeppot.registry`, so families added by plugins are accepted. Defaults that are also
defaults of the Python API (training settings, network sizes) are read from that API's
signatures, so there is one place that defines each.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import os
import tomllib
from collections.abc import Callable, Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from .. import registry
from .._errors import ConfigError
from ..flows import FFJORD
from ..train import LR_SCHEDULES, fit_df, fit_potential

__all__ = [
    "ACTIVATIONS",
    "Config",
    "ConfigError",
    "DataConfig",
    "DFConfig",
    "EvaluateConfig",
    "FitConfig",
    "PotentialConfig",
    "RunConfig",
    "ScoresConfig",
    "SECTIONS",
    "apply_overrides",
    "default_config_path",
    "dumps_toml",
    "learned_model",
    "load_config",
    "parse_config",
    "reference_markdown",
    "section_dict",
]

ACTIVATIONS: dict[str, Callable] = {"tanh": jnp.tanh, "silu": jax.nn.silu}


def _api_default(fn: Callable, name: str):
    """The default of parameter `name` of `fn` (the API's recommended value)."""
    value = inspect.signature(fn).parameters[name].default
    if value is inspect.Parameter.empty:
        raise TypeError(f"{fn.__qualname__} has no default for {name!r}")
    return value


def _activation_name(fn: Callable) -> str:
    return next(name for name, f in ACTIVATIONS.items() if f is fn)


# ---------------------------------------------------------------------------------------------
# Schema: each section is a frozen dataclass; `_opt` records a field's kind and its limits.


@dataclasses.dataclass(frozen=True)
class _Only:
    """A field that applies only to some values of its section's selector."""

    test: Callable[[Any], bool]
    text: str


def _opt(default, kind: str, doc: str, *, choices=None, lo=None, hi=None, lo_open=False,
         only: tuple[str, ...] | _Only | None = None):
    """A config field: `kind` in int|float|str|bool|vec3|table|path.

    `choices` is a tuple or a function returning one (names from a registry); `only` is a
    tuple of selector values, or an `_Only` predicate, for fields of one kind.
    """
    if isinstance(only, tuple):
        values = only
        only = _Only(lambda v: v in values, " or ".join(map(repr, values)))
    meta = dict(kind=kind, doc=doc, choices=choices, lo=lo, hi=hi, lo_open=lo_open, only=only)
    if isinstance(default, (list, dict, tuple)):
        return dataclasses.field(default_factory=lambda: _copy(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _copy(value):
    return json.loads(json.dumps(value))


def _choices(meta) -> tuple[str, ...] | None:
    c = meta["choices"]
    return tuple(c()) if callable(c) else c


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """`[run]`: settings of the whole run."""

    seed: int = _opt(0, "int", "random seed; every stage derives its key from it", lo=0)
    x64: bool = _opt(False, "bool", "run in float64 (slower; float32 is enough for the demo)")
    progress: bool = _opt(True, "bool", "show progress bars")
    devices: int = _opt(0, "int", "devices each batch is sharded over (0: every device JAX "
                        "sees; 1: no sharding)", lo=0)
    units: str = _opt("dimensionless", "str", "unit system of every number of the run: "
                      "dimensionless (G = 1) or galactic (kpc, km/s, M☉, Myr)",
                      choices=("dimensionless", "galactic"))


_MOCKS = ("plummer", "disk")


_FILES = ("file", "survey")  # sources read from a file: a catalogue, or a survey table
SURVEY_SUFFIXES = (".fits", ".fit", ".vot", ".xml", ".csv", ".ecsv", ".h5", ".hdf5")


def _sources() -> tuple[str, ...]:
    return (*_FILES, *registry.sources)


def _other_source(source) -> bool:
    return source not in (*_FILES, *_MOCKS)


def _mock(source) -> bool:
    return source not in _FILES


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """`[data]`: the catalogue: a mock (`plummer`, `disk`, or a registered source) or a file."""

    source: str = _opt("plummer", "str", "a registered mock (plummer, disk, …), file (a "
                       "catalogue) or survey (a table of Gaia-like observables)",
                       choices=_sources)
    n: int = _opt(65536, "int", "number of mock stars", lo=2,
                  only=_Only(_mock, "a mock"))
    path: str = _opt("", "path", "catalogue file (.npz, .h5, .csv) for source = file; table "
                     "(FITS, VOTable, CSV/ECSV, HDF5) with Gaia's column names for survey",
                     only=_FILES)
    params: dict = _opt({}, "table", "parameters of a registered source's generator; for "
                        "survey, of deeppot.survey.from_observables (min_parallax_over_error, "
                        "cuts, weight_column, drop_invalid, sun = {distance, z, velocity, …})",
                        only=_Only(lambda s: s not in ("file", *_MOCKS),
                                   "a source other than plummer, disk, file"))
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
                         only=_Only(_mock, "a mock"))
    observer: list = _opt([1.0, 0.0, 0.0], "vec3", "observer position",
                          only=_Only(_mock, "a mock"))
    select_radius: float = _opt(0.0, "float", "keep stars within this radius of "
                                "select_center (0: no selection)", lo=0,
                                only=_Only(_mock, "a mock"))
    select_center: list = _opt([1.0, 0.0, 0.0], "vec3", "selection sphere centre",
                               only=_Only(_mock, "a mock"))


_SCHEDULE_DOC = "learning-rate schedule: plateau halves on plateaus, cosine decays to 1% of peak"
_FLOWS = ("spline", "ffjord")


def _df_kinds() -> tuple[str, ...]:
    return ("exact", *registry.distribution_functions)


_TRAINED = _Only(lambda k: k != "exact", "a trained DF (not exact)")
_OTHER_DF = _Only(lambda k: k not in ("exact", *_FLOWS), "a DF other than spline, ffjord, exact")


@dataclasses.dataclass(frozen=True)
class DFConfig:
    """`[df]`: the distribution-function model and its training."""

    kind: str = _opt("ffjord", "str", "ffjord | spline | exact (the catalogue's own analytic "
                     "DF) | a registered DF", choices=_df_kinds)
    ensemble: int = _opt(1, "int", "members averaged (log-prob mean)", lo=1, only=_TRAINED)
    objective: str = _opt("", "str", "training objective ('' = the model's default)",
                          only=_TRAINED)
    steps: int = _opt(_api_default(fit_df, "max_steps"), "int", "training steps", lo=0,
                      only=_TRAINED)
    batch_size: int = _opt(_api_default(fit_df, "batch_size"), "int", "batch size", lo=1,
                           only=_TRAINED)
    learning_rate: float = _opt(_api_default(fit_df, "learning_rate"), "float",
                                "peak learning rate", lo=0, lo_open=True, only=_TRAINED)
    warmup_steps: int = _opt(_api_default(fit_df, "warmup_steps"), "int",
                             "linear warm-up steps", lo=0, only=_TRAINED)
    schedule: str = _opt(_api_default(fit_df, "lr_schedule"), "str", _SCHEDULE_DOC,
                         choices=LR_SCHEDULES, only=_TRAINED)
    patience: int = _opt(_api_default(fit_df, "patience"), "int",
                         "steps without improvement before halving the rate (plateau)",
                         lo=1, only=_TRAINED)
    validate_every: int = _opt(_api_default(fit_df, "validate_every"), "int",
                               "steps between validation batches", lo=1, only=_TRAINED)
    ema_decay: float = _opt(_api_default(fit_df, "ema_decay") or 0.0, "float",
                            "EMA of the weights (0: off)", lo=0, hi=0.99999, only=_TRAINED)
    checkpoint_every: int = _opt(500, "int", "steps between checkpoints", lo=1, only=_TRAINED)
    symmetry: str = _opt("none", "str", "model the DF in the symmetry's reduced coordinates: "
                         "spherical (r, v_r, v_t) or axisymmetric (R, z, v_R, v_z, v_φ), "
                         "exact in Cartesian phase space (deeppot.flows.SphericalDF, "
                         "AxisymmetricDF)", choices=("none", "spherical", "axisymmetric"),
                         only=_TRAINED)
    tangential: str = _opt("vector", "str", "with symmetry = spherical: the tangential "
                           "velocity as a 2-D vector (a 4-D flow exactly invariant under its "
                           "rotations; no 1/v_t in the scores of nearly radial orbits) or as "
                           "its magnitude v_t (a 3-D flow on ln v_t)",
                           choices=("vector", "speed"), only=("ffjord",))
    scale_velocities: bool = _opt(True, "bool", "with symmetry = spherical: divide the "
                                  "velocities by smooth radial dispersion profiles fitted to "
                                  "the data (deeppot.flows.VelocityProfile), so they have unit "
                                  "scale at every radius", only=_TRAINED)
    reflect: bool = _opt(False, "bool", "with symmetry = spherical or axisymmetric: average "
                         "the DF over the velocity reflection every stationary DF with that "
                         "symmetry has, v_r → −v_r or (v_R, v_z) → −(v_R, v_z) "
                         "(deeppot.flows.Reflected): the part of the flow's error that is odd "
                         "under it goes, which lowers the score errors but cannot bias a "
                         "potential with the same symmetry to first order; scores cost twice "
                         "as much", only=_TRAINED)
    mirror_z: bool = _opt(False, "bool", "assert the system is symmetric about the plane "
                          "z = 0 (a disk): average the DF over (z, v_z) → −(z, v_z) "
                          "(deeppot.flows.Reflected); doubles the score cost",
                          only=_TRAINED)
    augment: str = _opt("none", "str", "train on batches transformed by random elements of "
                        "a symmetry group (deeppot.flows.Augmented)",
                        choices=("none", "spherical", "axisymmetric", "mirror_z",
                                 "axisymmetric_mirror_z"), only=_TRAINED)
    params: dict = _opt({}, "table", "constructor arguments of a registered DF",
                        only=_OTHER_DF)
    flow_layers: int = _opt(4, "int", "spline layers", lo=1, only=("spline",))
    knots: int = _opt(8, "int", "spline knots", lo=2, only=("spline",))
    interval: float = _opt(5.0, "float", "spline half-width (standard deviations)", lo=0,
                           lo_open=True, only=("spline",))
    spline_kind: str = _opt("coupling", "str", "coupling | autoregressive",
                            choices=("coupling", "autoregressive"), only=("spline",))
    nn_width: int = _opt(64, "int", "conditioner width", lo=1, only=("spline",))
    nn_depth: int = _opt(2, "int", "conditioner depth", lo=0, only=("spline",))
    n_blocks: int = _opt(_api_default(FFJORD, "n_blocks"), "int", "FFJORD blocks", lo=1,
                         only=("ffjord",))
    width: int = _opt(_api_default(FFJORD, "width"), "int", "FFJORD vector-field width", lo=1,
                      only=("ffjord",))
    depth: int = _opt(_api_default(FFJORD, "depth"), "int", "FFJORD vector-field depth", lo=1,
                      only=("ffjord",))
    activation: str = _opt(_activation_name(_api_default(FFJORD, "activation")), "str",
                           "FFJORD vector-field activation", choices=tuple(ACTIVATIONS),
                           only=("ffjord",))
    ode_steps: int = _opt(4, "int", "fixed Tsit5 steps per block for the scores (0: "
                          "adaptive Dopri5)", lo=0, only=("ffjord",))


@dataclasses.dataclass(frozen=True)
class ScoresConfig:
    """`[scores]`: the sample on which the potential is fitted."""

    n: int = _opt(65536, "int", "points drawn from the DF", lo=1)
    chunk_size: int = _opt(8192, "int", "points drawn and differentiated at a time", lo=1)
    selection: dict = _opt({}, "table", "the catalogue's selection function S(x), whose "
                           "∂ln S/∂x is subtracted from the scores: {type = \"distance\", "
                           "observer, d_half, sigma_mag} or {type = \"grid\", lower, upper, "
                           "values}, in [run] units ({}: none)")


def learned_model(model: str) -> bool:
    """Whether a `[potential] model` name is a learned family (its factory takes a key)."""
    if model not in registry.potentials:
        return False
    return "key" in inspect.signature(registry.potentials[model]).parameters


_LEARNED = _Only(learned_model, "a learned model (neural, spherical, axisymmetric, …)")


@dataclasses.dataclass(frozen=True)
class PotentialConfig:
    """`[potential]`: the potential model and its frame."""

    model: str = _opt("neural", "str", "a registered family: neural | spherical | "
                      "axisymmetric | an analytic family (plummer, miyamoto_nagai, …)",
                      choices=lambda: tuple(registry.potentials))
    width: int = _opt(128, "int", "hidden width", lo=1, only=_LEARNED)
    depth: int = _opt(3, "int", "hidden layers", lo=1, only=_LEARNED)
    input_scale: float = _opt(1.0, "float", "length dividing the positions", lo=0,
                              lo_open=True, only=_LEARNED)
    params: dict = _opt({}, "table", "initial parameters of an analytic family, or extra "
                        "arguments of a learned one")
    frame: str = _opt("inertial", "str", "inertial | moving | rotating",
                      choices=("inertial", "moving", "rotating"))
    omega: list = _opt([0.0, 0.0, 0.0], "vec3", "initial Ω of a rotating frame")
    center: list = _opt([0.0, 0.0, 0.0], "vec3", "rotation centre")
    u0: list = _opt([0.0, 0.0, 0.0], "vec3", "frame velocity")
    train_frame: bool = _opt(True, "bool", "fit the frame's parameters too")
    train_frame_params: list = _opt([], "names", "the frame's parameters fitted when "
                                    "train_frame = true (e.g. [\"omega\"]; []: all of them)",
                                    choices=("omega", "center", "u0"))
    fixed: list = _opt([], "names", "parameters of an analytic family held at their "
                       "initial values (e.g. [\"m_tot\"])")
    laplacian_method: str = _opt("forward", "str", "forward | hessian | hvp",
                                 choices=("forward", "hessian", "hvp"))


@dataclasses.dataclass(frozen=True)
class FitConfig:
    """`[fit]`: the potential fit (loss and optimiser)."""

    steps: int = _opt(_api_default(fit_potential, "max_steps"), "int", "training steps", lo=0)
    batch_size: int = _opt(_api_default(fit_potential, "batch_size"), "int", "batch size",
                           lo=1)
    learning_rate: float = _opt(_api_default(fit_potential, "learning_rate"), "float",
                                "peak learning rate", lo=0, lo_open=True)
    warmup_steps: int = _opt(_api_default(fit_potential, "warmup_steps"), "int",
                             "linear warm-up steps", lo=0)
    schedule: str = _opt(_api_default(fit_potential, "lr_schedule"), "str", _SCHEDULE_DOC,
                         choices=LR_SCHEDULES)
    patience: int = _opt(_api_default(fit_potential, "patience"), "int",
                         "steps without improvement before halving the rate (plateau)", lo=1)
    validate_every: int = _opt(_api_default(fit_potential, "validate_every"), "int",
                               "steps between validation batches", lo=1)
    checkpoint_every: int = _opt(500, "int", "steps between checkpoints", lo=1)
    alpha: float = _opt(1.0, "float", "Stationarity α", lo=0, lo_open=True)
    beta: float = _opt(1.0, "float", "PositiveDensity β", lo=0, lo_open=True)
    density_weight: float = _opt(1.0, "float", "weight λ of PositiveDensity", lo=0)
    l2: float = _opt(0.0, "float", "L2Weights ℓ2 (0: off)", lo=0)
    form: str = _opt("ln_f", "str", "ln_f | f (the residual Stationarity uses)",
                     choices=("ln_f", "f"))
    log: bool = _opt(True, "bool", "minimise ln(Stationarity + λ PositiveDensity) (Eq. 13)")
    azimuthal_mean: float = _opt(0.0, "float", "weight of AzimuthalMeanPenalty, which keeps "
                                 "the free part of axisymmetric_plus_neural non-axisymmetric "
                                 "(0: off)", lo=0)


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    """`[evaluate]`: accuracy against the truth (when the catalogue records one) and plots."""

    region: str = _opt("auto", "str", "auto | radial | cylinder | density (auto: radial for "
                       "spherical truths, density otherwise)",
                       choices=("auto", "radial", "cylinder", "density"))
    r_min: float = _opt(0.1, "float", "inner radius of the radial region (cylindrical R for "
                        "cylinder)", lo=0)
    r_max: float = _opt(3.0, "float", "outer radius of the radial region (cylindrical R for "
                        "cylinder)", lo=0, lo_open=True)
    z_max: float = _opt(0.3, "float", "cylinder region: largest |z|", lo=0, lo_open=True)
    density_fraction: float = _opt(0.1, "float", "density region: ρ > fraction · ρ_max",
                                   lo=0, hi=1)
    n_points: int = _opt(16384, "int", "tracer positions evaluated", lo=1)
    map_extent: float = _opt(3.0, "float", "half-width of the midplane maps", lo=0,
                             lo_open=True)
    plots: bool = _opt(True, "bool", "write PNG plots")


SECTIONS: dict[str, type] = {
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

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Every section with every applicable key (defaults filled in), as TOML values."""
        return {name: section_dict(name, getattr(self, name)) for name in SECTIONS}


def _applies(section: str, field: dataclasses.Field, chosen) -> bool:
    only = field.metadata["only"]
    return section not in _SELECTOR or only is None or only.test(chosen)


def section_dict(name: str, section) -> dict[str, Any]:
    """The keys of a section that apply to its chosen kind (e.g. no disk keys for Plummer).

    **Arguments:**

    - `name`: the section's name (`"df"`, …).
    - `section`: the section's dataclass.

    **Returns:** `{key: value}` with TOML-ready values.
    """
    selector = _SELECTOR.get(name)
    chosen = getattr(section, selector) if selector else None
    return {f.name: _copy(getattr(section, f.name)) for f in dataclasses.fields(section)
            if _applies(name, f, chosen)}


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
            isinstance(c, int | float) and not isinstance(c, bool) and math.isfinite(c)
            for c in value)
        if not ok:
            return value, f"{where} must be an array of 3 finite numbers, got {value!r}"
        value = [float(c) for c in value]
    elif kind == "names":
        if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            return value, f"{where} must be an array of names, got {value!r}"
    elif kind == "table":
        if not isinstance(value, dict):
            return value, f"{where} must be a table, got {_typename(value)} {value!r}"
        for k, v in value.items():
            if isinstance(v, float) and not math.isfinite(v):
                return value, f"{where}: parameter {k!r} must be finite, got {v!r}"
        value = _copy(value)
    choices = _choices(meta)
    if choices is not None and kind == "names":
        unknown = [v for v in value if v not in choices]
        if unknown:
            return value, (f"{where}: unknown name(s) {', '.join(map(repr, unknown))}; "
                           f"one of {', '.join(map(repr, choices))}")
    elif choices is not None and value not in choices:
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
            if not _applies(name, fields[key], chosen):
                errors.append(f"key {key!r} in [{name}] applies only when {selector} = "
                              f"{fields[key].metadata['only'].text}; this config has "
                              f"{selector} = {chosen!r}")
    return cls(**values)


def _check_params(where: str, factory: Callable, params: Mapping, errors: list[str],
                  exclude=("key", "G")) -> None:
    sig = inspect.signature(factory).parameters
    if any(p.kind == p.VAR_KEYWORD for p in sig.values()):
        return
    names = [p for p in sig if p not in exclude]
    for k in params:
        if k not in names:
            errors.append(f"{where} has no parameter {k!r}; valid: {', '.join(names)}")


def _cross_checks(cfg: Config, errors: list[str]) -> None:
    if cfg.data.source == "file":
        if not cfg.data.path:
            errors.append("key 'path' in [data] is required when source = 'file'")
        elif not os.path.isfile(cfg.data.path):
            errors.append(f"key 'path' in [data]: catalogue file {cfg.data.path!r} not found")
        elif Path(cfg.data.path).suffix.lower() not in (".npz", ".h5", ".hdf5", ".csv"):
            errors.append(f"key 'path' in [data]: {cfg.data.path!r} is not a .npz, .h5/.hdf5 "
                          "or .csv file")
    elif cfg.data.source == "survey":
        if not cfg.data.path:
            errors.append("key 'path' in [data] is required when source = 'survey'")
        elif not os.path.isfile(cfg.data.path):
            errors.append(f"key 'path' in [data]: survey table {cfg.data.path!r} not found")
        elif Path(cfg.data.path).suffix.lower() not in SURVEY_SUFFIXES:
            errors.append(f"key 'path' in [data]: {cfg.data.path!r} is not a table astropy "
                          f"reads here ({', '.join(SURVEY_SUFFIXES)})")
        from .. import survey

        _check_params("key 'params' in [data]: source 'survey'", survey.from_observables,
                      cfg.data.params, errors, exclude=("table", "units", "meta"))
        if cfg.run.units == "dimensionless":
            errors.append("source = 'survey' in [data] needs physical units: set units = "
                          "'galactic' in [run]")
    elif cfg.run.units != "dimensionless" and cfg.data.source in _MOCKS:
        errors.append(f"[data] source {cfg.data.source!r} is a dimensionless mock; it needs "
                      "units = 'dimensionless' in [run]")
    elif _other_source(cfg.data.source):
        _check_params(f"key 'params' in [data]: source {cfg.data.source!r}",
                      registry.sources[cfg.data.source], cfg.data.params, errors,
                      exclude=("key", "n"))
    if cfg.scores.selection:
        from ..selection import selection_from_description

        try:
            selection_from_description({**cfg.scores.selection, "units": cfg.run.units})
        except (KeyError, TypeError, ValueError) as err:
            missing = f"missing key {err}" if isinstance(err, KeyError) else str(err)
            errors.append(f"key 'selection' in [scores]: {missing}")
    if cfg.df.kind == "exact" and (
            cfg.data.source in _FILES or cfg.data.observe or cfg.data.select_radius > 0
            or not getattr(registry.sources[cfg.data.source], "exact_df", False)):
        with_df = [s for s in registry.sources if getattr(registry.sources[s], "exact_df", 0)]
        errors.append(f"kind = 'exact' in [df] (the mock's own analytic DF) needs a [data] "
                      f"source that records one ({', '.join(with_df)}), without observe or "
                      "selection")
    if cfg.df.reflect and cfg.df.symmetry == "none":
        errors.append("reflect = true in [df] averages over the velocity reflection of a "
                      "symmetry; it needs symmetry = 'spherical' or 'axisymmetric' (for the "
                      "mid-plane alone use mirror_z = true)")
    if cfg.df.symmetry != "none" and cfg.df.augment not in ("none", "mirror_z"):
        errors.append(f"augment = {cfg.df.augment!r} in [df] is redundant with symmetry = "
                      f"{cfg.df.symmetry!r} (only 'mirror_z' adds to a reduced DF)")
    if cfg.df.kind != "exact" and cfg.df.objective:
        allowed = registry.distribution_functions[cfg.df.kind].objectives
        if cfg.df.objective not in allowed:
            errors.append(f"key 'objective' in [df] must be one of {allowed} for kind = "
                          f"{cfg.df.kind!r}; got {cfg.df.objective!r}")
    if cfg.df.kind not in ("exact", *_FLOWS):
        _check_params(f"key 'params' in [df]: kind {cfg.df.kind!r}",
                      registry.distribution_functions[cfg.df.kind], cfg.df.params, errors)
    model = cfg.potential.model
    if cfg.potential.fixed:
        free = [p for p in inspect.signature(registry.potentials[model]).parameters
                if p not in ("key", "G")] if not learned_model(model) else []
        for name in cfg.potential.fixed:
            if name not in free:
                errors.append(f"key 'fixed' in [potential]: {model} has no parameter "
                              f"{name!r} to hold fixed; parameters: {', '.join(free) or 'none'}")
    exclude = ("key", "G", "width", "depth", "input_scale") if learned_model(model) \
        else ("key", "G")
    _check_params(f"key 'params' in [potential]: {model}", registry.potentials[model],
                  cfg.potential.params, errors, exclude=exclude)
    if cfg.potential.train_frame_params and cfg.potential.frame != "rotating":
        errors.append("key 'train_frame_params' in [potential] names parameters of a rotating "
                      f"frame; frame = {cfg.potential.frame!r}")
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
        if name not in SECTIONS:
            kind = "section" if isinstance(table, dict) else "top-level key"
            errors.append(f"unknown {kind} [{name}]; valid sections: "
                          + ", ".join(f"[{s}]" for s in SECTIONS))
            continue
        sections[name] = _parse_section(name, SECTIONS[name], table, base, errors)
    cfg = Config(**sections)
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


def _read_toml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """A TOML file's tables, with the tables of its `extends = "base.toml"` merged under it."""
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} not found")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: TOML syntax error: {err}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read the config: {err}") from None
    base = raw.pop("extends", None)
    if base is None:
        return raw
    if not isinstance(base, str):
        raise ConfigError(f"{path}: 'extends' must be a file name, got {base!r}")
    base_path = (path.parent / base).resolve()
    if not base_path.is_file() and (default_config_path(base).is_file()):
        base_path = default_config_path(base)
    if base_path in seen:
        raise ConfigError(f"{path}: 'extends' makes a cycle through {base_path}")
    merged = _read_toml(base_path, (*seen, path.resolve()))
    for name, table in raw.items():
        base_table = merged.get(name)
        selector = _SELECTOR.get(name)
        if isinstance(table, dict) and isinstance(base_table, dict) and not (
                selector in table and table[selector] != base_table.get(selector)):
            merged[name] = {**base_table, **table}
        else:  # a new table, or another kind of model: the base's keys do not carry over
            merged[name] = table
    return merged


def load_config(path: str | os.PathLike, overrides: Iterable[str] | Mapping = ()) -> Config:
    """Read and validate a TOML config file.

    A file may start with `extends = "base.toml"` (a path relative to it, or the name of a
    shipped config such as `"demo"`): its tables are the base's, key by key overridden,
    except that a table choosing another kind of model (`[data] source`, `[df] kind`,
    `[potential] model`) replaces the base's table whole.

    **Arguments:**

    - `path`: the `.toml` file.
    - `overrides`: `"section.key=value"` strings (or a mapping) applied before validation.

    **Returns:** a `Config`.

    **Raises:** `ConfigError` (file missing, TOML syntax, or invalid keys and values).
    """
    path = Path(path)
    return parse_config(apply_overrides(_read_toml(path), overrides), path.parent)


def default_config_path(name: str = "demo") -> Path:
    """Path of a config shipped in `deeppot/configs/` (e.g. `"demo"`, `"disk"`)."""
    return Path(str(resources.files("deeppot") / "configs" / f"{name}.toml"))


def dumps_toml(d: Mapping[str, Mapping[str, Any]]) -> str:
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


def reference_markdown() -> str:
    """The key tables of `docs/pipeline.md`, generated from the schema (a test keeps the
    page equal to this)."""
    out = []
    for name, cls in SECTIONS.items():
        out += [f"### `[{name}]`", "", "| key | default | type / range | applies to | meaning |",
                "|---|---|---|---|---|"]
        selector = _SELECTOR.get(name)
        for f in dataclasses.fields(cls):
            meta = f.metadata
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            kind = {"int": "integer", "float": "number", "str": "string", "bool": "boolean",
                    "vec3": "3 numbers", "table": "table", "path": "path",
                    "names": "array of names"}[meta["kind"]]
            choices = meta["choices"]
            if isinstance(choices, tuple):
                kind = ("array of: " if meta["kind"] == "names" else "") + " \\| ".join(choices)
            elif callable(choices):
                kind = "a registered name"
            limits = []
            if meta["lo"] is not None:
                limits.append(f"{'>' if meta['lo_open'] else '≥'} {meta['lo']}")
            if meta["hi"] is not None:
                limits.append(f"≤ {meta['hi']}")
            kind += (" " + ", ".join(limits)) if limits else ""
            applies = "all" if meta["only"] is None or selector is None else \
                f"{selector} = {meta['only'].text}".replace("|", "\\|")
            out.append(f"| `{f.name}` | `{json.dumps(default)}` | {kind} | {applies} | "
                       f"{meta['doc'].replace('|', chr(92) + '|')} |")
        out.append("")
    return "\n".join(out)
