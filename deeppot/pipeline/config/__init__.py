"""The run configuration: one validated, frozen dataclass per TOML table.

`load_config` (a file) and `parse_config` (a dictionary) validate the whole configuration
before any work starts and report every problem at once, each naming its section, key and
value. Choices that name models (`[data] source`, `[df] kind`, `[potential] model`) are
registry entries (`deeppot.registry`), built-in or from plugins, all configured one way:
the section's `params` table holds the entry's own keyword arguments, checked against its
signature. Defaults that are also defaults of the Python API (training settings) are read
from that API's signatures, so there is one place that defines each.

The parts: `_fields` (what a key holds; the check of one value), `_kinds` (what a
registered kind declares through its signature and attributes), `_schema` (the sections),
`_validate` (the whole-config checks), `_toml` (files, `extends`, overrides) and `_docs`
(the generated key tables of `docs/pipeline.md`).
"""

from ..._errors import ConfigError as ConfigError
from ._docs import reference_markdown as reference_markdown
from ._kinds import ACTIVATIONS as ACTIVATIONS
from ._kinds import conditional as conditional
from ._kinds import generates as generates
from ._kinds import learned_model as learned_model
from ._kinds import python_params as python_params
from ._kinds import takes as takes
from ._kinds import trainable as trainable
from ._schema import POSITION_ROUTES as POSITION_ROUTES
from ._schema import SECTIONS as SECTIONS
from ._schema import Config as Config
from ._schema import DataConfig as DataConfig
from ._schema import DFConfig as DFConfig
from ._schema import EvaluateConfig as EvaluateConfig
from ._schema import FitConfig as FitConfig
from ._schema import PotentialConfig as PotentialConfig
from ._schema import RunConfig as RunConfig
from ._schema import ScoresConfig as ScoresConfig
from ._schema import section_dict as section_dict
from ._toml import apply_overrides as apply_overrides
from ._toml import default_config_path as default_config_path
from ._toml import dumps_toml as dumps_toml
from ._toml import load_config as load_config
from ._validate import parse_config as parse_config

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
    "POSITION_ROUTES",
    "ScoresConfig",
    "SECTIONS",
    "apply_overrides",
    "conditional",
    "default_config_path",
    "dumps_toml",
    "generates",
    "learned_model",
    "load_config",
    "parse_config",
    "python_params",
    "reference_markdown",
    "section_dict",
    "takes",
    "trainable",
]
