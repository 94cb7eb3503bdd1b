"""The ``instrument:`` section: the built-in simulator, Nion Swift's, or a driver server."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from dklscope.drivers.nion_swift.usim import UsimSettings
from dklscope.simulators.microscope import Behaviour

from .errors import ADDRESS, check


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
        check(
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
        check(
            min(self.shape) >= 16,
            "shape",
            f"must be at least 16 x 16 pixels, got {list(self.shape)}",
        )
        check(
            max(self.shape) <= 1024,
            "shape",
            f"must be at most 1024 pixels a side, got {list(self.shape)}",
        )
        check(
            self.sample == "lattice" or self.spectra == "low-loss",
            "spectra",
            f"only the lattice sample offers 'core-loss' spectra, not {self.sample!r}",
        )
        check(
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
        check(
            sum(v is not None for v in given) == 1,
            "",
            "give exactly one of 'instrument.simulator', 'instrument.nion_usim' or "
            "'instrument.address'",
        )
        if self.address is not None:
            check(
                ADDRESS.fullmatch(self.address) is not None,
                "address",
                f"must look like tcp://host:port, got {self.address!r}",
            )
        check(self.timeout_s > 0, "timeout_s", f"must be > 0, got {self.timeout_s}")
