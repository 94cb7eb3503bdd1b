"""Replay a measured hyperspectral data set as a `Sample`.

A replayed sample is a data set whose full grid of spectra was measured: the simulated
microscope then hands back the stored spectrum of whichever spectrum pixel the probe is parked
on, so a campaign can be run (and re-run) against real data.

Formats, chosen by the file's extension:

- ``.npy``: one array (rows, cols, channels). Uncalibrated: the spectral axis is the channel
  index (units ``"channel"``) and a spectrum pixel is 1 ``"px"``.
- ``.npz``: key ``spectra`` (rows, cols, channels) (or the key given by ``dataset=``) and
  optionally ``axis`` (channels,) values, or ``axis_offset`` and ``axis_scale``; ``axis_units``;
  ``image`` (an overview); ``pixel_size`` and ``pixel_units`` (the pitch of the *spectrum*
  grid); ``spectrum_units``.
- ``.h5``, ``.hdf5``, ``.hdf`` (h5py): the 3-D dataset named by ``dataset=``, or the only 3-D
  numeric dataset in the file. Dimension scales attached to it (as pyNSID/sidpy writes them)
  give the axis values, units and names: with dimensions labelled ``X`` and ``Y`` the grid is
  transposed so that rows run along Y and columns along X, and the remaining dimension is the
  spectral one; without labels the order is taken to be (rows, cols, channels).
  A file without a 3-D dataset but with a sidpy POINT_CLOUD dataset (``dklscope export
  --to nsid``: spectra (points, channels) and each point's (x, y) in ``point_cloud/coordinates``)
  is put back on the pixels of its overview (the IMAGE dataset ``overview``, or the only
  IMAGE), each spectrum on the pixel nearest its position, the mean where several share one and
  NaN where none was measured; pixel_size and units come from the overview's dimensions.
- ``.dm3``, ``.dm4`` (Gatan DigitalMicrograph) and ``.emd`` (Velox and other EMD files, not
  tested against a real Velox file) through ``rosettasciio``: the calibrations (offset, scale,
  units) come from the reader's ``axes``; the axes named ``x`` and ``y`` are the grid and the
  remaining one is the spectral axis. With several signals in a file, ``dataset=`` picks one by
  its title.

The spectral axis of a `Sample` is linear (`SpectralAxis`). When the file's axis values are not
(the BEPS bias waveform 0 → +8.5 → -8.5 → 0 V, say), the step index becomes the axis (offset 0,
scale 1, units ``"step"``) and the real values are kept in `Replay.axis_values`: use
`load_replay` to get them, `replay_sample` when only the `Sample` is needed.

``Sample.pixel_size`` is the size of an *overview* pixel: the spectrum grid's pitch divided by
the oversampling. Spectra are stored as float64 when the file holds float64 and as float32
otherwise (the simulated microscope sends float32 either way).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dklscope.drivers import SpectralAxis

from .sample import NoiseModel, Sample

HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf")
RSCIIO_SUFFIXES = (".dm3", ".dm4", ".emd")
SUFFIXES = (".npy", ".npz", *HDF5_SUFFIXES, *RSCIIO_SUFFIXES)
OVERVIEW_SUFFIXES = (".npy", ".npz", ".dm3", ".dm4")


class ReplayError(ValueError):
    """A data file that cannot be replayed; the message names the file and the problem."""


@dataclass(frozen=True)
class Replayed:
    """The noise model of replayed data: the stored spectra are already measurements.

    ``expected`` returns the signal unchanged for any dwell, and so does ``measure`` (as
    float32) unless ``sd`` is above 0, in which case it adds Gaussian noise of standard
    deviation ``sd`` (in the spectrum's units, independent of the dwell). For noise that falls
    with the dwell, pass `GaussianNoise` to `load_replay` instead.
    """

    sd: float = 0.0

    def __post_init__(self) -> None:
        if not (isinstance(self.sd, (int, float)) and math.isfinite(self.sd) and self.sd >= 0):
            raise ValueError(f"sd must be a finite number >= 0, got {self.sd!r}")

    def expected(self, signal: np.ndarray, dwell_s: float) -> np.ndarray:
        return signal

    def measure(self, signal: np.ndarray, dwell_s: float, rng: np.random.Generator) -> np.ndarray:
        if self.sd == 0:
            return np.asarray(signal, dtype=np.float32)
        return (signal + self.sd * rng.standard_normal(np.shape(signal))).astype(np.float32)


@dataclass(frozen=True)
class Replay:
    """What `load_replay` returns.

    ``sample`` is the replayed `Sample`; ``axis_values`` (channels,) float64 are the real
    values of the spectral axis in ``metadata["axis_units"]`` (equal to
    ``sample.spectral_axis.values()`` when the file's axis is linear; the measured values, e.g.
    the bias of each step, when it is not); ``metadata`` says where everything came from
    (source, format, dataset, dimension order, calibrations, overview, oversampling, reader).
    """

    sample: Sample
    axis_values: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)


def replay_sample(
    path: str | Path,
    *,
    dataset: str | None = None,
    overview: str | Path | None = None,
    derive: str = "mean",
    noise: NoiseModel | None = None,
) -> Sample:
    """The `Sample` of `load_replay` (same arguments), without the axis values and metadata."""
    return load_replay(path, dataset=dataset, overview=overview, derive=derive, noise=noise).sample


def load_replay(
    path: str | Path,
    *,
    dataset: str | None = None,
    overview: str | Path | None = None,
    derive: str = "mean",
    noise: NoiseModel | None = None,
) -> Replay:
    """Read a fully measured spectrum image and make a `Sample` that replays it.

    ``path``: the data file (see the module docstring for the formats). ``dataset``: the HDF5
    dataset path, the ``.npz`` key (default ``spectra``), or the title of the signal in a
    rosettasciio file. ``overview``: an image file (``.npy``, ``.npz`` with key ``image``,
    ``.dm3``/``.dm4``) to use as the structure image; otherwise an ``image`` stored in the
    ``.npz``, and otherwise one derived from the spectra by ``derive``:

    - ``"mean"``: the mean over channels (NaN channels ignored);
    - ``"slice:<i>"``: channel ``i`` (negative counts from the end);
    - ``"band:<lo>:<hi>"``: the sum over the channels whose axis value ``v`` (the real values,
      `Replay.axis_values`) satisfies ``lo <= v <= hi``.

    Derived images are float32, and so are given ones. The overview may be oversampled: with
    overview (R, C) and spectra (r, c, n), ``R / r`` and ``C / c`` must be the same integer k
    (else `ReplayError`), and overview pixel (row, col) replays spectrum pixel
    (row // k, col // k). ``noise`` defaults to `Replayed()`, which returns the stored spectra
    exactly whatever the dwell.

    Raises FileNotFoundError for a missing file and `ReplayError` (a ValueError) for anything
    that cannot be replayed: unknown extension, wrong number of dimensions, a missing dataset
    or key (the message lists the ones there are), data without a finite value, a bad
    ``derive`` or an overview that does not fit the grid.
    """
    path = Path(path)
    cube = _read_cube(path, dataset)
    spectra = cube["spectra"]
    n = spectra.shape[2]
    axis, values, linear = _spectral_axis(cube["axis_values"], n, cube["axis_units"])

    if overview is not None:
        image, overview_meta = _read_overview(Path(overview)), str(overview)
    elif cube.get("image") is not None:
        image, overview_meta = _as_image(cube["image"], path, "image"), f"{path.name}:image"
    else:
        image, overview_meta = _derive(spectra, values, derive, path), f"derived:{derive}"
    k = _oversampling(image.shape, spectra.shape, path, overview_meta)

    metadata = {
        **cube["metadata"],
        "source": str(path),
        "axis_units": cube["axis_units"],
        "axis_linear": linear,
        "overview": overview_meta,
        "oversampling": k,
        "spectrum_pitch": cube["pixel_size"],
        "spectrum_pitch_units": cube["pixel_units"],
    }
    sample = Sample(
        name=path.name if dataset is None else f"{path.name}:{dataset}",
        image=image,
        signal=spectra,
        spectral_axis=axis,
        pixel_size=cube["pixel_size"] / k,
        pixel_units=cube["pixel_units"],
        spectrum_units=cube["spectrum_units"],
        noise=Replayed() if noise is None else noise,
        oversampling=k,
    )
    return Replay(sample=sample, axis_values=values, metadata=metadata)


# -- reading the spectra ----------------------------------------------------------------------


def _read_cube(path: Path, dataset: str | None) -> dict[str, Any]:
    """The spectra (rows, cols, channels) and their calibrations, from any supported format."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such data file")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        if dataset is not None:
            raise ReplayError(f"{path}: dataset={dataset!r} does not apply to a .npy file")
        cube = _cube(path, _load_npy(path))
    elif suffix == ".npz":
        cube = _read_npz(path, dataset or "spectra")
    elif suffix in HDF5_SUFFIXES:
        cube = _read_hdf5(path, dataset)
    elif suffix in RSCIIO_SUFFIXES:
        cube = _read_rsciio(path, dataset)
    else:
        raise ReplayError(f"{path}: unknown extension {path.suffix!r}; supported: {SUFFIXES}")
    cube["spectra"] = _as_spectra(cube["spectra"], path)
    return cube


def _cube(path: Path, spectra: np.ndarray, **calibration: Any) -> dict[str, Any]:
    cube: dict[str, Any] = {
        "spectra": spectra,
        "axis_values": None,  # None: the channel index
        "axis_units": "channel",
        "pixel_size": 1.0,
        "pixel_units": "px",
        "spectrum_units": "a.u.",
        "image": None,
        "metadata": {"format": path.suffix.lower().lstrip(".")},
    }
    cube.update(calibration)
    return cube


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise ReplayError(f"{path}: not a numeric .npy array ({exc})") from exc


def _read_npz(path: Path, key: str) -> dict[str, Any]:
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise ReplayError(f"{path}: not a readable .npz archive ({exc})") from exc
    with archive:
        if key not in archive.files:
            raise ReplayError(f"{path}: no key {key!r}; the archive has {sorted(archive.files)}")
        spectra = archive[key]
        n = spectra.shape[-1] if spectra.ndim else 0
        if "axis" in archive.files:
            axis_values = np.asarray(archive["axis"], dtype=np.float64)
            if axis_values.shape != (n,):
                raise ReplayError(
                    f"{path}: 'axis' has shape {axis_values.shape}, expected ({n},) to match "
                    f"{key!r} of shape {spectra.shape}"
                )
        elif "axis_offset" in archive.files or "axis_scale" in archive.files:
            offset = _scalar(archive, "axis_offset", 0.0, path)
            scale = _scalar(archive, "axis_scale", 1.0, path)
            axis_values = offset + scale * np.arange(n, dtype=np.float64)
        else:
            axis_values = None
        calibration = {
            "axis_values": axis_values,
            "axis_units": _text(archive, "axis_units", "channel" if axis_values is None else ""),
            "pixel_size": _scalar(archive, "pixel_size", 1.0, path),
            "pixel_units": _text(archive, "pixel_units", "px"),
            "spectrum_units": _text(archive, "spectrum_units", "a.u."),
            "image": archive["image"] if "image" in archive.files else None,
        }
        cube = _cube(path, spectra, **calibration)
        cube["metadata"]["dataset"] = key
        return cube


def _scalar(archive: Any, key: str, default: float, path: Path) -> float:
    if key not in archive.files:
        return default
    value = archive[key]
    if value.size != 1 or not np.issubdtype(value.dtype, np.number):
        raise ReplayError(f"{path}: {key!r} must be one number, got {value!r}")
    return float(value.reshape(()))


def _text(archive: Any, key: str, default: str) -> str:
    return str(archive[key].reshape(())) if key in archive.files else default


def _read_hdf5(path: Path, dataset: str | None) -> dict[str, Any]:
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise ReplayError(f"{path}: not a readable HDF5 file ({exc})") from exc
    with f:
        if dataset is None and not _hdf5_candidates(f) and _point_clouds(f):
            dataset = _only(_point_clouds(f), "POINT_CLOUD datasets", path)
        node = f.get(dataset) if dataset is not None else None
        if isinstance(node, h5py.Dataset) and _decode(node.attrs.get("data_type", "")) == (
            "POINT_CLOUD"
        ):
            return _read_point_cloud(path, f, node)
        if dataset is None:
            candidates = _hdf5_candidates(f)
            if len(candidates) != 1:
                raise ReplayError(
                    f"{path}: found {len(candidates)} 3-D datasets {candidates}; "
                    "name the one to replay with dataset="
                )
            dataset = candidates[0]
        node = f.get(dataset)
        if not isinstance(node, h5py.Dataset):
            raise ReplayError(f"{path}: no dataset {dataset!r}; the file has {_hdf5_datasets(f)}")
        spectra = node[()]
        if spectra.ndim != 3:
            raise ReplayError(
                f"{path}: dataset {dataset!r} has shape {spectra.shape}; "
                "expected 3 dimensions (rows, cols, channels)"
            )
        labels = [_decode(dim.label) for dim in node.dims]
        scales = [_dimension_scale(dim, spectra.shape[i]) for i, dim in enumerate(node.dims)]
        order = _grid_order(labels)
        spectra = np.transpose(spectra, order)
        row, col, chan = (scales[i] for i in order)
        calibration: dict[str, Any] = {
            "spectrum_units": _decode(node.attrs.get("units", "a.u.")) or "a.u.",
        }
        if chan is not None:
            calibration["axis_values"] = chan["values"]
            calibration["axis_units"] = chan["units"]
        pitch = _grid_pitch(row, col)
        if pitch is not None:
            calibration["pixel_size"], calibration["pixel_units"] = pitch
        cube = _cube(path, spectra, **calibration)
        cube["metadata"].update(
            {
                "dataset": dataset,
                "reader": f"h5py {h5py.__version__}",
                "dims": labels,
                "transpose": order,
                "axis_name": chan["name"] if chan else labels[order[2]],
                "quantity": _decode(node.attrs.get("quantity", "")),
            }
        )
        return cube


# -- NSID point clouds (dklscope export --to nsid) ----------------------------------------------


def _main_datasets(f: Any, data_type: str) -> list[str]:
    """pyNSID main datasets (those with a ``main_data_name``) of ``data_type``."""
    return [
        name
        for name in _hdf5_datasets(f)
        if "main_data_name" in f[name].attrs
        and _decode(f[name].attrs.get("data_type", "")) == data_type
    ]


def _point_clouds(f: Any) -> list[str]:
    return _main_datasets(f, "POINT_CLOUD")


def _only(names: list[str], what: str, path: Path) -> str:
    if len(names) != 1:
        raise ReplayError(f"{path}: found {len(names)} {what} {names}; name one with dataset=")
    return names[0]


def _read_point_cloud(path: Path, f: Any, node: Any) -> dict[str, Any]:
    """Spectra measured at scattered positions (a sidpy POINT_CLOUD dataset, as ``dklscope
    export --to nsid`` writes: (points, channels), with the points' (x, y) in its group's
    ``point_cloud`` attribute ``coordinates``), put back on the pixels of the file's overview
    (its IMAGE dataset ``overview``, or its only IMAGE): each point on the overview pixel
    nearest its position, the mean where several share one, NaN where none was measured."""
    spectra = node[()]
    if spectra.ndim != 2:
        raise ReplayError(
            f"{path}: point cloud {node.name!r} has shape {spectra.shape}; "
            "expected (points, channels)"
        )
    scales = [_dimension_scale(dim, spectra.shape[i]) for i, dim in enumerate(node.dims)]
    types = [_scale_type(dim) for dim in node.dims]
    chan = types.index("SPECTRAL") if "SPECTRAL" in types else 1
    if chan == 0:
        spectra = spectra.T
    cloud = node.parent.get("point_cloud")
    coordinates = None if cloud is None else cloud.attrs.get("coordinates")
    if coordinates is None or np.shape(coordinates) != (spectra.shape[0], 2):
        raise ReplayError(
            f"{path}: point cloud {node.name!r} has no point_cloud/coordinates of shape "
            f"({spectra.shape[0]}, 2) giving each point's (x, y)"
        )
    image_name = _overview_image(path, f)
    image_node = f[image_name]
    image = _as_image(image_node[()], path, image_name)
    rows, cols = image.shape
    y_axis, x_axis = (
        _dimension_scale(dim, image.shape[i]) for i, dim in enumerate(image_node.dims)
    )
    x0, dx, units = _pixel_grid(x_axis, cols, path, image_name, "x")
    y0, dy, _ = _pixel_grid(y_axis, rows, path, image_name, "y")
    cloud_units = cloud.attrs.get("spacial_units", units)  # one string, or one each for x, y
    if isinstance(cloud_units, np.ndarray) and cloud_units.size > 1:
        cloud_units = cloud_units.flat[0]
    cloud_units = _decode(cloud_units)
    if cloud_units != units:
        raise ReplayError(
            f"{path}: the positions of {node.name!r} are in {cloud_units!r}, the overview "
            f"{image_name!r} in {units!r}"
        )
    coordinates = np.asarray(coordinates, dtype=np.float64)
    if not np.isfinite(coordinates).all():
        i = int(np.flatnonzero(~np.isfinite(coordinates).all(axis=1))[0])
        raise ReplayError(f"{path}: point {i} of {node.name!r} has no finite position")
    col = np.rint((coordinates[:, 0] - x0) / dx).astype(np.int64)
    row = np.rint((coordinates[:, 1] - y0) / dy).astype(np.int64)
    outside = (col < 0) | (col >= cols) | (row < 0) | (row >= rows)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise ReplayError(
            f"{path}: point {i} at (x, y) = {tuple(coordinates[i])} {units} lies outside the "
            f"overview {image_name!r} ({rows} × {cols} pixels)"
        )
    dtype = np.float64 if spectra.dtype == np.float64 else np.float32
    flat = row * cols + col
    pixels, inverse, counts = np.unique(flat, return_inverse=True, return_counts=True)
    sums = np.zeros((len(pixels), spectra.shape[1]), dtype=np.float64)
    np.add.at(sums, inverse, spectra)
    grid = np.full((rows * cols, spectra.shape[1]), np.nan, dtype=dtype)
    grid[pixels] = (sums / counts[:, None]).astype(dtype)
    calibration: dict[str, Any] = {
        "spectrum_units": _decode(node.attrs.get("units", "a.u.")) or "a.u.",
        "pixel_size": abs(dx),
        "pixel_units": units or "px",
        "image": image,
    }
    if scales[chan] is not None:
        calibration["axis_values"] = scales[chan]["values"]
        calibration["axis_units"] = scales[chan]["units"]
    cube = _cube(path, grid.reshape(rows, cols, spectra.shape[1]), **calibration)
    cube["metadata"].update(
        {
            "format": "nsid point cloud",
            "dataset": node.name,
            "reader": f"h5py {_h5py_version()}",
            "overview_dataset": image_name,
            "points": int(spectra.shape[0]),
            "pixels_measured": len(pixels),
            "axis_name": scales[chan]["name"] if scales[chan] else "channel",
            "quantity": _decode(node.attrs.get("quantity", "")),
        }
    )
    return cube


def _scale_type(dim: Any) -> str:
    for scale in dim.values():
        return _decode(scale.attrs.get("dimension_type", "")).upper()
    return ""


def _overview_image(path: Path, f: Any) -> str:
    images = _main_datasets(f, "IMAGE")
    named = [name for name in images if name.rsplit("/", 1)[-1] == "overview"]
    if len(named) == 1:
        return named[0]
    if len(images) == 1:
        return images[0]
    raise ReplayError(
        f"{path}: a point cloud needs the overview its positions refer to: an IMAGE dataset "
        f"named 'overview' or the only IMAGE; the file has {images}"
    )


def _pixel_grid(
    axis: dict[str, Any] | None, n: int, path: Path, image: str, name: str
) -> tuple[float, float, str]:
    """(position of pixel 0, pixel pitch, units) along one overview axis (pixels of 1 px
    without one); `ReplayError` for an axis that is not evenly spaced."""
    if axis is None:
        return 0.0, 1.0, "px"
    fit = _linear_fit(axis["values"])
    if fit is None:
        raise ReplayError(
            f"{path}: the {name} axis of the overview {image!r} is not evenly spaced; "
            "cannot place the points on its pixels"
        )
    return fit[0], fit[1] if n > 1 else 1.0, axis["units"] or "px"


def _h5py_version() -> str:
    import h5py

    return str(h5py.__version__)


def _hdf5_datasets(f: Any) -> list[str]:
    import h5py

    names: list[str] = []
    f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    return names


def _hdf5_candidates(f: Any) -> list[str]:
    """3-D numeric datasets that are not dimension scales."""
    out = []
    for name in _hdf5_datasets(f):
        d = f[name]
        is_scale = _decode(d.attrs.get("CLASS", "")) == "DIMENSION_SCALE"
        if d.ndim == 3 and d.dtype.kind in "iuf" and not is_scale:
            out.append(name)
    return out


def _decode(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.size == 1:
        return _decode(value.reshape(()).item())
    return str(value)


def _dimension_scale(dim: Any, size: int) -> dict[str, Any] | None:
    """The first 1-D dimension scale of ``size`` values attached to ``dim``, if any."""
    for scale in dim.values():
        if scale.ndim == 1 and scale.shape[0] == size and scale.dtype.kind in "iuf":
            attrs = scale.attrs
            return {
                "values": np.asarray(scale[()], dtype=np.float64),
                "units": _decode(attrs.get("units", "")),
                "name": _decode(attrs.get("name", attrs.get("NAME", dim.label))),
            }
    return None


def _grid_order(labels: list[str]) -> tuple[int, int, int]:
    """Axis order (row, col, channel): rows along Y and cols along X when so labelled."""
    lower = [label.strip().lower() for label in labels]
    if lower.count("x") == 1 and lower.count("y") == 1:
        y, x = lower.index("y"), lower.index("x")
        (chan,) = {0, 1, 2} - {x, y}
        return y, x, chan
    return 0, 1, 2


def _grid_pitch(row: dict | None, col: dict | None) -> tuple[float, str] | None:
    """(pitch, units) of the spectrum grid from the row and column axis values, if linear."""
    if row is None or col is None:
        return None
    fits = [_linear_fit(axis["values"]) for axis in (row, col)]
    if any(fit is None for fit in fits) or row["units"] != col["units"]:
        return None
    (_, row_step), (_, col_step) = fits  # type: ignore[misc]
    if not math.isclose(abs(row_step), abs(col_step), rel_tol=1e-3):
        warnings.warn(
            f"non-square spectrum pixels ({row_step} × {col_step} {col['units']}); "
            "pixel_size is the column pitch",
            stacklevel=4,
        )
    return abs(col_step), col["units"] or "px"


def _read_rsciio(path: Path, dataset: str | None) -> dict[str, Any]:
    signals = _rsciio_read(path)
    if dataset is not None:
        chosen = [s for s in signals if _title(s) == dataset]
        if not chosen:
            titles = [_title(s) for s in signals]
            raise ReplayError(f"{path}: no signal titled {dataset!r}; the file has {titles}")
    else:
        chosen = [s for s in signals if np.ndim(s["data"]) == 3]
        if len(chosen) != 1:
            shapes = {_title(s): np.shape(s["data"]) for s in signals}
            raise ReplayError(
                f"{path}: found {len(chosen)} 3-D signals among {shapes}; "
                "name the one to replay with dataset=<title>"
            )
    signal = chosen[0]
    data = np.asarray(signal["data"])
    if data.ndim != 3:
        raise ReplayError(
            f"{path}: signal {_title(signal)!r} has shape {data.shape}; expected 3 dimensions"
        )
    axes = sorted(signal["axes"], key=lambda a: a.get("index_in_array", 0))
    names = [str(a.get("name", "")).strip().lower() for a in axes]
    if names.count("x") == 1 and names.count("y") == 1:
        order = _grid_order(names)
    else:  # fall back on the reader's signal axis (navigate False) if there is exactly one
        signal_axes = [i for i, a in enumerate(axes) if a.get("navigate") is False]
        if len(signal_axes) != 1:
            raise ReplayError(f"{path}: cannot tell the spectral axis among the axes named {names}")
        (chan,) = signal_axes
        order = (*[i for i in range(3) if i != chan], chan)  # type: ignore[assignment]
    row, col, chan = (axes[i] for i in order)
    spectrum_units = _nested(
        signal.get("original_metadata", {}),
        ("ImageList", "TagGroup0", "ImageData", "Calibrations", "Brightness", "Units"),
    )
    n = data.shape[order[2]]
    calibration = {
        "axis_values": float(chan.get("offset", 0.0))
        + float(chan.get("scale", 1.0)) * np.arange(n, dtype=np.float64),
        "axis_units": _units(chan, "channel"),
        "pixel_size": abs(float(col.get("scale", 1.0))),
        "pixel_units": _units(col, "px"),
        "spectrum_units": spectrum_units if isinstance(spectrum_units, str) else "counts",
    }
    if _units(row, "px") != calibration["pixel_units"] or not math.isclose(
        abs(float(row.get("scale", 1.0))), calibration["pixel_size"], rel_tol=1e-3
    ):
        warnings.warn(
            f"{path}: non-square spectrum pixels; pixel_size is the x pitch", stacklevel=3
        )
    cube = _cube(path, np.transpose(data, order), **calibration)
    cube["metadata"].update(
        {
            "dataset": _title(signal),
            "reader": f"rosettasciio {_rsciio_version()}",
            "dims": [str(a.get("name", "")) for a in axes],
            "transpose": order,
            "axis_name": str(chan.get("name", "")),
            "signal_type": _nested(signal.get("metadata", {}), ("Signal", "signal_type")),
        }
    )
    return cube


def _rsciio_read(path: Path) -> list[dict[str, Any]]:
    try:
        if path.suffix.lower() == ".emd":
            from rsciio.emd import file_reader
        else:
            from rsciio.digitalmicrograph import file_reader
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ReplayError(
            f"{path}: reading {path.suffix} files needs rosettasciio (pip install rosettasciio)"
        ) from exc
    try:
        return list(file_reader(str(path)))
    except Exception as exc:  # the readers raise many kinds on a corrupt file
        raise ReplayError(f"{path}: rosettasciio could not read it ({exc!r})") from exc


def _rsciio_version() -> str:
    import rsciio

    return str(getattr(rsciio, "__version__", "?"))


def _title(signal: dict[str, Any]) -> str:
    return str(_nested(signal.get("metadata", {}), ("General", "title")) or "")


def _nested(d: Any, keys: tuple[str, ...]) -> Any:
    for key in keys:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def _units(axis: dict[str, Any], default: str) -> str:
    units = axis.get("units")
    return units if isinstance(units, str) and units.strip() else default


def _as_spectra(spectra: np.ndarray, path: Path) -> np.ndarray:
    spectra = np.asarray(spectra)
    if spectra.ndim != 3:
        raise ReplayError(
            f"{path}: spectra have shape {spectra.shape}; "
            "expected 3 dimensions (rows, cols, channels)"
        )
    if 0 in spectra.shape:
        raise ReplayError(f"{path}: spectra of shape {spectra.shape} are empty")
    if spectra.dtype.kind not in "iuf":
        raise ReplayError(f"{path}: spectra of dtype {spectra.dtype} are not real numbers")
    dtype = np.float64 if spectra.dtype == np.float64 else np.float32
    spectra = np.ascontiguousarray(spectra, dtype=dtype)
    if not np.isfinite(spectra).any():
        raise ReplayError(f"{path}: the spectra hold no finite value (all NaN or infinite)")
    return spectra


# -- the spectral axis ------------------------------------------------------------------------


def _linear_fit(values: np.ndarray) -> tuple[float, float] | None:
    """(offset, step) if ``values`` are evenly spaced with a nonzero step, else None."""
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2 or not np.isfinite(values).all():
        return (float(values[0]), 1.0) if values.size == 1 and np.isfinite(values[0]) else None
    step = (values[-1] - values[0]) / (values.size - 1)
    if step == 0:
        return None
    # float32-stored values round to about eps32 of their magnitude
    tolerance = 1e-5 * abs(step) + 4 * float(np.finfo(np.float32).eps) * float(np.abs(values).max())
    if np.all(np.abs(np.diff(values) - step) <= tolerance):
        return float(values[0]), float(step)
    return None


def _spectral_axis(
    values: np.ndarray | None, n: int, units: str
) -> tuple[SpectralAxis, np.ndarray, bool]:
    """The `SpectralAxis`, the real axis values and whether they were linear."""
    if values is None:
        return SpectralAxis(n, 0.0, 1.0, units), np.arange(n, dtype=np.float64), True
    fit = _linear_fit(values)
    if fit is None:
        return SpectralAxis(n, 0.0, 1.0, "step"), np.asarray(values, dtype=np.float64), False
    offset, step = fit
    return SpectralAxis(n, offset, step, units), np.asarray(values, dtype=np.float64), True


# -- the overview -----------------------------------------------------------------------------


def _read_overview(path: Path) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such overview file")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        image = _load_npy(path)
    elif suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            if "image" not in archive.files:
                raise ReplayError(
                    f"{path}: no key 'image'; the archive has {sorted(archive.files)}"
                )
            image = archive["image"]
    elif suffix in (".dm3", ".dm4"):
        images = [s for s in _rsciio_read(path) if np.ndim(s["data"]) == 2]
        if len(images) != 1:
            raise ReplayError(f"{path}: expected one 2-D image, found {len(images)}")
        image = np.asarray(images[0]["data"])
    else:
        raise ReplayError(
            f"{path}: unknown overview extension {path.suffix!r}; supported: {OVERVIEW_SUFFIXES}"
        )
    return _as_image(image, path, "overview")


def _as_image(image: np.ndarray, path: Path, what: str) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 2 or 0 in image.shape:
        raise ReplayError(f"{path}: {what} has shape {image.shape}; expected (rows, cols)")
    if image.dtype.kind not in "iuf":
        raise ReplayError(f"{path}: {what} of dtype {image.dtype} is not real numbers")
    return np.ascontiguousarray(image, dtype=np.float32)


def _derive(spectra: np.ndarray, values: np.ndarray, derive: str, path: Path) -> np.ndarray:
    kind, _, rest = derive.partition(":")
    try:
        if kind == "mean" and not rest:
            with warnings.catch_warnings():  # pixels whose channels are all NaN stay NaN
                warnings.simplefilter("ignore", RuntimeWarning)
                image = np.nanmean(spectra, axis=2)
        elif kind == "slice":
            i = int(rest)
            if not -spectra.shape[2] <= i < spectra.shape[2]:
                raise ValueError(f"channel {i} is outside 0..{spectra.shape[2] - 1}")
            image = spectra[:, :, i]
        elif kind == "band":
            lo, hi = (float(v) for v in rest.split(":"))
            inside = (values >= lo) & (values <= hi)
            if lo > hi or not inside.any():
                raise ValueError(
                    f"no channel has an axis value in [{lo}, {hi}] "
                    f"(the axis runs {values.min()} to {values.max()})"
                )
            image = spectra[:, :, inside].sum(axis=2)
        else:
            raise ValueError("expected 'mean', 'slice:<i>' or 'band:<lo>:<hi>'")
    except ValueError as exc:
        raise ReplayError(f"{path}: cannot derive an overview with {derive!r}: {exc}") from exc
    return np.ascontiguousarray(image, dtype=np.float32)


def _oversampling(
    image_shape: tuple[int, ...], spectra_shape: tuple[int, ...], path: Path, overview: str
) -> int:
    """The integer k with image (rows, cols) == k × the spectrum grid, else `ReplayError`."""
    (rows, cols), (r, c) = image_shape, spectra_shape[:2]
    if rows % r == 0 and cols % c == 0 and rows // r == cols // c and rows >= r:
        return rows // r
    raise ReplayError(
        f"{path}: the overview ({overview}) of shape {tuple(image_shape)} is not the same "
        f"integer multiple along both axes of the spectrum grid {(r, c)} "
        f"(spectra {tuple(spectra_shape)})"
    )
