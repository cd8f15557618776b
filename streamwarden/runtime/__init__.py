"""The runtime: connection managers, leases and health, over one engine per manager.

``ConnectionManager`` (threads) and ``AsyncConnectionManager`` (asyncio) are thin facades over
the same engine: one event-loop thread that runs every transport and every lifecycle's
supervisor, a sans-I/O lifecycle core that records before it acts, and per-lease bounded
delivery queues with callbacks on a small worker pool.
"""

from streamwarden._keys import StreamKey
from streamwarden.runtime.health import HealthReport, LeaseHealth, LifecycleHealth
from streamwarden.runtime.leases import (
    AsyncMarketDataLease,
    AsyncNewsLease,
    AsyncTradeUpdatesLease,
    LeaseStatus,
    MarketDataLease,
    NewsLease,
    TradeUpdatesLease,
)
from streamwarden.runtime.manager import Acquiring, AsyncConnectionManager, ConnectionManager

__all__ = [
    "Acquiring",
    "AsyncConnectionManager",
    "AsyncMarketDataLease",
    "AsyncNewsLease",
    "AsyncTradeUpdatesLease",
    "ConnectionManager",
    "HealthReport",
    "LeaseHealth",
    "LeaseStatus",
    "LifecycleHealth",
    "MarketDataLease",
    "NewsLease",
    "StreamKey",
    "TradeUpdatesLease",
]
