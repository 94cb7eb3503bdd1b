"""A campaign's configuration: one YAML file loaded into typed dataclasses.

Every problem is reported as one `ConfigError` naming the key path, for example
``budget.steps: must be >= 0, got -5``. The dataclasses check their own values, so a config
built in Python is checked the same way as one read from YAML.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from .simulators.microscope import Behaviour

T = TypeVar("T")


class ConfigError(ValueError):
    """A bad configuration value; ``path`` is the dotted key path (empty for the whole file)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path, self.message = path, message


def _check(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(key, message)


@dataclass(frozen=True)
class ReplayConfig:
    """A measured data set replayed as a sample (``sample: replay``).

    Relative paths are read from the folder of the config file.
    """

    path: str  # .npy, .npz, .h5/.hdf5, or a Gatan/FEI/Velox file read through rosettasciio
    dataset: str | None = None  # the HDF5 dataset, when the file holds several
    overview: str | None = None  # an overview image file; by default derived from the data
    derive: str = "mean"  # how to derive it: mean, slice:<i> or band:<low>:<high>

    def __post_init__(self) -> None:
        _check(
            re.fullmatch(r"mean|slice:\d+|band:[-+.\deE]+:[-+.\deE]+", self.derive) is not None,
            "derive",
            f"must be 'mean', 'slice:<i>' or 'band:<low>:<high>', got {self.derive!r}",
        )


@dataclass(frozen=True)
class SimulatorConfig:
    """The built-in simulated microscope, served on loopback by `dklscope run` itself."""

    sample: Literal["lattice", "plasmonic", "ferroelectric", "replay"] = "lattice"
    shape: tuple[int, int] = (48, 48)  # overview (rows, cols) of a synthetic sample, pixels
    seed: int = 0  # the synthetic sample's seed; the instrument's noise uses the campaign seed
    spectra: Literal["low-loss", "core-loss"] = "low-loss"  # lattice: plasmons or a Ti-L2,3 edge
    replay: ReplayConfig | None = None  # required for sample: replay
    noise: bool = True  # measurement noise as the sample's noise model says
    realtime: bool = False  # an acquisition takes its dwell in wall time
    # How the instrument misbehaves: drift, positioning error, overhead, damage, faults. All
    # off by default; the fields are documented in dklscope.simulators.microscope.Behaviour.
    behaviour: Behaviour = field(default_factory=Behaviour)

    def __post_init__(self) -> None:
        _check(
            min(self.shape) >= 16,
            "shape",
            f"must be at least 16 x 16 pixels, got {list(self.shape)}",
        )
        _check(
            max(self.shape) <= 1024,
            "shape",
            f"must be at most 1024 pixels a side, got {list(self.shape)}",
        )
        _check(
            self.sample == "lattice" or self.spectra == "low-loss",
            "spectra",
            f"only the lattice sample offers 'core-loss' spectra, not {self.sample!r}",
        )
        _check(
            (self.sample == "replay") == (self.replay is not None),
            "replay",
            "give a 'replay' section exactly when sample is 'replay'",
        )


@dataclass(frozen=True)
class InstrumentConfig:
    """Exactly one of ``simulator`` (the built-in one) or ``address`` (a running driver server)."""

    simulator: SimulatorConfig | None = None
    address: str | None = None  # tcp://host:port of a DriverServer
    timeout_s: float = 10.0  # per call; an acquisition adds 1.5 x its dwell

    def __post_init__(self) -> None:
        _check(
            (self.simulator is None) != (self.address is None),
            "",
            "give exactly one of 'instrument.simulator' or 'instrument.address'",
        )
        if self.address is not None:
            _check(
                re.fullmatch(r"(tcp://[^\s:]+:\d{1,5}|ipc://\S+)", self.address) is not None,
                "address",
                f"must look like tcp://host:port, got {self.address!r}",
            )
        _check(self.timeout_s > 0, "timeout_s", f"must be > 0, got {self.timeout_s}")


@dataclass(frozen=True)
class BudgetConfig:
    seed_points: int = 10  # random measurements before the model takes over
    steps: int = 25  # measurements chosen by the policy

    def __post_init__(self) -> None:
        _check(self.seed_points >= 2, "seed_points", f"must be >= 2, got {self.seed_points}")
        _check(self.steps >= 0, "steps", f"must be >= 0, got {self.steps}")


@dataclass(frozen=True)
class PatchConfig:
    """Square patches of the overview around each candidate probe position."""

    size: int = 10  # pixels a side
    stride: int = 1  # pixels between candidate positions
    edge: Literal["reflect", "drop"] = "reflect"  # pad the image by reflection, or drop edges

    def __post_init__(self) -> None:
        _check(self.size >= 2, "size", f"must be >= 2, got {self.size}")
        _check(self.stride >= 1, "stride", f"must be >= 1, got {self.stride}")


@dataclass(frozen=True)
class ModelConfig:
    """Deep kernel learning: an MLP feature extractor under an exact GP."""

    hidden: tuple[int, ...] = (64, 32)  # widths of the hidden layers
    feature_dim: int = 2  # dimension of the learned features the kernel sees
    kernel: Literal["rbf", "matern52"] = "rbf"
    first_fit_iterations: int = 200  # Adam steps of the first fit
    refit_iterations: int = 50  # Adam steps of each later fit, warm-started
    learning_rate: float = 0.01

    def __post_init__(self) -> None:
        _check(
            all(h >= 1 for h in self.hidden),
            "hidden",
            f"widths must be >= 1, got {list(self.hidden)}",
        )
        _check(self.feature_dim >= 1, "feature_dim", f"must be >= 1, got {self.feature_dim}")
        _check(
            self.first_fit_iterations >= 1,
            "first_fit_iterations",
            f"must be >= 1, got {self.first_fit_iterations}",
        )
        _check(
            self.refit_iterations >= 0,
            "refit_iterations",
            f"must be >= 0, got {self.refit_iterations}",
        )
        _check(self.learning_rate > 0, "learning_rate", f"must be > 0, got {self.learning_rate}")


@dataclass(frozen=True)
class ScalarizerConfig:
    """Spectrum -> scalar. ``peak_intensity``: the maximum inside ``window`` (axis units)."""

    window: tuple[float, float]
    kind: Literal["peak_intensity"] = "peak_intensity"

    def __post_init__(self) -> None:
        lo, hi = self.window
        _check(lo < hi, "window", f"must be [low, high] with low < high, got {list(self.window)}")


@dataclass(frozen=True)
class PolicyConfig:
    """``ei``: expected improvement over the best measured value; ``random``: a baseline."""

    kind: Literal["ei", "random"] = "ei"


@dataclass(frozen=True)
class Config:
    """One campaign."""

    instrument: InstrumentConfig
    scalarizer: ScalarizerConfig
    dwell_s: float = 0.05  # exposure of each spectrum, seconds
    seed: int = 0  # seeds the campaign's own random choices and model initialisation
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    patches: PatchConfig = field(default_factory=PatchConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)

    def __post_init__(self) -> None:
        _check(self.dwell_s > 0, "dwell_s", f"must be > 0, got {self.dwell_s}")

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
    return _resolve_files(parse_config(text), path.parent)


def _resolve_files(config: Config, folder: Path) -> Config:
    """Read relative file paths from ``folder`` (the config file's), and check they exist."""
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


def from_dict(cls: type[T], data: Any, path: str = "") -> T:
    """Build dataclass ``cls`` from plain data, checking keys, types and values."""
    if not isinstance(data, dict):
        raise ConfigError(path, f"must be a mapping of keys to values, got {_show(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key in data:
        if key not in fields:
            hint = difflib.get_close_matches(str(key), fields, n=1)
            suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
            expected = ", ".join(fields)
            raise ConfigError(
                _join(path, str(key)), f"unknown key{suggestion}; expected one of: {expected}"
            )
    values = {}
    for name, f in fields.items():
        if name in data:
            values[name] = _convert(hints[name], data[name], _join(path, name))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(_join(path, name), "missing required key")
    try:
        return cls(**values)
    except ConfigError as exc:
        raise ConfigError(_join(path, exc.path), exc.message) from None
    except ValueError as exc:  # a dataclass from elsewhere checking itself
        name, _, rest = str(exc).partition(" ")
        if name in fields:
            raise ConfigError(_join(path, name), rest) from None
        raise ConfigError(path, str(exc)) from None


def _convert(tp: Any, value: Any, path: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(inner, value, path)
    if origin is Literal:
        if value not in args:
            raise ConfigError(
                path, f"must be one of {', '.join(map(repr, args))}; got {_show(value)}"
            )
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(path, f"must be a list, got {_show(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(path, f"must be a list of {len(args)} values, got {len(value)}")
        return tuple(
            _convert(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True))
        )
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(path, f"must be true or false, got {_show(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(path, f"must be an integer, got {_show(value)}")
        return value
    if tp is float:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise ConfigError(path, f"must be a finite number, got {_show(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(path, f"must be a string, got {_show(value)}")
        return value
    raise TypeError(f"config type {tp!r} at {path} is not supported")  # a bug in this module


def _join(path: str, key: str) -> str:
    return ".".join(p for p in (path, key) if p)


def _show(value: Any) -> str:
    return "nothing" if value is None else f"{type(value).__name__} {value!r}"


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
