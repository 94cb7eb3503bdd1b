"""Benchmarks: simulated campaigns by the grid, their statistics, and speed measurements.

- `grid`: a grid file's samples x arms x seeds x budgets, run (in processes or on Ray) and
  resumed;
- `aggregate` (medians and curves over seeds), `comparison` (each arm against a baseline, seed
  by seed), `statistics` (bootstrap intervals), `tables` (CSV and JSON) and `figures`;
- `commands`: the ``dklscope bench NAME`` sub-commands, one module each.

Names are imported on first use.
"""

from dklscope import lazy_names

__getattr__, __dir__, __all__ = lazy_names(
    __name__,
    {
        "grid": ("Grid", "load_grid", "run_grid"),
        "aggregate": ("curves",),
        "comparison": ("paired",),
        "statistics": ("mean_ci", "median_ci"),
        "tables": ("write_all",),
    },
)
