"""Malformed market data over the real alpaca-py SDK, against the project's simulator.

One msgpack frame carries valid messages with malformed ones between them (a price "abc",
NaN, Infinity, negative, missing): each malformed message is dropped on its own, counted in
``health()`` and logged (throttled); every valid message of the frame is delivered, in order.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

import streamwarden as sw
from streamwarden.logging import LOGGER_NAME, MALFORMED_MESSAGE
from streamwarden.runtime import _supervisor
from streamwarden.simulator import Simulator
from streamwarden.transports import AlpacaTransport
from streamwarden.transports import _sdk_adapter as sdk_adapter
from tests.waiting import wait_until

BOUND = 5.0
"""Generous bound for behaviour that normally takes milliseconds."""
MOMENT = datetime(2026, 11, 23, 15, 30, tzinfo=UTC)

pytestmark = pytest.mark.timeout(60)


def quote(symbol: str, bid: Any, **changes: Any) -> dict[str, Any]:
    message = {"T": "q", "S": symbol, "bp": bid, "bs": 1, "ap": 9.5, "as": 2, "t": MOMENT}
    message.update(changes)
    return message


def trade(symbol: str, price: Any, **changes: Any) -> dict[str, Any]:
    message = {"T": "t", "S": symbol, "p": price, "s": 10, "i": 1, "t": MOMENT}
    message.update(changes)
    return message


def bar(symbol: str, close: Any) -> dict[str, Any]:
    return {"T": "b", "S": symbol, "o": 1.0, "h": 2.0, "l": 0.5, "c": close, "v": 100,
            "t": MOMENT}


FRAME = [
    trade("AAPL", 10.0),
    quote("MSFT", "abc"),                # not a number: Decimal("abc") raised InvalidOperation
    quote("MSFT", 2.5),
    trade("AAPL", float("nan")),
    trade("AAPL", -1.0),
    bar("AAPL", float("inf")),
    {k: v for k, v in quote("NVDA", 3.0).items() if k != "ap"},  # no ask price: never 0
    trade("AAPL", 11.0),
    trade("AAPL", 12.0, s=-5),           # negative size
    quote("NVDA", 4.0),
    bar("AAPL", 1.5),
    trade("AAPL", 13.0),
]
MALFORMED = [("quotes", "MSFT", "bp", "not a number"), ("trades", "AAPL", "p", "not finite"),
             ("trades", "AAPL", "p", "negative"), ("bars", "AAPL", "c", "not finite"),
             ("quotes", "NVDA", "ap", "missing"), ("trades", "AAPL", "s", "negative")]


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(port=0) as simulator:
        yield simulator


@pytest.fixture
def settings(sim: Simulator) -> sw.Settings:
    return sw.Settings(market_data_url=sim.market_data_url, start_timeout=3.0,
                       stop_timeout=1.0, debug=True)


class Collected:
    """What a lease's callbacks received, in order."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._lock = threading.Lock()

    def add(self, item: Any) -> None:
        with self._lock:
            self.items.append(item)

    def snapshot(self) -> list[Any]:
        with self._lock:
            return list(self.items)


def malformed_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == LOGGER_NAME and MALFORMED_MESSAGE in r.getMessage()]


def test_a_malformed_message_is_dropped_alone_counted_and_logged(
        sim: Simulator, settings: sw.Settings, creds: sw.Credentials,
        sink: sw.InMemoryAuditSink, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER_NAME)
    quotes, trades, bars = Collected(), Collected(), Collected()
    with sw.ConnectionManager(audit=sink, settings=settings) as manager:
        lease = manager.market_data(creds, symbols=["AAPL", "MSFT", "NVDA"],
                                    on_quote=quotes.add, on_trade=trades.add, on_bar=bars.add)
        lease.subscribe_bars("AAPL")
        assert sim.publish_raw(FRAME) == 1

        assert wait_until(lambda: len(trades.snapshot()) == 3 and len(bars.snapshot()) == 1,
                          BOUND)
        assert [t.price for t in trades.snapshot()] == [Decimal("10.0"), Decimal("11.0"),
                                                         Decimal("13.0")]
        assert bars.snapshot()[0].close == Decimal("1.5")
        assert wait_until(lambda: {q.symbol for q in quotes.snapshot()} == {"MSFT", "NVDA"})
        # Quotes conflate per symbol; each symbol's newest is never lost, and none is invented.
        assert {(q.symbol, q.bid_price) for q in quotes.snapshot()} == {
            ("MSFT", Decimal("2.5")), ("NVDA", Decimal("4.0"))}

        (lifecycle,) = manager.health().lifecycles
        assert lifecycle.malformed_messages == len(MALFORMED)
        assert lifecycle.messages == len(FRAME) - len(MALFORMED)
        assert manager.health().to_dict()["lifecycles"][0]["malformed_messages"] == 6
        lines = malformed_lines(caplog)
        assert len(lines) == _supervisor.MALFORMED_LOG_LINES  # a flood is throttled
        for line, (channel, symbol, field, reason) in zip(lines, MALFORMED, strict=False):
            for part in (f"channel='{channel}'", f"symbol='{symbol}'", f"field='{field}'",
                         f"reason='{reason}'", "suppressed=0"):
                assert part in line
        lease.release()


def test_the_connection_stays_usable_after_a_frame_of_only_bad_messages(
        sim: Simulator, settings: sw.Settings, creds: sw.Credentials,
        sink: sw.InMemoryAuditSink) -> None:
    with sw.ConnectionManager(audit=sink, settings=settings) as manager:
        lease = manager.market_data(creds, symbols=["AAPL"])
        assert sim.publish_raw([quote("AAPL", "Infinity"), quote("AAPL", None)]) == 1
        assert wait_until(lambda: manager.health().lifecycles[0].malformed_messages == 2)
        sim.publish_quote("AAPL", bid_price="5.25", ask_price="5.30")
        assert lease.wait_for_quote("AAPL", timeout=BOUND).bid_price == Decimal("5.25")
        (lifecycle,) = manager.health().lifecycles
        assert (lifecycle.state, lifecycle.reconnects) == ("running", 0)
        lease.release()


class _Listener:
    """Records messages and malformed reports of a transport (sw.TransportEvents)."""

    def __init__(self) -> None:
        self.connected = False
        self.messages: list[sw.StreamMessage] = []
        self.malformed: list[sw.MalformedMessage] = []

    def on_connected(self) -> None:
        self.connected = True

    def on_subscribed(self, pairs: frozenset[tuple[str, str]]) -> None:
        pass

    def on_message(self, message: sw.StreamMessage) -> None:
        self.messages.append(message)

    def on_malformed(self, malformed: sw.MalformedMessage) -> None:
        self.malformed.append(malformed)


def test_the_transport_reports_each_bad_message_and_passes_the_others_on(
        sim: Simulator, settings: sw.Settings, creds: sw.Credentials) -> None:
    key = sw.StreamKey("3" * 24, "market_data", True, "iex")
    long_symbol = "X" * 100

    async def scenario() -> None:
        transport = AlpacaTransport(key, creds, settings)
        listener = _Listener()
        transport.set_subscriptions(frozenset({("quotes", "*")}))
        task = asyncio.create_task(transport.run(listener))
        while not listener.connected:
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.05)  # the subscription ack precedes data on the wire
        batch = [quote("AAPL", 1.0), quote(long_symbol, "abc"), quote("AAPL", 2.0, t=None),
                 quote("AAPL", 3.0)]
        assert await asyncio.to_thread(sim.publish_raw, batch) == 1
        async with asyncio.timeout(BOUND):
            while len(listener.messages) + len(listener.malformed) < 4:
                await asyncio.sleep(0.005)
        await transport.stop()
        async with asyncio.timeout(BOUND):
            await task
        assert [m.payload.bid_price for m in listener.messages] == [Decimal("1.0"),
                                                                     Decimal("3.0")]
        assert listener.malformed == [
            sw.MalformedMessage("quotes", "X" * 32, "bp", "not a number"),
            sw.MalformedMessage("quotes", "AAPL", "t", "missing")]

    asyncio.run(scenario())


def test_an_unforeseen_failure_of_one_message_is_reported_as_unreadable(
        settings: sw.Settings, creds: sw.Credentials) -> None:
    key = sw.StreamKey("4" * 24, "market_data", True, "iex")
    transport = AlpacaTransport(key, creds, settings)
    listener = _Listener()
    transport._events = listener  # what run() sets; the failure below cannot come off a wire
    transport.on_message_failed({"T": "q", "S": 7}, RecursionError("deep"))
    assert listener.malformed == [sw.MalformedMessage("quotes", None, "", "unreadable "
                                                      "(RecursionError)")]


def test_a_malformed_news_article_is_reported_like_any_other_message(
        settings: sw.Settings, creds: sw.Credentials) -> None:
    key = sw.StreamKey("5" * 24, "news", True, None)
    transport = AlpacaTransport(key, creds, settings)
    listener = _Listener()
    transport._events = listener  # what run() sets; the frame is dispatched as the SDK would

    async def scenario() -> None:
        await sdk_adapter.subscribe(transport._stream, {("news", "*")})
        await transport._stream._dispatch({"T": "n", "id": 7, "headline": "no timestamps",
                                           "symbols": ["AAPL"]})

    asyncio.run(scenario())
    assert listener.messages == []
    assert listener.malformed == [sw.MalformedMessage("n", None, "", "unreadable (ValueError)")]
