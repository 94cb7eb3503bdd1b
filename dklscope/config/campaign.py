"""One campaign's `Config`, the sections together, and reading it from a YAML file."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError, check
from .instrument import InstrumentConfig
from .model import EmbeddingSection, ModelConfig, PatchConfig
from .parse import from_dict
from .policy import PolicyConfig
from .run import BudgetConfig, DoseConfig, RunnerConfig, StopConfig
from .scalarizer import ScalarizerConfig

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")  # a name given in a config, as of an output


@dataclass(frozen=True)
class Config:
    """One campaign."""

    instrument: InstrumentConfig
    scalarizer: ScalarizerConfig  # the scalar the campaign maximises
    # More scalars of the same spectra, by name, that the model learns together with the
    # scalarizer's (one GP each on the features of one shared network) and maps, without
    # maximising them: e.g. the bulk plasmon's strength while the edge plasmon's is sought.
    predict: dict[str, ScalarizerConfig] = field(default_factory=dict)
    dwell_s: float = 0.05  # exposure of each spectrum, seconds
    seed: int = 0  # seeds the campaign's own random choices and model initialisation
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    dose: DoseConfig = field(default_factory=DoseConfig)  # in the instrument's dose units
    patches: PatchConfig = field(default_factory=PatchConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    embedding: EmbeddingSection = field(default_factory=EmbeddingSection)
    stop: StopConfig = field(default_factory=StopConfig)
    runner: RunnerConfig = field(default_factory=RunnerConfig)

    def __post_init__(self) -> None:
        check(self.dwell_s > 0, "dwell_s", f"must be > 0, got {self.dwell_s}")
        for name in self.predict:
            check(
                _NAME.fullmatch(name) is not None and name != "scalar",
                f"predict.{name}",
                "a name is letters, digits, '_' or '-', starting with a letter, not 'scalar'",
            )
        latent = {"gp-latents", "gp-latents-xy"}
        if self.embedding.kind == "none" and self.model.family in latent:
            raise ConfigError("model.kind", f"{self.model.family!r} needs an embedding")
        if self.embedding.kind == "none" and self.model.family == "auto":
            check(
                not latent & set(self.model.candidates),
                "model.candidates",
                "gp-latents and gp-latents-xy need an embedding: set embedding.kind",
            )
        check(
            self.model.family != "dkl"
            or self.model.dkl_input in ("patches", "coordinates", "patches_and_position")
            or self.embedding.kind != "none",
            "model.input",
            f"{self.model.dkl_input!r} needs an embedding: set embedding.kind",
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists for tuples), as it would be written in YAML."""
        return _plain(dataclasses.asdict(self))


def load_config(path: str | Path) -> Config:
    """Read and check a campaign file; raises `ConfigError` naming the culprit."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("", f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("", f"{path}: cannot read: {exc}") from None
    return resolve_files(parse_config(text), path.parent)


def resolve_files(config: Config, folder: Path) -> Config:
    """Read relative file paths from ``folder`` (the config file's), and check they exist."""
    if config.embedding.load is not None:
        file = (folder / config.embedding.load).resolve()
        if not file.is_file():
            raise ConfigError("embedding.load", f"no such file: {file}")
        config = dataclasses.replace(
            config, embedding=dataclasses.replace(config.embedding, load=str(file))
        )
    sim = config.instrument.simulator
    if sim is None or sim.replay is None:
        return config
    resolved = {}
    for key in ("path", "overview"):
        name = getattr(sim.replay, key)
        if name is None:
            continue
        file = (folder / name).resolve()
        if not file.is_file():
            raise ConfigError(f"instrument.simulator.replay.{key}", f"no such file: {file}")
        resolved[key] = str(file)
    replay = dataclasses.replace(sim.replay, **resolved)
    instrument = dataclasses.replace(
        config.instrument, simulator=dataclasses.replace(sim, replay=replay)
    )
    return dataclasses.replace(config, instrument=instrument)


def parse_config(text: str) -> Config:
    """Check a campaign given as YAML text."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError("", f"not valid YAML: {where}{getattr(exc, 'problem', exc)}") from None
    return from_dict(Config, data)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
