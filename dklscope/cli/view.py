"""``dklscope view``: follow a campaign (its folder, or its progress events) in the browser."""

from __future__ import annotations

import argparse
import sqlite3
from pathlib import Path
from typing import Any

from .common import usage_error


def add_parser(commands: argparse._SubParsersAction) -> None:
    """``view``: the parser of ``dklscope view``."""
    view = commands.add_parser(
        "view",
        help="follow a campaign in the browser",
        description=(
            "Serve a web page that follows the campaign recorded in DIR live (its journal, "
            "read without ever holding the campaign up, woken by its progress events) or opens "
            "a finished one; or, given an events address (runner.publish), follows those "
            "events alone. The page listens on loopback unless --bind says otherwise. It is "
            "read-only unless --controls adds Pause, Resume and Stop buttons, which talk to "
            "the campaign's control socket (runner.control)."
        ),
    )
    view.set_defaults(handler=main)
    view.add_argument(
        "target",
        metavar="DIR_OR_EVENTS_ADDRESS",
        help="a campaign's output folder, or its progress events, e.g. tcp://host:5600",
    )
    view.add_argument("--port", type=int, default=5006, help="the page's port (default 5006)")
    view.add_argument(
        "--bind",
        default="127.0.0.1",
        metavar="HOST",
        help="where the page listens (default %(default)s: this machine only; 0.0.0.0: every "
        "interface, for colleagues; read-only pages only)",
    )
    view.add_argument(
        "--refresh",
        type=float,
        default=1.0,
        metavar="S",
        help="seconds between a page's updates (default 1; each costs the browser a redraw)",
    )
    view.add_argument(
        "--controls",
        action="store_true",
        help="show Pause, Resume and Stop buttons (on a loopback page only)",
    )
    view.add_argument(
        "--control",
        metavar="ADDRESS",
        help="the control socket, with an events address (a folder's journal names its own)",
    )
    view.add_argument(
        "--server-key", type=Path, metavar="FILE", help="the controller's NAME.key (CURVE)"
    )
    view.add_argument(
        "--client-key", type=Path, metavar="FILE", help="this viewer's NAME.key_secret (CURVE)"
    )


def main(args: argparse.Namespace) -> int:
    """``dklscope view``: the live view (dklscope/observe/view.py) until Ctrl-C."""
    import zmq

    from dklscope.campaign.control import ControlClient
    from dklscope.campaign.journal import JournalError
    from dklscope.campaign.resume import CampaignError
    from dklscope.drivers.security import ClientKeys
    from dklscope.observe.view import LOOPBACK, serve

    events_address = args.target if "://" in args.target else None
    if args.controls and args.bind not in LOOPBACK:
        return usage_error(
            f"--controls with --bind {args.bind}: anyone who reaches the page could stop the "
            "campaign; serve controls on loopback (reach it over ssh -L) and a read-only page "
            "elsewhere"
        )
    if args.control is not None and events_address is None:
        return usage_error("--control goes with an events address (a folder's journal names it)")
    if args.control is not None and not args.controls:
        return usage_error("--control goes with --controls")
    if (args.server_key is None) != (args.client_key is None):
        return usage_error("--server-key and --client-key go together")
    keys = None
    if args.server_key is not None:
        try:
            keys = ClientKeys.from_files(args.client_key, args.server_key)
        except (OSError, ValueError) as exc:
            return usage_error(f"--server-key/--client-key: {exc}")
    if not 0.1 <= args.refresh <= 60:
        return usage_error(f"--refresh: must be 0.1-60 s, got {args.refresh:g}")
    if not 1 <= args.port <= 65535:  # the page's own origin names its port
        return usage_error(f"--port: must be 1-65535, got {args.port}")
    control = ControlClient(keys=keys) if args.controls else None
    try:
        if events_address is not None:
            from dklscope.observe.live import EventFollower

            follower: Any = EventFollower(
                events_address, control=control, control_address=args.control, events_keys=keys
            )
        else:
            from dklscope.observe.live import JournalFollower

            if not Path(args.target).is_dir():
                return usage_error(f"{args.target}: no such folder")
            follower = JournalFollower(args.target, control=control, events_keys=keys)
    except (CampaignError, JournalError, sqlite3.DatabaseError) as exc:
        return usage_error(str(exc))
    except zmq.ZMQError as exc:  # a malformed events address
        return usage_error(f"{args.target}: {exc}")
    import torch

    # The maps are small sums: one thread, so the view never competes with the campaign for
    # every core (on a busy 2-core PC, two-thread torch in two processes runs ~10 x slower).
    torch.set_num_threads(1)
    follower.start()
    try:
        serve(
            follower.live, host=args.bind, port=args.port, control=control, refresh_s=args.refresh
        )
    except OSError as exc:
        return usage_error(f"--bind {args.bind} --port {args.port}: {exc.strerror or exc}")
    finally:
        follower.close()
        if control is not None:
            control.close()
    return 0
