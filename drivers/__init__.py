"""The instrument side of dklscope: wire protocol, `DriverServer`, `MicroscopeClient`, `Backend`.

The protocol is specified in ``PROTOCOL.md`` next to this file.

Imports numpy and pyzmq only, so it runs inside a vendor's Python next to the instrument.
"""

from .backend import Acquisition, Backend
from .client import InstrumentError, InstrumentTimeout, MicroscopeClient
from .protocol import ErrorCode, InstrumentDescription, ProtocolError, SpectralAxis
from .security import ClientKeys, ServerKeys
from .server import DriverServer

__all__ = [
    "Acquisition",
    "Backend",
    "ClientKeys",
    "DriverServer",
    "ErrorCode",
    "InstrumentDescription",
    "InstrumentError",
    "InstrumentTimeout",
    "MicroscopeClient",
    "ProtocolError",
    "ServerKeys",
    "SpectralAxis",
]
