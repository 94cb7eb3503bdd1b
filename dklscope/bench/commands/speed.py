"""Decision latency of one campaign step: refit the model with the newest measurement,
predict over every candidate, rank them by expected improvement and take the argmax.

The model is the default one (``model.kind: auto``: every candidate model refitted and scored
by leave-one-out, the best predicting), or the ``--model`` kind. The candidates are 10 x 10
patches of a simulated lattice (N = rows x cols of the overview) and the scalars its
noise-free defect-mode map, so the model sees realistic structure. For each (N, n) the model is
first fitted to n measured points (not timed); each timed step then adds the chosen point and
decides the next, as `Campaign` does. ``warm`` continues from the last weights;
``full`` refits from scratch.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import statistics
import time
from typing import Any

import numpy as np

from dklscope.config import ModelConfig

DESCRIPTION = "per-step decision latency of DKL + EI over N candidates with n measured points"

SIZES = ((2_500, 100), (10_000, 500), (40_000, 2_000))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sizes",
        default=",".join(f"{n_cand}x{n_meas}" for n_cand, n_meas in SIZES),
        help="N x n pairs: candidates x measured points (default %(default)s)",
    )
    parser.add_argument("--steps", type=int, default=5, help="timed steps per row")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--modes", default="warm,full", help="warm, full or both")
    parser.add_argument(
        "--refit-iterations",
        type=int,
        default=None,
        help="kind dkl: Adam steps of a warm fit (default: model.refit_iterations)",
    )
    parser.add_argument(
        "--model",
        default=None,
        help=f"model.kind to time (default: the default model, {ModelConfig().family})",
    )
    parser.add_argument(
        "--device", default=None, help="cpu, cuda or both (default: cuda too when present)"
    )
    parser.add_argument(
        "--quality",
        type=int,
        default=0,
        metavar="K",
        help="also run the quickstart campaign on K simulated samples with warm and with full "
        "refits, and report the mean fraction of the true maximum found (default: 0, skip)",
    )


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    import torch

    devices = _devices(args.device)
    sizes = [tuple(int(v) for v in pair.split("x")) for pair in args.sizes.split(",")]
    modes = args.modes.split(",")
    refit = (
        ModelConfig().refit_iterations if args.refit_iterations is None else args.refit_iterations
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)  # restored below: the caller's process is left as it was
    try:
        model = ModelConfig(kind=args.model, refit_iterations=refit)
        rows = [
            _row(n_candidates, n_measured, mode, device, args.steps, args.threads, model)
            for device in devices
            for n_candidates, n_measured in sizes
            for mode in modes
        ]
        rows += [
            _quality(mode, args.quality, model, args.threads) for mode in modes if args.quality
        ]
        return rows
    finally:
        torch.set_num_threads(threads)


def _devices(choice: str | None) -> list[str]:
    import torch

    if choice in ("cpu", "cuda"):
        return [choice]
    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


@functools.lru_cache(maxsize=1)  # the warm and the full row of a size share it
def _problem(n_candidates: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Standardised 10 x 10 patches (N, 100) of a square lattice sample, its truth (N,) and
    the patches' (x, y) positions (N, 2)."""
    from dklscope.embeddings.patches import grid_patches
    from dklscope.model.scalarizers import Maximum
    from dklscope.simulators import lattice_sample

    side = math.isqrt(n_candidates)
    sample = lattice_sample((side, side), seed=0)
    grid = grid_patches(sample.image, 10)
    patches = grid.data.reshape(side * side, -1)
    patches = (patches - sample.image.mean()) / sample.image.std()
    truth = Maximum((1.05, 1.35))(sample.signal, sample.spectral_axis.values()).ravel()
    return patches, truth, np.stack([grid.cols, grid.rows], axis=1).astype(float)


def _row(
    n_candidates: int,
    n_measured: int,
    mode: str,
    device: str,
    steps: int,
    threads: int,
    model: ModelConfig,
) -> dict[str, Any]:
    import torch

    from dklscope.model.family import build_learner, model_inputs
    from dklscope.model.policies import ExpectedImprovement, PolicyState, decide

    patches, truth, positions = _problem(n_candidates)
    inputs, network = model_inputs(model, patches.reshape(-1, 10, 10), positions, None)
    candidates = inputs.tensor.to(device)
    rng = np.random.default_rng(0)
    measured = np.zeros(len(truth), dtype=bool)
    measured[rng.choice(len(truth), size=n_measured, replace=False)] = True
    learner = build_learner(model, inputs, network, seed=0)
    if device != "cpu":
        for part in getattr(learner, "learners", {"": learner}).values():
            part.device = torch.device(device)
    policy = ExpectedImprovement()

    def data() -> tuple[torch.Tensor, torch.Tensor]:
        index = np.flatnonzero(measured)
        return candidates[index], torch.as_tensor(truth[index], dtype=torch.float64)

    learner.fit(*data())  # the campaign so far: not timed
    times = []
    for step in range(steps):
        if mode == "full":
            learner.reset()
        t0 = time.perf_counter()
        fitted = learner.fit(*data())
        state = PolicyState(
            model=fitted,
            candidates=candidates,
            positions=positions,
            measured=measured.copy(),
            scalars=truth[measured],
            measured_indices=np.flatnonzero(measured),
            best_f=float(truth[measured].max()),
            step=step,
            rng=rng,
        )
        (decision,) = decide(policy, state)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        measured[decision.index] = True
    times.sort()
    return {
        "n_candidates": n_candidates,
        "n_measured": n_measured,
        "model": model.family,
        "device": device,
        "threads": threads if device == "cpu" else None,
        "mode": mode,
        "refit_iterations": model.refit_iterations
        if mode == "warm" and model.family == "dkl"
        else None,
        "median_s": statistics.median(times),
        "p95_s": times[min(len(times) - 1, math.ceil(0.95 * len(times)) - 1)],
    }


def _quality(mode: str, n_samples: int, base: ModelConfig, threads: int) -> dict[str, Any]:
    """The quickstart campaign (48 x 48 lattice, 10 seed points + 60 EI steps, over loopback)
    on samples 1..n_samples, every fit warm (``refit_iterations``) or from scratch."""
    from dklscope.campaign.instruments import simulated_campaign
    from dklscope.config import (
        BudgetConfig,
        Config,
        InstrumentConfig,
        ScalarizerConfig,
        SimulatorConfig,
    )
    from dklscope.observe.report import ground_truth_figures

    model = dataclasses.replace(base, full_refit_every=1 if mode == "full" else 0)
    fractions, seconds = [], []
    for sample_seed in range(1, n_samples + 1):
        config = Config(
            instrument=InstrumentConfig(
                simulator=SimulatorConfig(shape=(48, 48), seed=sample_seed)
            ),
            scalarizer=ScalarizerConfig(window=(1.05, 1.35)),
            budget=BudgetConfig(seed_points=10, steps=60),
            model=model,
        )
        started = time.perf_counter()
        with simulated_campaign(config) as (campaign, sample):
            campaign.run()
            fractions.append(ground_truth_figures(campaign, sample)["best_fraction"])
        seconds.append(time.perf_counter() - started)
    return {
        "mode": mode,
        "model": model.family,
        "refit_iterations": model.refit_iterations
        if mode == "warm" and model.family == "dkl"
        else None,
        "device": "cpu",
        "threads": threads,
        "quality_campaigns": n_samples,
        "mean_best_fraction": statistics.mean(fractions),
        "median_campaign_s": statistics.median(seconds),
    }
