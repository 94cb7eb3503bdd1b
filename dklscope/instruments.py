"""Connect a campaign to its instrument: a running driver server, or the built-in simulator."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from .config import ConfigError, SimulatorConfig
from .drivers import DriverServer
from .simulators import Sample, SimulatedMicroscope, lattice_sample


def build_sample(config: SimulatorConfig) -> Sample:
    """The simulated sample a `SimulatorConfig` describes."""
    if config.sample == "lattice":
        return lattice_sample(config.shape, seed=config.seed, spectra=config.spectra)
    if config.sample == "plasmonic":
        from .simulators.plasmonic import plasmonic_sample

        return plasmonic_sample(config.shape, seed=config.seed)
    if config.sample == "ferroelectric":
        from .simulators.ferroelectric import ferroelectric_sample

        return ferroelectric_sample(config.shape, seed=config.seed)
    from .simulators.replay import replay_sample

    replay = config.replay
    assert replay is not None  # the config checks this
    try:
        return replay_sample(
            replay.path, dataset=replay.dataset, overview=replay.overview, derive=replay.derive
        )
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError("instrument.simulator.replay", str(exc)) from None


def simulated_microscope(
    sample: Sample, config: SimulatorConfig, *, noise_seed: int = 0
) -> SimulatedMicroscope:
    """The simulated microscope a `SimulatorConfig` describes, measuring ``sample``."""
    return SimulatedMicroscope(
        sample,
        seed=noise_seed,
        noise=config.noise,
        realtime=config.realtime,
        behaviour=config.behaviour,
    )


@contextmanager
def serve_simulator(
    sample: Sample, config: SimulatorConfig, *, noise_seed: int = 0
) -> Iterator[str]:
    """Serve a simulated microscope over ``sample`` on a free loopback port; yields its address.

    The campaign then talks to it over ZeroMQ exactly as to a real instrument.
    """
    backend = simulated_microscope(sample, config, noise_seed=noise_seed)
    with DriverServer(backend, "tcp://127.0.0.1:0") as server:
        assert server.endpoint is not None
        yield server.endpoint
