"""Export a campaign as NSID: sidpy Datasets written by pyNSID into one HDF5 file.

The ``nsid`` format of `dklscope.observe.export.export_campaign` (``dklscope export DIR --to
nsid``), for the pycroscopy tools: ``pyNSID`` and ``SciFiReaders.NSIDReader`` read every dataset
back as a ``sidpy.Dataset`` with its units and axes. The layout (``docs/export.md``)::

    /                                   attrs: format ("dklscope.export.nsid"), format_version,
                                        config, config_text, instrument, versions, events (JSON)
    /Measurement_000/Channel_000/
        overview/overview               IMAGE (rows, cols); dims y, x in the instrument's units
        overview_reacquired_N/...       IMAGE, each overview re-acquired for drift (journal
                                        overview.N)
        spectra/spectra                 POINT_CLOUD (n_ok, channels): the spectrum of each ``ok``
                                        attempt; dims seq (journal sequence number) and
                                        spectral_axis (its units); point_cloud/coordinates
                                        (n_ok, 2): each one's (x, y) in the instrument's units;
                                        metadata: x_px, y_px, scalar, dwell_s... (n_ok,)
        prediction_mean/..., prediction_std/...
                                        IMAGE (grid_rows, grid_cols): the predicted scalar over
                                        the candidate grid; dims y, x in the instrument's units
        prediction_NAME_mean/..., prediction_NAME_std/...   each ``predict:`` output's maps

sidpy, pyNSID and SciFiReaders are the optional extra ``dklscope[nsid]``; only this module
imports them, and only when the format is asked for.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from dklscope.campaign.loop import Campaign

FORMAT = "dklscope.export.nsid"
FORMAT_VERSION = 1
CHANNEL = "Measurement_000/Channel_000"  # where pyNSID's convention puts a measurement's data
MODALITY = "spectroscopy at probe positions"
INSTALL_HINT = "pip install 'dklscope[nsid]'"


class NsidUnavailable(ImportError):
    """sidpy or pyNSID (the ``nsid`` extra) is not installed."""


def write_nsid(
    campaign: Campaign,
    path: Path,
    maps: dict[str, tuple[np.ndarray, np.ndarray]] | None,
    metadata: dict[str, str],
) -> None:
    """Write ``campaign`` to ``path`` as NSID (the module docstring's layout).

    ``maps``: the predicted (mean, std) over the candidates, each (N,), of the scalar and of any
    ``predict:`` output, by name, or None; ``metadata``: the root's JSON strings
    (`dklscope.observe.export.campaign_metadata`). Raises `NsidUnavailable` without the ``nsid``
    extra.
    """
    h5py, sidpy, write_nsid_dataset = _libraries()
    datasets = nsid_datasets(campaign, maps, sidpy)
    # libver v108+: attributes over 64 KiB (the coordinates of a long campaign) are stored
    # densely; with the default, sidpy would skip such an attribute without a word.
    try:
        _write(h5py, path, datasets, metadata, write_nsid_dataset)
    except BaseException:
        Path(path).unlink(missing_ok=True)  # no half-written file
        raise


def _write(
    h5py: Any,
    path: Path,
    datasets: list[tuple[str, Any]],
    metadata: dict[str, str],
    write_nsid_dataset: Any,
) -> None:
    from sidpy.hdf.prov_utils import create_indexed_group

    with h5py.File(path, "w", libver=("v108", "latest")) as f:
        f.attrs["format"] = FORMAT
        f.attrs["format_version"] = FORMAT_VERSION
        for key, value in metadata.items():
            f.attrs[key] = value
        measurement = create_indexed_group(f, "Measurement")
        channel = create_indexed_group(measurement, "Channel")
        assert channel.name == "/" + CHANNEL, channel.name
        with warnings.catch_warnings():  # pyNSID's own FutureWarning about its validation
            warnings.simplefilter("ignore", FutureWarning)
            for name, dataset in datasets:
                write_nsid_dataset(dataset, channel, name)
        _check_written(channel, datasets)


def _libraries() -> tuple[Any, Any, Any]:
    try:
        import h5py
        import sidpy
        from pyNSID.io.hdf_io import write_nsid_dataset
    except ImportError as exc:
        raise NsidUnavailable(f"the nsid format needs sidpy and pyNSID: {INSTALL_HINT}") from exc
    return h5py, sidpy, write_nsid_dataset


def nsid_datasets(
    campaign: Campaign, maps: dict[str, tuple[np.ndarray, np.ndarray]] | None, sidpy: Any
) -> list[tuple[str, Any]]:
    """The ``(name, sidpy.Dataset)`` pairs written, in order (see the module docstring)."""
    from .export import overview_names

    d = campaign.description
    names = overview_names(campaign.journal)
    reference = (
        campaign.journal.array("overview")
        if "overview" in names
        else np.asarray(campaign.overview, dtype=np.float32)
    )
    out = [("overview", _image(sidpy, reference, d.pixel_size, d.pixel_units, "overview"))]
    for name in names[1:]:
        array = np.asarray(campaign.journal.array(name))
        n = name.split(".", 1)[1]
        size, units = (d.pixel_size, d.pixel_units) if array.shape == reference.shape else (1, "px")
        out.append((f"overview_reacquired_{n}", _image(sidpy, array, size, units, name)))
    out.append(("spectra", _spectra(campaign, sidpy)))
    if maps is not None:
        p = campaign.patches
        shape = p.grid_shape
        rows = np.asarray(p.rows, dtype=np.float64).reshape(shape)[:, 0]
        cols = np.asarray(p.cols, dtype=np.float64).reshape(shape)[0]
        for output, (mean, std) in maps.items():
            prefix = "prediction" if output == "scalar" else f"prediction_{output}"
            for what, values in (("mean", mean), ("std", std)):
                grid = np.asarray(values, dtype=np.float64).reshape(shape)
                text = "mean" if what == "mean" else "standard deviation"
                ds = _image(
                    sidpy,
                    grid,
                    d.pixel_size,
                    d.pixel_units,
                    f"predicted {text} of the {output}",
                    y=rows * d.pixel_size,
                    x=cols * d.pixel_size,
                )
                ds.units = "a.u."
                ds.quantity = _quantity(campaign, output)
                out.append((f"{prefix}_{what}", ds))
    for name, ds in out:
        ds.title = name
    return out


def _image(
    sidpy: Any,
    data: np.ndarray,
    pixel_size: float,
    units: str,
    description: str,
    *,
    y: np.ndarray | None = None,
    x: np.ndarray | None = None,
) -> Any:
    """An IMAGE dataset (rows, cols) whose dims y and x are the rows' and columns' positions
    (index * ``pixel_size`` unless given) in ``units``."""
    rows, cols = data.shape
    ds = sidpy.Dataset.from_array(
        data, datatype="IMAGE", units="a.u.", quantity="intensity", modality=MODALITY
    )
    ds.source = "dklscope"
    y = np.arange(rows, dtype=np.float64) * pixel_size if y is None else y
    x = np.arange(cols, dtype=np.float64) * pixel_size if x is None else x
    ds.set_dimension(
        0, sidpy.Dimension(y, "y", quantity="y", units=units, dimension_type="spatial")
    )
    ds.set_dimension(
        1, sidpy.Dimension(x, "x", quantity="x", units=units, dimension_type="spatial")
    )
    ds.metadata = {"description": description}
    return ds


def _spectra(campaign: Campaign, sidpy: Any) -> Any:
    """The spectra of the ``ok`` attempts as a POINT_CLOUD dataset (n_ok, channels)."""
    d = campaign.description
    axis = np.asarray(campaign.axis, dtype=np.float64)
    ok = [m for m in campaign.history if m.status == "ok" and len(m.spectrum) == len(axis)]
    skipped = [m.seq for m in campaign.history if m.status == "ok" and len(m.spectrum) != len(axis)]
    if skipped:
        raise ValueError(
            f"measurements {skipped}: spectra whose length is not the spectral axis' "
            f"{len(axis)} channels"
        )
    spectra = np.array([m.spectrum for m in ok], dtype=np.float32).reshape(len(ok), len(axis))
    x_px = np.array([m.x for m in ok], dtype=np.float64)
    y_px = np.array([m.y for m in ok], dtype=np.float64)
    coordinates = np.stack([x_px, y_px], axis=1) * d.pixel_size  # (n_ok, 2): (x, y)
    ds = sidpy.Dataset.from_array(
        spectra,
        datatype="point_cloud",
        units=d.spectrum_units or "a.u.",
        quantity="intensity",
        modality=MODALITY,
        coordinates=coordinates,
    )
    ds.source = "dklscope"
    seq = np.array([m.seq for m in ok], dtype=np.int64)
    ds.set_dimension(
        0,
        sidpy.Dimension(
            seq, "seq", quantity="measurement", units="index", dimension_type="point_cloud"
        ),
    )
    ds.set_dimension(
        1,
        sidpy.Dimension(
            axis,
            "spectral_axis",
            quantity="spectral axis",
            units=d.spectral_axis.units or "channel",
            dimension_type="spectral",
        ),
    )
    # The keys sidpy's PointCloudVisualizer reads ("spacial_units" is sidpy's spelling); one
    # string each for x and y, which reads back as a string (a list would come back as bytes).
    ds.point_cloud = {
        "coordinates": coordinates,
        "spacial_units": d.pixel_units,
        "quantity": "position",
    }

    def column(name: str) -> np.ndarray:
        return np.array(
            [math.nan if (v := getattr(m, name)) is None else v for m in ok], dtype=np.float64
        )

    ds.metadata = {
        "description": "the spectrum of each ok attempt at its position (x, y)",
        "x_px": x_px,
        "y_px": y_px,
        "x_read_px": column("x_read"),
        "y_read_px": column("y_read"),
        "scalar": column("scalar"),
        "dwell_s": column("dwell_s"),
        "decision": np.array([m.decision for m in ok], dtype=np.int64),
        "candidate": np.array([m.candidate for m in ok], dtype=np.int64),
        "t_acquired": column("t_acquired"),
        "scalarizer": _quantity(campaign, "scalar"),
        "instrument": json.dumps(d.to_dict()),
    }
    return ds


def _quantity(campaign: Campaign, output: str) -> str:
    if output == "scalar":
        return f"scalar ({campaign.config.scalarizer.kind})"
    return f"{output} ({campaign.config.predict[output].kind})"


def _check_written(channel: Any, datasets: list[tuple[str, Any]]) -> None:
    """Every point's coordinates made it to the file (sidpy skips an attribute it cannot
    write rather than fail): a file missing them would lose the positions."""
    for name, ds in datasets:
        if ds.point_cloud is None:
            continue
        written = channel[name]["point_cloud"].attrs.get("coordinates")
        if written is None or np.shape(written) != np.shape(ds.point_cloud["coordinates"]):
            raise OSError(f"{channel.file.filename}: the positions of {name!r} were not written")
