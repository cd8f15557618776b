"""Transports: the contract between the engine and one physical stream connection.

The default transports drive alpaca-py's own streams (``StockDataStream``, ``TradingStream``) on
the manager's engine loop; every reach into the SDK's internals lives in one adapter module.
:mod:`streamwarden.testing` has an in-memory transport for tests. alpaca-py is imported only
when an Alpaca transport is first built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from streamwarden.transports._contract import (
    ConnectFailure,
    MalformedMessage,
    ReplayReport,
    StreamMessage,
    Transport,
    TransportEvents,
    TransportFactory,
)

if TYPE_CHECKING:
    from streamwarden.transports._alpaca import AlpacaTransport, AlpacaTransportFactory

__all__ = [
    "AlpacaTransport",
    "AlpacaTransportFactory",
    "ConnectFailure",
    "MalformedMessage",
    "ReplayReport",
    "StreamMessage",
    "Transport",
    "TransportEvents",
    "TransportFactory",
]


def __getattr__(name: str) -> Any:
    if name in ("AlpacaTransport", "AlpacaTransportFactory"):
        from streamwarden.transports import _alpaca  # noqa: PLC0415 (alpaca-py loads lazily)

        return getattr(_alpaca, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
