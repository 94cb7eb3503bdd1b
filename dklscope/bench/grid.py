"""A grid of simulated campaigns on ground truth: samples x arms x seeds x budgets x pipelining.

A grid file (YAML; `configs/bench_*.yaml`) names a ``base`` campaign (a config file, relative to
the grid file, or a mapping), the ``samples`` and the ``arms`` (each a partial config merged
over the base: a sample sets the simulator and its scalarizer, an arm the policy, model and
embedding), the ``seeds`` (a count or a list), the ``budgets`` (policy steps) and
``pipeline`` (booleans) to run each with (default: as the base, sample and arm say),
``eval_every`` (measurements between evaluations of the predicted map), ``top_percent`` and
``baselines`` (the arms every other arm is compared with, seed by seed; default ``random`` and
``gp-xy``, those of them the grid has)::

    base: quickstart.yaml
    samples:
      plasmonic: {instrument: {simulator: {sample: plasmonic}}, scalarizer: {window: [1.5, 2.2]}}
    arms:
      random: {policy: {kind: random}}
      gp-xy: {model: {input: coordinates}}
      default: {}
    seeds: 30

Each sample's *protocol budget* is ``seed_points + steps`` of the base merged with the sample
(or with a ``budgets`` entry's steps), before an arm overrides it (a ``random`` arm may run
longer, to measure how many measurements it needs); each result records it as ``protocol_n``
with the best fraction found within that many measurements, ``best_fraction_at_protocol``.
Arms are paired: a campaign's seed points and measurement noise depend on its ``seed`` only
(the seed points drawn from ``[seed, decision]``, the simulator's noise from the seed, the
pixel and the visit), so arms run with the same seed start from the same points and see the
same noise there, and `dklscope.bench.comparison.paired` compares them seed by seed.

Every campaign runs through `Campaign` on the built-in simulator over loopback, exactly as a
real one (the simulator in fast mode), single-threaded, so a grid gives the same results in one
process or in many. Each finished campaign is written to ``OUT/campaigns/NAME.json`` at once; a
grid run again skips what is there.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from dklscope.campaign.jsonsafe import json_safe
from dklscope.config import Config, ConfigError, from_dict, load_config, resolve_files

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GridPoint:
    """One campaign of a grid: its coordinates and its complete config (plain data)."""

    sample: str
    arm: str
    seed: int
    steps: int
    pipeline: bool
    config: dict[str, Any]
    protocol_n: int | None = None  # the sample's protocol budget, measurements

    @property
    def name(self) -> str:
        """A file name that identifies the point within its grid."""
        pipelined = "pipelined" if self.pipeline else "sequential"
        return f"{self.sample}__{self.arm}__steps{self.steps}__{pipelined}__seed{self.seed}"


@dataclass(frozen=True)
class Grid:
    """A parsed grid file: its points, in order, and how to evaluate them."""

    points: tuple[GridPoint, ...]
    folder: Path  # relative files in the configs are read from here
    eval_every: int = 10
    top_percent: float = 1.0
    baselines: tuple[str, ...] = ("random", "gp-xy")


#: The arms every other arm is compared with when a grid names no ``baselines``.
DEFAULT_BASELINES = ("random", "gp-xy")

#: Seeds of a grid that names none.
DEFAULT_SEEDS = 30


def load_grid(path: str | Path) -> Grid:
    """Read and check a grid file; every campaign's config is checked before anything runs, and
    a problem is a `ConfigError` naming the sample or arm and the key."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError("", f"{path}: cannot read: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError("", f"{path}: must be a mapping")
    known = {
        "base",
        "samples",
        "arms",
        "seeds",
        "budgets",
        "pipeline",
        "eval_every",
        "top_percent",
        "baselines",
    }
    if unknown := sorted(set(data) - known):
        raise ConfigError(unknown[0], f"unknown key; expected one of: {', '.join(sorted(known))}")
    base = _base(data.get("base"), path.parent)
    samples = _named(data.get("samples") or {"default": {}}, "samples")
    arms = _named(data.get("arms") or {"default": {}}, "arms")
    seeds = data.get("seeds", DEFAULT_SEEDS)
    seeds = list(range(seeds)) if isinstance(seeds, int) else seeds
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise ConfigError("seeds", f"must be a count or a list of integers, got {seeds!r}")
    budgets = data.get("budgets", [None])  # None: as the base, sample and arm say
    pipelines = data.get("pipeline", [None])
    if not isinstance(pipelines, list) or not all(
        p is None or isinstance(p, bool) for p in pipelines
    ):
        raise ConfigError("pipeline", f"must be a list of true/false, got {pipelines!r}")
    if not isinstance(budgets, list) or not all(b is None or isinstance(b, int) for b in budgets):
        raise ConfigError("budgets", f"must be a list of step counts, got {budgets!r}")
    baselines = data.get("baselines")
    if baselines is None:
        baselines = [b for b in DEFAULT_BASELINES if b in arms]
    if not isinstance(baselines, list) or not all(isinstance(b, str) for b in baselines):
        raise ConfigError("baselines", f"must be a list of arm names, got {baselines!r}")
    if missing := [b for b in baselines if b not in arms]:
        raise ConfigError("baselines", f"{missing[0]!r} is not an arm; arms: {', '.join(arms)}")
    points = []
    for sample, sample_part in samples.items():
        protocol = _checked(_merge(base, sample_part), f"samples.{sample}", path.parent).budget
        for arm, arm_part in arms.items():
            for steps in budgets:
                protocol_n = protocol.seed_points + (protocol.steps if steps is None else steps)
                for pipeline in pipelines:
                    for seed in seeds:
                        merged = _merge(_merge(base, sample_part), arm_part)
                        merged = _merge(merged, {"seed": seed})
                        if steps is not None:
                            merged = _merge(merged, {"budget": {"steps": steps}})
                        if pipeline is not None:
                            merged = _merge(merged, {"runner": {"pipeline": pipeline}})
                        config = _checked(merged, f"samples.{sample} + arms.{arm}", path.parent)
                        points.append(
                            GridPoint(
                                sample,
                                arm,
                                seed,
                                config.budget.steps,
                                config.runner.pipeline,
                                config.to_dict(),
                                protocol_n,
                            )
                        )
    eval_every = data.get("eval_every", 10)
    if not isinstance(eval_every, int) or eval_every < 0:
        raise ConfigError("eval_every", f"must be an integer >= 0, got {eval_every!r}")
    top_percent = data.get("top_percent", 1.0)
    if not isinstance(top_percent, int | float) or not 0 < top_percent <= 100:
        raise ConfigError("top_percent", f"must be in (0, 100], got {top_percent!r}")
    return Grid(tuple(points), path.parent, eval_every, float(top_percent), tuple(baselines))


def _base(value: Any, folder: Path) -> dict[str, Any]:
    """The base campaign as plain data; a base file's relative paths are read from its own
    folder (those of a mapping, from the grid file's)."""
    if isinstance(value, str):
        try:
            return load_config(folder / value).to_dict()
        except ConfigError as exc:
            raise ConfigError("base", str(exc)) from None
    if not isinstance(value, dict):
        raise ConfigError("base", "must be a campaign config file or mapping")
    return value


def _named(value: Any, key: str) -> dict[str, dict[str, Any]]:
    if not isinstance(value, dict) or not all(isinstance(v, dict | None) for v in value.values()):
        raise ConfigError(key, "must map names to partial campaign configs")
    return {str(k): v or {} for k, v in value.items()}


def _merge(base: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    """``part`` over ``base``, mappings merged key by key, anything else replaced."""
    out = copy.deepcopy(base)
    for key, value in part.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _checked(data: dict[str, Any], where: str, folder: Path) -> Config:
    try:
        return resolve_files(from_dict(Config, data), folder)
    except ConfigError as exc:
        raise ConfigError(where, str(exc)) from None


# -- one campaign -----------------------------------------------------------------------------


def run_point(point: GridPoint, *, eval_every: int = 10, top_percent: float = 1.0) -> dict:
    """Run ``point``'s campaign on its simulator and measure it against the ground truth.

    The predicted map is evaluated every ``eval_every`` successful measurements (0: only at the
    end) with `Campaign.predict`, which leaves the campaign's own course unchanged. Its
    intervals are those of the noise-free scalar, which is the truth of a synthetic sample; on
    a replay the truth is itself a measurement (the stored spectra, noise and all), so there
    they are the intervals of a new measurement (`truth_is_measured`).
    ``protocol_n`` (the point's protocol budget; None: its own number of measurements) and
    ``best_fraction_at_protocol``, the trace's best fraction after that many measurements (its
    last value when the campaign measured fewer), are in the result.
    """
    from dklscope.campaign.instruments import simulated_campaign
    from dklscope.observe.evaluation import (
        map_metrics,
        trace_metrics,
        true_scalars,
        truth_is_measured,
    )
    from dklscope.observe.report import idle_fraction

    config = from_dict(Config, point.config)
    started = time.perf_counter()
    evaluations: dict[str, list] = {
        "n": [],
        "rmse": [],
        "r2": [],
        "coverage50": [],
        "coverage95": [],
    }
    with simulated_campaign(config) as (campaign, sample):
        truth = true_scalars(campaign, sample)
        measured_truth = truth_is_measured(config)

        def evaluate() -> None:
            n = len(campaign.ok_measurements())
            if n < 2 or (evaluations["n"] and evaluations["n"][-1] == n):
                return
            mean, std = campaign.predict(observation_noise=measured_truth)
            scores = map_metrics(truth, mean, std, ~campaign.taken)
            evaluations["n"].append(n)
            for key, value in scores.items():
                evaluations[key].append(value)

        def on_step(m: Any) -> None:
            n = len(campaign.ok_measurements())
            if eval_every and m.ok and n % eval_every == 0:
                evaluate()

        campaign.run(on_step)
        evaluate()
        measured = [m.candidate for m in campaign.history if m.ok]
        latencies = [d.latency_s for d in campaign.decisions if d.kind == "policy"]
        idle = idle_fraction(campaign.history)
    trace = trace_metrics(truth, measured, top_percent=top_percent)
    final = {k: (v[-1] if v else None) for k, v in evaluations.items() if k != "n"}
    protocol_n = point.protocol_n if point.protocol_n is not None else len(measured)
    at_protocol = trace["best_fraction"][: max(protocol_n, 1)]
    return {
        "sample": point.sample,
        "arm": point.arm,
        "seed": point.seed,
        "steps": point.steps,
        "pipeline": point.pipeline,
        "n_measurements": len(measured),
        "n_seed_points": config.budget.seed_points,
        "protocol_n": protocol_n,
        "trace": {k: trace[k] for k in ("n", "best_fraction", "top_found")},
        "map": evaluations,
        "steps_to_90pct_best": trace["steps_to_90pct_best"],
        "steps_to_top_percent": trace["steps_to_top_percent"],
        "final_best_fraction": trace["best_fraction"][-1] if measured else None,
        "best_fraction_at_protocol": at_protocol[-1] if at_protocol else None,
        "final_top_found": trace["top_found"][-1] if measured else None,
        "final_map_rmse": final["rmse"],
        "final_map_r2": final["r2"],
        "final_coverage50": final["coverage50"],
        "final_coverage95": final["coverage95"],
        "median_decision_latency_s": statistics.median(latencies) if latencies else None,
        "idle_fraction": idle,
        "wall_s": time.perf_counter() - started,
    }


# -- the grid ---------------------------------------------------------------------------------

Executor = Literal["local", "ray"]


def run_grid(
    grid: Grid,
    out: Path,
    *,
    workers: int | None = None,
    executor: Executor = "local",
    address: str | None = None,
    on_result: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Run every point of ``grid`` not yet in ``out/campaigns/`` and return all results, in the
    grid's order. ``workers``: processes for ``local`` (default: every core; 1: in this
    process); ``ray`` runs on the Ray cluster at ``address`` (None: a local one).
    ``on_result`` sees each result as it is written (and each one found on disk)."""
    folder = out / "campaigns"
    folder.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    todo = []
    for point in grid.points:
        path = folder / f"{point.name}.json"
        if path.is_file():
            results[point.name] = json.loads(path.read_text(encoding="utf-8"))
            if on_result is not None:
                on_result(results[point.name])
        else:
            todo.append(point)
    if len(todo) < len(grid.points):
        log.info("%d campaigns already done in %s", len(grid.points) - len(todo), folder)
    kwargs = {"eval_every": grid.eval_every, "top_percent": grid.top_percent}
    run = _run_on_ray if executor == "ray" else _run_locally
    for point, result in run(todo, kwargs, workers=workers, address=address):
        _write_json(folder / f"{point.name}.json", result)
        results[point.name] = result
        if on_result is not None:
            on_result(result)
    return [results[p.name] for p in grid.points]


def _write_json(path: Path, data: dict) -> None:
    """Write ``data`` to ``path`` all at once (a kill leaves no half file behind)."""
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(json_safe(data), indent=1, allow_nan=False), encoding="utf-8")
    os.replace(partial, path)


def _run_locally(
    points: list[GridPoint], kwargs: dict, *, workers: int | None, address: str | None
) -> Iterator[tuple[GridPoint, dict]]:
    workers = min(workers or os.cpu_count() or 1, max(len(points), 1))
    if workers <= 1:
        with _single_threaded():
            for point in points:
                yield point, run_point(point, **kwargs)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked threads
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init) as pool:
        futures = {pool.submit(run_point, point, **kwargs): point for point in points}
        for future in as_completed(futures):
            yield futures[future], future.result()


def _worker_init() -> None:
    """A worker process runs its campaigns single-threaded (the grid uses the cores)."""
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


@contextmanager
def _single_threaded() -> Iterator[None]:
    """torch on one thread while the grid runs in this process, as in a worker; restored."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _run_on_ray(
    points: list[GridPoint], kwargs: dict, *, workers: int | None, address: str | None
) -> Iterator[tuple[GridPoint, dict]]:
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "--executor", "ray is not installed: pip install 'dklscope[ray]'"
        ) from None
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(
            address=address,
            num_cpus=workers if address is None else None,
            runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}},
            include_dashboard=False,
            log_to_driver=False,
        )
    try:
        remote = ray.remote(num_cpus=1)(_run_point_single_threaded)
        pending = {remote.remote(point, kwargs): point for point in points}
        while pending:
            (done,), _ = ray.wait(list(pending), num_returns=1)
            yield pending.pop(done), ray.get(done)
    finally:
        if started_here:
            ray.shutdown()


def _run_point_single_threaded(point: GridPoint, kwargs: dict) -> dict:
    _worker_init()
    return run_point(point, **kwargs)
