"""Market-data fan-out on the in-memory transport: per-lease subscriptions, the union on the
wire, routing, latest values and waits. (The same over alpaca-py and the simulator is in
tests/machine/test_alpaca_transport.py.)"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from streamwarden import Bar, InvalidInputError, LeaseError, LeaseRevokedError, Quote, Trade
from streamwarden import errors as sw_errors
from streamwarden.errors import AuthenticationError
from streamwarden.transports import StreamMessage
from tests.waiting import wait_until

NOW = datetime(2026, 11, 23, 15, 30, tzinfo=UTC)


def quote(symbol: str, bid: str = "187.10", ask: str = "187.12") -> StreamMessage:
    return StreamMessage("quotes", symbol, Quote(symbol, Decimal(bid), Decimal(3), Decimal(ask),
                                                 Decimal(1), NOW))


def trade(symbol: str, price: str = "187.11") -> StreamMessage:
    return StreamMessage("trades", symbol, Trade(symbol, Decimal(price), Decimal(100), NOW, 7))


def test_each_lease_has_its_own_subscriptions_and_the_wire_carries_the_union(
    manager, factory, creds, sink
):
    first = manager.market_data(creds, symbols=["AAPL"], owner="momentum")
    second = manager.market_data(creds, symbols=["AAPL", "MSFT"], owner="pairs")
    wire = factory.latest()
    assert wire.subscriptions == {("quotes", "AAPL"), ("trades", "AAPL"),
                                  ("quotes", "MSFT"), ("trades", "MSFT")}
    first.subscribe_bars("SPY")
    second.unsubscribe("trades", "MSFT", "AAPL")
    assert first.subscriptions == {("quotes", "AAPL"), ("trades", "AAPL"), ("bars", "SPY")}
    assert second.subscriptions == {("quotes", "AAPL"), ("quotes", "MSFT")}
    # AAPL trades stay on the wire: the first lease still wants them.
    assert wire.subscriptions == {("quotes", "AAPL"), ("trades", "AAPL"), ("bars", "SPY"),
                                  ("quotes", "MSFT")}
    first.release()
    assert wire.subscriptions == {("quotes", "AAPL"), ("quotes", "MSFT")}
    assert manager.check_invariants() == []
    changes = [(r.event, r.owner, dict(r.details)) for r in sink.records()
               if r.event.startswith("lease_")]
    assert changes == [
        ("lease_subscribed", "momentum", {"subscriptions": {"bars": ["SPY"]}}),
        ("lease_unsubscribed", "pairs", {"subscriptions": {"trades": ["AAPL", "MSFT"]}}),
    ]
    acquire = next(r for r in sink.records() if r.event == "acquire" and r.owner == "pairs")
    assert acquire.details["subscriptions"] == {"quotes": ["AAPL", "MSFT"],
                                                "trades": ["AAPL", "MSFT"]}
    second.release()


def test_a_subscription_change_that_changes_nothing_records_nothing(manager, creds, sink):
    with manager.market_data(creds, symbols=["AAPL"]) as lease:
        before = len(sink.records())
        lease.subscribe_quotes("AAPL")
        lease.unsubscribe("bars", "AAPL")
        assert len(sink.records()) == before


def test_each_message_reaches_exactly_the_interested_leases_once(manager, factory, creds):
    got: dict[str, list[object]] = {"a": [], "b": [], "c": []}
    manager.market_data(creds, symbols=["AAPL"], on_quote=got["a"].append)
    manager.market_data(creds, symbols=["AAPL", "MSFT"], on_quote=got["b"].append,
                        on_trade=got["b"].append)
    manager.market_data(creds, symbols=["MSFT"], on_quote=got["c"].append)
    wire = factory.latest()
    aapl, msft, aapl_trade = quote("AAPL"), quote("MSFT", "410.5", "410.6"), trade("AAPL")
    for message in (aapl, msft, aapl_trade, quote("SPY")):
        wire.emit_message(message)
    assert wait_until(lambda: len(got["b"]) == 3 and got["a"] and got["c"])
    assert got["a"] == [aapl.payload]
    assert got["b"] == [aapl.payload, msft.payload, aapl_trade.payload]
    assert got["c"] == [msft.payload]
    assert got["a"][0] is got["b"][0]  # parsed once, the same object for every lease
    (lifecycle,) = manager.health().lifecycles
    assert lifecycle.messages == 4


def test_a_raising_callback_is_isolated(manager, factory, creds):
    received: list[object] = []

    def broken(message: object) -> None:
        raise ValueError("strategy bug")

    manager.market_data(creds, symbols=["AAPL"], on_quote=broken)
    manager.market_data(creds, symbols=["AAPL"], on_quote=received.append)
    for index in range(3):  # one at a time: quotes of one symbol conflate when queued
        factory.latest().emit_message(quote("AAPL", bid=f"187.1{index}"))
        assert wait_until(lambda n=index: manager.health().lifecycles[0].callback_errors == n + 1)
        assert wait_until(lambda n=index: len(received) == n + 1)
    (lifecycle,) = manager.health().lifecycles
    assert (lifecycle.state, lifecycle.callback_errors) == ("running", 3)


def test_latest_quote_and_trade_have_decimal_prices(manager, factory, creds):
    with manager.market_data(creds, symbols=["AAPL"]) as lease:
        assert lease.latest_quote("AAPL") is None
        factory.latest().emit_message(quote("AAPL", "187.10", "187.12"))
        factory.latest().emit_message(quote("AAPL", "187.11", "187.13"))
        factory.latest().emit_message(trade("aapl".upper(), "187.115"))
        latest = lease.latest_quote("aapl")
        assert latest is not None and latest.bid_price == Decimal("187.11")
        assert latest.spread == Decimal("0.02")
        last_trade = lease.latest_trade("AAPL")
        assert last_trade is not None and last_trade.price == Decimal("187.115")
        with pytest.raises(InvalidInputError, match="does not subscribe quotes of MSFT"):
            lease.latest_quote("MSFT")


def test_wait_for_quote_waits_for_the_first_quote(manager, factory, creds):
    with manager.market_data(creds, symbols=["AAPL"]) as lease:
        timer = threading.Timer(0.1, factory.latest().emit_message, args=(quote("AAPL"),))
        timer.start()
        got = lease.wait_for_quote("AAPL", timeout=5.0)
        timer.join()
        assert got.symbol == "AAPL" and got.ask_price == Decimal("187.12")
        assert lease.wait_for_quote("AAPL", timeout=0.0) is got  # already there: no wait
        with pytest.raises(TimeoutError, match="no quotes of AAPL"):
            lease.subscribe_quotes("MSFT")
            lease.unsubscribe("quotes", "AAPL")
            lease.subscribe_quotes("AAPL")  # the last subscriber left: the latest was dropped
            lease.wait_for_quote("AAPL", timeout=0.05)


def test_wait_for_quote_ends_when_the_lease_is_revoked(manager, factory, creds):
    lease = manager.market_data(creds, symbols=["AAPL"])
    timer = threading.Timer(0.1, factory.latest().emit_fatal_error,
                            args=(AuthenticationError("unauthorized"),))
    timer.start()
    with pytest.raises(LeaseRevokedError):
        lease.wait_for_quote("AAPL", timeout=5.0)
    timer.join()


def test_market_data_calls_refuse_bad_input_and_dead_leases(manager, creds, sink):
    lease = manager.market_data(creds, symbols=["AAPL"])
    before = len(sink.records())
    with pytest.raises(InvalidInputError, match="channel must be one of"):
        lease.unsubscribe("orderbooks", "AAPL")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="malformed symbol"):
        lease.subscribe_quotes("$$$")
    with pytest.raises(InvalidInputError, match="timeout"):
        lease.wait_for_quote("AAPL", timeout=-1)
    trades = manager.trade_updates(creds, on_update=lambda update: None)
    assert not hasattr(trades, "subscribe_quotes")  # one lease type per stream kind
    assert len(sink.records()) == before + 2  # the trade-updates acquire and its connected
    lease.release()
    with pytest.raises(LeaseError, match="released"):
        lease.subscribe_quotes("MSFT")
    with pytest.raises(LeaseError, match="released"):
        lease.latest_quote("AAPL")
    trades.release()


def test_bars_are_delivered_but_not_kept(manager, factory, creds):
    bars: list[object] = []
    with manager.market_data(creds, symbols=["AAPL"], on_bar=bars.append) as lease:
        lease.subscribe_bars("AAPL")
        bar = Bar("AAPL", *(Decimal(v) for v in ("1", "2", "0.5", "1.5", "1000")), NOW)
        factory.latest().emit_message(StreamMessage("bars", "AAPL", bar))
        assert wait_until(lambda: bars == [bar])


def test_a_star_subscription_receives_every_symbol_of_its_channel_once(
        manager, factory, creds):
    everything = manager.market_data(creds, symbols=["*"], owner="all")
    both = manager.market_data(creds, symbols=["AAPL", "*"], owner="both")
    one = manager.market_data(creds, symbols=["MSFT"], owner="one")
    wire = factory.latest()
    assert ("quotes", "*") in wire.subscriptions
    for message in (quote("AAPL"), quote("MSFT"), trade("SPY")):
        assert wire.emit_message(message)
    assert [q.symbol for q in _take(everything.quotes(timeout=1), 2)] == ["AAPL", "MSFT"]
    assert [q.symbol for q in _take(both.quotes(timeout=1), 2)] == ["AAPL", "MSFT"]  # once each
    assert [t.symbol for t in _take(both.trades(timeout=1), 1)] == ["SPY"]
    assert [q.symbol for q in _take(one.quotes(timeout=1), 1)] == ["MSFT"]
    with pytest.raises(sw_errors.WaitTimeoutError):
        next(one.quotes(timeout=0.05))  # not AAPL
    with pytest.raises(sw_errors.WaitTimeoutError):
        next(both.quotes(timeout=0.05))  # no duplicate of AAPL


def _take(iterator, count):
    return [next(iterator) for _ in range(count)]
