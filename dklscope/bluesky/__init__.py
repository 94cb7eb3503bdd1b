"""Bluesky, from dklscope's side: a DKL campaign inside a beamline's own RunEngine.

`DKLAgent` (tell/ask, and bluesky-adaptive's `Optimizer` protocol) holds the campaign's
model and policy; `dkl_campaign` is the plan that moves, triggers, reads, scalarizes and tells
it. Needs the ``bluesky`` extra (``pip install 'dklscope[bluesky]'``); ``dklscope`` itself
never imports this package. The other direction, dklscope's runner driving ophyd-async
devices, is `dklscope.drivers.ophyd_async`.
"""

from __future__ import annotations

try:
    import bluesky  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"dklscope.bluesky needs the bluesky extra: pip install 'dklscope[bluesky]' ({exc})"
    ) from None

from .agent import AgentDecision, DKLAgent
from .plans import DKL_FIELDS, DecisionReadable, dkl_campaign

__all__ = ["DKL_FIELDS", "AgentDecision", "DKLAgent", "DecisionReadable", "dkl_campaign"]
