"""Export a campaign's data to one HDF5 (``.h5``), NumPy (``.npz``) or NSID file.

``nsid`` (sidpy Datasets written by pyNSID, the ``nsid`` extra) is `dklscope.observe.nsid`'s.

The layout is documented in ``docs/export.md``. In short, HDF5::

    /                       attrs: format, format_version, config, config_text, instrument,
                            versions, events (JSON strings)
    /overview/reference     (rows, cols)  the overview every position refers to
    /overview/reacquired_N  (rows, cols)  each overview re-acquired for drift (journal overview.N)
    /overview/x, /overview/y              physical axes of the overview (dimension scales)
    /measurements/...       (n,) one row per attempt, in journal order; spectra (n, channels)
                            with the dimension scales seq and spectral_axis
    /prediction/...         (grid_rows, grid_cols) mean, std, rows, cols; x_px, y_px scales

Every dataset has the attributes ``units`` and ``quantity`` (the names sidpy uses) and
``description``; axes are HDF5 dimension scales with a ``dimension_type`` and a ``name``. The
main datasets (the overviews, the spectra and the prediction maps) also carry the attributes
pyNSID requires of a main dataset (``main_data_name``, ``data_type``, ``modality``, ``source``,
``pyNSID_version``), so ``pyNSID.io.hdf_utils.read_h5py_dataset`` reads each as a
``sidpy.Dataset`` with its axes; the file has no ``Measurement_000/Channel_000`` groups.

The ``.npz`` file holds the same arrays under flat names (``overview``, ``spectra``,
``spectral_axis``, ``x_px``, ``prediction_mean``...: `Item.flat`), their units in the JSON
string ``units_json`` and the metadata as JSON strings; it loads without ``allow_pickle``.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from dklscope.campaign.journal import Journal
    from dklscope.campaign.loop import Campaign

log = logging.getLogger(__name__)

FORMAT = "dklscope.export"
FORMAT_VERSION = 1
FORMATS = ("h5", "npz", "nsid")
PYNSID_VERSION = "0.0.7"  # the pyNSID attribute layout the main datasets follow

_REACQUIRED = re.compile(r"overview\.(\d+)")


@dataclass(frozen=True)
class Item:
    """One exported array: its HDF5 path, its flat ``.npz`` name, data, units and meaning.

    ``scales``: per dimension, the HDF5 path of the dataset attached as its dimension scale
    (None: none).
    """

    h5: str
    flat: str
    data: np.ndarray
    units: str
    quantity: str
    description: str
    scales: tuple[str | None, ...] = ()
    dimension_type: str | None = None  # for datasets that are themselves dimension scales
    data_type: str | None = None  # sidpy's data type, for the main datasets pyNSID reads


def export_campaign(
    campaign: Campaign,
    path: Path,
    fmt: Literal["h5", "npz", "nsid"],
    *,
    prediction: tuple[np.ndarray, np.ndarray] | None = None,
) -> Path:
    """Write the campaign's data to ``path`` in ``fmt`` (layout: ``docs/export.md``):
    ``h5``, ``npz`` or ``nsid`` (`dklscope.observe.nsid`; raises its ``NsidUnavailable``, an
    ImportError, without the ``nsid`` extra).

    ``prediction``: the model's (mean, std) over the candidates, each (N,), if already
    computed; else `Campaign.predict` is called when at least two finite scalars were measured,
    and the prediction is left out when fewer were. Writes only ``path`` (its folder must
    exist) and returns it.
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    path = Path(path)
    maps = {"scalar": prediction} if prediction is not None else None
    if maps is None and _n_scored(campaign) >= 2:
        maps = campaign.predict_outputs()
    metadata = campaign_metadata(campaign)
    if fmt == "nsid":
        from .nsid import write_nsid

        write_nsid(campaign, path, maps, metadata)
        log.info("exported the campaign as NSID to %s", path)
        return path
    items = campaign_items(campaign, maps)
    if fmt == "h5":
        _write_h5(path, items, metadata)
    else:
        _write_npz(path, items, metadata)
    log.info("exported %d arrays to %s", len(items), path)
    return path


# -- what is exported ---------------------------------------------------------------------------


def campaign_metadata(campaign: Campaign) -> dict[str, str]:
    """The campaign's metadata as JSON strings (``config_text`` verbatim): ``config`` (resolved),
    ``config_text``, ``instrument``, ``versions``, ``events``."""
    journal = campaign.journal
    return {
        "config": json.dumps(campaign.config.to_dict()),
        "config_text": _metadata(journal, "config_text", ""),
        "instrument": json.dumps(campaign.description.to_dict()),
        "versions": json.dumps(_metadata(journal, "versions", {})),
        "events": json.dumps(journal.events()),
    }


def campaign_items(
    campaign: Campaign, maps: dict[str, tuple[np.ndarray, np.ndarray]] | None
) -> list[Item]:
    """Every exported array of ``campaign`` (see ``docs/export.md``), in the order written;
    ``maps``: the predicted (mean, std) over the candidates of the scalar and of any of
    ``config.predict``'s outputs, by name (`Campaign.predict_outputs`), or None."""
    return [
        *_overview_items(campaign),
        *_measurement_items(campaign),
        *(_prediction_items(campaign, maps) if maps is not None else []),
    ]


def overview_names(journal: Journal) -> list[str]:
    """The journal's overview arrays: ``overview``, then ``overview.N`` in increasing N."""
    names = journal.array_names()
    reacquired = sorted(
        (int(m.group(1)), name) for name in names if (m := _REACQUIRED.fullmatch(name))
    )
    return (["overview"] if "overview" in names else []) + [name for _, name in reacquired]


def _overview_items(campaign: Campaign) -> list[Item]:
    d = campaign.description
    names = overview_names(campaign.journal)
    reference = (
        campaign.journal.array("overview")
        if "overview" in names
        else np.asarray(campaign.overview, dtype=np.float32)
    )
    rows, cols = reference.shape
    scales = ("/overview/y", "/overview/x")
    items = [
        Item(
            "/overview/y",
            "overview_y",
            np.arange(rows, dtype=np.float64) * d.pixel_size,
            d.pixel_units,
            "y",
            "physical position of each overview row (row index * pixel_size)",
            dimension_type="SPATIAL",
        ),
        Item(
            "/overview/x",
            "overview_x",
            np.arange(cols, dtype=np.float64) * d.pixel_size,
            d.pixel_units,
            "x",
            "physical position of each overview column (column index * pixel_size)",
            dimension_type="SPATIAL",
        ),
        Item(
            "/overview/reference",
            "overview",
            np.asarray(reference),
            "a.u.",
            "intensity",
            "the overview every position refers to (journal array 'overview')",
            scales,
            data_type="IMAGE",
        ),
    ]
    for name in names[1:]:
        array = np.asarray(campaign.journal.array(name))
        n = name.split(".", 1)[1]
        items.append(
            Item(
                f"/overview/reacquired_{n}",
                f"overview_reacquired_{n}",
                array,
                "a.u.",
                "intensity",
                f"an overview re-acquired for drift correction (journal array {name!r})",
                scales if array.shape == reference.shape else (),
                data_type="IMAGE" if array.shape == reference.shape else None,
            )
        )
    return items


def _measurement_items(campaign: Campaign) -> list[Item]:
    d = campaign.description
    history = campaign.history
    axis = np.asarray(campaign.axis, dtype=np.float64)
    spectra = np.full((len(history), len(axis)), np.nan, dtype=np.float32)
    for i, m in enumerate(history):
        if len(m.spectrum) == len(axis):
            spectra[i] = m.spectrum
        elif len(m.spectrum):
            raise ValueError(
                f"measurement {m.seq}: spectrum of {len(m.spectrum)} channels, "
                f"the spectral axis has {len(axis)}"
            )

    def column(name: str, dtype: Any = np.float64) -> np.ndarray:
        values = [getattr(m, name) for m in history]
        if dtype is str:
            return np.array(["" if v is None else str(v) for v in values], dtype=str)
        return np.array([math.nan if v is None else v for v in values], dtype=dtype)

    g = "/measurements/"
    seq = ("/measurements/seq",)
    s, px, unix = "s", "px", "Unix time (s)"
    rows: list[tuple[str, np.ndarray, str, str, str]] = [
        ("decision", column("decision", np.int64), "", "decision", "the decision measured"),
        ("kind", column("kind", str), "", "kind", "'seed' (random) or 'policy'"),
        ("candidate", column("candidate", np.int64), "", "candidate", "candidate grid index"),
        ("status", column("status", str), "", "status", "'ok', 'retried' or 'failed'"),
        ("attempt", column("attempt", np.int64), "", "attempt", "0 for a decision's first"),
        ("error", column("error", str), "", "error", "what went wrong ('' if nothing)"),
        ("x_px", column("x"), px, "x", "position asked for (column), drift corrected"),
        ("y_px", column("y"), px, "y", "position asked for (row), drift corrected"),
        ("x_read_px", column("x_read"), px, "x", "position read back (NaN: none)"),
        ("y_read_px", column("y_read"), px, "y", "position read back (NaN: none)"),
    ]
    for name in ("x", "y", "x_read", "y_read"):
        physical = column(name) * d.pixel_size
        what = "asked for" if name in ("x", "y") else "read back"
        rows.append(
            (f"{name}_physical", physical, d.pixel_units, name[0], f"position {what} * pixel_size")
        )
    rows += [
        ("dwell_s", column("dwell_s"), s, "dwell time", "actual dwell"),
        ("scalar", column("scalar"), "a.u.", _scalar(campaign), "scalar (NaN: not finite)"),
        ("acquisition_value", column("acquisition_value"), "a.u.", "acquisition value", ""),
        ("predicted_mean", column("predicted_mean"), "a.u.", "predicted mean", "at decision"),
        ("predicted_std", column("predicted_std"), "a.u.", "predicted std", "at decision"),
        ("t_decided", column("t_decided"), unix, "time", "decision made"),
        ("t_acquired", column("t_acquired"), unix, "time", "end of exposure (NaN: none)"),
        ("t_requested", column("t_requested"), unix, "time", "move + acquire sent"),
        ("t_done", column("t_done"), unix, "time", "reply received"),
        ("decision_latency_s", column("decision_latency_s"), s, "duration", "fit + choose"),
        ("idle_s", column("idle_s"), s, "duration", "instrument idle before (NaN: first)"),
    ]
    items = [
        Item(
            g + "seq",
            "seq",
            column("seq", np.int64),
            "index",
            "measurement",
            "journal sequence number of each attempt",
            dimension_type="UNKNOWN",
        ),
        Item(
            g + "spectral_axis",
            "spectral_axis",
            axis,
            d.spectral_axis.units,
            "spectral axis",
            "calibrated value of each spectrum channel",
            dimension_type="SPECTRAL",
        ),
        Item(
            g + "spectra",
            "spectra",
            spectra,
            d.spectrum_units,
            "intensity",
            "spectrum of each attempt (NaN row: none came back)",
            (seq[0], g + "spectral_axis"),
            data_type="LINE_PLOT_FAMILY",
        ),
    ]
    items += [Item(g + n, n, a, u, q, text, seq) for n, a, u, q, text in rows]
    for j, (name, config) in enumerate(campaign.config.predict.items(), start=1):
        values = np.array([campaign.outputs(m)[j] for m in history], dtype=np.float64)
        quantity = f"{name} ({config.kind})"
        items.append(
            Item(g + f"outputs/{name}", f"output_{name}", values, "a.u.", quantity, "", seq)
        )
    return items


def _prediction_items(
    campaign: Campaign, maps: dict[str, tuple[np.ndarray, np.ndarray]]
) -> list[Item]:
    p = campaign.patches
    shape = p.grid_shape
    rows = np.asarray(p.rows, dtype=np.int64).reshape(shape)
    cols = np.asarray(p.cols, dtype=np.int64).reshape(shape)
    g = "/prediction/"
    scales = (g + "y_px", g + "x_px")
    items = [
        Item(
            g + "y_px",
            "prediction_y_px",
            rows[:, 0].copy(),
            "px",
            "y",
            "grid row centres",
            dimension_type="SPATIAL",
        ),
        Item(
            g + "x_px",
            "prediction_x_px",
            cols[0].copy(),
            "px",
            "x",
            "grid column centres",
            dimension_type="SPATIAL",
        ),
    ]
    for name, (mean, std) in maps.items():
        # The scalar's maps at the group's top; each predicted output's under outputs/NAME.
        path, key, quantity = g, "prediction_", _scalar(campaign)
        if name != "scalar":
            path, key = f"{g}outputs/{name}/", f"prediction_output_{name}_"
            quantity = f"{name} ({campaign.config.predict[name].kind})"
        for what, values in (("mean", mean), ("std", std)):
            text = "mean" if what == "mean" else "standard deviation"
            items.append(
                Item(
                    path + what,
                    key + what,
                    _grid(values, shape),
                    "a.u.",
                    quantity,
                    f"predicted {text} of the {name} at each candidate",
                    scales,
                    data_type="IMAGE",
                )
            )
    items += [
        Item(g + "rows", "prediction_rows", rows, "px", "y", "candidate centre row", scales),
        Item(g + "cols", "prediction_cols", cols, "px", "x", "candidate centre column", scales),
    ]
    return items


def _grid(values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).reshape(shape)


def _scalar(campaign: Campaign) -> str:
    return f"scalar ({campaign.config.scalarizer.kind})"


def _n_scored(campaign: Campaign) -> int:
    return sum(m.ok and math.isfinite(m.scalar) for m in campaign.history)


def _metadata(journal: Journal, key: str, default: Any) -> Any:
    try:
        return journal.metadata(key)
    except KeyError:
        return default


# -- writing ------------------------------------------------------------------------------------


def _write_h5(path: Path, items: list[Item], metadata: dict[str, str]) -> None:
    import h5py

    strings = h5py.string_dtype()
    with h5py.File(path, "w") as f:
        f.attrs["format"] = FORMAT
        f.attrs["format_version"] = FORMAT_VERSION
        for key, value in metadata.items():
            f.attrs[key] = value
        datasets = {}
        for item in items:
            data = item.data
            if data.dtype.kind == "U":
                ds = f.create_dataset(item.h5, data=data.astype(object), dtype=strings)
            else:
                ds = f.create_dataset(item.h5, data=data)
            ds.attrs["units"] = item.units
            ds.attrs["quantity"] = item.quantity
            ds.attrs["description"] = item.description
            if item.dimension_type is not None:
                ds.attrs["dimension_type"] = item.dimension_type
                ds.attrs["name"] = item.h5.rsplit("/", 1)[1]
                ds.make_scale(item.quantity)
            if item.data_type is not None:  # what pyNSID's check_if_main asks of a main dataset
                ds.attrs.update(
                    main_data_name=item.flat,
                    data_type=item.data_type,
                    modality="spectroscopy at probe positions",
                    source="dklscope",
                    pyNSID_version=PYNSID_VERSION,
                )
            datasets[item.h5] = ds
        for item in items:
            for dim, scale in enumerate(item.scales):
                if scale is not None:
                    datasets[item.h5].dims[dim].attach_scale(datasets[scale])
                    datasets[item.h5].dims[dim].label = scale.rsplit("/", 1)[1]


def _write_npz(path: Path, items: list[Item], metadata: dict[str, str]) -> None:
    arrays: dict[str, np.ndarray] = {item.flat: item.data for item in items}
    units = {item.flat: {"units": item.units, "quantity": item.quantity} for item in items}
    arrays["units_json"] = np.array(json.dumps(units))
    for key, value in metadata.items():
        arrays[key if key == "config_text" else f"{key}_json"] = np.array(value)
    arrays["format"] = np.array(FORMAT)
    arrays["format_version"] = np.array(FORMAT_VERSION)
    with open(path, "wb") as f:  # a file object: numpy adds no ".npz" to the name
        np.savez_compressed(f, **arrays)
