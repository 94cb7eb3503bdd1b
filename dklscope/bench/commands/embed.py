"""``dklscope bench embed``: seconds per training epoch of the rVAE (and friends).

Times epochs of SVI on random-motif patches (Gaussian atoms at random places, so the decoder has
something to learn) on the CPU and, when there is one, on CUDA. The goal for the rVAE on 10,000
patches of 32 x 32 at batch 100 is at most 5 s per epoch on a 2-core CPU (atomai 0.8.1's rVAE:
about 50 s). The first epoch is a warm-up and not counted.
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import Any

import numpy as np

from . import machine

log = logging.getLogger(__name__)

DESCRIPTION = "seconds per epoch of rVAE training on 32x32 patches (CPU, and CUDA if present)"
MODELS = ("rvae", "rvae-full", "vae", "jrvae")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark's own options."""
    parser.add_argument("--patches", type=int, default=10_000, help="number of patches")
    parser.add_argument("--size", type=int, default=32, help="patch size in pixels")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs (after a warm-up)")
    parser.add_argument(
        "--models",
        nargs="+",
        choices=MODELS,
        default=["rvae"],
        help="rvae: rotation; rvae-full: rotation, translation and scale; vae; jrvae",
    )
    parser.add_argument("--encoder", choices=["dense", "conv"], default="dense")
    parser.add_argument(
        "--devices", nargs="+", default=None, help="default: cpu, and cuda when available"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )


def synthetic_patches(n: int, size: int, seed: int = 0) -> np.ndarray:
    """n patches (n, 1, size, size) of 3 Gaussian atoms at random positions, plus noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    centres = rng.uniform(size * 0.25, size * 0.75, size=(n, 3, 2)).astype(np.float32)
    d2 = (yy[None, None] - centres[..., 0, None, None]) ** 2 + (
        xx[None, None] - centres[..., 1, None, None]
    ) ** 2
    x = np.exp(-d2 / (2 * (size / 16) ** 2)).sum(axis=1)
    x += 0.05 * rng.standard_normal(x.shape).astype(np.float32)
    return ((x - x.mean()) / x.std())[:, None].astype(np.float32)


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """One row per (model, device): seconds per epoch (median of the timed epochs)."""
    import torch

    from dklscope.embeddings import EmbeddingConfig, TrainerConfig, build_embedding

    if args.threads:
        torch.set_num_threads(args.threads)
    devices = args.devices or ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    x = synthetic_patches(args.patches, args.size)
    rows = []
    for device in devices:
        for name in args.models:
            kind = {"rvae-full": "rvae"}.get(name, name)
            full = name == "rvae-full"
            config = EmbeddingConfig(
                kind=kind,
                encoder=args.encoder,
                decoder=args.encoder,
                translation=full,
                scale=full,
                trainer=TrainerConfig(
                    epochs=args.epochs + 1,
                    batch_size=args.batch_size,
                    validation_fraction=0.0,
                    patience=None,
                    device=device,
                    progress=False,
                ),
            )
            embedding = build_embedding(config)
            start = time.perf_counter()
            history = embedding.fit(x)
            total = time.perf_counter() - start
            timed = history.seconds[1:] or history.seconds
            row = {
                "model": name,
                "n_patches": args.patches,
                "patch_shape": [1, args.size, args.size],
                "batch_size": args.batch_size,
                "encoder": args.encoder,
                "device": device,
                "threads": torch.get_num_threads(),
                "s_per_epoch": float(np.median(timed)),
                "first_epoch_s": history.seconds[0],
                "total_s": total,
                **machine(),
            }
            log.info("%s on %s: %.3g s per epoch", name, device, row["s_per_epoch"])
            rows.append(row)
    return rows
