"""Market data through the real alpaca-py StockDataStream: handshake, subscriptions, parsing."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import msgpack
from alpaca.data.models import Bar, Quote, Trade

from streamwarden.simulator import MARKET_DATA, Simulator
from streamwarden.simulator.prices import QuoteSource
from tests.simulator.conftest import BOUND, KEY_ID, Received, SdkRunner, wait_connected

MOMENT = datetime(2024, 5, 1, 14, 30, 0, 123456, tzinfo=UTC)


def test_sdk_parses_quotes_trades_and_bars_with_exact_values(
    sim: Simulator, sdk: SdkRunner
) -> None:
    stream, received = sdk.market_data(), Received()
    stream.subscribe_quotes(received.handle, "AAPL")
    stream.subscribe_trades(received.handle, "AAPL")
    stream.subscribe_bars(received.handle, "AAPL")
    sdk.run(stream)
    wait_connected(sim, MARKET_DATA, channel="bars")

    assert sim.publish_quote("AAPL", bid_price="187.20", ask_price=Decimal("187.22"),
                             bid_size=3, ask_size=7, timestamp=MOMENT) == 1
    assert sim.publish_trade("AAPL", price=187.21, size=5, trade_id=42, timestamp=MOMENT) == 1
    assert sim.publish_bar("AAPL", open_price="187.10", high_price="187.50",
                           low_price="187.00", close_price="187.25", volume=1200,
                           trade_count=31, vwap="187.2", timestamp=MOMENT) == 1
    quote, trade, bar = received.wait(3)

    assert isinstance(quote, Quote)
    assert (quote.symbol, quote.bid_price, quote.ask_price) == ("AAPL", 187.2, 187.22)
    assert (quote.bid_size, quote.ask_size, quote.bid_exchange, quote.tape) == (3, 7, "V", "C")
    assert Decimal(str(quote.ask_price)) == Decimal("187.22")
    assert quote.timestamp == MOMENT
    assert isinstance(trade, Trade)
    assert (trade.price, trade.size, trade.id, trade.exchange) == (187.21, 5, 42, "V")
    assert trade.timestamp == MOMENT
    assert isinstance(bar, Bar)
    assert (bar.open, bar.high, bar.low, bar.close) == (187.1, 187.5, 187.0, 187.25)
    assert (bar.volume, bar.trade_count, bar.vwap, bar.timestamp) == (1200, 31, 187.2, MOMENT)

    stats = sim.stats()
    (connection,) = stats.open_connections(MARKET_DATA)
    assert connection.key_id == KEY_ID and connection.path == "/v2/iex"
    assert connection.data_messages == 3 and stats.kind(MARKET_DATA).data_messages == 3
    assert connection.control_messages == 3  # connected, authenticated, subscription


def test_raw_mode_gets_the_wire_dict_with_a_msgpack_timestamp(
    sim: Simulator, sdk: SdkRunner
) -> None:
    stream, received = sdk.market_data(raw_data=True), Received()
    stream.subscribe_quotes(received.handle, "MSFT")
    sdk.run(stream)
    wait_connected(sim, MARKET_DATA, channel="quotes")

    sim.publish_quote("MSFT", bid_price=410.5, ask_price=410.52, timestamp=MOMENT)
    (raw,) = received.wait(1)

    assert raw["T"] == "q" and raw["S"] == "MSFT"
    assert (raw["bp"], raw["ap"], raw["bs"], raw["as"], raw["c"]) == (410.5, 410.52, 1, 1, ["R"])
    assert isinstance(raw["t"], msgpack.Timestamp)
    assert raw["t"].to_datetime() == MOMENT


def test_wire_subscription_is_the_union_and_follows_unsubscribe(
    sim: Simulator, sdk: SdkRunner
) -> None:
    first, second, received = sdk.market_data(), sdk.market_data(feed="sip"), Received()
    first.subscribe_quotes(received.handle, "AAPL", "MSFT")
    second.subscribe_quotes(received.handle, "TSLA")
    second.subscribe_trades(received.handle, "*")
    sdk.run(first)
    sdk.run(second)
    wait_connected(sim, MARKET_DATA, count=2, channel="quotes")

    stats = sim.stats()
    assert stats.wire_subscription("quotes") == {"AAPL", "MSFT", "TSLA"}
    assert stats.wire_subscription("trades") == {"*"}
    assert sorted(c.path for c in stats.open_connections(MARKET_DATA)) == ["/v2/iex", "/v2/sip"]
    assert stats.kind(MARKET_DATA).open == 2

    first.unsubscribe_quotes("MSFT")
    sim.wait_for(lambda s: s.wire_subscription("quotes") == {"AAPL", "TSLA"}, BOUND)
    assert sim.publish_quote("MSFT", bid_price=1, ask_price=2) == 0
    assert sim.publish_trade("ANY", price=3) == 1  # the "*" subscriber
    (trade,) = received.wait(1)
    assert trade.symbol == "ANY"


def test_generated_quotes_follow_the_seed_at_the_rate() -> None:
    with Simulator(quote_rate=100.0, seed=7) as sim:
        runner, received = SdkRunner(sim), Received()
        stream = runner.market_data()
        stream.subscribe_quotes(received.handle, "AAPL")
        runner.run(stream)
        quotes = received.wait(20, timeout=BOUND)
        runner.stop(stream)

    source = QuoteSource(7)
    expected = [source.next("AAPL") for _ in quotes]
    assert [(q.bid_price, q.ask_price, q.bid_size, q.ask_size) for q in quotes] == [
        (e.bid_price, e.ask_price, e.bid_size, e.ask_size) for e in expected
    ]
    for quote in quotes:
        assert quote.bid_price < quote.ask_price
        assert Decimal(str(quote.bid_price)).as_tuple().exponent >= -2


def test_set_quote_rate_starts_and_stops_the_generator(sim: Simulator, sdk: SdkRunner) -> None:
    stream, received = sdk.market_data(), Received()
    stream.subscribe_quotes(received.handle, "NVDA")
    sdk.run(stream)
    wait_connected(sim, MARKET_DATA, channel="quotes")
    assert sim.quote_rate == 0.0

    sim.set_quote_rate(200.0)
    received.wait(5)
    sim.set_quote_rate(0.0)
    settled = sim.stats().kind(MARKET_DATA).data_messages
    sim.publish_quote("NVDA", bid_price=1, ask_price=2)  # a marker after the generator stopped
    sim.wait_for(lambda s: s.kind(MARKET_DATA).data_messages >= settled + 1, BOUND)
    assert sim.stats().kind(MARKET_DATA).data_messages <= settled + 2


def test_quote_burst_reaches_every_subscriber(sim: Simulator, sdk: SdkRunner) -> None:
    streams = [sdk.market_data(raw_data=True, key_id=f"PKBURST{n}") for n in range(2)]
    collectors = [Received() for _ in streams]
    for stream, received in zip(streams, collectors, strict=True):
        stream.subscribe_quotes(received.handle, "SPY")
        sdk.run(stream)
    wait_connected(sim, MARKET_DATA, count=2, channel="quotes")

    assert sim.publish_quotes("SPY", 1000) == 2000
    assert sim.publish_quotes("SPY", 1000, batch_size=100) == 2000
    for received in collectors:
        assert len(received.wait(2000)) == 2000
    assert sim.stats().kind(MARKET_DATA).data_messages == 4000
