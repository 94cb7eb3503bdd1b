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

from .drivers.nion_swift.usim import UsimSettings
from .simulators.microscope import Behaviour

T = TypeVar("T")


class ConfigError(ValueError):
    """A bad configuration value; ``path`` is the dotted key path (empty for the whole file)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path, self.message = path, message


_ADDRESS = re.compile(r"tcp://[^\s:]+:\d{1,5}|ipc://\S+")  # a ZeroMQ endpoint
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")  # a name given in a config, as of an output


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
    """Exactly one of ``simulator`` (the built-in one), ``nion_usim`` (Nion Swift's simulated
    STEM, hosted headless by dklscope itself; needs ``pip install 'dklscope[nion]'``) or
    ``address`` (a running driver server)."""

    simulator: SimulatorConfig | None = None
    # Its fields (sample, overview_shape, fov_nm, pixel_time_us, dwell_range_s) are documented
    # in dklscope.drivers.nion_swift.usim.UsimSettings.
    nion_usim: UsimSettings | None = None
    address: str | None = None  # tcp://host:port of a DriverServer
    timeout_s: float = 10.0  # per call; an acquisition adds 1.5 x its dwell

    def __post_init__(self) -> None:
        given = [self.simulator, self.nion_usim, self.address]
        _check(
            sum(v is not None for v in given) == 1,
            "",
            "give exactly one of 'instrument.simulator', 'instrument.nion_usim' or "
            "'instrument.address'",
        )
        if self.address is not None:
            _check(
                _ADDRESS.fullmatch(self.address) is not None,
                "address",
                f"must look like tcp://host:port, got {self.address!r}",
            )
        _check(self.timeout_s > 0, "timeout_s", f"must be > 0, got {self.timeout_s}")


@dataclass(frozen=True)
class BudgetConfig:
    """How much a campaign may measure; it stops at the first limit reached."""

    seed_points: int = 10  # random measurements before the model takes over
    steps: int = 25  # measurements chosen by the policy
    wall_s: float | None = None  # seconds this run may take (a resumed run starts its own clock)
    dose_s: float | None = None  # summed exposure of every attempt, seconds (dose / beam current);
    #                             see `DoseConfig` for a dose in the instrument's own units

    def __post_init__(self) -> None:
        _check(self.seed_points >= 2, "seed_points", f"must be >= 2, got {self.seed_points}")
        _check(self.steps >= 0, "steps", f"must be >= 0, got {self.steps}")
        for key in ("wall_s", "dose_s"):
            value = getattr(self, key)
            _check(value is None or value > 0, key, f"must be > 0, got {value}")


@dataclass(frozen=True)
class DoseConfig:
    """How much dose the specimen may take, in the instrument's ``dose_units`` (its description,
    protocol 1.2: e.g. ``"s"`` of exposure, ``"e-"``). Enforced before every move, never after:
    a point whose dose (``dwell_s`` x the described ``dose_per_s``) exceeds ``per_point`` is
    refused (the campaign does not start), and the campaign stops, journaled and resumable
    only into the same stop, before the measurement that would take its dose over ``total``.
    Every attempt counts, failed ones too. Unlike ``budget.dose_s`` (seconds of exposure,
    whatever the instrument), this needs an instrument that accounts dose."""

    per_point: float | None = None  # the most one measurement may deliver (dose_units)
    total: float | None = None  # the most the whole campaign may deliver (dose_units)

    def __post_init__(self) -> None:
        for key in ("per_point", "total"):
            value = getattr(self, key)
            _check(
                value is None or (math.isfinite(value) and value > 0),
                key,
                f"must be a finite number > 0 (in the instrument's dose units), got {value}",
            )

    @property
    def limited(self) -> bool:
        """Whether either limit is set."""
        return self.per_point is not None or self.total is not None


@dataclass(frozen=True)
class StopConfig:
    """Stop early once the campaign has found what it was looking for."""

    target: float | None = None  # a measured scalar at least this large (scalar units)
    max_std: float | None = None  # the model's largest predictive std over unmeasured candidates
    #                               below this (scalar units): nothing left worth learning

    def __post_init__(self) -> None:
        _check(
            self.max_std is None or self.max_std > 0,
            "max_std",
            f"must be > 0, got {self.max_std}",
        )


@dataclass(frozen=True)
class RunnerConfig:
    """How the campaign drives the instrument."""

    pipeline: bool = True  # choose the next point while the instrument measures this one
    on_failure: Literal["retry", "skip", "stop"] = "retry"  # a failed measurement (timeout,
    #   NaN or saturated spectrum): measure it again up to `retries` times, then skip; skip it
    #   at once (kept in the journal, marked failed); or stop the campaign
    retries: int = 2  # with on_failure: retry
    drift_every: int = 0  # re-acquire the overview every this many measurements and correct
    #                       positions by its shift against the first (0: never)
    checkpoint_every: int = 10  # keep the model's state every this many decisions (the newest
    #                             is always kept, for --resume)
    publish: str | None = None  # tcp://host:port to publish progress events on (ZeroMQ PUB)
    control: str | None = None  # tcp://host:port to take pause/resume/stop requests on

    def __post_init__(self) -> None:
        _check(self.retries >= 0, "retries", f"must be >= 0, got {self.retries}")
        _check(self.drift_every >= 0, "drift_every", f"must be >= 0, got {self.drift_every}")
        _check(
            self.checkpoint_every >= 0,
            "checkpoint_every",
            f"must be >= 0, got {self.checkpoint_every}",
        )
        for key in ("publish", "control"):
            address = getattr(self, key)
            _check(
                address is None or _ADDRESS.fullmatch(address) is not None,
                key,
                f"must look like tcp://host:port, got {address!r}",
            )


@dataclass(frozen=True)
class PatchConfig:
    """Square patches of the overview around each candidate probe position."""

    size: int = 10  # pixels a side
    stride: int = 1  # pixels between candidate positions
    edge: Literal["reflect", "drop"] = "reflect"  # pad the image by reflection, or drop edges

    def __post_init__(self) -> None:
        _check(self.size >= 2, "size", f"must be >= 2, got {self.size}")
        _check(self.stride >= 1, "stride", f"must be >= 1, got {self.stride}")


CANDIDATE_KINDS = ("gp-xy", "gp-structure-xy", "gp-structure")  # auto's default candidates
LATENT_KINDS = ("gp-latents-xy", "gp-latents")  # and with an embedding, these too
AUTO_CANDIDATES = (*CANDIDATE_KINDS, *LATENT_KINDS, "dkl-ensemble", "bayesian-dkl")


@dataclass(frozen=True)
class ModelConfig:
    """The surrogate model: a Gaussian process over the probe position, the patch's structure
    features, or a neural network's features of the patch (`dklscope.model_family`)."""

    # Which model (`dklscope.model_family`): ``auto`` (the default) scores the ``candidates``
    # at every refit by their leave-one-out predictive density on the measured points and uses
    # the best; ``gp-xy`` a GP on the probe position; ``gp-structure`` a GP on the patches'
    # leading principal components; ``gp-latents`` on the embedding's latents (needs an
    # ``embedding:``); ``gp-structure-xy``, ``gp-latents-xy`` either with the position in one
    # kernel; ``dkl`` deep kernel
    # learning, a network's features of the patches (``input`` says which); ``dkl-ensemble``
    # ``ensemble_size`` such networks with a GP each, their mixture the prediction;
    # ``bayesian-dkl`` one network whose last layer is inferred by variational Bayes (Pyro),
    # ``ensemble_size`` draws of it mixed (several times slower to train). Default:
    # ``dkl`` when ``input`` is given (as configs before ``kind`` existed), else ``auto``.
    kind: (
        Literal[
            "auto",
            "gp-xy",
            "gp-structure",
            "gp-structure-xy",
            "gp-latents",
            "gp-latents-xy",
            "dkl",
            "dkl-ensemble",
            "bayesian-dkl",
        ]
        | None
    ) = None
    # auto: the models it chooses among, the first its reference (used unless another predicts
    # clearly better); by default CANDIDATE_KINDS, and LATENT_KINDS too with an embedding
    candidates: tuple[str, ...] = CANDIDATE_KINDS
    structure_dim: int = 4  # principal components of the patches, without an embedding
    ensemble_size: int = 4  # dkl-ensemble: members; bayesian-dkl: draws of the last layer
    # kind dkl: what the GP's network sees: the raw patches through a fresh MLP (``patches``,
    # the default); the embedding's fixed latents, the GP on them directly (``latents``); the
    # patches through the embedding's trained encoder, trained further (``encoder``) or not
    # (``frozen_encoder``); only the probe positions, a plain GP on (x, y) blind to structure
    # (``coordinates``); or the raw patches through a fresh MLP with the positions beside its
    # features, so the GP needs both a similar structure and a near place to be sure
    # (``patches_and_position``).
    input: (
        Literal[
            "patches",
            "latents",
            "encoder",
            "frozen_encoder",
            "coordinates",
            "patches_and_position",
        ]
        | None
    ) = None
    hidden: tuple[int, ...] = (64, 32)  # widths of the hidden layers
    feature_dim: int = 2  # dimension of the learned features the kernel sees
    kernel: Literal["rbf", "matern52"] = "rbf"
    noise_floor: float = 0.01  # least noise variance, as a fraction of the scalars' variance
    # Adam steps of the first fit: more fit the measured points more closely and make the GP
    # overconfident elsewhere (on held-out truths of simulated samples, 95% intervals held
    # 91% after 200 steps and 95% after 100, with the same campaign quality).
    first_fit_iterations: int = 100
    refit_iterations: int = 20  # Adam steps of each later fit, warm-started (0: condition only)
    full_refit_every: int = 0  # every this many fits start afresh (0: never)
    # Points per training step at most (null: all of them): at 500 measurements, 256 per step
    # gave maps as good as all 500 (held-out r and RMSE on three samples) at an eighth of the
    # factorisation's cost.
    train_subset: int | None = 256
    learning_rate: float = 0.01
    weight_decay: float = 0.0  # shrinks the network's weights each step (AdamW), against overfit

    def __post_init__(self) -> None:
        _check(
            self.kind in (None, "dkl") or self.input is None,
            "input",
            f"is read only by kind 'dkl', not {self.kind!r}",
        )
        _check(len(self.candidates) >= 1, "candidates", "must name at least one model")
        for name in self.candidates:
            _check(
                name in AUTO_CANDIDATES,
                "candidates",
                f"must be among {', '.join(AUTO_CANDIDATES)}; got {name!r}",
            )
        _check(
            len(set(self.candidates)) == len(self.candidates),
            "candidates",
            f"names a model twice: {list(self.candidates)}",
        )
        _check(self.structure_dim >= 1, "structure_dim", f"must be >= 1, got {self.structure_dim}")
        _check(self.ensemble_size >= 1, "ensemble_size", f"must be >= 1, got {self.ensemble_size}")
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
        _check(
            0 < self.noise_floor < 1,
            "noise_floor",
            f"must be in (0, 1), got {self.noise_floor}",
        )
        _check(
            self.full_refit_every >= 0,
            "full_refit_every",
            f"must be >= 0, got {self.full_refit_every}",
        )
        _check(
            self.train_subset is None or self.train_subset >= 2,
            "train_subset",
            f"must be >= 2 or null, got {self.train_subset}",
        )
        _check(self.learning_rate > 0, "learning_rate", f"must be > 0, got {self.learning_rate}")
        _check(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")

    @property
    def family(self) -> str:
        """The model used: ``kind``, or when it is not given ``dkl`` if ``input`` is and
        ``auto`` otherwise."""
        return self.kind or ("dkl" if self.input is not None else "auto")

    @property
    def dkl_input(self) -> str:
        """What kind ``dkl``'s network sees: ``input``, ``patches`` by default."""
        return self.input or "patches"


# The built-in scalarizer kinds (dklscope.scalarizers) and the keys each reads besides the
# robust ones that every kind takes (clip_values, clip_percentiles, median_filter). "bias" means
# exactly one of bias or bias_waveform. A kind may also be "package.module:function".
SCALARIZER_KINDS: dict[str, tuple[str, ...]] = {
    "peak_intensity": ("window",),  # the same as maximum; the name of the first release
    "maximum": ("window",),
    "sum": ("window",),
    "mean": ("window",),
    "argmax": ("window",),
    "centre_of_mass": ("window",),
    "integral": ("window",),
    "band_ratio": ("window", "reference_window"),
    "peak_prominence": ("window", "min_prominence", "no_peak"),
    "peak_position": ("window", "min_prominence", "no_peak"),
    "peak_width": ("window", "min_prominence", "no_peak", "rel_height"),
    "loop_area": ("bias",),
    "coercive_bias": ("bias", "branch"),
    "nucleation_bias": ("bias", "branch", "onset"),
    "remanence": ("bias", "branch"),
}
_REQUIRED = ("window", "reference_window", "branch")  # when the kind reads them
_CALLABLE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")


@dataclass(frozen=True)
class BiasWaveformConfig:
    """The bias of each step of the simulated BEPS triangle 0 -> +v_max -> -v_max -> 0 V in
    ``n`` steps (`dklscope.simulators.ferroelectric.bias_waveform`). A measured file may use
    another waveform: then list its biases under ``bias``."""

    n: int = 64  # steps: channels of the spectral axis
    v_max: float = 8.5  # V

    def __post_init__(self) -> None:
        _check(self.n >= 5, "n", f"must be >= 5, got {self.n}")
        _check(self.v_max > 0, "v_max", f"must be > 0, got {self.v_max}")


@dataclass(frozen=True)
class ScalarizerConfig:
    """Spectrum -> the scalar a campaign optimises (`dklscope.scalarizers`). Windows are
    ``[low, high]`` in the units of the spectral axis and hold the channels with
    ``low <= value <= high``.

    ``kind``, and the keys it reads:

    - ``peak_intensity`` or ``maximum``, ``sum``, ``mean``: of the spectrum in ``window``.
    - ``argmax``: the axis value of the maximum in ``window``.
    - ``centre_of_mass``: the intensity-weighted mean axis value in ``window``.
    - ``integral``: the trapezoid integral over ``window`` in spectrum x axis units; the
      integral of dI/dV above zero bias is ``integral`` with ``window: [0, <highest bias>]``.
    - ``band_ratio``: the sum in ``window`` over the sum in ``reference_window``.
    - ``peak_prominence``, ``peak_position``, ``peak_width``: of the most prominent peak whose
      top lies in ``window`` (scipy.signal, on the whole spectrum); ``min_prominence``
      (spectrum units, default 0) ignores smaller peaks, ``rel_height`` (default 0.5: the
      full width at half prominence) sets where the width is taken, ``no_peak`` (``nan``, the
      default, or ``zero``) is the value when there is no peak.
    - ``loop_area``, ``coercive_bias``, ``nucleation_bias``, ``remanence``: hysteresis loops,
      given the bias in V of each channel as ``bias`` (a list) or ``bias_waveform``; ``branch``
      picks the ``rising`` or ``falling`` branch, or their ``difference`` (the loop's opening,
      positive for a loop run counter-clockwise); ``onset`` is the fraction of the switch that
      marks nucleation (default 0.2). The loops of the BEPS file in shared/data need ``bias``:
      its waveform is not the simulator's.
    - ``"package.module:function"``: your own ``function(spectra, axis)``, vectorised over
      leading dimensions.

    Every kind takes the robust options, applied to each spectrum in this order before the
    scalar: ``clip_values: [lo, hi]`` (spectrum units) or ``clip_percentiles: [lo, hi]`` (of
    the spectrum's own channels), then ``median_filter: k`` (k channels, odd). A spectrum
    holding a NaN or infinity gives NaN, which the journal keeps and the model skips. A key
    the kind does not read is refused.
    """

    window: tuple[float, float] | None = None  # [low, high], axis units
    kind: str = "peak_intensity"  # one of SCALARIZER_KINDS, or "package.module:function"
    reference_window: tuple[float, float] | None = None  # band_ratio: the denominator's band
    min_prominence: float | None = None  # peak_*: spectrum units; default 0
    rel_height: float | None = None  # peak_width: in (0, 1]; default 0.5 (half prominence)
    no_peak: Literal["nan", "zero"] | None = None  # peak_*: the value without a peak; nan
    bias: tuple[float, ...] | None = None  # loops: the bias of each channel, V
    bias_waveform: BiasWaveformConfig | None = None  # loops: or the simulated BEPS triangle
    branch: Literal["rising", "falling", "difference"] | None = None  # coercive, nucleation, ...
    onset: float | None = None  # nucleation_bias: in (0, 1); default 0.2
    clip_values: tuple[float, float] | None = None  # robust: clip to [lo, hi], spectrum units
    clip_percentiles: tuple[float, float] | None = None  # robust: to these percentiles, 0-100
    median_filter: int | None = None  # robust: median of k neighbouring channels, k odd

    def __post_init__(self) -> None:
        kind = self.kind
        _check(
            kind in SCALARIZER_KINDS or _CALLABLE.fullmatch(kind) is not None,
            "kind",
            f"must be one of {', '.join(SCALARIZER_KINDS)} or 'package.module:function'; "
            f"got {kind!r}",
        )
        reads = SCALARIZER_KINDS.get(kind, ())
        for key in (*_REQUIRED, "min_prominence", "rel_height", "no_peak", "onset"):
            if key not in reads:
                _check(getattr(self, key) is None, key, f"is not read by kind {kind!r}")
            elif key in _REQUIRED:
                _check(getattr(self, key) is not None, key, f"is required by kind {kind!r}")
        if "bias" in reads:
            _check(
                (self.bias is None) != (self.bias_waveform is None),
                "bias",
                f"give exactly one of 'bias' or 'bias_waveform' for kind {kind!r}",
            )
        else:
            for key in ("bias", "bias_waveform"):
                _check(getattr(self, key) is None, key, f"is not read by kind {kind!r}")
        for key in ("window", "reference_window", "clip_values"):
            pair = getattr(self, key)
            if pair is not None:
                _check(
                    pair[0] < pair[1],
                    key,
                    f"must be [low, high] with low < high, got {list(pair)}",
                )
        if self.clip_percentiles is not None:
            lo, hi = self.clip_percentiles
            _check(
                0 <= lo < hi <= 100,
                "clip_percentiles",
                f"must be [low, high] with 0 <= low < high <= 100, got {[lo, hi]}",
            )
        _check(
            self.clip_values is None or self.clip_percentiles is None,
            "clip_values",
            "give at most one of 'clip_values' or 'clip_percentiles'",
        )
        k = self.median_filter
        _check(
            k is None or (k >= 1 and k % 2 == 1),
            "median_filter",
            f"must be an odd number of channels >= 1, got {k}",
        )
        if self.min_prominence is not None:
            _check(
                self.min_prominence >= 0,
                "min_prominence",
                f"must be >= 0, got {self.min_prominence}",
            )
        if self.rel_height is not None:
            _check(
                0 < self.rel_height <= 1,
                "rel_height",
                f"must be in (0, 1], got {self.rel_height}",
            )
        if self.onset is not None:
            _check(0 < self.onset < 1, "onset", f"must be in (0, 1), got {self.onset}")
        if self.bias is not None:
            steps = [b - a for a, b in zip(self.bias[:-1], self.bias[1:], strict=True)]
            _check(
                len(steps) >= 4 and max(steps) > 0 and min(steps) < 0,
                "bias",
                f"must be at least 5 biases that rise and fall, got {list(self.bias)}",
            )


# The built-in policy kinds (dklscope.policies.POLICIES) and the keys each reads besides ``q``.
# A kind may also be "package.module:ClassName", which reads ``params``.
POLICY_KINDS: dict[str, tuple[str, ...]] = {
    "ei": (),
    "pi": (),
    "ucb": ("beta", "schedule", "decay", "betas"),
    "max_variance": (),
    "thompson": ("features",),
    "qlogei": ("mc_samples", "shortlist"),
    "qucb": ("beta", "schedule", "decay", "betas", "mc_samples", "shortlist"),
    "random": (),
    "raster": (),
    "coordinate_gp": (),
}
_ONE_POINT_POLICIES = ("ei", "pi", "ucb", "max_variance", "coordinate_gp")


@dataclass(frozen=True)
class PolicyConfig:
    """How the next points are chosen (`dklscope.policies`). ``kind``, and the keys it reads:

    - ``ei``: expected improvement over the incumbent, the best finite scalar measured.
    - ``pi``: probability of improvement over the same incumbent.
    - ``ucb``: upper confidence bound ``mean + sqrt(beta_t) * std`` (BoTorch's convention: β
      multiplies the variance). ``beta`` (default 4: two standard deviations) and
      ``schedule``: ``constant`` (the default), ``annealed`` (``beta_t = beta * decay**t``
      at policy step t, ``decay`` in (0, 1], default 0.95) or ``list`` (``betas``: β of
      steps 0, 1, 2, ...; the last one holds after the list ends).
    - ``max_variance``: the largest predictive standard deviation (pure exploration).
    - ``thompson``: the maximum of one posterior sample path per point chosen; ``features``
      random Fourier features approximate the prior (default 1024).
    - ``qlogei``, ``qucb``: batches of ``q`` points at once, greedily, by Monte Carlo
      acquisition with ``mc_samples`` quasi-random samples (default 256) over the
      ``shortlist`` best candidates by the analytic value (default 128); ``qucb`` reads
      ``beta`` and its schedule as ``ucb`` does.
    - ``random``, ``raster``: baselines without a model; ``raster`` scans the grid row by row,
      alternating direction (serpentine).
    - ``coordinate_gp``: a baseline: EI of a plain GP on the (x, y) probe positions.
    - ``"package.module:ClassName"``: your own policy, built as ``ClassName(**params)``.

    ``q`` (default 1) is how many points one decision chooses; they are measured in order
    before the next decision. Only ``thompson``, ``qlogei``, ``qucb``, ``random``, ``raster``
    and your own policies choose more than one. A key the kind does not read is refused.
    """

    kind: str = "ei"  # one of POLICY_KINDS, or "package.module:ClassName"
    q: int = 1  # points chosen per decision
    beta: float | None = None  # ucb, qucb: > 0; default 4.0; the start of an annealed schedule
    schedule: Literal["constant", "annealed", "list"] | None = None  # ucb, qucb: of beta
    decay: float | None = None  # annealed: beta_t = beta * decay**t, in (0, 1]; default 0.95
    betas: tuple[float, ...] | None = None  # list: beta of each policy step, each > 0
    features: int | None = None  # thompson: random Fourier features, >= 1; default 1024
    mc_samples: int | None = None  # qlogei, qucb: quasi-Monte Carlo samples, >= 1; default 256
    shortlist: int | None = None  # qlogei, qucb: candidates scored by MC, >= 1; default 128
    params: dict[str, Any] | None = None  # "package.module:ClassName": its keyword arguments

    def __post_init__(self) -> None:
        kind = self.kind
        custom = kind not in POLICY_KINDS
        _check(
            not custom or _CALLABLE.fullmatch(kind) is not None,
            "kind",
            f"must be one of {', '.join(POLICY_KINDS)} or 'package.module:ClassName'; got {kind!r}",
        )
        _check(self.q >= 1, "q", f"must be >= 1, got {self.q}")
        _check(
            self.q == 1 or kind not in _ONE_POINT_POLICIES,
            "q",
            f"kind {kind!r} chooses one point at a time; use qlogei, qucb or thompson for "
            f"q = {self.q}",
        )
        reads = POLICY_KINDS.get(kind, ("params",))
        for key in (*POLICY_KINDS["qucb"], "features", "params"):
            if key not in reads:
                _check(getattr(self, key) is None, key, f"is not read by kind {kind!r}")
        schedule = self.schedule or "constant"
        _check(
            self.decay is None or schedule == "annealed",
            "decay",
            "is read only with schedule: annealed",
        )
        _check(
            (self.betas is not None) == (schedule == "list") or "betas" not in reads,
            "betas",
            "give betas exactly when schedule is 'list'",
        )
        _check(
            self.beta is None or schedule != "list",
            "beta",
            "give 'betas', not 'beta', with schedule: list",
        )
        _check(self.beta is None or self.beta > 0, "beta", f"must be > 0, got {self.beta}")
        if self.decay is not None:
            _check(0 < self.decay <= 1, "decay", f"must be in (0, 1], got {self.decay}")
        if self.betas is not None:
            _check(
                len(self.betas) >= 1 and min(self.betas) > 0,
                "betas",
                f"must be a list of values > 0, got {list(self.betas)}",
            )
        for key in ("features", "mc_samples", "shortlist"):
            value = getattr(self, key)
            _check(value is None or value >= 1, key, f"must be >= 1, got {value}")


@dataclass(frozen=True)
class EmbeddingSection:
    """A structural embedding of the overview's patches (`dklscope.embeddings`), made before
    the first measurement: trained on every candidate patch, or read from ``load``."""

    kind: Literal["none", "vae", "rvae", "jvae", "jrvae"] = "none"
    latent_dim: int = 2  # content latents
    epochs: int = 30  # at most; training stops early when the held-out ELBO stalls
    load: str | None = None  # an embedding.pt from an earlier campaign instead of training

    def __post_init__(self) -> None:
        _check(self.latent_dim >= 1, "latent_dim", f"must be >= 1, got {self.latent_dim}")
        _check(self.epochs >= 1, "epochs", f"must be >= 1, got {self.epochs}")


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
        _check(self.dwell_s > 0, "dwell_s", f"must be > 0, got {self.dwell_s}")
        for name in self.predict:
            _check(
                _NAME.fullmatch(name) is not None and name != "scalar",
                f"predict.{name}",
                "a name is letters, digits, '_' or '-', starting with a letter, not 'scalar'",
            )
        latent = {"gp-latents", "gp-latents-xy"}
        if self.embedding.kind == "none" and self.model.family in latent:
            raise ConfigError("model.kind", f"{self.model.family!r} needs an embedding")
        if self.embedding.kind == "none" and self.model.family == "auto":
            _check(
                not latent & set(self.model.candidates),
                "model.candidates",
                "gp-latents and gp-latents-xy need an embedding: set embedding.kind",
            )
        _check(
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
    if origin is dict:  # dict[str, X]: names to values of type X (Any: checked by the reader)
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ConfigError(path, f"must be a mapping of names to values, got {_show(value)}")
        if args[1] is Any:
            return dict(value)
        return {k: _convert(args[1], v, _join(path, k)) for k, v in value.items()}
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
