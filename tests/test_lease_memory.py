"""An idle lease stays small, and the lazily made parts of its delivery queue and readiness
still wake their waiters (public API only)."""

from __future__ import annotations

import gc
import threading
import time
import tracemalloc
from datetime import UTC, datetime
from decimal import Decimal

import pytest

import streamwarden as sw
from streamwarden.testing import InMemoryAuditSink, InMemoryTransportFactory, TransportOptions

CREDS = sw.Credentials("PKLEASEMEMORY0000001", "lease-memory-secret")


def _quote(symbol: str, bid: str = "1.00") -> sw.StreamMessage:
    quote = sw.Quote(symbol=symbol, bid_price=Decimal(bid), bid_size=Decimal(1),
                     ask_price=Decimal("1.01"), ask_size=Decimal(1),
                     timestamp=datetime(2026, 1, 2, tzinfo=UTC))
    return sw.StreamMessage("quotes", symbol, quote)


def _manager(factory: InMemoryTransportFactory) -> sw.ConnectionManager:
    return sw.ConnectionManager(transport_factory=factory, audit=InMemoryAuditSink(capacity=100),
                                settings=sw.Settings(start_timeout=2.0, stop_timeout=0.5,
                                                     drain_grace=0.0))


def test_a_blocked_iterator_wakes_on_the_next_quote_and_times_out_when_none_comes():
    factory = InMemoryTransportFactory()
    with _manager(factory) as manager, manager.market_data(CREDS, symbols=["AAPL"]) as feed:
        quotes = feed.quotes(timeout=2.0)
        got: list[sw.Quote] = []
        reader = threading.Thread(target=lambda: got.append(next(quotes)))
        reader.start()
        time.sleep(0.1)  # the reader is blocked before the quote exists
        assert factory.latest().emit_message(_quote("AAPL", "2.00"))
        reader.join(2.0)
        assert [q.bid_price for q in got] == [Decimal("2.00")]
        assert feed.wait_for_quote("AAPL", timeout=1.0).bid_price == Decimal("2.00")
        with pytest.raises(sw.WaitTimeoutError):
            next(feed.quotes(timeout=0.05))


def test_wait_ready_wakes_when_the_connection_comes_up():
    factory = InMemoryTransportFactory(TransportOptions(auto_connect=False))
    with _manager(factory) as manager:
        lease = manager.market_data(CREDS, symbols=["AAPL"], wait=False)
        waiter = threading.Thread(target=lease.wait_ready, kwargs={"timeout": 2.0})
        waiter.start()
        time.sleep(0.1)
        assert waiter.is_alive()
        assert factory.latest().emit_connected()
        waiter.join(2.0)
        assert not waiter.is_alive()
        with pytest.raises(sw.StartTimeoutError):
            manager.market_data(sw.Credentials("PKLEASEMEMORY0000002", "other-secret"),
                                symbols=["MSFT"], wait=False).wait_ready(timeout=0.05)
        lease.release()


def test_an_idle_lease_costs_under_4_kib():
    leases = 300
    with _manager(InMemoryTransportFactory()) as manager:
        anchor = manager.market_data(CREDS, symbols=["AAPL"])
        for lease in [manager.market_data(CREDS, symbols=["AAPL"]) for _ in range(200)]:
            lease.release()  # warm-up: fills the audit ring to its bound
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            held = [manager.market_data(CREDS, symbols=["AAPL"]) for _ in range(leases)]
            gc.collect()
            per_lease = (tracemalloc.get_traced_memory()[0] - before) / leases
        finally:
            tracemalloc.stop()
        for lease in held:
            lease.release()
        anchor.release()
    assert per_lease < 4096, per_lease
