"""Connect a campaign to its instrument: a running driver server, or the built-in simulator."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import Config, ConfigError, SimulatorConfig
from .drivers import DriverServer
from .simulators import Sample, SimulatedMicroscope, lattice_sample

if TYPE_CHECKING:
    from .campaign import Campaign


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


@contextmanager
def simulated_campaign(
    config: Config, journal: str | Path = ":memory:", **objects: Any
) -> Iterator[tuple[Campaign, Sample]]:
    """A `Campaign` of ``config`` on a fresh built-in simulator, served on loopback and reached
    over ZeroMQ as `dklscope run` does, with its journal at ``journal`` (by default in memory;
    a file that holds a campaign resumes it); yields it and its sample (the ground truth).
    ``objects`` go to `Campaign` (``policy``, ``scalarizer``, ``publisher``...). For tests,
    benchmarks and notebooks that want no output folder."""
    from .campaign import Campaign
    from .drivers import MicroscopeClient
    from .journal import Journal

    sim = config.instrument.simulator
    if sim is None:
        raise ConfigError("instrument.simulator", "a simulated campaign needs a simulator")
    sample = build_sample(sim)
    with (
        serve_simulator(sample, sim, noise_seed=config.seed) as address,
        MicroscopeClient(address) as client,
        Journal(journal) as opened,
    ):
        yield Campaign(config, client, opened, **objects), sample
