"""``dklscope keys``: generate CURVE key pairs for the driver protocol (drivers/PROTOCOL.md)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from .common import usage_error

log = logging.getLogger("dklscope")


def add_parser(commands: argparse._SubParsersAction) -> None:
    """``keys``: a tool for the driver protocol (drivers/PROTOCOL.md)."""
    keys = commands.add_parser(
        "keys",
        help="generate CURVE key pairs for the driver protocol",
        description="Write NAME.key (public) and NAME.key_secret (secret) into DIR per name.",
    )
    keys.set_defaults(handler=main)
    keys.add_argument("dir", type=Path, help="folder for the key files (created)")
    keys.add_argument(
        "--name",
        action="append",
        metavar="NAME",
        help="a key pair's name (default: server, client)",
    )


def main(args: argparse.Namespace) -> int:
    from dklscope.drivers.security import generate_keys

    try:
        for path in generate_keys(args.dir, args.name or ["server", "client"]):
            log.info("wrote %s", path)
    except (OSError, FileExistsError) as exc:
        return usage_error(str(exc))
    return 0
