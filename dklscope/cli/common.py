"""Small helpers the ``dklscope`` subcommands share: the one-line usage error, the stderr
console, the simulator section of a config, and a server's CURVE keys."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from dklscope.config import Config, ConfigError, SimulatorConfig

if TYPE_CHECKING:
    from rich.console import Console

    from dklscope.drivers.security import ServerKeys


def usage_error(message: str) -> int:
    """Report a bad command line or config in one line on stderr; exit code 2."""
    sys.stderr.write(f"error: {message}\n")
    return 2


def stderr_console() -> Console:
    from rich.console import Console

    return Console(stderr=True)


def simulator_of(config: Config) -> SimulatorConfig:
    sim = config.instrument.simulator
    if sim is None:
        raise ConfigError("instrument.simulator", "this command needs a simulator section")
    return sim


def add_server_keys(parser: argparse.ArgumentParser, secret_help: str) -> None:
    """--secret-key and --allow: a server's CURVE key and the clients it lets in."""
    parser.add_argument("--secret-key", type=Path, metavar="FILE", help=secret_help)
    parser.add_argument(
        "--allow",
        type=Path,
        action="append",
        default=[],
        metavar="PATH",
        help="with --secret-key: a client's public NAME.key, or a folder of them (repeatable)",
    )


def server_keys(secret_key: Path, allow: list[Path]) -> ServerKeys:
    """`ServerKeys` from a secret key file and the allowed clients' public keys; ValueError
    naming the file that cannot be read."""
    from dklscope.drivers.security import ServerKeys

    try:
        return ServerKeys.from_files(secret_key, allow)
    except OSError as exc:
        raise ValueError(str(exc)) from None
