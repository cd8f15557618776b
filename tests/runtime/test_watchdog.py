"""The staleness watchdog in the engine, driven on a shifted clock over the in-memory transport
(the time jumps; the simulator tests in tests/transports/test_staleness.py wait for real), and
the watchdog's own rules."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime
from decimal import Decimal

import pytest

import streamwarden as sw
from streamwarden.machine.conformance import replay
from streamwarden.machine.spec import default_spec
from streamwarden.marketdata import Quote
from streamwarden.runtime._watchdog import Stale, Watchdog
from streamwarden.testing import (
    InMemoryAuditSink,
    InMemoryTransportFactory,
    ShiftedClock,
    TransportOptions,
)
from streamwarden.transports import StreamMessage
from tests.waiting import wait_until

OPEN = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)  # Wednesday, 10:00 in New York
SATURDAY = datetime(2026, 11, 28, 15, 0, tzinfo=UTC)
CREDS = sw.Credentials("PKWATCHDOGTEST000001", "watchdog-secret-0001")
QUOTE = StreamMessage("quotes", "AAPL", Quote("AAPL", Decimal(1), Decimal(1), Decimal(2),
                                             Decimal(1), OPEN))
SETTINGS = sw.Settings(stale_after=5.0, stale_after_channels={"trades": 0}, debug=True)


def stale(sink: InMemoryAuditSink) -> list[sw.AuditRecord]:
    return [r for r in sink.records() if r.event == "went_stale"]


def test_a_silent_channel_goes_stale_and_the_transport_reconnects():
    clock, factory, sink = ShiftedClock(OPEN), InMemoryTransportFactory(), InMemoryAuditSink()
    with sw.ConnectionManager(transport_factory=factory, audit=sink, settings=SETTINGS,
                              clock=clock) as manager:
        lease = manager.market_data(CREDS, symbols=["AAPL"])
        transport = factory.latest()
        transport.emit_message(QUOTE)
        clock.advance(4.0)
        engine = manager._engine
        engine.run_sync(engine.settle(), 5.0)  # wakes the lifecycle: not stale yet
        assert stale(sink) == []
        (lifecycle,) = manager.health().lifecycles
        assert lifecycle.message_ages["quotes"] == pytest.approx(4.0, abs=0.5)
        assert lifecycle.message_ages["trades"] is None

        clock.advance(1.5)
        engine.run_sync(engine.settle(), 5.0)
        assert wait_until(lambda: len(stale(sink)) == 1)
        (record,) = stale(sink)
        assert record.details["channel"] == "quotes"
        assert 5.0 <= record.details["silent_for"] < 7.0
        assert wait_until(lambda: manager.health().lifecycles[0].state == "running")
        assert transport.reconnect_reasons == ["went_stale"]
        assert manager.health().lifecycles[0].reconnects == 1
        assert lease.is_live and manager.check_invariants() == []
    events = [r.event for r in sink.records() if not r.event.startswith("lease_")]
    assert events[:5] == ["acquire", "connected", "went_stale", "connected", "shutdown"]
    assert replay(default_spec(), sink.records()) == []


def test_nothing_goes_stale_on_a_saturday_nor_with_the_watchdog_off():
    for wall, settings in ((SATURDAY, SETTINGS), (OPEN, SETTINGS.replace(stale_after=0))):
        clock, factory, sink = ShiftedClock(wall), InMemoryTransportFactory(), InMemoryAuditSink()
        with sw.ConnectionManager(transport_factory=factory, audit=sink, settings=settings,
                                  clock=clock) as manager:
            manager.market_data(CREDS, symbols=["AAPL"])
            clock.advance(3600)
            engine = manager._engine
            engine.run_sync(engine.settle(), 5.0)
            engine.run_sync(engine.settle(), 5.0)
            assert stale(sink) == [] and factory.latest().reconnect_reasons == []


def test_the_async_manager_shows_message_ages():
    async def main() -> dict[str, float | None]:
        factory = InMemoryTransportFactory()
        async with sw.AsyncConnectionManager(transport_factory=factory, settings=SETTINGS,
                                             audit=InMemoryAuditSink(),
                                             clock=ShiftedClock(OPEN)) as manager:
            await manager.market_data(CREDS, symbols=["AAPL"])
            factory.latest().emit_message(QUOTE)
            (lifecycle,) = (await manager.health()).lifecycles
            return dict(lifecycle.message_ages)

    ages = asyncio.run(main())
    assert set(ages) == {"quotes", "trades"} and ages["trades"] is None
    assert ages["quotes"] is not None and 0 <= ages["quotes"] < 1.0


def test_a_reconnect_without_a_usable_socket_does_nothing():
    factory = InMemoryTransportFactory(TransportOptions(auto_connect=False))
    with sw.ConnectionManager(transport_factory=factory, audit=InMemoryAuditSink(),
                              settings=SETTINGS) as manager:
        manager.market_data(CREDS, symbols=["AAPL"], wait=False)
        transport = factory.latest()
        assert wait_until(lambda: transport.started)
        transport.reconnect("went_stale")
        assert transport.reconnect_reasons == []


# The watchdog's own rules (no engine).

SETTINGS_30 = sw.Settings(stale_after=30.0)


def test_the_count_starts_at_the_acknowledgement_and_at_each_message():
    dog = Watchdog("market_data", SETTINGS_30)
    assert dog.deadline() is None and dog.check(1000.0, OPEN) is None  # nothing watched
    dog.acknowledged({"quotes", "bars"}, 100.0)  # bars are exempt
    assert dog.deadline() == 130.0
    dog.message("quotes", 120.0)
    assert dog.check(149.0, OPEN) is None
    assert dog.check(150.0, OPEN) == Stale("quotes", 30.0)
    dog.acknowledged({"quotes", "trades"}, 160.0)  # quotes stay, trades start counting now
    assert dog.deadline() == 180.0  # at the earliest a check after the last one found stale
    dog.lost()
    assert dog.deadline() is None


def test_silence_before_the_session_opened_does_not_count():
    dog = Watchdog("market_data", SETTINGS_30)
    dog.acknowledged({"quotes"}, 0.0)
    opening = datetime(2026, 11, 25, 9, 0, 10, tzinfo=UTC)  # 04:00:10 in New York
    assert dog.check(5000.0, opening) is None  # silent 5000 s, but open for 10 s only
    assert dog.deadline() == 5030.0  # checked again one stale_after later
    assert dog.check(5030.0, datetime(2026, 11, 25, 9, 0, 40, tzinfo=UTC)) == Stale(
        "quotes", 40.0)


def test_crypto_goes_stale_on_a_saturday_and_trade_updates_never():
    crypto = Watchdog("crypto_data", SETTINGS_30)
    crypto.acknowledged({"quotes"}, 0.0)
    assert crypto.check(31.0, SATURDAY) == Stale("quotes", 31.0)
    trading = Watchdog("trade_updates", SETTINGS_30)
    trading.acknowledged({"trade_updates"}, 0.0)
    assert trading.deadline() is None and trading.check(math.inf, OPEN) is None
    named = Watchdog("trade_updates", sw.Settings(stale_after_channels={"trade_updates": 5}))
    named.acknowledged({"trade_updates"}, 0.0)
    assert named.check(3600.0, OPEN) is None  # no market session: never stale


def test_ages_show_every_channel_on_the_wire_or_with_a_message():
    dog = Watchdog("market_data", SETTINGS_30)
    dog.message("trade_updates", 10.0)
    assert dog.ages({"quotes"}, 12.5) == {"quotes": None, "trade_updates": 2.5}


def test_the_shifted_clock_refuses_naive_times_and_backward_steps():
    with pytest.raises(sw.InvalidInputError, match="timezone"):
        ShiftedClock(datetime(2026, 11, 25, 15, 0))
    clock = ShiftedClock(OPEN)
    with pytest.raises(sw.InvalidInputError, match="seconds"):
        clock.advance(-1)
    before = clock.monotonic()
    clock.advance(60)
    assert clock.monotonic() - before >= 60 and clock.now() >= OPEN
