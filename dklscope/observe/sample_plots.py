"""Pictures of a simulated sample: what a campaign on it will be looking for."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from dklscope.model.scalarizers import Scalarizer
from dklscope.simulators import Sample


def truth_map(sample: Sample, scalarizer: Scalarizer, dwell_s: float) -> np.ndarray:
    """The scalarizer applied to the mean measurement of every spectrum pixel,
    shape (rows // oversampling, cols // oversampling)."""
    return scalarizer(sample.expected_spectra(dwell_s), sample.spectral_axis.values())


def plot_sample(
    sample: Sample, scalarizer: Scalarizer, dwell_s: float, out: Path, *, label: str = "scalar"
) -> list[Path]:
    """Write ``overview.png``, ``truth.png``, ``spectra.png`` and ``labels.png`` (if the sample
    has labels) into ``out``; returns their paths. ``label`` names the scalar; the windows the
    scalarizer reads (its ``windows``, if it has them) are shaded on the spectra."""
    truth = truth_map(sample, scalarizer, dwell_s)
    windows = list(getattr(scalarizer, "windows", ()))
    units = sample.spectral_axis.units
    rows, cols = sample.shape
    extent = (-0.5, cols - 0.5, rows - 0.5, -0.5)  # truth drawn on the overview's pixel grid
    written = []

    fig = Figure(figsize=(11, 4.6), layout="constrained")
    ax = fig.add_subplot(1, 2, 1)
    ax.imshow(sample.image, cmap="gray")
    ax.set_title(f"overview ({sample.name})")
    ax = fig.add_subplot(1, 2, 2)
    shown = ax.imshow(truth, cmap="magma", extent=extent)
    fig.colorbar(shown, ax=ax, label=label)
    where = " and ".join(f"[{lo:g}, {hi:g}]" for lo, hi in windows)
    ax.set_title(f"ground truth: {label}" + (f" in {where} {units}" if windows else ""))
    for a in fig.axes[:2]:
        a.set_xlabel("x (px)")
        a.set_ylabel("y (px)")
    written.append(out / "truth.png")
    fig.savefig(written[-1], dpi=110)

    fig = Figure(figsize=(6, 5), layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(sample.image, cmap="gray")
    ax.set_title(f"overview, {sample.pixel_size:g} {sample.pixel_units}/px")
    written.append(out / "overview.png")
    fig.savefig(written[-1], dpi=110)

    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.add_subplot()
    axis = sample.spectral_axis.values()
    spectra = sample.expected_spectra(dwell_s)
    for name, index in (("highest scalar", truth.argmax()), ("lowest scalar", truth.argmin())):
        i, j = np.unravel_index(index, truth.shape)
        k = sample.oversampling
        ax.plot(axis, spectra[i, j], label=f"{name}: x={j * k}, y={i * k} px")
    for (lo, hi), color in zip(windows, ("orange", "green", "grey"), strict=False):
        ax.axvspan(lo, hi, color=color, alpha=0.2, label=f"scalarizer window [{lo:g}, {hi:g}]")
    ax.set_xlabel(f"{sample.spectral_axis.units}")
    ax.set_ylabel(f"{sample.spectrum_units} after {dwell_s:g} s")
    ax.legend(fontsize=8)
    written.append(out / "spectra.png")
    fig.savefig(written[-1], dpi=110)

    if sample.labels:
        n = len(sample.labels)
        fig = Figure(figsize=(3.6 * n, 3.4), layout="constrained")
        for i, (name, label) in enumerate(sample.labels.items()):
            ax = fig.add_subplot(1, n, i + 1)
            fig.colorbar(ax.imshow(np.asarray(label, dtype=float)), ax=ax)
            ax.set_title(name)
        written.append(out / "labels.png")
        fig.savefig(written[-1], dpi=110)
    return written
