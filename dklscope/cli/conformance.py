"""``dklscope conformance``: check a running driver server against the driver protocol
(drivers/PROTOCOL.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import usage_error


def add_parser(commands: argparse._SubParsersAction) -> None:
    """``conformance``: a tool for the driver protocol (drivers/PROTOCOL.md)."""
    conformance = commands.add_parser(
        "conformance",
        help="check a running driver server against the protocol",
        description=(
            "Run the driver protocol's conformance checks against the server at ADDRESS; it "
            "moves the probe within the described limits and acquires at the smallest dwell."
        ),
    )
    conformance.set_defaults(handler=main)
    conformance.add_argument("address", help="the server, e.g. tcp://127.0.0.1:5555")
    conformance.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
    conformance.add_argument("--server-key", type=Path, metavar="FILE", help="server's NAME.key")
    conformance.add_argument(
        "--client-key", type=Path, metavar="FILE", help="this client's NAME.key_secret"
    )


def main(args: argparse.Namespace) -> int:
    from dklscope.drivers.conformance import run_checks
    from dklscope.drivers.security import ClientKeys

    keys = None
    if (args.server_key is None) != (args.client_key is None):
        return usage_error("--server-key and --client-key go together")
    if args.server_key is not None:
        try:
            keys = ClientKeys.from_files(args.client_key, args.server_key)
        except (OSError, ValueError) as exc:
            return usage_error(str(exc))
    results = run_checks(args.address, timeout_s=args.timeout, keys=keys)
    for result in results:
        mark = "PASS" if result.passed else "FAIL"
        sys.stdout.write(f"{mark}  {result.name}{'  ' + result.detail if result.detail else ''}\n")
    failed = sum(not r.passed for r in results)
    sys.stdout.write(f"{len(results) - failed} of {len(results)} checks passed\n")
    return 0 if failed == 0 else 1
