"""Virtual instruments: synthetic samples with ground truth and the simulated microscope.

numpy and scipy only; serves through `dklscope.drivers` like any real instrument.
"""

from .ferroelectric import bias_waveform, ferroelectric_sample, loop_area
from .lattice import lattice_sample
from .microscope import Behaviour, SimulatedMicroscope
from .sample import GaussianNoise, NoiseModel, PoissonCounts, Sample

__all__ = [
    "Behaviour",
    "GaussianNoise",
    "NoiseModel",
    "PoissonCounts",
    "Sample",
    "SimulatedMicroscope",
    "bias_waveform",
    "ferroelectric_sample",
    "lattice_sample",
    "loop_area",
]
