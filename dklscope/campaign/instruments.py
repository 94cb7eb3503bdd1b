"""Connect a campaign to its instrument: a running driver server, the built-in simulator, or
Nion Swift's simulated STEM."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dklscope.config import Config, ConfigError, SimulatorConfig
from dklscope.drivers import DriverServer
from dklscope.simulators import Sample, SimulatedMicroscope, lattice_sample

if TYPE_CHECKING:
    from .loop import Campaign

HEARTBEAT_S = 1.0  # the campaign's heartbeat to the instrument, seconds


def build_sample(config: SimulatorConfig) -> Sample:
    """The simulated sample a `SimulatorConfig` describes."""
    if config.sample == "lattice":
        return lattice_sample(config.shape, seed=config.seed, spectra=config.spectra)
    if config.sample == "plasmonic":
        from dklscope.simulators.plasmonic import plasmonic_sample

        return plasmonic_sample(config.shape, seed=config.seed)
    if config.sample == "ferroelectric":
        from dklscope.simulators.ferroelectric import ferroelectric_sample

        return ferroelectric_sample(config.shape, seed=config.seed)
    from dklscope.simulators.replay import replay_sample

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


def instrument_address(config: Config, sample: Sample | None) -> AbstractContextManager[str]:
    """A context yielding the address of ``config``'s instrument: the built-in simulator over
    ``sample`` served on loopback, Nion's simulated STEM served from a child process (its
    Swift objects want the main thread, which the campaign keeps), or the given address.
    Raises `ConfigError` when ``instrument.nion_usim`` asks for a missing extra."""
    instrument = config.instrument
    if instrument.simulator is not None:
        assert sample is not None
        return serve_simulator(sample, instrument.simulator, noise_seed=config.seed)
    if instrument.nion_usim is not None:
        from dklscope.drivers.nion_swift.usim import NionUnavailable, require_nion, usim_subprocess

        try:
            require_nion()
        except NionUnavailable as exc:
            raise ConfigError("instrument.nion_usim", str(exc)) from None
        return usim_subprocess(instrument.nion_usim)
    assert instrument.address is not None
    return contextlib.nullcontext(instrument.address)


@contextmanager
def simulated_campaign(
    config: Config, journal: str | Path = ":memory:", **objects: Any
) -> Iterator[tuple[Campaign, Sample]]:
    """A `Campaign` of ``config`` on a fresh built-in simulator, served on loopback and reached
    over ZeroMQ as `dklscope run` does, with its journal at ``journal`` (by default in memory;
    a file that holds a campaign resumes it); yields it and its sample (the ground truth).
    ``objects`` go to `Campaign` (``policy``, ``scalarizer``, ``publisher``...). For tests,
    benchmarks and notebooks that want no output folder."""
    from dklscope.drivers import MicroscopeClient

    from .journal import Journal
    from .loop import Campaign

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
