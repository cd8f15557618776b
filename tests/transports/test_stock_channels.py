"""The further stock channels and the feeds, over the real alpaca-py SDK against the simulator.

Updated bars, daily bars and trading statuses are channels of their own, routed per (channel,
symbol) with the union on the wire; corrections and cancel errors reach the leases that
subscribe that symbol's trades, in order with its trades; LULD bands and order imbalances in a
frame break nothing. Each stock feed (``iex``, ``sip``, ``delayed_sip``) is served at
``/v2/<feed>``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

import streamwarden as sw
from streamwarden.simulator import MARKET_DATA, Simulator
from tests.waiting import wait_until

BOUND = 5.0
"""Generous bound for behaviour that normally takes milliseconds."""
MOMENT = datetime(2026, 11, 23, 15, 30, tzinfo=UTC)

pytestmark = pytest.mark.timeout(60)


def bar(kind: str, symbol: str, close: float) -> dict[str, Any]:
    return {"T": kind, "S": symbol, "o": 1.0, "h": 2.0, "l": 0.5, "c": close, "v": 100,
            "n": 3, "vw": 1.1, "t": MOMENT}


def status(symbol: str, code: str) -> dict[str, Any]:
    return {"T": "s", "S": symbol, "sc": code, "sm": "Trading Halt", "rc": "T12",
            "rm": "news pending", "z": "C", "t": MOMENT}


def correction(symbol: str, original_id: int) -> dict[str, Any]:
    return {"T": "c", "S": symbol, "x": "V", "oi": original_id, "op": 10.0, "os": 5,
            "oc": ["@"], "ci": original_id + 1, "cp": 10.5, "cs": 5, "cc": ["@"], "z": "C",
            "t": MOMENT}


def cancel(symbol: str, trade_id: int) -> dict[str, Any]:
    return {"T": "x", "S": symbol, "i": trade_id, "x": "V", "p": 10.0, "s": 5, "a": "C",
            "z": "C", "t": MOMENT}


def trade(symbol: str, price: float, trade_id: int) -> dict[str, Any]:
    return {"T": "t", "S": symbol, "i": trade_id, "x": "V", "p": price, "s": 5, "c": ["@"],
            "z": "C", "t": MOMENT}


LULD = {"T": "l", "S": "AAPL", "u": 12.0, "d": 8.0, "i": "B", "z": "C", "t": MOMENT}
IMBALANCE = {"T": "i", "S": "AAPL", "p": 10.0, "z": "C", "t": MOMENT}


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(port=0) as simulator:
        yield simulator


@pytest.fixture
def settings(sim: Simulator) -> sw.Settings:
    return sw.Settings(market_data_url=sim.market_data_url, start_timeout=3.0,
                       stop_timeout=1.0, debug=True)


def wire(sim: Simulator) -> dict[str, frozenset[str]]:
    (connection,) = [c for c in sim.stats().connections if c.is_open]
    return dict(connection.subscription)


def test_further_channels_are_routed_per_symbol_with_the_union_on_the_wire(
        sim: Simulator, settings: sw.Settings, creds: sw.Credentials,
        sink: sw.InMemoryAuditSink) -> None:
    with sw.ConnectionManager(audit=sink, settings=settings) as manager:
        first = manager.market_data(creds, symbols=["AAPL"])
        first.subscribe_updated_bars("AAPL")
        first.subscribe_daily_bars("SPY")
        first.subscribe_statuses("AAPL")
        second = manager.market_data(creds, symbols=["MSFT"])
        second.subscribe_statuses("MSFT", "AAPL")
        assert wire(sim) == {
            "quotes": {"AAPL", "MSFT"}, "trades": {"AAPL", "MSFT"},
            "updatedBars": {"AAPL"}, "dailyBars": {"SPY"}, "statuses": {"AAPL", "MSFT"}}

        frame = [bar("u", "AAPL", 1.5), bar("d", "SPY", 400.25), status("AAPL", "H"),
                 status("MSFT", "T"), correction("AAPL", 7), cancel("AAPL", 8), LULD,
                 IMBALANCE, correction("MSFT", 9), trade("AAPL", 11.0, 10)]
        assert sim.publish_raw(frame) == 1

        first_trades = list(_take(first.trades(timeout=BOUND), 3))
        assert [type(t) for t in first_trades] == [sw.TradeCorrection, sw.TradeCancel, sw.Trade]
        assert first_trades[0].corrected_price == Decimal("10.5")
        assert first_trades[1].trade_id == 8 and first.latest_trade("AAPL") == first_trades[2]
        (updated,) = _take(first.updated_bars(timeout=BOUND), 1)
        (daily,) = _take(first.daily_bars(timeout=BOUND), 1)
        assert (updated.symbol, updated.close, daily.symbol, daily.close) == (
            "AAPL", Decimal("1.5"), "SPY", Decimal("400.25"))
        (halt,) = _take(first.statuses(timeout=BOUND), 1)
        assert (halt.symbol, halt.status_code, halt.reason_code) == ("AAPL", "H", "T12")

        (msft_correction,) = _take(second.trades(timeout=BOUND), 1)
        assert (msft_correction.symbol, msft_correction.original_id) == ("MSFT", 9)
        assert {(s.symbol, s.status_code) for s in _take(second.statuses(timeout=BOUND), 2)} \
            == {("AAPL", "H"), ("MSFT", "T")}
        (lifecycle,) = manager.health().lifecycles
        assert lifecycle.malformed_messages == 0  # LULD and imbalance: ignored, not malformed

        first.unsubscribe("statuses", "AAPL")
        first.unsubscribe("daily_bars", "SPY")  # returns at once: the lease no longer wants it
        assert wait_until(lambda: "dailyBars" not in wire(sim), BOUND)
        assert wire(sim)["statuses"] == {"AAPL", "MSFT"}  # the other lease still wants AAPL's
        second.unsubscribe("statuses", "AAPL", "MSFT")
        second.unsubscribe("trades", "MSFT")
        assert wait_until(lambda: "statuses" not in wire(sim), BOUND)
        assert wait_until(lambda: wire(sim)["trades"] == {"AAPL"}, BOUND)
        first.release()
        second.release()


def _take(iterator: Iterator[Any], count: int) -> list[Any]:
    return [next(iterator) for _ in range(count)]


def test_callbacks_receive_the_further_channels(
        sim: Simulator, settings: sw.Settings, creds: sw.Credentials,
        sink: sw.InMemoryAuditSink) -> None:
    received: list[tuple[str, Any]] = []
    lock = threading.Lock()

    def collector(name: str) -> Any:
        def collect(item: Any) -> None:
            with lock:
                received.append((name, item))
        return collect

    with sw.ConnectionManager(audit=sink, settings=settings) as manager:
        lease = manager.market_data(
            creds, symbols=["AAPL"], on_trade=collector("trade"),
            on_updated_bar=collector("updated"), on_daily_bar=collector("daily"),
            on_status=collector("status"))
        lease.subscribe_updated_bars("AAPL")
        lease.subscribe_daily_bars("AAPL")
        lease.subscribe_statuses("AAPL")
        sim.publish_raw([bar("u", "AAPL", 1.5), bar("d", "AAPL", 2.5), status("AAPL", "T"),
                         cancel("AAPL", 3)])
        assert wait_until(lambda: len(received) == 4, BOUND)
        with lock:
            by_name = dict(received)
        assert by_name["updated"].close == Decimal("1.5")
        assert by_name["daily"].close == Decimal("2.5")
        assert by_name["status"].status_code == "T"
        assert isinstance(by_name["trade"], sw.TradeCancel)
        with pytest.raises(sw.InvalidInputError):
            lease.statuses()  # it goes to on_status
        with pytest.raises(sw.InvalidInputError, match="channel must be one of"):
            lease.unsubscribe("lulds", "AAPL")  # type: ignore[arg-type]
        lease.release()


def test_the_async_lease_subscribes_and_iterates_the_further_channels(
        sim: Simulator, settings: sw.Settings, creds: sw.Credentials,
        sink: sw.InMemoryAuditSink) -> None:
    async def scenario() -> None:
        async with (sw.AsyncConnectionManager(audit=sink, settings=settings) as manager,
                    manager.market_data(creds, symbols=["AAPL"]) as feed):
            await feed.subscribe_updated_bars("AAPL")
            await feed.subscribe_daily_bars("AAPL")
            await feed.subscribe_statuses("AAPL")
            await asyncio.to_thread(sim.publish_raw, [
                bar("u", "AAPL", 1.5), bar("d", "AAPL", 2.5), status("AAPL", "H"),
                correction("AAPL", 4)])
            async with asyncio.timeout(BOUND):
                updated = await anext(feed.updated_bars())
                daily = await anext(feed.daily_bars())
                halt = await anext(feed.statuses())
                fixed = await anext(feed.trades())
            assert (updated.close, daily.close) == (Decimal("1.5"), Decimal("2.5"))
            assert halt.status_code == "H" and isinstance(fixed, sw.TradeCorrection)

    asyncio.run(scenario())


@pytest.mark.parametrize("feed", ["iex", "sip", "delayed_sip"])
def test_each_stock_feed_end_to_end(sim: Simulator, creds: sw.Credentials,
                                    sink: sw.InMemoryAuditSink, feed: str) -> None:
    settings = sw.Settings(feed=feed, market_data_url=sim.feed_url(feed), start_timeout=3.0,
                           stop_timeout=1.0, debug=True)
    with sw.ConnectionManager(audit=sink, settings=settings) as manager:
        lease = manager.market_data(creds, symbols=["AAPL"])
        sim.publish_quote("AAPL", bid_price="5.25", ask_price="5.30")
        assert lease.wait_for_quote("AAPL", timeout=BOUND).ask_price == Decimal("5.30")
        (lifecycle,) = manager.health().lifecycles
        assert lifecycle.feed == feed
        (connection,) = sim.stats().connections
        assert (connection.kind, connection.path) == (MARKET_DATA, f"/v2/{feed}")
        lease.release()
