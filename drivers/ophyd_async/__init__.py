"""Bluesky-described instruments: ophyd-async devices behind the dklscope driver protocol.

`OphydAsyncBackend` is a `Backend` (``describe``, ``get_overview``, ``move_probe``,
``acquire``) that drives a motor pair (x, y) and a spectrum detector written with ophyd-async,
so that `DriverServer` serves them and dklscope's own runner controls them. `sim` wraps any
`Backend` (for instance `dklscope.simulators.SimulatedMicroscope`) as simulated ophyd-async
devices, for tests and for Bluesky plans on a simulated specimen.

Needs the ``bluesky`` extra (``pip install 'dklscope[bluesky]'``); ``dklscope.drivers`` itself
never imports this package, and this package imports ophyd-async and bluesky only where they
are used (`backend` uses nothing of them but bluesky's event loop).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .backend import OphydAsyncBackend, StageGeometry

if TYPE_CHECKING:
    from .sim import SimulatedDevices, SpectrumDetector, simulated_devices

__all__ = [
    "OphydAsyncBackend",
    "SimulatedDevices",
    "SpectrumDetector",
    "StageGeometry",
    "simulated_devices",
]


def __getattr__(name: str) -> Any:
    """The simulated devices (`sim`) import ophyd-async: only when asked for."""
    if name in ("SimulatedDevices", "SpectrumDetector", "simulated_devices"):
        from . import sim

        return getattr(sim, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
