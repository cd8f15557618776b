"""streamwarden: shared, audited Alpaca WebSocket connections with a formally specified lifecycle.

The public API: :class:`ConnectionManager` (threads) and :class:`AsyncConnectionManager`
(asyncio) hand out leases on shared connections (alpaca-py's streams by default);
:class:`Credentials` and :class:`Settings` configure them; :class:`AuditLog` records every
transition in SQLite or PostgreSQL; market data (stocks, crypto, options) arrives as
:class:`Quote`, :class:`Trade` and :class:`Bar`, news as :class:`News`; every error is a
:class:`StreamwardenError`.

``import streamwarden`` is light: each name below is imported on first use, so alpaca-py (and
pandas), SQLAlchemy and alembic load only when a manager, a transport or an ``AuditLog`` is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from streamwarden._version import __version__

# Public name -> the module that defines it.
_EXPORTS: dict[str, str] = {
    "AuditLog": "streamwarden.audit.log",
    "InMemoryAuditSink": "streamwarden.audit.memory",
    "AuditRecord": "streamwarden.audit.records",
    "AuditSink": "streamwarden.audit.records",
    "Settings": "streamwarden.config",
    "Credentials": "streamwarden.credentials",
    "Secret": "streamwarden.credentials",
    "Bar": "streamwarden.marketdata",
    "News": "streamwarden.marketdata",
    "Quote": "streamwarden.marketdata",
    "Trade": "streamwarden.marketdata",
    "TradeCancel": "streamwarden.marketdata",
    "TradeCorrection": "streamwarden.marketdata",
    "TradingStatus": "streamwarden.marketdata",
    "ConnectFailure": "streamwarden.transports",
    "MalformedMessage": "streamwarden.transports",
    "MalformedMessageError": "streamwarden.errors",
    "StreamMessage": "streamwarden.transports",
    "Transport": "streamwarden.transports",
    "TransportEvents": "streamwarden.transports",
    "TransportFactory": "streamwarden.transports",
    "Fleet": "streamwarden.fleet",
    "FleetTiming": "streamwarden.fleet",
    "Ownership": "streamwarden.fleet",
    "FleetError": "streamwarden.errors",
    **dict.fromkeys(
        ["Acquiring", "AsyncConnectionManager", "AsyncMarketDataLease",
         "AsyncNewsLease", "AsyncTradeUpdatesLease", "ConnectionManager", "HealthReport",
         "LeaseHealth", "LeaseStatus", "LifecycleHealth", "MarketDataLease", "NewsLease",
         "StreamKey", "TradeUpdatesLease"],
        "streamwarden.runtime"),
    **dict.fromkeys(
        ["AuditError", "AuditIntegrityError", "AuditSchemaError", "AuditUnavailableError",
         "AuthenticationError", "CheckpointError", "ConnectionLimitError", "ConnectionStartError",
         "InvalidInputError", "InvalidTransitionError", "InvariantViolationError", "LeaseError",
         "LeaseOverflowError", "LeaseRevokedError", "ManagerClosedError", "ReentrancyError",
         "ReplayError", "StartTimeoutError", "StopTimeoutError", "StreamwardenError",
         "SubscriptionError", "WaitTimeoutError"],
        "streamwarden.errors"),
}

__all__ = [
    "Acquiring",
    "AsyncConnectionManager",
    "AsyncMarketDataLease",
    "AsyncNewsLease",
    "AsyncTradeUpdatesLease",
    "AuditError",
    "AuditIntegrityError",
    "AuditLog",
    "AuditRecord",
    "AuditSchemaError",
    "AuditSink",
    "AuditUnavailableError",
    "AuthenticationError",
    "Bar",
    "CheckpointError",
    "ConnectFailure",
    "ConnectionLimitError",
    "ConnectionManager",
    "ConnectionStartError",
    "Credentials",
    "Fleet",
    "FleetError",
    "FleetTiming",
    "HealthReport",
    "InMemoryAuditSink",
    "InvalidInputError",
    "InvalidTransitionError",
    "InvariantViolationError",
    "LeaseError",
    "LeaseHealth",
    "LeaseOverflowError",
    "LeaseRevokedError",
    "LeaseStatus",
    "LifecycleHealth",
    "MalformedMessage",
    "MalformedMessageError",
    "ManagerClosedError",
    "MarketDataLease",
    "News",
    "NewsLease",
    "Ownership",
    "Quote",
    "ReentrancyError",
    "ReplayError",
    "Secret",
    "Settings",
    "StartTimeoutError",
    "StopTimeoutError",
    "StreamKey",
    "StreamMessage",
    "StreamwardenError",
    "SubscriptionError",
    "Trade",
    "TradeCancel",
    "TradeCorrection",
    "TradeUpdatesLease",
    "TradingStatus",
    "Transport",
    "TransportEvents",
    "TransportFactory",
    "WaitTimeoutError",
    "__version__",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'streamwarden' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:
    from streamwarden.audit.log import AuditLog
    from streamwarden.audit.memory import InMemoryAuditSink
    from streamwarden.audit.records import AuditRecord, AuditSink
    from streamwarden.config import Settings
    from streamwarden.credentials import Credentials, Secret
    from streamwarden.errors import (
        AuditError,
        AuditIntegrityError,
        AuditSchemaError,
        AuditUnavailableError,
        AuthenticationError,
        CheckpointError,
        ConnectionLimitError,
        ConnectionStartError,
        FleetError,
        InvalidInputError,
        InvalidTransitionError,
        InvariantViolationError,
        LeaseError,
        LeaseOverflowError,
        LeaseRevokedError,
        MalformedMessageError,
        ManagerClosedError,
        ReentrancyError,
        ReplayError,
        StartTimeoutError,
        StopTimeoutError,
        StreamwardenError,
        SubscriptionError,
        WaitTimeoutError,
    )
    from streamwarden.fleet import Fleet, FleetTiming, Ownership
    from streamwarden.marketdata import (
        Bar,
        News,
        Quote,
        Trade,
        TradeCancel,
        TradeCorrection,
        TradingStatus,
    )
    from streamwarden.runtime import (
        Acquiring,
        AsyncConnectionManager,
        AsyncMarketDataLease,
        AsyncNewsLease,
        AsyncTradeUpdatesLease,
        ConnectionManager,
        HealthReport,
        LeaseHealth,
        LeaseStatus,
        LifecycleHealth,
        MarketDataLease,
        NewsLease,
        StreamKey,
        TradeUpdatesLease,
    )
    from streamwarden.transports import (
        ConnectFailure,
        MalformedMessage,
        StreamMessage,
        Transport,
        TransportEvents,
        TransportFactory,
    )
