"""Virtual instruments: synthetic samples with ground truth and the simulated microscope.

numpy and scipy only; serves through `dklscope.drivers` like any real instrument.
"""

from .lattice import lattice_sample
from .microscope import SimulatedMicroscope
from .sample import GaussianNoise, NoiseModel, PoissonCounts, Sample

__all__ = [
    "GaussianNoise",
    "NoiseModel",
    "PoissonCounts",
    "Sample",
    "SimulatedMicroscope",
    "lattice_sample",
]
