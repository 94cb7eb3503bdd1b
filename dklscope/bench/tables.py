"""The files of ``dklscope bench campaigns``: the tables of the campaigns, of the aggregate
(`aggregate`) and of the paired comparisons (`paired`) as CSV and strict JSON, ``curves.json``
(`curves`), and `write_all`, which writes them with the plots (`dklscope.bench.figures`).
Nothing is written outside the folder given.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from dklscope.campaign.jsonsafe import json_safe

from .aggregate import GROUP_KEYS, aggregate, curves, group_of, sort_key, unique
from .comparison import paired
from .figures import plot_curves, summary_figure

log = logging.getLogger(__name__)

#: The files `write_tables` writes, in order.
TABLE_FILES = ("campaigns.csv", "aggregate.json", "aggregate.csv")

#: The files `write_paired` writes, in order.
PAIRED_FILES = ("paired.json", "paired.csv")

#: The series `write_curves` writes to ``curves.json``: where it lives and its key.
CURVE_SERIES: tuple[tuple[Literal["trace", "map"], str], ...] = (
    ("trace", "best_fraction"),
    ("trace", "top_found"),
    ("map", "rmse"),
    ("map", "coverage50"),
    ("map", "coverage95"),
)


def write_tables(
    results: Sequence[dict[str, Any]], rows: Sequence[dict[str, Any]], folder: Path
) -> list[Path]:
    """Write `TABLE_FILES` into ``folder`` (made if needed); returns their paths, in that order.

    ``campaigns.csv``: one line per campaign, sorted by group and seed, with its scalar fields
    (the ``trace`` and ``map`` series and any other list or dict left out); ``aggregate.json``:
    ``rows`` (from `aggregate`) as strict JSON, NaN and infinities as null; ``aggregate.csv``:
    the same rows. Empty cells in the CSVs are None, NaN or infinite values.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ordered = sorted(results, key=lambda r: (sort_key(group_of(r)), sort_key((r.get("seed"),))))
    scalar_keys = _union_keys(
        {k: v for k, v in r.items() if not isinstance(v, (dict, list, tuple))} for r in ordered
    )
    paths = [
        _write_csv(folder / "campaigns.csv", ordered, scalar_keys),
        folder / "aggregate.json",
        _write_csv(folder / "aggregate.csv", rows, _union_keys(rows)),
    ]
    text = json.dumps(json_safe(list(rows)), indent=2, allow_nan=False)
    paths[1].write_text(text + "\n", encoding="utf-8")
    for path in paths:
        log.info("wrote %s", path)
    return paths


def write_paired(rows: Sequence[dict[str, Any]], folder: Path) -> list[Path]:
    """Write the rows of `paired` to `PAIRED_FILES` in ``folder`` (made if needed): strict
    JSON (infinities as null) and CSV (empty cells for None); returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    json_path = folder / "paired.json"
    text = json.dumps(json_safe(list(rows)), indent=2, allow_nan=False)
    json_path.write_text(text + "\n", encoding="utf-8")
    paths = [json_path, _write_csv(folder / "paired.csv", rows, _union_keys(rows))]
    for path in paths:
        log.info("wrote %s", path)
    return paths


def write_curves(
    results: Sequence[dict[str, Any]],
    folder: Path,
    *,
    confidence: float = 0.95,
    n_bootstrap: int = 2000,
    seed: int = 0,
) -> Path:
    """Write ``curves.json`` into ``folder``: the median curves with their bands (`curves`) of
    every series of `CURVE_SERIES`, a list of {the group keys, ``where``, ``metric``, ``n``,
    ``median``, ``ci_low``, ``ci_high`` (lists), ``n_seeds``}; returns its path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for where, metric in CURVE_SERIES:
        data = curves(
            results,
            metric,
            where=where,
            confidence=confidence,
            n_bootstrap=n_bootstrap,
            seed=seed,
        )
        for group, curve in data.items():
            entry: dict[str, Any] = dict(zip(GROUP_KEYS, group, strict=True))
            entry.update(where=where, metric=metric, n_seeds=curve["n_seeds"])
            for key in ("n", "median", "ci_low", "ci_high"):
                entry[key] = curve[key].tolist()
            out.append(entry)
    path = folder / "curves.json"
    path.write_text(json.dumps(json_safe(out), allow_nan=False) + "\n", encoding="utf-8")
    log.info("wrote %s", path)
    return path


def write_all(
    results: Sequence[dict[str, Any]],
    folder: Path,
    *,
    baselines: Sequence[str] = ("random", "gp-xy"),
    confidence: float = 0.95,
    n_bootstrap: int = 2000,
    seed: int = 0,
) -> tuple[list[dict[str, Any]], list[Path]]:
    """`aggregate` the results and compare the arms with the ``baselines`` (`paired`), then
    write the tables (`write_tables`, `write_paired`), ``curves.json`` (`write_curves`), the
    plots (`plot_curves`) and ``summary.png`` (`summary_figure`) into ``folder``.

    Returns (the aggregate rows, the paths written: tables, paired tables, curves, then plots).
    """
    kwargs = {"confidence": confidence, "n_bootstrap": n_bootstrap, "seed": seed}
    rows = aggregate(results, **kwargs)
    paired_rows = paired(results, baselines, **kwargs)
    paths = write_tables(results, rows, folder)
    paths += write_paired(paired_rows, folder)
    paths.append(write_curves(results, folder, **kwargs))
    paths += plot_curves(results, folder, **kwargs)
    fig = summary_figure(results, paired_rows, **kwargs)
    if fig is not None:
        path = Path(folder) / "summary.png"
        fig.savefig(path, dpi=100)
        log.info("wrote %s", path)
        paths.append(path)
    return rows, paths


# -- helpers ------------------------------------------------------------------------------------


def _union_keys(rows: Iterable[dict[str, Any]]) -> list[str]:
    return unique(k for row in rows for k in row)


def _write_csv(path: Path, rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(keys), restval="", extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_cell(v) for k, v in row.items() if k in keys})
    return path


def _csv_cell(value: Any) -> Any:
    value = json_safe(value)
    return "" if value is None else value
