"""Virtual instruments: synthetic samples with ground truth and the simulated microscope.

numpy and scipy only; serves through `dklscope.drivers` like any real instrument.
"""

from .lattice import lattice_sample
from .microscope import SimulatedMicroscope
from .sample import Sample

__all__ = ["Sample", "SimulatedMicroscope", "lattice_sample"]
