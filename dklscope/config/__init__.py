"""A campaign's configuration: one YAML file loaded into typed dataclasses.

Every problem is reported as one `ConfigError` naming the key path, for example
``budget.steps: must be >= 0, got -5``. The dataclasses check their own values, so a config
built in Python is checked the same way as one read from YAML.

By section:

- `errors`: `ConfigError`, and the checks the sections share.
- `parse`: `from_dict`, plain data (as read from YAML) into a checked dataclass.
- `instrument`: ``instrument:``, the built-in simulator (`SimulatorConfig`, `ReplayConfig`),
  Nion Swift's, or a driver server (`InstrumentConfig`).
- `run`: ``budget:``, ``dose:``, ``stop:`` and ``runner:`` (`BudgetConfig`, `DoseConfig`,
  `StopConfig`, `RunnerConfig`).
- `model`: ``patches:``, ``model:`` and ``embedding:`` (`PatchConfig`, `ModelConfig`,
  `EmbeddingSection`).
- `scalarizer`: ``scalarizer:`` and ``predict:`` (`ScalarizerConfig`, `BiasWaveformConfig`).
- `policy`: ``policy:`` (`PolicyConfig`).
- `campaign`: the whole campaign (`Config`), and reading it from YAML (`load_config`,
  `parse_config`, `resolve_files`).
"""

from .campaign import Config, load_config, parse_config, resolve_files
from .errors import ConfigError
from .instrument import InstrumentConfig, ReplayConfig, SimulatorConfig
from .model import (
    AUTO_CANDIDATES,
    CANDIDATE_KINDS,
    LATENT_KINDS,
    EmbeddingSection,
    ModelConfig,
    PatchConfig,
)
from .parse import from_dict
from .policy import POLICY_KINDS, PolicyConfig
from .run import BudgetConfig, DoseConfig, RunnerConfig, StopConfig
from .scalarizer import SCALARIZER_KINDS, BiasWaveformConfig, ScalarizerConfig

__all__ = [
    "AUTO_CANDIDATES",
    "CANDIDATE_KINDS",
    "LATENT_KINDS",
    "POLICY_KINDS",
    "SCALARIZER_KINDS",
    "BiasWaveformConfig",
    "BudgetConfig",
    "Config",
    "ConfigError",
    "DoseConfig",
    "EmbeddingSection",
    "InstrumentConfig",
    "ModelConfig",
    "PatchConfig",
    "PolicyConfig",
    "ReplayConfig",
    "RunnerConfig",
    "ScalarizerConfig",
    "SimulatorConfig",
    "StopConfig",
    "from_dict",
    "load_config",
    "parse_config",
    "resolve_files",
]
