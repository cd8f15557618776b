"""Parsing Alpaca's market-data messages into typed, Decimal-priced values."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import msgpack
import pytest

from streamwarden.marketdata import Bar, Quote, Trade, channel_of, parse_market_data

MOMENT = datetime(2026, 11, 23, 15, 30, 1, 250000, tzinfo=UTC)


@pytest.mark.parametrize("stamp", [
    msgpack.Timestamp.from_datetime(MOMENT),  # raw mode, as the SDK hands it over
    MOMENT,
    MOMENT.replace(tzinfo=None),  # naive: Alpaca's times are UTC
    "2026-11-23T15:30:01.25Z",
], ids=["msgpack", "aware", "naive", "rfc3339"])
def test_every_timestamp_form_becomes_the_same_utc_moment(stamp):
    quote = parse_market_data({"T": "q", "S": "AAPL", "bp": 1.5, "ap": 1.6, "t": stamp})
    assert quote.timestamp == MOMENT


def test_quotes_trades_and_bars_keep_the_quoted_decimal_digits():
    quote = parse_market_data({"T": "q", "S": "MSFT", "bp": 410.07, "bs": 2, "ap": 410.1,
                               "as": 4, "t": MOMENT})
    trade = parse_market_data({"T": "t", "S": "MSFT", "p": 0.1 + 0.2, "s": 100, "i": 42,
                               "t": MOMENT})
    bar = parse_market_data({"T": "b", "S": "SPY", "o": 1.1, "h": 1.3, "l": 1.0, "c": 1.2,
                             "v": 10_000, "t": MOMENT})
    assert quote == Quote("MSFT", Decimal("410.07"), Decimal(2), Decimal("410.1"), Decimal(4),
                          MOMENT)
    assert isinstance(trade, Trade) and trade.trade_id == 42
    assert trade.price == Decimal("0.30000000000000004")  # what the float on the wire says
    assert bar == Bar("SPY", Decimal("1.1"), Decimal("1.3"), Decimal("1.0"), Decimal("1.2"),
                      Decimal(10_000), MOMENT)
    assert [channel_of(m) for m in ({"T": "q"}, {"T": "t"}, {"T": "b"}, {"T": "subscription"})] \
        == ["quotes", "trades", "bars", None]


@pytest.mark.parametrize(("message", "error"), [
    ({"T": "q", "bp": 1.0, "t": MOMENT}, "without 'S'"),
    ({"T": "t", "S": "AAPL", "p": 1.0}, "without 't'"),
    ({"T": "subscription", "S": "AAPL", "t": MOMENT}, "not a quote, trade or bar"),
    ({"T": "q", "S": "AAPL", "t": 12345}, "unreadable timestamp"),
])
def test_malformed_messages_are_refused(message, error):
    with pytest.raises(ValueError, match=error):
        parse_market_data(message)


@pytest.mark.parametrize("value", [187.12, 1.0, 1, 0.0, -0.0, 1e-07, 1e22, 2**70, 3])
def test_a_price_seen_again_parses_to_the_same_decimal_digits(value):
    stamp = datetime(2026, 11, 23, 15, tzinfo=UTC)
    message = {"T": "q", "S": "AAPL", "bp": value, "bs": value, "ap": value, "as": 1, "t": stamp}
    for _ in range(2):  # the second parse reads the kept Decimal of a float price
        quote = parse_market_data(message)
        assert str(quote.bid_price) == str(Decimal(str(value)))
        assert str(quote.bid_size) == str(Decimal(str(value)))


def test_negative_zero_keeps_its_sign_after_zero():
    stamp = datetime(2026, 11, 23, 15, tzinfo=UTC)
    for bid in (0.0, -0.0):
        quote = parse_market_data({"T": "q", "S": "AAPL", "bp": bid, "t": stamp})
        assert str(quote.bid_price) == str(Decimal(str(bid)))
