"""``dklscope bench pipeline``: how long the instrument waits for the controller.

Runs a campaign of CONFIG (default the quickstart) on its simulator in real-time mode (each
acquisition takes its dwell in wall time) with the config's model, pipelined and sequential,
and reports the instrument's idle fraction (idle over busy plus idle time, from the journal's
timestamps), the median decision latency and the wall time. Goal: an idle fraction below 5% at
a dwell of 0.1 s, pipelined, with the default model.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path
from typing import Any

from . import machine

DESCRIPTION = "instrument idle fraction of a real-time simulated campaign, pipelined or not"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's own options."""
    parser.add_argument(
        "--config",
        type=Path,
        default=Path("configs/quickstart.yaml"),
        help="a campaign with 'instrument: simulator:' (default: %(default)s)",
    )
    parser.add_argument("--dwell", type=float, default=0.1, help="seconds per spectrum")
    parser.add_argument("--steps", type=int, default=None, help="policy steps (default: config)")
    parser.add_argument("--modes", nargs="+", choices=("pipelined", "sequential"), default=None)


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """One row per mode: idle fraction, decision latency and wall time of one campaign."""
    from dklscope.campaign.instruments import simulated_campaign
    from dklscope.config import load_config
    from dklscope.observe.report import idle_fraction

    base = load_config(args.config)
    sim = base.instrument.simulator
    if sim is None:
        raise SystemExit(f"{args.config}: the pipeline benchmark needs 'instrument: simulator:'")
    budget = base.budget
    if args.steps is not None:
        budget = dataclasses.replace(budget, steps=args.steps)
    rows = []
    for mode in args.modes or ("pipelined", "sequential"):
        config = dataclasses.replace(
            base,
            dwell_s=args.dwell,
            budget=budget,
            instrument=dataclasses.replace(
                base.instrument, simulator=dataclasses.replace(sim, realtime=True)
            ),
            runner=dataclasses.replace(base.runner, pipeline=mode == "pipelined"),
        )
        with simulated_campaign(config) as (campaign, _):
            started = time.perf_counter()
            campaign.run()
            wall = time.perf_counter() - started
            history = campaign.history
            latencies = [d.latency_s for d in campaign.decisions if d.kind == "policy"]
        idle = [m.idle_s for m in history if m.idle_s is not None]
        rows.append(
            {
                "mode": mode,
                "dwell_s": args.dwell,
                "measurements": len(history),
                "idle_fraction": idle_fraction(history),
                "median_idle_ms": 1000 * statistics.median(idle) if idle else None,
                "median_decision_latency_s": statistics.median(latencies) if latencies else None,
                "wall_s": wall,
                **machine(),
            }
        )
    return rows
