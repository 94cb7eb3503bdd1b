"""``dklscope sample show``: draw a simulated sample's overview, ground truth, example spectra
and structural labels."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from dklscope.config import load_config

from .common import simulator_of

log = logging.getLogger("dklscope")


def add_parser(commands: argparse._SubParsersAction) -> None:
    """``sample`` and its ``show``: the parsers of ``dklscope sample show``."""
    sample = commands.add_parser("sample", help="look at a simulated sample")
    sample.set_defaults(handler=main)
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


def main(args: argparse.Namespace) -> int:
    from dklscope.campaign.instruments import build_sample
    from dklscope.model.scalarizers import build_scalarizer, check_scalarizer
    from dklscope.observe.sample_plots import plot_sample

    config = load_config(args.config)
    sample = build_sample(simulator_of(config))
    check_scalarizer(config.scalarizer, sample.spectral_axis.values(), sample.spectral_axis.units)
    scalarizer = build_scalarizer(config.scalarizer)
    args.out.mkdir(parents=True, exist_ok=True)
    label = config.scalarizer.kind
    for path in plot_sample(sample, scalarizer, config.dwell_s, args.out, label=label):
        log.info("wrote %s", path)
    return 0
