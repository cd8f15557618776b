"""The staleness watchdog over the real alpaca-py SDK, against the simulator's mute mode.

A muted simulator keeps the socket open and answers pings but sends no data: the connected-but-
silent socket of alpaca-py issue 740. The manager runs on a clock set to a chosen wall time
(a Wednesday morning in New York, a Saturday, an evening after the extended session), so the
market-session rule is exercised at every hour the suite happens to run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

import streamwarden as sw
from streamwarden.machine.conformance import replay
from streamwarden.machine.spec import default_spec
from streamwarden.simulator import Simulator
from streamwarden.testing import ShiftedClock
from streamwarden.transports import AlpacaTransport
from tests.transports.test_alpaca_transport import _Listener, _until
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(60)

STALE_AFTER = 0.6
#: Generous bound for the reconnect: alpaca-py waits about a second before it reconnects.
BOUND = 8.0
#: 10:00 in New York on a Wednesday: the regular session.
OPEN = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)
#: 10:00 in New York on a Saturday.
SATURDAY = datetime(2026, 11, 28, 15, 0, tzinfo=UTC)
#: 21:00 in New York on a Wednesday: after the extended session.
EVENING = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(port=0) as simulator:
        yield simulator


def manager(sim: Simulator, sink: sw.InMemoryAuditSink, wall: datetime,
            **settings: Any) -> sw.ConnectionManager:
    return sw.ConnectionManager(
        audit=sink, clock=ShiftedClock(wall),
        settings=sw.Settings(market_data_url=sim.market_data_url, start_timeout=BOUND,
                             stop_timeout=1.0, debug=True, stale_after=STALE_AFTER,
                             **settings))


def stale_records(sink: sw.InMemoryAuditSink) -> list[Any]:
    return [r for r in sink.records() if r.event == "went_stale"]


def test_a_mute_socket_is_reconnected_and_quotes_resume(sim, sink, creds):
    # Trades get no generator here: unwatched through the per-channel override.
    live = manager(sim, sink, OPEN, stale_after_channels={"trades": 0})
    try:
        sim.set_quote_rate(50)
        lease = live.market_data(creds, symbols=["AAPL"])
        time.sleep(3 * STALE_AFTER)  # a channel with traffic is never restarted
        assert stale_records(sink) == []
        (lifecycle,) = live.health().lifecycles
        assert set(lifecycle.message_ages) == {"quotes", "trades"}
        assert lifecycle.message_ages["quotes"] is not None
        assert 0 <= lifecycle.message_ages["quotes"] < STALE_AFTER
        assert lifecycle.message_ages["trades"] is None  # none yet

        sim.mute()
        muted_at = time.monotonic()
        assert wait_until(lambda: stale_records(sink) != [], BOUND)
        detected_after = time.monotonic() - muted_at
        assert STALE_AFTER <= detected_after + 0.05 < STALE_AFTER + BOUND
        assert wait_until(lambda: sim.stats().kinds["market_data"].opened == 2, BOUND)
        unmuted_at = datetime.now(UTC)  # the simulator stamps quotes with the real time
        sim.unmute()
        # The generator's quotes resume on the new socket.
        assert wait_until(lambda: (q := lease.latest_quote("AAPL")) is not None
                          and q.timestamp >= unmuted_at, BOUND)
        assert live.health().lifecycles[0].state == "running"

        record = stale_records(sink)[0]
        assert (record.from_state, record.to_state) == ("running", "starting")
        assert record.details["channel"] == "quotes"
        assert STALE_AFTER <= record.details["silent_for"] < STALE_AFTER + BOUND
        assert lease.is_live and live.health().lifecycles[0].reconnects >= 1
        assert live.check_invariants() == []
    finally:
        live.close()
    assert replay(default_spec(), sink.records()) == []
    assert [r.event for r in sink.records()].count("connection_lost") == 0


@pytest.mark.parametrize("wall", [SATURDAY, EVENING], ids=["saturday", "21:00-new-york"])
def test_no_reconnect_while_the_market_is_closed(sim, sink, creds, wall):
    with manager(sim, sink, wall) as live:
        sim.mute()
        lease = live.market_data(creds, symbols=["AAPL"])
        time.sleep(4 * STALE_AFTER)
        assert stale_records(sink) == []
        assert sim.stats().kinds["market_data"].opened == 1
        assert lease.is_live


def test_no_reconnect_on_an_exempt_channel(sim, sink, creds):
    with manager(sim, sink, OPEN) as live:
        lease = live.market_data(creds, symbols=["AAPL"])
        lease.subscribe_bars("AAPL")
        lease.unsubscribe("quotes", "AAPL")
        lease.unsubscribe("trades", "AAPL")
        assert wait_until(lambda: sim.stats().wire_subscription("quotes") == set())
        assert sim.stats().wire_subscription("bars") == {"AAPL"}
        time.sleep(4 * STALE_AFTER)  # bars are silent, and exempt
        assert stale_records(sink) == []
        assert sim.stats().kinds["market_data"].opened == 1
        (lifecycle,) = live.health().lifecycles
        assert lifecycle.message_ages == {"bars": None}


def test_the_transport_reconnects_on_request_without_reporting_a_loss(sim, creds):
    settings = sw.Settings(market_data_url=sim.market_data_url, start_timeout=BOUND,
                           stop_timeout=1.0)
    key = sw.StreamKey("2" * 24, "market_data", True, "iex")

    async def scenario() -> None:
        transport = AlpacaTransport(key, creds, settings)
        transport.reconnect("went_stale")  # nothing open yet: nothing to do
        listener = _Listener()
        transport.set_subscriptions(frozenset({("quotes", "AAPL")}))
        task = asyncio.create_task(transport.run(listener))
        assert await _until(lambda: listener.calls == ["connected", "subscribed"])
        transport.reconnect("went_stale")
        assert not transport.socket_open
        transport.reconnect("went_stale")  # already reconnecting: no second close
        assert await _until(lambda: listener.calls.count("connected") == 2, BOUND)
        assert "lost" not in listener.calls and transport.socket_open
        assert listener.pairs[-1] == {("quotes", "AAPL")}
        await transport.stop()
        transport.reconnect("went_stale")  # stopped: nothing to do
        async with asyncio.timeout(BOUND):
            await task

    asyncio.run(scenario())
    assert sim.stats().kinds["market_data"].opened == 2
