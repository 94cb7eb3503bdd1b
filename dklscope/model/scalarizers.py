"""Scalarizers: a spectrum on its calibrated axis -> the one number a campaign optimises.

Every scalarizer maps spectra of shape (..., channels) on ``axis`` (channels,), the values of
the spectral axis in its units, to an array of shape (...): one spectrum gives a 0-d array, a
(rows, cols, channels) cube a (rows, cols) map. Windows are ``(low, high)`` in axis units and
hold the channels with ``low <= value <= high``; a window that holds none is a `ValueError`.
Each scalarizer lists the windows it reads in ``windows`` (none for loops).

NaN policy, the same for every built-in scalarizer:

- a spectrum holding a NaN or an infinity (a failed acquisition) gives NaN;
- a quantity that does not exist gives NaN: a band ratio over an empty (zero-sum) reference
  band, a centre of mass of a zero-sum window, a coercive or nucleation bias of a branch that
  never crosses the level, a remanence of a branch that does not reach 0 V;
- no peak in the window gives ``no_peak``: ``"nan"`` (the default) or ``"zero"``.

The campaign's journal keeps a NaN scalar (as NULL) and the model skips it.

Hysteresis loops (band-excitation PFM): the spectral axis is then the step index, and the
scalarizer is given the bias in V of each channel. A step belongs to the *rising* branch when
the bias rose to it (the first step: when the bias rises from it), else to the *falling* one.
``branch="difference"`` gives the opening of the loop, positive for a loop run
counter-clockwise (the usual piezoresponse loop: switching up at a positive coercive bias,
down at a negative one).

`build_scalarizer` makes the scalarizer a `ScalarizerConfig` describes, robust options
included; `check_scalarizer` checks it against an instrument's spectral axis.
"""

from __future__ import annotations

import dataclasses
import importlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np
from scipy import ndimage, signal

from dklscope.config import ConfigError, ScalarizerConfig
from dklscope.simulators.ferroelectric import bias_waveform, loop_area

Window = tuple[float, float]


class Scalarizer(Protocol):
    """Maps spectra of shape (..., channels) on ``axis`` (channels,) to shape (...).

    The built-in scalarizers also have ``windows``, a tuple of the (low, high) windows they
    read; code that shows them (`dklscope.observe.sample_plots`) does without for other scalarizers.
    """

    def __call__(self, spectra: np.ndarray, axis: np.ndarray) -> np.ndarray: ...


def in_window(window: Window, axis: np.ndarray) -> np.ndarray:
    """Boolean mask of the channels of ``axis`` inside ``window``; a window that holds no
    channel is a `ValueError`."""
    axis = np.asarray(axis)
    inside = (axis >= window[0]) & (axis <= window[1])
    if not inside.any():
        raise ValueError(
            f"{list(window)} holds no channel of the spectral axis "
            f"[{axis.min():.4g}, {axis.max():.4g}]"
        )
    return inside


class _Base:
    """The checks every built-in scalarizer shares: ``spectra`` and ``axis`` agree, and a
    spectrum with a non-finite value gives NaN. Subclasses implement ``_scalar`` on float64
    spectra (failed ones replaced by zeros)."""

    windows: tuple[Window, ...] = ()  # the windows it reads, (low, high) in axis units

    def __call__(self, spectra: np.ndarray, axis: np.ndarray) -> np.ndarray:
        x = np.asarray(spectra, dtype=np.float64)
        axis = np.asarray(axis, dtype=np.float64)
        if x.ndim == 0 or axis.shape != x.shape[-1:]:
            raise ValueError(f"spectra of shape {x.shape} do not fit an axis of shape {axis.shape}")
        failed = ~np.isfinite(x).all(axis=-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            values = self._scalar(np.where(failed[..., None], 0.0, x), axis)
        return np.where(failed, np.nan, values)

    def _scalar(self, x: np.ndarray, axis: np.ndarray) -> np.ndarray:
        raise NotImplementedError


# -- in a window --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _InWindow(_Base):
    window: Window

    @property
    def windows(self) -> tuple[Window, ...]:  # type: ignore[override]
        return (tuple(self.window),)

    def channels(self, axis: np.ndarray) -> np.ndarray:
        """Boolean mask of the channels of ``axis`` inside the window (`in_window`)."""
        return in_window(self.window, axis)

    def _scalar(self, x: np.ndarray, axis: np.ndarray) -> np.ndarray:
        inside = self.channels(axis)
        return self._reduce(x[..., inside], axis[inside])

    def _reduce(self, x: np.ndarray, axis: np.ndarray) -> np.ndarray:
        raise NotImplementedError


@dataclass(frozen=True)
class Maximum(_InWindow):
    """The maximum of the spectrum in ``window``, in spectrum units (``peak_intensity``)."""

    def _reduce(self, x, axis):
        return x.max(axis=-1)


@dataclass(frozen=True)
class Sum(_InWindow):
    """The sum of the spectrum over the channels in ``window``, in spectrum units."""

    def _reduce(self, x, axis):
        return x.sum(axis=-1)


@dataclass(frozen=True)
class Mean(_InWindow):
    """The mean of the spectrum over the channels in ``window``, in spectrum units."""

    def _reduce(self, x, axis):
        return x.mean(axis=-1)


@dataclass(frozen=True)
class Argmax(_InWindow):
    """The axis value (axis units) of the largest channel in ``window``; the first of ties."""

    def _reduce(self, x, axis):
        return axis[x.argmax(axis=-1)]


@dataclass(frozen=True)
class CentreOfMass(_InWindow):
    """The intensity-weighted mean axis value in ``window``, ``sum(a * I) / sum(I)``, in axis
    units. Intensities are used as they are: subtract a background first (a ``clip_values``
    floor, say) if it should not count. NaN where the window's intensities sum to 0."""

    def _reduce(self, x, axis):
        return (x * axis).sum(axis=-1) / x.sum(axis=-1)


@dataclass(frozen=True)
class Integral(_InWindow):
    """The trapezoid integral of the spectrum over the channels in ``window``, in spectrum x
    axis units (0 for a window of one channel). With dI/dV spectra on a bias axis in V,
    ``window = (0, v_max)`` gives the integral of dI/dV above zero bias."""

    def _reduce(self, x, axis):
        return (0.5 * (x[..., 1:] + x[..., :-1]) * np.diff(axis)).sum(axis=-1)


@dataclass(frozen=True)
class BandRatio(_InWindow):
    """The sum over ``window`` divided by the sum over ``reference_window``: dimensionless
    (NaN where the reference sums to 0)."""

    reference_window: Window

    @property
    def windows(self) -> tuple[Window, ...]:  # type: ignore[override]
        return (tuple(self.window), tuple(self.reference_window))

    def _scalar(self, x, axis):
        reference = x[..., in_window(self.reference_window, axis)].sum(axis=-1)
        ratio = x[..., self.channels(axis)].sum(axis=-1) / reference
        return np.where(reference == 0, np.nan, ratio)


# -- peaks ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Peak(_InWindow):
    """The most prominent peak whose top lies in ``window``, found with
    `scipy.signal.find_peaks` on the whole spectrum (so a peak's prominence is measured
    against its true surroundings, not cut at the window's edges). Peaks less prominent than
    ``min_prominence`` (spectrum units) are ignored; without a peak the value is NaN
    (``no_peak="nan"``) or 0 (``no_peak="zero"``). Spectra are searched one by one."""

    min_prominence: float = 0.0
    no_peak: Literal["nan", "zero"] = "nan"

    def _scalar(self, x, axis):
        inside = self.channels(axis)
        flat = x.reshape(-1, x.shape[-1])
        out = np.full(len(flat), np.nan if self.no_peak == "nan" else 0.0)
        for i, y in enumerate(flat):
            peaks, _ = signal.find_peaks(y)
            peaks = peaks[inside[peaks]]
            if peaks.size == 0:
                continue
            prominences = signal.peak_prominences(y, peaks)[0]
            best = prominences.argmax()
            if prominences[best] > 0 and prominences[best] >= self.min_prominence:
                out[i] = self._measure(y, axis, int(peaks[best]), float(prominences[best]))
        return out.reshape(x.shape[:-1])

    def _measure(self, y: np.ndarray, axis: np.ndarray, peak: int, prominence: float) -> float:
        raise NotImplementedError


@dataclass(frozen=True)
class PeakProminence(_Peak):
    """The prominence of the peak (scipy.signal.peak_prominences: its height above the
    higher of the lowest points on either side before a higher peak), in spectrum units."""

    def _measure(self, y, axis, peak, prominence):
        return prominence


@dataclass(frozen=True)
class PeakPosition(_Peak):
    """The axis value (axis units) of the peak's top, refined between channels by the
    parabola through the top channel and its two neighbours."""

    def _measure(self, y, axis, peak, prominence):
        left, top, right = y[peak - 1], y[peak], y[peak + 1]  # find_peaks skips the ends
        curvature = left - 2 * top + right
        shift = 0.5 * (left - right) / curvature if curvature < 0 else 0.0
        return float(np.interp(peak + shift, np.arange(len(axis)), axis))


@dataclass(frozen=True)
class PeakWidth(_Peak):
    """The width (axis units) of the peak at ``rel_height`` of its prominence below its top
    (scipy.signal.peak_widths; 0.5: the full width at half prominence, the FWHM of a peak on
    a flat background), interpolated between channels."""

    rel_height: float = 0.5

    def _measure(self, y, axis, peak, prominence):
        _, _, left, right = signal.peak_widths(y, [peak], rel_height=self.rel_height)
        ends = np.interp([left[0], right[0]], np.arange(len(axis)), axis)
        return float(ends[1] - ends[0])


# -- hysteresis loops -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Loop(_Base):
    """A hysteresis loop per spectrum: channel ``i`` was measured at ``bias[i]`` V."""

    bias: tuple[float, ...]

    def _bias(self, axis: np.ndarray) -> np.ndarray:
        bias = np.asarray(self.bias, dtype=np.float64)
        if bias.shape != axis.shape:
            raise ValueError(f"{bias.size} biases for a spectral axis of {axis.size} channels")
        return bias

    def _branch(self, x: np.ndarray, axis: np.ndarray, rising: bool):
        """The bias (m,) and response (..., m) of one branch in the order it is run: rising
        biases ascending, falling ones descending."""
        bias = self._bias(axis)
        steps = np.diff(bias)
        up = np.r_[steps[0] > 0, steps > 0]
        index = np.flatnonzero(up if rising else ~up)
        index = index[np.argsort(bias[index] if rising else -bias[index], kind="stable")]
        return bias[index], x[..., index]


def _both(branch: str, measure: Callable[[bool], np.ndarray], opening: int) -> np.ndarray:
    """``measure(rising)`` of one branch, or for ``"difference"`` the opening of the loop:
    ``opening * (rising - falling)``."""
    if branch == "rising":
        return measure(True)
    if branch == "falling":
        return measure(False)
    return opening * (measure(True) - measure(False))


def _crossings(bias: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The bias at which ``y`` (..., m) changes sign between neighbouring points (linear
    interpolation), NaN where it does not: shape (..., m - 1)."""
    y0, y1 = y[..., :-1], y[..., 1:]
    crosses = (y0 < 0) != (y1 < 0)
    at = bias[:-1] + y0 / (y0 - y1) * np.diff(bias)
    return np.where(crosses, at, np.nan)


@dataclass(frozen=True)
class LoopArea(_Loop):
    """The signed area enclosed by the loop (bias, response), closed from the last step back
    to the first, by the shoelace formula (`dklscope.simulators.ferroelectric.loop_area`), in
    V x spectrum units; positive for a loop run counter-clockwise."""

    def _scalar(self, x, axis):
        return np.asarray(loop_area(self._bias(axis), x))


@dataclass(frozen=True)
class CoerciveBias(_Loop):
    """The bias (V) where a branch's response crosses zero: the median of its crossings when
    noise makes several. ``branch="difference"``: rising minus falling, the loop's width
    (twice the coercive bias of a loop without imprint)."""

    branch: Literal["rising", "falling", "difference"]

    def _scalar(self, x, axis):
        def crossing(rising: bool) -> np.ndarray:
            at = _crossings(*self._branch(x, axis, rising))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # no crossing: NaN
                return np.nanmedian(at, axis=-1)

        return _both(self.branch, crossing, opening=1)


@dataclass(frozen=True)
class NucleationBias(_Loop):
    """The bias (V) at which switching begins on a branch: run in its direction, the last
    bias before the branch first gets half-way through its switch at which it was ``onset``
    of the way from its starting level to its final one. The levels are the branch's 5th and
    95th percentiles (the starting one is the one its first half is nearer), so a spike at a
    turning point or a noisy point far from the switch does not move them. NaN when the
    branch does not switch. ``branch="difference"``: rising minus falling.

    The default ``onset`` of 0.2 suits measured loops, whose saturated ends drift; the
    simulated sample's nucleation bias ``Vc -+ 2 w`` (no linear term) is
    ``onset = (1 - tanh 2) / 2``, about 0.018."""

    branch: Literal["rising", "falling", "difference"]
    onset: float = 0.2

    def _scalar(self, x, axis):
        def nucleation(rising: bool) -> np.ndarray:
            bias, y = self._branch(x, axis, rising)
            low, high = np.percentile(y, [5, 95], axis=-1, keepdims=True)
            half = y.shape[-1] // 2
            up = np.median(y[..., :half], axis=-1) < np.median(y[..., half:], axis=-1)
            way = np.where(up[..., None], y - low, high - y) / (high - low)
            begins = _crossings(bias, way - self.onset)
            halfway = np.isfinite(_crossings(bias, way - 0.5))
            before = np.cumsum(halfway, axis=-1) - halfway == 0  # up to the first half-way
            candidates = np.isfinite(begins) & before
            last = candidates.shape[-1] - 1 - candidates[..., ::-1].argmax(axis=-1)
            at = np.take_along_axis(begins, last[..., None], axis=-1)[..., 0]
            return np.where(candidates.any(axis=-1) & halfway.any(axis=-1), at, np.nan)

        return _both(self.branch, nucleation, opening=1)


@dataclass(frozen=True)
class Remanence(_Loop):
    """The response at 0 V on a branch (spectrum units), interpolated between the steps
    around it (the mean of the steps at exactly 0 V). ``branch="difference"``: falling minus
    rising, the opening of the loop at zero bias."""

    branch: Literal["rising", "falling", "difference"]

    def _scalar(self, x, axis):
        def at_zero(rising: bool) -> np.ndarray:
            bias, y = self._branch(x, axis, rising)
            bias = bias if rising else bias[::-1]  # ascending
            y = y if rising else y[..., ::-1]
            if (bias == 0).any():
                return y[..., bias == 0].mean(axis=-1)
            j = np.searchsorted(bias, 0.0)
            if j in (0, len(bias)):
                return np.full(y.shape[:-1], np.nan)
            t = -bias[j - 1] / (bias[j] - bias[j - 1])
            return (1 - t) * y[..., j - 1] + t * y[..., j]

        return _both(self.branch, at_zero, opening=-1)


# -- your own, and robust options -----------------------------------------------------------


@dataclass(frozen=True)
class UserFunction(_Base):
    """``function(spectra, axis)`` imported from ``path = "package.module:function"``: it is
    given float64 spectra (..., channels) and the axis values (channels,) and must return
    shape (...), in whatever units it documents. The NaN policy above applies."""

    path: str
    function: Callable[[np.ndarray, np.ndarray], np.ndarray] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        module, _, name = self.path.partition(":")
        function = getattr(importlib.import_module(module), name, None)
        if not callable(function):
            raise ValueError(f"{module} has no function {name!r}")
        object.__setattr__(self, "function", function)

    def _scalar(self, x, axis):
        values = np.asarray(self.function(x, axis), dtype=np.float64)
        if values.shape != x.shape[:-1]:
            raise ValueError(
                f"{self.path} returned shape {values.shape} for spectra of shape {x.shape}; "
                f"a scalarizer must return shape {x.shape[:-1]}"
            )
        return values


@dataclass(frozen=True)
class Robust:
    """``scalarizer`` applied to spectra cleaned channel by channel, in this order: clipped to
    ``clip_values`` (spectrum units) or to each spectrum's own ``clip_percentiles`` (0-100),
    then median-filtered over ``median_filter`` neighbouring channels (along the channel axis
    only; the ends repeat the first and last channel). A spectrum with a non-finite value
    still gives NaN."""

    scalarizer: Scalarizer
    clip_values: Window | None = None
    clip_percentiles: Window | None = None
    median_filter: int | None = None

    @property
    def windows(self) -> tuple[Window, ...]:
        return tuple(getattr(self.scalarizer, "windows", ()))

    def clean(self, spectra: np.ndarray) -> np.ndarray:
        """The spectra as the scalarizer sees them, float64."""
        x = np.asarray(spectra, dtype=np.float64)
        failed = ~np.isfinite(x).all(axis=-1, keepdims=True)
        x = np.where(failed, 0.0, x)
        if self.clip_values is not None:
            x = np.clip(x, *self.clip_values)
        if self.clip_percentiles is not None:
            low, high = np.percentile(x, self.clip_percentiles, axis=-1, keepdims=True)
            x = np.clip(x, low, high)
        if self.median_filter is not None and self.median_filter > 1:
            size = (1,) * (x.ndim - 1) + (self.median_filter,)
            x = ndimage.median_filter(x, size=size, mode="nearest")
        return np.where(failed, np.nan, x)

    def __call__(self, spectra: np.ndarray, axis: np.ndarray) -> np.ndarray:
        return self.scalarizer(self.clean(spectra), axis)


# -- from the config ------------------------------------------------------------------------

KINDS: dict[str, type[_Base]] = {
    "peak_intensity": Maximum,
    "maximum": Maximum,
    "sum": Sum,
    "mean": Mean,
    "argmax": Argmax,
    "centre_of_mass": CentreOfMass,
    "integral": Integral,
    "band_ratio": BandRatio,
    "peak_prominence": PeakProminence,
    "peak_position": PeakPosition,
    "peak_width": PeakWidth,
    "loop_area": LoopArea,
    "coercive_bias": CoerciveBias,
    "nucleation_bias": NucleationBias,
    "remanence": Remanence,
}


def loop_bias(config: ScalarizerConfig) -> np.ndarray | None:
    """The bias (V) of each channel that a loop scalarizer is given, or None for other kinds."""
    if config.bias is not None:
        return np.asarray(config.bias, dtype=np.float64)
    if config.bias_waveform is not None:
        return bias_waveform(config.bias_waveform.n, config.bias_waveform.v_max)
    return None


def build_scalarizer(config: ScalarizerConfig) -> Scalarizer:
    """The scalarizer ``config`` describes, wrapped in `Robust` when it asks for clipping or
    a median filter. A ``"package.module:function"`` kind that cannot be imported is a
    `ConfigError` naming ``scalarizer.kind``."""
    scalarizer: Scalarizer
    if config.kind in KINDS:
        cls = KINDS[config.kind]
        given = {
            f.name: getattr(config, f.name)
            for f in dataclasses.fields(cls)  # type: ignore[arg-type]
            if f.name != "bias" and getattr(config, f.name) is not None
        }
        bias = loop_bias(config)
        if bias is not None:
            given["bias"] = tuple(bias.tolist())
        scalarizer = cls(**given)
    else:
        try:
            scalarizer = UserFunction(config.kind)
        except Exception as exc:  # any failure to import the user's module
            raise ConfigError(
                "scalarizer.kind", f"cannot import {config.kind!r}: {type(exc).__name__}: {exc}"
            ) from None
    if config.clip_values or config.clip_percentiles or config.median_filter:
        scalarizer = Robust(
            scalarizer, config.clip_values, config.clip_percentiles, config.median_filter
        )
    return scalarizer


def check_scalarizer(
    config: ScalarizerConfig, axis_values: np.ndarray, axis_units: str, key: str = "scalarizer"
) -> None:
    """Refuse, with a `ConfigError` naming the key (under ``key``, the scalarizer's own), a
    scalarizer that cannot read spectra on this spectral axis: a window that holds no
    channel, a bias list of the wrong length, a user function that cannot be imported."""
    axis = np.asarray(axis_values, dtype=np.float64)
    for name in ("window", "reference_window"):
        window = getattr(config, name)
        if window is not None:
            try:
                in_window(window, axis)
            except ValueError as exc:
                raise ConfigError(f"{key}.{name}", f"{exc} {axis_units}") from None
    bias = loop_bias(config)
    if bias is not None and bias.size != axis.size:
        name = "bias" if config.bias is not None else "bias_waveform.n"
        raise ConfigError(
            f"{key}.{name}",
            f"{bias.size} biases for a spectral axis of {axis.size} channels",
        )
    try:
        build_scalarizer(config)
    except ConfigError as exc:  # named under the scalarizer's own key
        raise ConfigError(exc.path.replace("scalarizer", key, 1), exc.message) from None
