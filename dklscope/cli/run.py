"""``dklscope run``: run a campaign from its config, or resume one from its journal, with a
progress bar, and write its summary and plots."""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dklscope.campaign.journal import EMBEDDING_NAME, JOURNAL_NAME
from dklscope.config import Config, ConfigError, from_dict, load_config

from .common import add_server_keys, server_keys, stderr_console, usage_error

if TYPE_CHECKING:
    from dklscope.campaign.journal import Journal, Measurement
    from dklscope.campaign.loop import Campaign
    from dklscope.simulators import Sample

log = logging.getLogger("dklscope")


def add_parser(commands: argparse._SubParsersAction) -> None:
    """``run``: the parser of ``dklscope run``."""
    run = commands.add_parser(
        "run",
        help="run a campaign from a YAML config",
        description=(
            "Run the campaign CONFIG describes and record it in DIR: journal.sqlite (every "
            "measurement, committed before the next move), summary.json and PNG plots. With "
            "'instrument: simulator:' the built-in simulated microscope is served on a free "
            "loopback port, with 'instrument: nion_usim:' Nion Swift's simulated STEM (from a "
            "child process); with 'instrument: address: tcp://host:port' a running driver "
            "server is used."
        ),
    )
    run.set_defaults(handler=main)
    run.add_argument("config", type=Path, help="campaign YAML file, e.g. configs/quickstart.yaml")
    where = run.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--out", type=Path, metavar="DIR", help="output folder (created; must not hold a journal)"
    )
    where.add_argument(
        "--resume",
        type=Path,
        metavar="DIR",
        help="continue the campaign recorded in DIR (after a crash, a kill or Ctrl-C)",
    )
    run.add_argument(
        "--force",
        action="store_true",
        help="with --resume: go on although CONFIG differs from the journal's (journaled)",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    add_server_keys(
        run,
        "turn on CURVE for the controller's own sockets (runner.publish, runner.control): "
        "its NAME.key_secret (from 'dklscope keys')",
    )


def main(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    out: Path = args.resume or args.out
    if args.resume is not None and not (out / JOURNAL_NAME).is_file():
        return usage_error(f"--resume {out}: no {JOURNAL_NAME} there")
    if args.resume is None and (out / JOURNAL_NAME).exists():
        return usage_error(
            f"{out} already holds a campaign journal; choose another --out, or --resume it"
        )
    if args.force and args.resume is None:
        return usage_error("--force goes with --resume")
    keys = None
    if args.secret_key is not None:
        if config.runner.publish is None and config.runner.control is None:
            return usage_error("--secret-key: the config sets neither runner.publish nor control")
        try:
            keys = server_keys(args.secret_key, args.allow)
        except ValueError as exc:
            return usage_error(f"--secret-key/--allow: {exc}")
    elif args.allow:
        return usage_error("--allow goes with --secret-key")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return usage_error(f"--out {out}: {exc.strerror}")

    # Heavy imports (torch) only once the config is known to be good.
    from dklscope.campaign.control import ControlServer
    from dklscope.campaign.instruments import HEARTBEAT_S, build_sample, instrument_address
    from dklscope.campaign.journal import Journal, JournalError
    from dklscope.campaign.loop import Campaign
    from dklscope.campaign.progress import ProgressPublisher
    from dklscope.campaign.resume import CampaignError, check_config_against
    from dklscope.drivers import InstrumentError, InstrumentTimeout, MicroscopeClient, ProtocolError
    from dklscope.drivers.nion_swift.usim import UsimError

    config_text = args.config.read_text(encoding="utf-8")
    if args.resume is not None:
        try:
            with Journal(out / JOURNAL_NAME) as journal:
                if status := _check_resumed_config(journal, config, config_text, args):
                    return status
        except (JournalError, sqlite3.DatabaseError) as exc:
            return usage_error(f"--resume {out}: {exc}")
    sim = config.instrument.simulator
    sample = build_sample(sim) if sim is not None else None
    connection = instrument_address(config, sample)
    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        # The controller's own sockets, bound before any file is made: a busy or bad address
        # leaves no journal behind.
        events = control = None
        try:
            if config.runner.publish:
                events = stack.enter_context(ProgressPublisher(config.runner.publish, keys=keys))
        except ValueError as exc:
            return usage_error(f"runner.publish: {exc}")
        try:
            if config.runner.control:
                control = stack.enter_context(ControlServer(config.runner.control, keys=keys))
        except ValueError as exc:
            return usage_error(f"runner.control: {exc}")
        try:
            address = stack.enter_context(connection)
        except UsimError as exc:  # the Nion simulator did not come up
            log.error("%s", exc)
            return 1
        client = stack.enter_context(
            MicroscopeClient(
                address, timeout_s=config.instrument.timeout_s, heartbeat_s=HEARTBEAT_S
            )
        )
        log.info("instrument at %s; writing to %s", address, out)
        try:
            # Arms the server's dead-man switch: if this process dies, the beam is parked.
            client.hello()
            # What this instrument cannot do is a config error, found before any file is made.
            check_config_against(config, client.describe())
            with Journal(out / JOURNAL_NAME) as journal:
                campaign = Campaign(
                    config,
                    client,
                    journal,
                    config_text=config_text,
                    embedding_path=out / EMBEDDING_NAME,
                    publisher=events,
                )
                if control is not None:
                    control.serve(campaign)
                status = _run_to_end(campaign, show_progress=not args.no_progress)
                if campaign.history:
                    _write_results(campaign, out, sample, time.perf_counter() - t0)
        except (InstrumentError, InstrumentTimeout, ProtocolError, CampaignError) as exc:
            log.error("%s", exc)
            return 1
    if status != 0:
        log.warning("resume with: dklscope run %s --resume %s", args.config, out)
    return status


def _check_resumed_config(
    journal: Journal, config: Config, config_text: str, args: argparse.Namespace
) -> int:
    """0 if ``config`` is the journal's, or differs and ``--force`` says go on (journaled);
    else the exit code of a refusal."""
    try:
        journaled = journal.metadata("config")
    except KeyError:
        return 0  # killed before the campaign began: nothing to compare with
    try:  # with the defaults of keys added since (e.g. dose), which an older journal lacks
        journaled = from_dict(Config, journaled).to_dict()
    except ConfigError:
        pass  # compared as it is: every difference is named
    now = config.to_dict()
    changed = sorted(_changed_keys(journaled, now))
    if not changed:
        return 0
    if not args.force:
        return usage_error(
            f"{args.config} differs from the config of the campaign in {args.resume} at "
            f"{', '.join(changed)}; resume with the same config, or add --force"
        )
    log.warning("resuming with a changed config (--force): %s", ", ".join(changed))
    with journal.transaction():
        journal.log_event("config_changed", keys=changed, before=journaled, after=now)
        journal.set_metadata("config", now)
        journal.set_metadata("config_text", config_text)
    return 0


def _changed_keys(a: Any, b: Any, path: str = "") -> list[str]:
    """The dotted keys where the plain-data configs ``a`` and ``b`` differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [
            key
            for k in sorted(set(a) | set(b))
            for key in _changed_keys(a.get(k), b.get(k), f"{path}.{k}" if path else k)
        ]
    return [] if a == b else [path]


def _run_to_end(campaign: Campaign, *, show_progress: bool) -> int:
    """Run the campaign; returns the exit code. Whatever was measured stays in the journal.

    The first Ctrl-C lets the measurement under way finish and be journaled, then stops (exit
    130, resumable); a second one abandons it at once.
    """
    from dklscope.drivers import InstrumentError, InstrumentTimeout, ProtocolError

    def interrupt(signum: int, frame: object) -> None:
        if campaign.stop_requested:
            raise KeyboardInterrupt
        log.warning("Ctrl-C: stopping after the measurement under way (Ctrl-C again: at once)")
        campaign.request_stop()

    previous = signal.signal(signal.SIGINT, interrupt)
    try:
        reason = _run_with_progress(campaign, show=show_progress)
    except (InstrumentError, InstrumentTimeout, ProtocolError) as exc:
        log.error("%s; %d measurements are in the journal", exc, len(campaign.history))
        return 1
    except KeyboardInterrupt:
        log.warning("interrupted; %d measurements are in the journal", len(campaign.history))
        return 130
    finally:
        signal.signal(signal.SIGINT, previous)
    if campaign.stop_requested:  # Ctrl-C, or a stop over the control socket
        return 130
    if reason.startswith("measurement"):  # runner.on_failure: stop
        return 1
    return 0


def _write_results(campaign: Campaign, out: Path, sample: Sample | None, wall_s: float) -> None:
    """``summary.json`` and the plots of a campaign with at least one measurement."""
    from dklscope.observe.report import write_report

    write_report(campaign, out, wall_s=wall_s, sample=sample)
    best = campaign.best()
    log.info(
        "%d measurements; best %s = %s at (x=%s, y=%s) px; summary in %s",
        len(campaign.history),
        campaign.config.scalarizer.kind,
        None if best is None else f"{best.scalar:.4g}",
        None if best is None else best.x,
        None if best is None else best.y,
        out / "summary.json",
    )


def _run_with_progress(campaign: Campaign, *, show: bool) -> str:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("best {task.fields[best]}  step {task.fields[latency]}"),
    )
    with Progress(*columns, console=stderr_console(), disable=not show) as progress:
        done = len({m.decision for m in campaign.history if m.status != "retried"})
        task = progress.add_task(
            "campaign", total=campaign.n_planned, completed=done, best="-", latency="-"
        )

        def update(m: Measurement) -> None:
            best = campaign.best()
            progress.update(
                task,
                advance=0 if m.status == "retried" else 1,
                description="seeding" if m.kind == "seed" else "campaign",
                best=f"{best.scalar:.4g}" if best else "-",
                latency=f"{m.decision_latency_s * 1000:.0f} ms",
            )
            log.debug("measurement %d: (x=%g, y=%g) scalar %.4g", m.seq, m.x, m.y, m.scalar)

        return campaign.run(on_step=update)
