"""The ``scalarizer:`` section (and ``predict:``'s): spectrum -> the scalar a campaign optimises."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .errors import CALLABLE, check

# The built-in scalarizer kinds (dklscope.model.scalarizers) and the keys each reads besides the
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


@dataclass(frozen=True)
class BiasWaveformConfig:
    """The bias of each step of the simulated BEPS triangle 0 -> +v_max -> -v_max -> 0 V in
    ``n`` steps (`dklscope.simulators.ferroelectric.bias_waveform`). A measured file may use
    another waveform: then list its biases under ``bias``."""

    n: int = 64  # steps: channels of the spectral axis
    v_max: float = 8.5  # V

    def __post_init__(self) -> None:
        check(self.n >= 5, "n", f"must be >= 5, got {self.n}")
        check(self.v_max > 0, "v_max", f"must be > 0, got {self.v_max}")


@dataclass(frozen=True)
class ScalarizerConfig:
    """Spectrum -> the scalar a campaign optimises (`dklscope.model.scalarizers`). Windows are
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
        check(
            kind in SCALARIZER_KINDS or CALLABLE.fullmatch(kind) is not None,
            "kind",
            f"must be one of {', '.join(SCALARIZER_KINDS)} or 'package.module:function'; "
            f"got {kind!r}",
        )
        reads = SCALARIZER_KINDS.get(kind, ())
        for key in (*_REQUIRED, "min_prominence", "rel_height", "no_peak", "onset"):
            if key not in reads:
                check(getattr(self, key) is None, key, f"is not read by kind {kind!r}")
            elif key in _REQUIRED:
                check(getattr(self, key) is not None, key, f"is required by kind {kind!r}")
        if "bias" in reads:
            check(
                (self.bias is None) != (self.bias_waveform is None),
                "bias",
                f"give exactly one of 'bias' or 'bias_waveform' for kind {kind!r}",
            )
        else:
            for key in ("bias", "bias_waveform"):
                check(getattr(self, key) is None, key, f"is not read by kind {kind!r}")
        for key in ("window", "reference_window", "clip_values"):
            pair = getattr(self, key)
            if pair is not None:
                check(
                    pair[0] < pair[1],
                    key,
                    f"must be [low, high] with low < high, got {list(pair)}",
                )
        if self.clip_percentiles is not None:
            lo, hi = self.clip_percentiles
            check(
                0 <= lo < hi <= 100,
                "clip_percentiles",
                f"must be [low, high] with 0 <= low < high <= 100, got {[lo, hi]}",
            )
        check(
            self.clip_values is None or self.clip_percentiles is None,
            "clip_values",
            "give at most one of 'clip_values' or 'clip_percentiles'",
        )
        k = self.median_filter
        check(
            k is None or (k >= 1 and k % 2 == 1),
            "median_filter",
            f"must be an odd number of channels >= 1, got {k}",
        )
        if self.min_prominence is not None:
            check(
                self.min_prominence >= 0,
                "min_prominence",
                f"must be >= 0, got {self.min_prominence}",
            )
        if self.rel_height is not None:
            check(
                0 < self.rel_height <= 1,
                "rel_height",
                f"must be in (0, 1], got {self.rel_height}",
            )
        if self.onset is not None:
            check(0 < self.onset < 1, "onset", f"must be in (0, 1), got {self.onset}")
        if self.bias is not None:
            steps = [b - a for a, b in zip(self.bias[:-1], self.bias[1:], strict=True)]
            check(
                len(steps) >= 4 and max(steps) > 0 and min(steps) < 0,
                "bias",
                f"must be at least 5 biases that rise and fall, got {list(self.bias)}",
            )
