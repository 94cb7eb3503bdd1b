"""dklscope: an active-learning controller for autonomous microscopy.

The public Python API is importable from here (``from dklscope import Campaign, load_config``);
each name is looked up in its subpackage when first used, so ``import dklscope`` (and with it
``dklscope.drivers`` on an instrument PC) loads no torch. The subpackages, lowest first
(docs/architecture.md):

- `dklscope.config`: the campaign file, as dataclasses, and its checks;
- `dklscope.embeddings`: patches, atoms and the structural embeddings (Pyro VAEs);
- `dklscope.model`: the surrogate models (DKL, ensembles, model choice), scalarizers and policies;
- `dklscope.campaign`: the loop, its journal, its instrument connection, control and progress;
- `dklscope.observe`: reports, exports and the live view; `dklscope.bluesky`: the Bluesky agent;
- `dklscope.bench`: benchmark grids, their statistics and the speed benchmarks;
- `dklscope.cli`: the ``dklscope`` command.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__version__ = "0.1.0"


def lazy_names(
    package: str, homes: Mapping[str, Sequence[str]]
) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """``__getattr__``, ``__dir__`` and ``__all__`` for a package that names its public API
    (``homes``: the module of the package -> the names it exports) but imports each module only
    when one of its names is first used (PEP 562), so that importing the package, or a light
    module of it, loads no torch."""
    home = {name: module for module, names in homes.items() for name in names}

    def __getattr__(name: str) -> Any:
        if name not in home:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{home[name]}"), name)
        setattr(importlib.import_module(package), name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(importlib.import_module(package)), *home})

    return __getattr__, __dir__, sorted(home)


__getattr__, __dir__, __all__ = lazy_names(
    __name__,
    {
        "config": ("Config", "ConfigError", "load_config"),
        "embeddings": (
            "EmbeddingConfig",
            "LoGBlobs",
            "ModelEmbedding",
            "atom_patches",
            "build_embedding",
            "find_atoms",
            "grid_patches",
        ),
        "model": (
            "AutoLearner",
            "BayesianDKLLearner",
            "Choice",
            "DKLLearner",
            "EnsembleLearner",
            "Learner",
            "Policy",
            "PolicyState",
            "Scalarizer",
            "posterior_mean_std",
        ),
        "campaign": (
            "Campaign",
            "CampaignError",
            "Journal",
            "Measurement",
            "build_sample",
            "simulated_campaign",
            "simulated_microscope",
        ),
        "observe": ("export_campaign", "write_report"),
        "bench": ("load_grid", "paired", "run_grid"),
    },
)
