"""The ``dklscope`` command.

Exit codes: 0 done; 1 the instrument failed (what was measured is in the journal); 2 bad
command line or config; 130 interrupted by Ctrl-C or stopped over the control socket (what was
measured is in the journal; ``--resume`` goes on).
"""

from __future__ import annotations

import argparse
import logging

from dklscope import __version__
from dklscope.config import ConfigError

from . import conformance, keys, report, run, sample, serve, view
from .common import stderr_console, usage_error

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dklscope",
        description=(
            "Autonomous microscopy by deep kernel learning: learn which local structures of an "
            "overview image give which spectroscopic response, and measure where it pays most."
        ),
    )
    parser.add_argument("--version", action="version", version=f"dklscope {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run.add_parser(commands)
    serve.add_parser(commands)
    sample.add_parser(commands)
    report.add_report_parser(commands)
    view.add_parser(commands)
    report.add_export_parser(commands)

    from dklscope.bench.commands import add_parsers

    add_parsers(commands)
    keys.add_parser(commands)
    conformance.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _configure_logging(args.verbose)
    try:
        return args.handler(args)
    except ConfigError as exc:
        where = getattr(args, "config", None)
        return usage_error(f"{where}: {exc}" if where else str(exc))


def _configure_logging(verbose: bool) -> None:
    from rich.logging import RichHandler

    handler = RichHandler(show_path=False, console=stderr_console())
    logger = logging.getLogger("dklscope")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False
