"""Per-lease delivery queues and their overflow policy, over the in-memory transport.

A slow consumer affects only its own lease: quotes conflate per symbol (the newest wins, drops
counted), trades drop their oldest beyond ``lease_queue_size``, and a trade-updates lease that
falls that far behind is revoked with LeaseOverflowError (audited), never silently short.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest

import streamwarden as sw
from streamwarden.testing import InMemoryTransportFactory
from tests.waiting import wait_until

MOMENT = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)
QUEUE = 3
"""``lease_queue_size`` in these tests."""

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def settings() -> sw.Settings:
    return sw.Settings(start_timeout=2.0, stop_timeout=0.5, lease_queue_size=QUEUE, debug=True)


@pytest.fixture
def factory() -> InMemoryTransportFactory:
    return InMemoryTransportFactory()


@pytest.fixture
def manager(factory: InMemoryTransportFactory, sink: sw.InMemoryAuditSink,
            settings: sw.Settings) -> Iterator[sw.ConnectionManager]:
    manager = sw.ConnectionManager(transport_factory=factory, audit=sink, settings=settings)
    yield manager
    manager.close()
    assert manager.check_invariants() == []


def quote(symbol: str, bid: int) -> sw.StreamMessage:
    return sw.StreamMessage("quotes", symbol, sw.Quote(symbol, Decimal(bid), Decimal(1),
                                                       Decimal(bid + 1), Decimal(1), MOMENT))


def trade(symbol: str, trade_id: int) -> sw.StreamMessage:
    return sw.StreamMessage("trades", symbol, sw.Trade(symbol, Decimal("1.5"), Decimal(1),
                                                       MOMENT, trade_id=trade_id))


def lease_health(manager: sw.ConnectionManager, lease: object) -> sw.LeaseHealth:
    lease_id = getattr(lease, "lease_id", None)
    for lifecycle in manager.health().lifecycles:
        for entry in lifecycle.leases:
            if entry.lease_id == lease_id:
                return entry
    raise LookupError(f"lease {lease_id} is not in health")


def test_quotes_conflate_per_symbol_for_a_consumer_that_has_not_read(manager, factory, creds):
    lease = manager.market_data(creds, symbols=["AAPL", "MSFT"])
    transport = factory.latest()
    for bid in range(1, 6):
        assert transport.emit_message(quote("AAPL", bid))
    for bid in range(11, 14):
        assert transport.emit_message(quote("MSFT", bid))
    queued = lease_health(manager, lease)
    assert (queued.queue_depth, queued.dropped, queued.delivered) == (2, 4 + 2, 0)
    got = list(_take(lease.quotes(timeout=0.2), 2))
    # One per symbol, the newest, and AAPL (queued first) still comes first.
    assert [(q.symbol, q.bid_price) for q in got] == [("AAPL", 5), ("MSFT", 13)]
    with pytest.raises(sw.WaitTimeoutError):
        next(lease.quotes(timeout=0.05))
    drained = lease_health(manager, lease)
    assert (drained.queue_depth, drained.oldest_undelivered_age, drained.delivered) == (
        0, None, 2)
    assert lease.latest_quote("AAPL").bid_price == 5  # type: ignore[union-attr]


def test_a_slow_callback_gets_the_newest_quote_and_its_neighbour_gets_every_one(
        manager, factory, creds):
    gate, slow_seen, fast_seen = threading.Event(), [], []

    def slow(q: sw.Quote) -> None:
        slow_seen.append(q.bid_price)
        gate.wait(5)

    slow_lease = manager.market_data(creds, symbols=["AAPL"], on_quote=slow, owner="slow")
    fast_lease = manager.market_data(creds, symbols=["AAPL"], on_quote=fast_seen.append,
                                     owner="fast")
    transport = factory.latest()
    assert transport.emit_message(quote("AAPL", 1))
    assert wait_until(lambda: slow_seen == [1] and len(fast_seen) == 1)  # slow: now stuck
    for bid in range(2, 11):
        assert transport.emit_message(quote("AAPL", bid))
        # The fast lease keeps up with each quote while its neighbour's callback is stuck.
        assert wait_until(lambda bid=bid: len(fast_seen) == bid)
    assert [q.bid_price for q in fast_seen] == list(range(1, 11))
    stuck = lease_health(manager, slow_lease)
    assert (stuck.queue_depth, stuck.dropped) == (1, 8)
    assert stuck.callback_running_for is not None and stuck.callback_running_for > 0
    assert stuck.oldest_undelivered_age is not None and stuck.oldest_undelivered_age > 0
    assert lease_health(manager, fast_lease).dropped == 0
    gate.set()
    assert wait_until(lambda: slow_seen == [1, 10])  # the newest won
    assert wait_until(lambda: lease_health(manager, slow_lease).queue_depth == 0)


def test_trades_drop_their_oldest_beyond_the_queue_size(manager, factory, creds):
    lease = manager.market_data(creds, symbols=["AAPL"])
    transport = factory.latest()
    for trade_id in range(1, 6):
        assert transport.emit_message(trade("AAPL", trade_id))
    assert lease_health(manager, lease).dropped == 5 - QUEUE
    assert [t.trade_id for t in _take(lease.trades(timeout=0.2), QUEUE)] == [3, 4, 5]
    assert lease.latest_trade("AAPL").trade_id == 5  # type: ignore[union-attr]


def test_health_shows_queue_depth_and_the_oldest_undelivered_age(manager, factory, creds):
    lease = manager.market_data(creds, symbols=["AAPL", "MSFT"], owner="reader")
    transport = factory.latest()
    before = time.monotonic()
    assert transport.emit_message(trade("AAPL", 1))
    assert transport.emit_message(trade("MSFT", 2))
    assert transport.emit_message(quote("AAPL", 7))
    time.sleep(0.05)
    entry = lease_health(manager, lease)
    assert (entry.owner, entry.symbols, entry.queue_depth) == ("reader", ("AAPL", "MSFT"), 3)
    assert entry.oldest_undelivered_age is not None
    assert 0.05 <= entry.oldest_undelivered_age <= time.monotonic() - before
    report = manager.health().to_dict()
    assert report["lifecycles"][0]["leases"][0]["queue_depth"] == 3
    assert [t.trade_id for t in _take(lease.trades(timeout=0.2), 2)] == [1, 2]
    entry = lease_health(manager, lease)
    assert (entry.queue_depth, entry.delivered) == (1, 2)


def test_a_trade_updates_lease_that_overflows_is_revoked_and_audited(
        manager, factory, creds, sink):
    behind = manager.trade_updates(creds, owner="behind", correlation_id="run-behind")
    kept: list[object] = []
    keeping_up = manager.trade_updates(creds, on_update=kept.append, owner="keeping-up")
    transport = factory.latest()
    for number in range(QUEUE + 1):
        assert transport.emit_message(sw.StreamMessage("trade_updates", "AAPL",
                                                       {"event": "fill", "n": number}))
    assert wait_until(lambda: behind.status is sw.LeaseStatus.REVOKED)
    with pytest.raises(sw.LeaseOverflowError) as raised:
        next(behind.updates(timeout=1.0))
    assert isinstance(raised.value, sw.LeaseRevokedError)
    # The neighbour got every update and keeps its lease.
    assert wait_until(lambda: len(kept) == QUEUE + 1)
    assert keeping_up.is_live
    (lifecycle,) = manager.health().lifecycles
    assert (lifecycle.state, lifecycle.refs) == ("running", 1)
    assert [lease.owner for lease in lifecycle.leases] == ["keeping-up"]
    records = [r for r in sink.records() if r.lease_id == behind.lease_id]
    assert [r.event for r in records] == ["acquire", "release", "lease_revoked"]
    release, revoked = records[1], records[2]
    assert (release.outcome, release.error_type, release.details["reason"]) == (
        "failed", "LeaseOverflowError", "delivery_overflow")
    assert (release.refs_before, release.refs_after) == (2, 1)
    assert (revoked.outcome, revoked.error_type) == ("failed", "LeaseOverflowError")
    assert release.correlation_id == revoked.correlation_id == "run-behind"
    behind.release()  # a logged no-op


def test_iterating_a_channel_that_goes_to_a_callback_raises_at_once(manager, creds):
    market = manager.market_data(creds, symbols=["AAPL"], on_quote=print)
    orders = manager.trade_updates(creds, on_update=print)
    for iterate in (market.quotes, market.trades, market.bars, orders.updates):
        with pytest.raises(sw.InvalidInputError):
            iterate()  # at the call, before any next()


def test_the_async_iterators_refuse_a_callback_lease_at_once(factory, sink, settings, creds):
    async def scenario() -> None:
        async with sw.AsyncConnectionManager(transport_factory=factory, audit=sink,
                                             settings=settings) as manager:
            market = await manager.market_data(creds, symbols=["AAPL"], on_trade=print)
            orders = await manager.trade_updates(creds, on_update=print)
            for iterate in (market.quotes, market.trades, market.bars, orders.updates):
                with pytest.raises(sw.InvalidInputError):
                    iterate()

    asyncio.run(scenario())


def _take(iterator: Iterator[object], count: int) -> Iterator[object]:
    for _ in range(count):
        yield next(iterator)


def test_without_conflation_quotes_queue_like_trades_and_drops_are_counted(
        factory, sink, settings, creds):
    unconflated = settings.replace(conflate_quotes=False)
    with sw.ConnectionManager(transport_factory=factory, audit=sink,
                              settings=unconflated) as manager:
        lease = manager.market_data(creds, symbols=["AAPL"])
        transport = factory.latest()
        for bid in range(1, 6):
            assert transport.emit_message(quote("AAPL", bid))
        assert lease.dropped == 5 - QUEUE  # the oldest, as trades; never merged away
        assert lease_health(manager, lease).dropped == lease.dropped
        assert [q.bid_price for q in _take(lease.quotes(timeout=0.2), QUEUE)] == [3, 4, 5]
        assert lease.latest_quote("AAPL").bid_price == 5  # type: ignore[union-attr]
    with pytest.raises(sw.InvalidInputError, match="conflate_quotes"):
        sw.Settings(conflate_quotes="no")  # type: ignore[arg-type]
