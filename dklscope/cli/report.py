"""``dklscope report`` and ``dklscope export``: a campaign folder's plots, summary.json and data
files, from its journal alone."""

from __future__ import annotations

import argparse
import logging
import sqlite3
from pathlib import Path

from .common import usage_error

log = logging.getLogger("dklscope")


def add_report_parser(commands: argparse._SubParsersAction) -> None:
    """``report``: the parser of ``dklscope report``."""
    report = commands.add_parser(
        "report",
        help="plots and summary.json of a campaign folder",
        description=(
            "Draw the plots (visits, predicted maps, scalar and best so far, latency and idle "
            "timeline, latent space, example spectra) and write summary.json for the campaign "
            "recorded in DIR, from its journal alone (running, finished or interrupted)."
        ),
    )
    report.set_defaults(handler=main)
    report.add_argument("dir", type=Path, help="the campaign's output folder")
    report.add_argument("--out", type=Path, metavar="FOLDER", help="write there (default: DIR)")


def add_export_parser(commands: argparse._SubParsersAction) -> None:
    """``export``: the parser of ``dklscope export``."""
    export = commands.add_parser(
        "export",
        help="a campaign's data as HDF5, npz or NSID",
        description=(
            "Write the overview(s), positions, spectra, scalars and predictions of the campaign "
            "in DIR to one file (layout: docs/export.md)."
        ),
    )
    export.set_defaults(handler=main)
    export.add_argument("dir", type=Path, help="the campaign's output folder")
    export.add_argument(
        "--to",
        choices=("h5", "npz", "nsid"),
        default="h5",
        help="format (default h5); nsid: sidpy datasets by pyNSID (pip install 'dklscope[nsid]')",
    )
    export.add_argument(
        "--file",
        type=Path,
        metavar="FILE",
        help="where (default: DIR/campaign.h5, .npz, or campaign.nsid.h5)",
    )


def main(args: argparse.Namespace) -> int:
    """``dklscope report DIR`` and ``dklscope export DIR``: from the journal alone."""
    from dklscope.campaign.journal import JournalError
    from dklscope.campaign.loop import Campaign
    from dklscope.campaign.resume import CampaignError

    try:
        campaign = Campaign.from_journal(args.dir)
    except (CampaignError, JournalError, sqlite3.DatabaseError) as exc:
        return usage_error(str(exc))
    with campaign.journal:
        if args.command == "report":
            from dklscope.observe.report import write_report

            for path in write_report(campaign, args.out or args.dir):
                log.info("wrote %s", path)
            return 0
        from dklscope.observe.export import export_campaign
        from dklscope.observe.nsid import NsidUnavailable

        suffix = "nsid.h5" if args.to == "nsid" else args.to
        path = args.file or args.dir / f"campaign.{suffix}"
        try:
            log.info("wrote %s", export_campaign(campaign, path, args.to))
        except NsidUnavailable as exc:
            return usage_error(str(exc))
    return 0
