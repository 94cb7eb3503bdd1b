"""Virtual instruments: synthetic samples with ground truth and the simulated microscope.

numpy and scipy only; serves through `dklscope.drivers` like any real instrument.
"""

from .ferroelectric import bias_waveform, ferroelectric_sample, loop_area
from .lattice import lattice_sample
from .microscope import Behaviour, SimulatedMicroscope
from .plasmonic import plasmonic_sample
from .replay import ReplayError, load_replay, replay_sample
from .sample import GaussianNoise, NoiseModel, PoissonCounts, Sample

__all__ = [
    "Behaviour",
    "GaussianNoise",
    "NoiseModel",
    "PoissonCounts",
    "ReplayError",
    "Sample",
    "SimulatedMicroscope",
    "bias_waveform",
    "ferroelectric_sample",
    "lattice_sample",
    "load_replay",
    "loop_area",
    "plasmonic_sample",
    "replay_sample",
]
