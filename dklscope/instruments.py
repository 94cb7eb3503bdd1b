"""Connect a campaign to its instrument: a running driver server, or the built-in simulator."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from .config import SimulatorConfig
from .drivers import DriverServer
from .simulators import Sample, SimulatedMicroscope, lattice_sample


def build_sample(config: SimulatorConfig) -> Sample:
    """The simulated sample a `SimulatorConfig` describes."""
    return lattice_sample(config.shape, seed=config.seed)


@contextmanager
def serve_simulator(
    sample: Sample, config: SimulatorConfig, *, noise_seed: int = 0
) -> Iterator[str]:
    """Serve a simulated microscope over ``sample`` on a free loopback port; yields its address.

    The campaign then talks to it over ZeroMQ exactly as to a real instrument.
    """
    backend = SimulatedMicroscope(
        sample, seed=noise_seed, noise=config.noise, realtime=config.realtime
    )
    with DriverServer(backend, "tcp://127.0.0.1:0") as server:
        assert server.endpoint is not None
        yield server.endpoint
