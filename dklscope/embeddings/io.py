"""Save a trained model (its config and weights) to one file and load it back.

The file is a ``torch.save`` of plain data: ``{"format": "dklscope.embedding/1", "kind": ...,
"config": {...}, "state_dict": {...}, "extra": {...}}``; it loads with ``weights_only=True``, so
loading runs no pickled code.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

FORMAT = "dklscope.embedding/1"


def _registry() -> dict[str, type]:
    from .cvae import ConditionalVAE
    from .jvae import JVAE
    from .shiftvae import ShiftVAE
    from .ssvae import SSVAE
    from .vae import VAE
    from .ved import VED

    return {cls.kind: cls for cls in (VAE, JVAE, SSVAE, ConditionalVAE, ShiftVAE, VED)}


def save_model(model: nn.Module, path: str | Path, extra: dict[str, Any] | None = None) -> None:
    """Write ``model``'s kind, config and weights (and ``extra`` plain data) to ``path``."""
    payload = {
        "format": FORMAT,
        "kind": model.kind,  # type: ignore[attr-defined]
        "config": dataclasses.asdict(model.config),  # type: ignore[attr-defined]
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": extra or {},
    }
    torch.save(payload, Path(path))


def load_model(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """The model saved at ``path`` on ``device``, and the ``extra`` data saved with it."""
    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    if payload.get("format") != FORMAT:
        raise ValueError(f"{path}: not a dklscope embedding file")
    cls = _registry()[payload["kind"]]
    model = cls(cls.config_class.from_dict(payload["config"]))
    model.load_state_dict(payload["state_dict"])
    return model.to(device), payload["extra"]
