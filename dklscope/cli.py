"""The ``dklscope`` command.

Exit codes: 0 done; 1 the instrument failed (what was measured is in the journal); 2 bad
command line or config; 130 interrupted by Ctrl-C or stopped over the control socket (what was
measured is in the journal; ``--resume`` goes on).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sqlite3
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .config import Config, ConfigError, SimulatorConfig, from_dict, load_config
from .journal import EMBEDDING_NAME, JOURNAL_NAME

if TYPE_CHECKING:
    from rich.console import Console

    from .campaign import Campaign
    from .drivers.security import ServerKeys
    from .journal import Journal, Measurement
    from .simulators import Sample

log = logging.getLogger("dklscope")

HEARTBEAT_S = 1.0  # the campaign's heartbeat to the instrument, seconds


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
    _add_server_keys(
        run,
        "turn on CURVE for the controller's own sockets (runner.publish, runner.control): "
        "its NAME.key_secret (from 'dklscope keys')",
    )

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
    _add_server_keys(serve, "turn on CURVE: the server's NAME.key_secret (from 'dklscope keys')")

    sample = commands.add_parser("sample", help="look at a simulated sample")
    sample_commands = sample.add_subparsers(dest="sample_command", required=True, metavar="COMMAND")
    show = sample_commands.add_parser(
        "show",
        help="draw a sample's overview and ground truth",
        description=(
            "Draw the overview, the ground-truth map of CONFIG's scalarizer (from the noise-free "
            "spectra at CONFIG's dwell), example spectra and the structural labels of the "
            "simulated sample, as PNG files in DIR."
        ),
    )
    show.add_argument(
        "config", type=Path, help="YAML file with an 'instrument: simulator:' section"
    )
    show.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")

    report = commands.add_parser(
        "report",
        help="plots and summary.json of a campaign folder",
        description=(
            "Draw the plots (visits, predicted maps, scalar and best so far, latency and idle "
            "timeline, latent space, example spectra) and write summary.json for the campaign "
            "recorded in DIR, from its journal alone (running, finished or interrupted)."
        ),
    )
    report.add_argument("dir", type=Path, help="the campaign's output folder")
    report.add_argument("--out", type=Path, metavar="FOLDER", help="write there (default: DIR)")
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
    export = commands.add_parser(
        "export",
        help="a campaign's data as HDF5, npz or NSID",
        description=(
            "Write the overview(s), positions, spectra, scalars and predictions of the campaign "
            "in DIR to one file (layout: docs/export.md)."
        ),
    )
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

    from .benchmarks import add_parsers

    add_parsers(commands)
    _add_driver_parsers(commands)
    return parser


def _add_driver_parsers(commands: argparse._SubParsersAction) -> None:
    """``keys`` and ``conformance``: tools for the driver protocol (drivers/PROTOCOL.md)."""
    keys = commands.add_parser(
        "keys",
        help="generate CURVE key pairs for the driver protocol",
        description="Write NAME.key (public) and NAME.key_secret (secret) into DIR per name.",
    )
    keys.add_argument("dir", type=Path, help="folder for the key files (created)")
    keys.add_argument(
        "--name",
        action="append",
        metavar="NAME",
        help="a key pair's name (default: server, client)",
    )
    conformance = commands.add_parser(
        "conformance",
        help="check a running driver server against the protocol",
        description=(
            "Run the driver protocol's conformance checks against the server at ADDRESS; it "
            "moves the probe within the described limits and acquires at the smallest dwell."
        ),
    )
    conformance.add_argument("address", help="the server, e.g. tcp://127.0.0.1:5555")
    conformance.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
    conformance.add_argument("--server-key", type=Path, metavar="FILE", help="server's NAME.key")
    conformance.add_argument(
        "--client-key", type=Path, metavar="FILE", help="this client's NAME.key_secret"
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _configure_logging(args.verbose)
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "serve":
            return _serve(args)
        if args.command == "sample":
            return _sample_show(args)
        if args.command in ("report", "export"):
            return _report(args)
        if args.command == "view":
            return _view(args)
        if args.command == "keys":
            return _keys(args)
        if args.command == "conformance":
            return _conformance(args)
        if args.command == "bench":
            from .benchmarks import main as bench

            return bench(args)
    except ConfigError as exc:
        where = getattr(args, "config", None)
        return _usage_error(f"{where}: {exc}" if where else str(exc))
    return 2


def _usage_error(message: str) -> int:
    """Report a bad command line or config in one line on stderr; exit code 2."""
    sys.stderr.write(f"error: {message}\n")
    return 2


def _configure_logging(verbose: bool) -> None:
    from rich.logging import RichHandler

    handler = RichHandler(show_path=False, console=_stderr_console())
    logger = logging.getLogger("dklscope")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False


def _stderr_console() -> Console:
    from rich.console import Console

    return Console(stderr=True)


def _run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    out: Path = args.resume or args.out
    if args.resume is not None and not (out / JOURNAL_NAME).is_file():
        return _usage_error(f"--resume {out}: no {JOURNAL_NAME} there")
    if args.resume is None and (out / JOURNAL_NAME).exists():
        return _usage_error(
            f"{out} already holds a campaign journal; choose another --out, or --resume it"
        )
    if args.force and args.resume is None:
        return _usage_error("--force goes with --resume")
    keys = None
    if args.secret_key is not None:
        if config.runner.publish is None and config.runner.control is None:
            return _usage_error("--secret-key: the config sets neither runner.publish nor control")
        try:
            keys = _server_keys(args.secret_key, args.allow)
        except ValueError as exc:
            return _usage_error(f"--secret-key/--allow: {exc}")
    elif args.allow:
        return _usage_error("--allow goes with --secret-key")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return _usage_error(f"--out {out}: {exc.strerror}")

    # Heavy imports (torch) only once the config is known to be good.
    from .campaign import Campaign, CampaignError, check_config_against
    from .control import ControlServer
    from .drivers import InstrumentError, InstrumentTimeout, MicroscopeClient, ProtocolError
    from .drivers.nion_swift.usim import UsimError
    from .instruments import build_sample, instrument_address
    from .journal import Journal, JournalError
    from .progress import ProgressPublisher

    config_text = args.config.read_text(encoding="utf-8")
    if args.resume is not None:
        try:
            with Journal(out / JOURNAL_NAME) as journal:
                if status := _check_resumed_config(journal, config, config_text, args):
                    return status
        except (JournalError, sqlite3.DatabaseError) as exc:
            return _usage_error(f"--resume {out}: {exc}")
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
            return _usage_error(f"runner.publish: {exc}")
        try:
            if config.runner.control:
                control = stack.enter_context(ControlServer(config.runner.control, keys=keys))
        except ValueError as exc:
            return _usage_error(f"runner.control: {exc}")
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
        return _usage_error(
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


def _simulator_of(config: Config) -> SimulatorConfig:
    sim = config.instrument.simulator
    if sim is None:
        raise ConfigError("instrument.simulator", "this command needs a simulator section")
    return sim


def _serve(args: argparse.Namespace) -> int:
    import zmq

    from .drivers import DriverServer
    from .instruments import build_sample, simulated_microscope

    config = load_config(args.config)
    keys = None
    if args.secret_key is not None:
        try:
            keys = _server_keys(args.secret_key, args.allow)
        except ValueError as exc:
            return _usage_error(f"--secret-key/--allow: {exc}")
    if config.instrument.nion_usim is not None:
        return _serve_nion_usim(config, args.bind, keys)
    sim = _simulator_of(config)
    backend = simulated_microscope(build_sample(sim), sim, noise_seed=config.seed)
    server = DriverServer(backend, args.bind, keys=keys)
    try:
        server.start()
    except zmq.ZMQError as exc:
        return _usage_error(f"--bind {args.bind}: {exc}")
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

    from .drivers.nion_swift.usim import NionUnavailable, serve_usim

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
        return _usage_error(f"--bind {bind}: {exc}")
    except KeyboardInterrupt:
        log.info("stopped")
    return 0


def _add_server_keys(parser: argparse.ArgumentParser, secret_help: str) -> None:
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


def _server_keys(secret_key: Path, allow: list[Path]) -> ServerKeys:
    """`ServerKeys` from a secret key file and the allowed clients' public keys; ValueError
    naming the file that cannot be read."""
    from .drivers.security import ServerKeys

    try:
        return ServerKeys.from_files(secret_key, allow)
    except OSError as exc:
        raise ValueError(str(exc)) from None


def _keys(args: argparse.Namespace) -> int:
    from .drivers.security import generate_keys

    try:
        for path in generate_keys(args.dir, args.name or ["server", "client"]):
            log.info("wrote %s", path)
    except (OSError, FileExistsError) as exc:
        return _usage_error(str(exc))
    return 0


def _conformance(args: argparse.Namespace) -> int:
    from .drivers.conformance import run_checks
    from .drivers.security import ClientKeys

    keys = None
    if (args.server_key is None) != (args.client_key is None):
        return _usage_error("--server-key and --client-key go together")
    if args.server_key is not None:
        try:
            keys = ClientKeys.from_files(args.client_key, args.server_key)
        except (OSError, ValueError) as exc:
            return _usage_error(str(exc))
    results = run_checks(args.address, timeout_s=args.timeout, keys=keys)
    for result in results:
        mark = "PASS" if result.passed else "FAIL"
        sys.stdout.write(f"{mark}  {result.name}{'  ' + result.detail if result.detail else ''}\n")
    failed = sum(not r.passed for r in results)
    sys.stdout.write(f"{len(results) - failed} of {len(results)} checks passed\n")
    return 0 if failed == 0 else 1


def _sample_show(args: argparse.Namespace) -> int:
    from .instruments import build_sample
    from .sample_plots import plot_sample
    from .scalarizers import build_scalarizer, check_scalarizer

    config = load_config(args.config)
    sample = build_sample(_simulator_of(config))
    check_scalarizer(config.scalarizer, sample.spectral_axis.values(), sample.spectral_axis.units)
    scalarizer = build_scalarizer(config.scalarizer)
    args.out.mkdir(parents=True, exist_ok=True)
    label = config.scalarizer.kind
    for path in plot_sample(sample, scalarizer, config.dwell_s, args.out, label=label):
        log.info("wrote %s", path)
    return 0


def _run_to_end(campaign: Campaign, *, show_progress: bool) -> int:
    """Run the campaign; returns the exit code. Whatever was measured stays in the journal.

    The first Ctrl-C lets the measurement under way finish and be journaled, then stops (exit
    130, resumable); a second one abandons it at once.
    """
    from .drivers import InstrumentError, InstrumentTimeout, ProtocolError

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
    from .report import write_report

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


def _report(args: argparse.Namespace) -> int:
    """``dklscope report DIR`` and ``dklscope export DIR``: from the journal alone."""
    from .campaign import Campaign, CampaignError
    from .journal import JournalError

    try:
        campaign = Campaign.from_journal(args.dir)
    except (CampaignError, JournalError, sqlite3.DatabaseError) as exc:
        return _usage_error(str(exc))
    with campaign.journal:
        if args.command == "report":
            from .report import write_report

            for path in write_report(campaign, args.out or args.dir):
                log.info("wrote %s", path)
            return 0
        from .export import export_campaign
        from .nsid import NsidUnavailable

        suffix = "nsid.h5" if args.to == "nsid" else args.to
        path = args.file or args.dir / f"campaign.{suffix}"
        try:
            log.info("wrote %s", export_campaign(campaign, path, args.to))
        except NsidUnavailable as exc:
            return _usage_error(str(exc))
    return 0


def _view(args: argparse.Namespace) -> int:
    """``dklscope view``: the live view (dklscope/view.py) until Ctrl-C."""
    import zmq

    from .campaign import CampaignError
    from .control import ControlClient
    from .drivers.security import ClientKeys
    from .journal import JournalError
    from .view import LOOPBACK, serve

    events_address = args.target if "://" in args.target else None
    if args.controls and args.bind not in LOOPBACK:
        return _usage_error(
            f"--controls with --bind {args.bind}: anyone who reaches the page could stop the "
            "campaign; serve controls on loopback (reach it over ssh -L) and a read-only page "
            "elsewhere"
        )
    if args.control is not None and events_address is None:
        return _usage_error("--control goes with an events address (a folder's journal names it)")
    if args.control is not None and not args.controls:
        return _usage_error("--control goes with --controls")
    if (args.server_key is None) != (args.client_key is None):
        return _usage_error("--server-key and --client-key go together")
    keys = None
    if args.server_key is not None:
        try:
            keys = ClientKeys.from_files(args.client_key, args.server_key)
        except (OSError, ValueError) as exc:
            return _usage_error(f"--server-key/--client-key: {exc}")
    if not 0.1 <= args.refresh <= 60:
        return _usage_error(f"--refresh: must be 0.1-60 s, got {args.refresh:g}")
    if not 1 <= args.port <= 65535:  # the page's own origin names its port
        return _usage_error(f"--port: must be 1-65535, got {args.port}")
    control = ControlClient(keys=keys) if args.controls else None
    try:
        if events_address is not None:
            from .live import EventFollower

            follower: Any = EventFollower(
                events_address, control=control, control_address=args.control, events_keys=keys
            )
        else:
            from .live import JournalFollower

            if not Path(args.target).is_dir():
                return _usage_error(f"{args.target}: no such folder")
            follower = JournalFollower(args.target, control=control, events_keys=keys)
    except (CampaignError, JournalError, sqlite3.DatabaseError) as exc:
        return _usage_error(str(exc))
    except zmq.ZMQError as exc:  # a malformed events address
        return _usage_error(f"{args.target}: {exc}")
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
        return _usage_error(f"--bind {args.bind} --port {args.port}: {exc.strerror or exc}")
    finally:
        follower.close()
        if control is not None:
            control.close()
    return 0


def _run_with_progress(campaign: Campaign, *, show: bool) -> str:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("best {task.fields[best]}  step {task.fields[latency]}"),
    )
    with Progress(*columns, console=_stderr_console(), disable=not show) as progress:
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


if __name__ == "__main__":
    sys.exit(main())
