"""``dklscope bench NAME``: speed measurements that print a table and write JSON.

Each benchmark is a module of this package, named as its sub-command, with ``DESCRIPTION``
(one line), ``add_arguments(parser)`` for its own options and ``run(args) -> list[dict]``
returning its rows; `report` prints them and writes them where ``--json`` says. Speed goals
live here, never in timed tests.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import pkgutil
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def add_parsers(commands: Any) -> None:
    """Add ``bench`` and one sub-command per benchmark to the CLI's sub-parsers."""
    bench = commands.add_parser("bench", help="measure speed (prints a table, writes JSON)")
    bench.set_defaults(handler=main)
    names = bench.add_subparsers(dest="bench_command", required=True, metavar="BENCHMARK")
    for name in sorted(m.name for m in pkgutil.iter_modules(__path__)):
        module = _module(name)
        parser = names.add_parser(name, help=module.DESCRIPTION, description=module.DESCRIPTION)
        parser.add_argument("--json", type=Path, metavar="FILE", help="also write the rows here")
        module.add_arguments(parser)


def main(args: argparse.Namespace) -> int:
    """Run the benchmark ``args.bench_command`` and report its rows."""
    rows = _module(args.bench_command).run(args)
    report(rows, title=f"dklscope bench {args.bench_command}", json_path=args.json)
    return 0


def _module(name: str) -> Any:
    return importlib.import_module(f"{__name__}.{name}")


def machine() -> dict[str, Any]:
    """Where a benchmark ran: CPU count, platform and Python, for the JSON file."""
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def report(rows: Sequence[dict[str, Any]], *, title: str, json_path: Path | None) -> None:
    """Print ``rows`` as a table on stdout and, with ``json_path``, write them as a JSON list."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    for column in columns:
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(*(_cell(row.get(column)) for column in columns))
    Console().print(table)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(list(rows), indent=2) + "\n")
        log.info("wrote %s", json_path)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
