"""``dklscope serve``: serve a simulated microscope (the built-in simulator, or Nion Swift's
simulated STEM) over the driver protocol until interrupted."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from dklscope.config import Config, ConfigError, load_config

from .common import add_server_keys, server_keys, simulator_of, usage_error

if TYPE_CHECKING:
    from dklscope.drivers.security import ServerKeys

log = logging.getLogger("dklscope")


def add_parser(commands: argparse._SubParsersAction) -> None:
    """``serve``: the parser of ``dklscope serve``."""
    serve = commands.add_parser(
        "serve",
        help="serve a simulated microscope over the driver protocol",
        description=(
            "Serve the simulated microscope of CONFIG's 'instrument: simulator:' section (a "
            "synthetic sample or a replayed data set), or Nion Swift's simulated STEM of its "
            "'instrument: nion_usim:' section (headless; pip install 'dklscope[nion]'), over "
            "the driver protocol until interrupted. A campaign elsewhere reaches it with "
            "'instrument: address:'."
        ),
    )
    serve.set_defaults(handler=main)
    serve.add_argument(
        "config",
        type=Path,
        help="YAML file with an 'instrument: simulator:' or 'instrument: nion_usim:' section",
    )
    serve.add_argument(
        "--bind",
        default="tcp://127.0.0.1:5555",
        metavar="ADDRESS",
        help="where to listen (default: %(default)s: loopback only; name other interfaces here)",
    )
    add_server_keys(serve, "turn on CURVE: the server's NAME.key_secret (from 'dklscope keys')")


def main(args: argparse.Namespace) -> int:
    import zmq

    from dklscope.campaign.instruments import build_sample, simulated_microscope
    from dklscope.drivers import DriverServer

    config = load_config(args.config)
    keys = None
    if args.secret_key is not None:
        try:
            keys = server_keys(args.secret_key, args.allow)
        except ValueError as exc:
            return usage_error(f"--secret-key/--allow: {exc}")
    if config.instrument.nion_usim is not None:
        return _serve_nion_usim(config, args.bind, keys)
    sim = simulator_of(config)
    backend = simulated_microscope(build_sample(sim), sim, noise_seed=config.seed)
    server = DriverServer(backend, args.bind, keys=keys)
    try:
        server.start()
    except zmq.ZMQError as exc:
        return usage_error(f"--bind {args.bind}: {exc}")
    log.info("serving on %s; Ctrl-C stops", server.endpoint)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        log.info("stopped")
    finally:
        server.stop()
    return 0


def _serve_nion_usim(config: Config, bind: str, keys: ServerKeys | None) -> int:
    """Host Nion Swift's simulated STEM here (its Swift objects want this main thread) and
    serve it until Ctrl-C."""
    import zmq

    from dklscope.drivers.nion_swift.usim import NionUnavailable, serve_usim

    settings = config.instrument.nion_usim
    assert settings is not None
    try:
        serve_usim(
            settings,
            bind,
            keys=keys,
            on_ready=lambda endpoint: log.info("serving on %s; Ctrl-C stops", endpoint),
        )
    except NionUnavailable as exc:
        raise ConfigError("instrument.nion_usim", str(exc)) from None
    except zmq.ZMQError as exc:
        return usage_error(f"--bind {bind}: {exc}")
    except KeyboardInterrupt:
        log.info("stopped")
    return 0
