"""The end-to-end pipeline: catalogue → DF → scores → potential → report.

A run is described by a TOML file with one table per stage (`[run]`, `[data]`, `[df]`,
`[scores]`, `[potential]`, `[fit]`, `[evaluate]`; see `docs/pipeline.md`), validated as a
whole before any work starts (`config`). Each stage is one record (`stages.STAGES`: name,
config sections, inputs, outputs, function) run through `run_stage`; `run(config, run_dir)`
executes them in a run directory that resumes (`rundir`), and every `deeppot` subcommand
runs the same stage functions on files. Models are built from the config through the
registries (`build`), and written as self-describing model files (`deeppot.modelfile`).
"""

from ..modelfile import load_model as load_model
from ..modelfile import save_model as save_model
from . import entries as entries
from .build import build_catalog as build_catalog
from .build import build_df as build_df
from .build import build_loss as build_loss
from .build import build_model as build_model
from .build import build_objective as build_objective
from .config import SECTIONS as SECTIONS
from .config import Config as Config
from .config import ConfigError as ConfigError
from .config import DataConfig as DataConfig
from .config import DFConfig as DFConfig
from .config import EvaluateConfig as EvaluateConfig
from .config import FitConfig as FitConfig
from .config import PotentialConfig as PotentialConfig
from .config import RunConfig as RunConfig
from .config import ScoresConfig as ScoresConfig
from .config import apply_overrides as apply_overrides
from .config import default_config_path as default_config_path
from .config import dumps_toml as dumps_toml
from .config import load_config as load_config
from .config import parse_config as parse_config
from .config import section_dict as section_dict
from .replicas import bootstrap as bootstrap
from .replicas import replica_catalog as replica_catalog
from .report import accuracy_table as accuracy_table
from .report import band_table as band_table
from .report import calibration_setting as calibration_setting
from .report import evaluate_model as evaluate_model
from .report import evaluate_replicas as evaluate_replicas
from .report import replica_fields as replica_fields
from .rundir import run as run
from .stages import ARTEFACTS as ARTEFACTS
from .stages import STAGES as STAGES
from .stages import check_df as check_df
from .stages import draw_scores as draw_scores
from .stages import run_stage as run_stage
from .stages import stage_key as stage_key
from .stages import start_processes as start_processes
from .stages import train_df as train_df
from .stages import train_potential as train_potential
