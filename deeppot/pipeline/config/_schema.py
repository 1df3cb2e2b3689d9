"""The schema: one frozen dataclass per TOML table, each field an `option` with its type,
limits and the kinds it applies to.

The training settings' defaults are the recommended recipes of the Python API
(`deeppot.train.DF_SETTINGS`, `POTENTIAL_SETTINGS`), so there is one place that defines
each. A kind's own parameters are no
fields here: they are its registry entry's (`[data] params`, `[df] params`,
`[potential] params`; see `_kinds`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from ... import registry
from ...replicas import CENTRES
from ...train import DF_SETTINGS, LR_SCHEDULES, OPTIMIZERS, POTENTIAL_SETTINGS
from ._fields import Only, copy_value, option
from ._kinds import generates, learned_model, takes, trainable

__all__ = [
    "POSITION_ROUTES",
    "SECTIONS",
    "SELECTOR",
    "Config",
    "DataConfig",
    "DFConfig",
    "EvaluateConfig",
    "FitConfig",
    "PotentialConfig",
    "RunConfig",
    "ScoresConfig",
    "applies",
    "section_dict",
]


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """`[run]`: settings of the whole run."""

    seed: int = option(0, "int", "random seed; every stage derives its key from it", lo=0)
    x64: bool = option(False, "bool", "run in float64 (slower; float32 is enough for the demo)")
    progress: bool = option(True, "bool", "show progress bars", fingerprint=False)
    devices: int = option(0, "int", "devices each batch is sharded over (0: every device JAX "
                          "sees; 1: no sharding)", lo=0, fingerprint=False)
    units: str = option("dimensionless", "str", "unit system of every number of the run: "
                        "dimensionless (G = 1) or galactic (kpc, km/s, M☉, Myr)",
                        choices=("dimensionless", "galactic"))
    coordinator: str = option("", "str", "multi-host start: host:port of process 0, which "
                              "every process joins before any device is used "
                              "(deeppot.sharding.initialize_distributed); auto: from the "
                              "DEEPPOT_* variables or the cluster (Slurm, Open MPI, "
                              "Kubernetes); '': one process", fingerprint=False)
    num_processes: int = option(1, "int", "processes of a multi-host start (one per host)",
                                lo=1, fingerprint=False)
    process_id: int = option(0, "int", "this process's index in a multi-host start "
                             "(0 … num_processes − 1; e.g. --set run.process_id=1)", lo=0,
                             fingerprint=False)
    replicas: int = option(1, "int", "replicas of the run, each with its own DF seed and "
                           "bootstrap resample of the stars (run_dir/replica_NN/); K > 1 adds "
                           "the median and 68%/95% bands over them to the report, and their "
                           "coverage of the truth on a mock (1: one fit, no bands)", lo=1,
                           fingerprint=False)
    replica_centre: str = option(
        "full", "str", "what a replica set's bands are centred on: full (replica 0 fits every "
        "star once, with its own seed; the bands are its value ± the spread of the other "
        "K − 1 bootstrap replicas about it) or median (every replica a bootstrap resample; "
        "the bands are the replicas' median ± their spread, as sets before this key)",
        choices=CENTRES, fingerprint=False)


def _taking(reg: registry.Registry, name: str) -> Callable[[str], bool]:
    """A test of a selector value: its registry entry takes the parameter `name`."""
    return lambda value: value in reg and takes(reg[value], name)


_GENERATED = Only(generates, "a mock generator (a source taking key and n)")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """`[data]`: the catalogue, from a registered source: a mock generator (`plummer`,
    `disk`, …), a catalogue file (`file`), a survey table (`survey`) or a simulation
    snapshot (`snapshot`)."""

    source: str = option("plummer", "str", "a registered source (see the table of sources "
                         "below): a mock generator, file (a catalogue), survey (a table of "
                         "Gaia-like observables) or snapshot (a Gadget-4 / AREPO / GIZMO HDF5 "
                         "snapshot)", choices=lambda: tuple(registry.sources))
    n: int = option(65536, "int", "number of mock stars", lo=2,
                    only=_GENERATED)
    path: str = option("", "path", "the file the source reads: a catalogue (.npz, .h5, .csv) "
                       "for file; a table (FITS, VOTable, CSV/ECSV, HDF5) with Gaia's column "
                       "names for survey; an HDF5 simulation snapshot for snapshot",
                       only=Only(_taking(registry.sources, "path"),
                                 "a source that reads a file (file, survey, snapshot)"))
    params: dict = option({}, "table", "the source's own parameters: keyword arguments of its "
                          "registered function (see the table of sources below)")
    observe: bool = option(False, "bool", "add the paper's Gaia-like errors", only=_GENERATED)
    observer: list = option([1.0, 0.0, 0.0], "vec3", "observer position", only=_GENERATED)
    select_radius: float = option(0.0, "float", "keep stars within this radius of "
                                  "select_center (0: no selection)", lo=0, only=_GENERATED)
    select_center: list = option([1.0, 0.0, 0.0], "vec3", "selection sphere centre",
                                 only=_GENERATED)


_SCHEDULE_DOC = "learning-rate schedule: plateau halves on plateaus, cosine decays to 1% of peak"
# the optimisers whose step the learning rate scales (L-BFGS's line search needs full
# batches, which the pipeline's sections do not give)
_OPTIMIZERS = tuple(name for name in OPTIMIZERS if name != "lbfgs")
_OPTIMIZER_DOC = "optimiser: radam (the paper's) or adam"
_TRAINED = Only(trainable, "a trained DF (one with training objectives: ffjord, spline, …)")


@dataclasses.dataclass(frozen=True)
class DFConfig:
    """`[df]`: the distribution-function model and its training."""

    kind: str = option("ffjord", "str", "a registered DF (see the table of DF kinds below): "
                       "ffjord | spline | exact (the catalogue's own analytic DF) | …",
                       choices=lambda: tuple(registry.distribution_functions))
    ensemble: int = option(1, "int", "members averaged (log-prob mean)", lo=1, only=_TRAINED)
    objective: str = option("", "str", "training objective: a registered objective the DF "
                            "supports (see the table of objectives below; '' = the DF's "
                            "default)", only=_TRAINED)
    objective_params: dict = option({}, "table", "the objective's settings: keyword arguments "
                                    "of its registered class (see the table of objectives "
                                    "below)", only=_TRAINED)
    steps: int = option(DF_SETTINGS.max_steps, "int", "training steps", lo=0,
                        only=_TRAINED)
    batch_size: int = option(DF_SETTINGS.batch_size, "int", "batch size", lo=1,
                             only=_TRAINED)
    learning_rate: float = option(DF_SETTINGS.learning_rate, "float",
                                  "peak learning rate", lo=0, lo_open=True, only=_TRAINED)
    warmup_steps: int = option(DF_SETTINGS.warmup_steps, "int",
                               "linear warm-up steps", lo=0, only=_TRAINED)
    schedule: str = option(DF_SETTINGS.lr_schedule, "str", _SCHEDULE_DOC,
                           choices=tuple(LR_SCHEDULES), only=_TRAINED)
    patience: int = option(DF_SETTINGS.patience, "int",
                           "steps without improvement before halving the rate (plateau)",
                           lo=1, only=_TRAINED)
    validate_every: int = option(DF_SETTINGS.validate_every, "int",
                                 "steps between validation batches", lo=1, only=_TRAINED)
    ema_decay: float = option(DF_SETTINGS.ema_decay or 0.0, "float",
                              "EMA of the weights (0: off)", lo=0, hi=0.99999, only=_TRAINED)
    optimizer: str = option(DF_SETTINGS.optimizer, "str", _OPTIMIZER_DOC,
                            choices=_OPTIMIZERS, only=_TRAINED, fingerprint="unless_default")
    checkpoint_every: int = option(DF_SETTINGS.checkpoint_every, "int",
                                   "steps between checkpoints", lo=1, only=_TRAINED)
    symmetry: str = option("none", "str", "model the DF in the symmetry's reduced coordinates: "
                           "spherical (r, v_r, v_t) or axisymmetric (R, z, v_R, v_z, v_φ), "
                           "exact in Cartesian phase space (deeppot.flows.SphericalDF, "
                           "AxisymmetricDF); for kind = conditional, its velocity factor "
                           "p(v|x) (its density factor follows [df.params] "
                           "density_symmetry)", choices=("none", "spherical", "axisymmetric"),
                           only=_TRAINED)
    tangential: str = option("vector", "str", "with symmetry = spherical: the tangential "
                             "velocity as a 2-D vector (a 4-D flow exactly invariant under its "
                             "rotations; no 1/v_t in the scores of nearly radial orbits) or as "
                             "its magnitude v_t (a 3-D flow on ln v_t)",
                             choices=("vector", "speed"),
                             only=Only(_taking(registry.distribution_functions, "pair_invariant"),
                                       "a DF with a pair_invariant parameter (ffjord)"))
    scale_velocities: bool = option(True, "bool", "with symmetry = spherical: divide the "
                                    "velocities by smooth radial dispersion profiles fitted to "
                                    "the data (deeppot.flows.VelocityProfile), so they have unit "
                                    "scale at every radius (for kind = conditional, those its "
                                    "velocity factor p(v|x) sees)", only=_TRAINED)
    reflect: bool = option(False, "bool", "with symmetry = spherical or axisymmetric: average "
                           "the DF over the velocity reflection every stationary DF with that "
                           "symmetry has, v_r → −v_r or (v_R, v_z) → −(v_R, v_z) "
                           "(deeppot.flows.Reflected): the part of the flow's error that is odd "
                           "under it goes, which lowers the score errors but cannot bias a "
                           "potential with the same symmetry to first order; scores cost twice "
                           "as much", only=_TRAINED)
    mirror_z: bool = option(False, "bool", "assert the system is symmetric about the plane "
                            "z = 0 (a disk): average the DF over (z, v_z) → −(z, v_z) "
                            "(deeppot.flows.Reflected); doubles the score cost",
                            only=_TRAINED)
    augment: str = option("none", "str", "train on batches transformed by random elements of "
                          "a symmetry group (deeppot.flows.Augmented)",
                          choices=("none", "spherical", "axisymmetric", "mirror_z",
                                   "axisymmetric_mirror_z"), only=_TRAINED)
    params: dict = option({}, "table", "the DF's own parameters: keyword arguments of its "
                          "registered class (see the table of DF kinds below)")


# the values of `[scores] position`: how the position scores are made
POSITION_ROUTES = ("density", "selection", "free")


@dataclasses.dataclass(frozen=True)
class ScoresConfig:
    """`[scores]`: the sample on which the potential is fitted."""

    n: int = option(65536, "int", "points drawn from the DF (with position = free: catalogue "
                    "positions, a fixed random subset of a larger catalogue)", lo=1)
    chunk_size: int = option(8192, "int", "points drawn and differentiated at a time", lo=1)
    path: str = option("", "path", "an HDF5 file (.h5, .hdf5) the scores stream into chunk by "
                       "chunk and the fit reads a batch at a time (deeppot.ScoreFile), for "
                       "samples larger than memory; '': in memory", fingerprint=False)
    position: str = option("density", "str", "where the position scores come from: density "
                           "(the DF's own ∂ln f/∂x at points drawn from it: a catalogue "
                           "without selection), selection (the same, less ∂ln S/∂x of the "
                           "known [scores] selection: a selected catalogue, any DF) or free "
                           "(a conditional DF's p(v|x) alone, velocities_per_star velocities "
                           "drawn at each of n catalogue positions, ∇ln ν profiled out of "
                           "the fit by ProfiledStationarity: no selection function needed)",
                           choices=POSITION_ROUTES,
                           # density and selection follow from [scores] selection, which
                           # the fingerprint holds (older configs name no route)
                           fingerprint=lambda route: route == "free")
    velocities_per_star: int = option(8, "int", "with position = free: velocities drawn from "
                                      "p(v|x) at each catalogue position (at least 4: three "
                                      "go to the profiled ∇ln ν)", lo=4,
                                      fingerprint="unless_default")
    selection: dict = option({}, "table", "with position = selection: the catalogue's "
                             "selection function S(x), whose ∂ln S/∂x is subtracted from the "
                             "scores: {type = \"distance\", observer, d_half, sigma_mag} or "
                             "{type = \"grid\", lower, upper, values}, in [run] units")


_LEARNED = Only(learned_model, "a learned model (neural, spherical, axisymmetric, …)")


@dataclasses.dataclass(frozen=True)
class PotentialConfig:
    """`[potential]`: the potential model and its frame."""

    model: str = option("neural", "str", "a registered family: neural | spherical | "
                        "axisymmetric | an analytic family (plummer, miyamoto_nagai, …)",
                        choices=lambda: tuple(registry.potentials))
    width: int = option(128, "int", "hidden width", lo=1, only=_LEARNED)
    depth: int = option(3, "int", "hidden layers", lo=1, only=_LEARNED)
    input_scale: float = option(1.0, "float", "length dividing the positions", lo=0,
                                lo_open=True, only=_LEARNED)
    params: dict = option({}, "table", "the family's own parameters: initial parameters of "
                          "an analytic family, or extra arguments of a learned one (see the "
                          "table of potential families below)")
    frame: str = option("inertial", "str", "inertial | moving | rotating",
                        choices=("inertial", "moving", "rotating"))
    omega: list = option([0.0, 0.0, 0.0], "vec3", "initial Ω of a rotating frame")
    center: list = option([0.0, 0.0, 0.0], "vec3", "rotation centre")
    u0: list = option([0.0, 0.0, 0.0], "vec3", "frame velocity")
    train_frame: bool = option(True, "bool", "fit the frame's parameters too")
    train_frame_params: list = option([], "names", "the frame's parameters fitted when "
                                      "train_frame = true (e.g. [\"omega\"]; []: all of them)",
                                      choices=("omega", "center", "u0"))
    fixed: list = option([], "names", "parameters of an analytic family held at their "
                         "initial values (e.g. [\"m_tot\"])")
    laplacian_method: str = option("forward", "str", "forward | hessian | hvp",
                                   choices=("forward", "hessian", "hvp"))


@dataclasses.dataclass(frozen=True)
class FitConfig:
    """`[fit]`: the potential fit (loss and optimiser)."""

    steps: int = option(POTENTIAL_SETTINGS.max_steps, "int", "training steps", lo=0)
    batch_size: int = option(POTENTIAL_SETTINGS.batch_size, "int", "batch size",
                             lo=1)
    learning_rate: float = option(POTENTIAL_SETTINGS.learning_rate, "float",
                                  "peak learning rate", lo=0, lo_open=True)
    warmup_steps: int = option(POTENTIAL_SETTINGS.warmup_steps, "int",
                               "linear warm-up steps", lo=0)
    schedule: str = option(POTENTIAL_SETTINGS.lr_schedule, "str", _SCHEDULE_DOC,
                           choices=tuple(LR_SCHEDULES))
    patience: int = option(POTENTIAL_SETTINGS.patience, "int",
                           "steps without improvement before halving the rate (plateau)", lo=1)
    validate_every: int = option(POTENTIAL_SETTINGS.validate_every, "int",
                                 "steps between validation batches", lo=1)
    optimizer: str = option(POTENTIAL_SETTINGS.optimizer, "str", _OPTIMIZER_DOC,
                            choices=_OPTIMIZERS, fingerprint="unless_default")
    checkpoint_every: int = option(POTENTIAL_SETTINGS.checkpoint_every, "int",
                                   "steps between checkpoints", lo=1)
    alpha: float = option(1.0, "float", "Stationarity α", lo=0, lo_open=True)
    beta: float = option(1.0, "float", "PositiveDensity β", lo=0, lo_open=True)
    density_weight: float = option(1.0, "float", "weight λ of PositiveDensity", lo=0)
    l2: float = option(0.0, "float", "L2Weights ℓ2 (0: off)", lo=0)
    form: str = option("ln_f", "str", "ln_f | f (the residual Stationarity uses)",
                       choices=("ln_f", "f"))
    log: bool = option(True, "bool", "minimise ln(Stationarity + λ PositiveDensity) (Eq. 13)")
    azimuthal_mean: float = option(0.0, "float", "weight of AzimuthalMeanPenalty, which keeps "
                                   "the free part of axisymmetric_plus_neural non-axisymmetric "
                                   "(0: off)", lo=0)


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    """`[evaluate]`: accuracy against the truth (when the catalogue records one) and plots."""

    region: str = option("auto", "str", "auto | radial | cylinder | density (auto: radial for "
                         "spherical truths, density otherwise)",
                         choices=("auto", "radial", "cylinder", "density"))
    r_min: float = option(0.1, "float", "inner radius of the radial region (cylindrical R for "
                          "cylinder)", lo=0)
    r_max: float = option(3.0, "float", "outer radius of the radial region (cylindrical R for "
                          "cylinder)", lo=0, lo_open=True)
    z_max: float = option(0.3, "float", "cylinder region: largest |z|", lo=0, lo_open=True)
    density_fraction: float = option(0.1, "float", "density region: ρ > fraction · ρ_max",
                                     lo=0, hi=1)
    n_points: int = option(16384, "int", "tracer positions evaluated", lo=1)
    map_extent: float = option(3.0, "float", "half-width of the midplane maps", lo=0,
                               lo_open=True)
    plots: bool = option(True, "bool", "write PNG plots")
    band: str = option("t", "str", "replica bands ([run] replicas > 1): t (the centre ± "
                       "Student-t half-widths from the replicas' spread) or percentile (from "
                       "their empirical 16–84% and 2.5–97.5% percentiles: those, or about a "
                       "full-data centre the basic bootstrap interval; [run] replica_centre)",
                       choices=("t", "percentile"))
    band_inflation: float | dict = option(
        1.0, "levels", "factor on the replica bands' distances from their centre: one number for "
        "both bands, or one per band, {68 = f68, 95 = f95} — the calibration a replica set's "
        "report on a mock prints (learned there, to apply to another system)", lo=0,
        lo_open=True)


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
SELECTOR = {"data": "source", "df": "kind", "potential": "model"}


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


def applies(section: str, field: dataclasses.Field, chosen) -> bool:
    """Whether a field of a section applies to the section's chosen kind."""
    only = field.metadata["only"]
    return section not in SELECTOR or only is None or only.test(chosen)


def section_dict(name: str, section) -> dict[str, Any]:
    """The keys of a section that apply to its chosen kind (e.g. no training keys for an exact DF).

    **Arguments:**

    - `name`: the section's name (`"df"`, …).
    - `section`: the section's dataclass.

    **Returns:** `{key: value}` with TOML-ready values.
    """
    selector = SELECTOR.get(name)
    chosen = getattr(section, selector) if selector else None
    return {f.name: copy_value(getattr(section, f.name)) for f in dataclasses.fields(section)
            if applies(name, f, chosen)}
