"""Parsing Alpaca's market-data messages into typed, Decimal-priced values."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from decimal import Decimal

import msgpack
import pytest

from streamwarden.errors import MalformedMessageError
from streamwarden.marketdata import (
    Bar,
    Quote,
    Trade,
    TradeCancel,
    TradeCorrection,
    TradingStatus,
    channel_of,
    parse_market_data,
)

MOMENT = datetime(2026, 11, 23, 15, 30, 1, 250000, tzinfo=UTC)


@pytest.mark.parametrize("stamp", [
    msgpack.Timestamp.from_datetime(MOMENT),  # raw mode, as the SDK hands it over
    MOMENT,
    MOMENT.replace(tzinfo=None),  # naive: Alpaca's times are UTC
    "2026-11-23T15:30:01.25Z",
    "2026-11-23T15:30:01.25",  # naive text: UTC too
], ids=["msgpack", "aware", "naive", "rfc3339", "naive-text"])
def test_every_timestamp_form_becomes_the_same_utc_moment(stamp):
    quote = parse_market_data({"T": "q", "S": "AAPL", "bp": 1.5, "bs": 1, "ap": 1.6, "as": 1,
                               "t": stamp})
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


QUOTE = {"T": "q", "S": "AAPL", "bp": 187.1, "bs": 3, "ap": 187.12, "as": 1, "t": MOMENT}
TRADE = {"T": "t", "S": "AAPL", "p": 187.1, "s": 100, "i": 7, "t": MOMENT}
BAR = {"T": "b", "S": "AAPL", "o": 1.1, "h": 1.3, "l": 1.0, "c": 1.2, "v": 10, "t": MOMENT}
BAD_NUMBERS = [
    (None, "missing"), ("abc", "not a number"), (float("nan"), "not finite"),
    (float("inf"), "not finite"), (float("-inf"), "not finite"), (-0.01, "negative"),
    (-1, "negative"),
    ("NaN", "not finite"), ("Infinity", "not finite"), ("sNaN", "not finite"), ("-2.5", "negative"),
    (Decimal("NaN"), "not finite"), (Decimal("-1"), "negative"), (True, "not a number"),
    ([1.0], "not a number"), (b"1", "not a number"),
]


def _with(message, key, value):
    changed = {name: field for name, field in message.items() if name != key}
    if value is not None:
        changed[key] = value
    return changed


@pytest.mark.parametrize(("base", "key"), [
    (QUOTE, "bp"), (QUOTE, "bs"), (QUOTE, "ap"), (QUOTE, "as"), (TRADE, "p"), (TRADE, "s"),
    (BAR, "o"), (BAR, "h"), (BAR, "l"), (BAR, "c"), (BAR, "v"),
])
@pytest.mark.parametrize(("value", "reason"), BAD_NUMBERS)
def test_a_bad_price_size_or_volume_is_rejected_never_invented(base, key, value, reason):
    with pytest.raises(MalformedMessageError) as caught:
        parse_market_data(_with(base, key, value))
    assert (caught.value.field, caught.value.reason) == (key, reason)
    assert f"field {key!r} is {reason}" in str(caught.value)
    assert isinstance(caught.value, ValueError)  # what callers that catch ValueError rely on


def test_a_bad_float_is_rejected_again_after_a_good_one_was_kept():
    parse_market_data(QUOTE)  # 187.1 is now a kept Decimal
    for _ in range(2):
        with pytest.raises(MalformedMessageError, match=r"'bp' is negative: -187\.1"):
            parse_market_data(_with(QUOTE, "bp", -187.1))


@pytest.mark.parametrize(("message", "field", "reason"), [
    (_with(QUOTE, "S", None), "S", "missing"),
    (_with(QUOTE, "S", ""), "S", "unreadable"),
    (_with(QUOTE, "S", 123), "S", "unreadable"),
    (_with(TRADE, "t", None), "t", "missing"),
    (_with(QUOTE, "t", 12345), "t", "unreadable"),
    (_with(QUOTE, "t", "yesterday"), "t", "unreadable"),
    (_with(QUOTE, "t", msgpack.Timestamp(2**62, 0)), "t", "unreadable"),  # past year 9999
    (_with(TRADE, "i", "42"), "i", "not an integer"),
    (_with(QUOTE, "T", "subscription"), "T", "unknown type"),
    ({"bp": 1.0}, "T", "unknown type"),
])
def test_an_unreadable_symbol_timestamp_id_or_type_is_rejected(message, field, reason):
    with pytest.raises(MalformedMessageError) as caught:
        parse_market_data(message)
    assert (caught.value.field, caught.value.reason) == (field, reason)


def test_the_error_shows_a_long_value_cut_short():
    with pytest.raises(MalformedMessageError) as caught:
        parse_market_data(_with(QUOTE, "bp", "x" * 1000))
    assert len(str(caught.value)) < 100 and str(caught.value).endswith("...")


def test_a_trade_without_an_id_and_numbers_as_text_or_decimals_are_read():
    trade = parse_market_data(_with(_with(TRADE, "i", None), "p", "187.10"))
    assert trade.trade_id is None and trade.price == Decimal("187.10")
    assert parse_market_data(_with(TRADE, "p", Decimal("2.5"))).price == Decimal("2.5")


def test_the_error_keeps_field_and_reason_when_derived():
    error = MalformedMessageError("bad", field="bp", reason="negative")
    derived = error.derive(operation="parse")
    assert (derived.field, derived.reason, derived.operation) == ("bp", "negative", "parse")


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
        quote = parse_market_data({"T": "q", "S": "AAPL", "bp": bid, "bs": 0, "ap": 1.0, "as": 1,
                                   "t": stamp})
        assert str(quote.bid_price) == str(Decimal(str(bid)))


STATUS = {"T": "s", "S": "AAPL", "sc": "H", "sm": "Trading Halt", "rc": "T12",
          "rm": "Trading Halted; For information requested by NASDAQ", "z": "C", "t": MOMENT}
CORRECTION = {"T": "c", "S": "AAPL", "x": "M", "oi": 52983525033527, "op": 46.61, "os": 200,
              "oc": ["@", "Z"], "ci": 52983525034326, "cp": 46.62, "cs": 100, "cc": ["@"],
              "z": "B", "t": MOMENT}
CANCEL = {"T": "x", "S": "AAPL", "i": 354, "x": "V", "p": 386.3, "s": 1, "a": "C", "z": "B",
          "t": MOMENT}


def test_the_further_stock_messages_are_typed_with_decimals_and_their_channels():
    updated = parse_market_data({**BAR, "T": "u"})
    daily = parse_market_data({**BAR, "T": "d", "v": 1_000_000})
    status = parse_market_data(STATUS)
    correction = parse_market_data(CORRECTION)
    cancel = parse_market_data(CANCEL)
    assert updated == parse_market_data(BAR) and isinstance(daily, Bar)
    assert daily.volume == Decimal(1_000_000)
    assert status == TradingStatus("AAPL", "H", "Trading Halt", "T12",
                                   "Trading Halted; For information requested by NASDAQ", MOMENT)
    assert parse_market_data(_with(_with(STATUS, "sm", None), "rm", None)).reason_message is None
    assert correction == TradeCorrection("AAPL", 52983525033527, Decimal("46.61"), Decimal(200),
                                         52983525034326, Decimal("46.62"), Decimal(100), MOMENT)
    assert cancel == TradeCancel("AAPL", 354, Decimal("386.3"), Decimal(1), "C", MOMENT)
    assert [channel_of({"T": kind}) for kind in "udscxli"] == [
        "updated_bars", "daily_bars", "statuses", "trades", "trades", None, None]


@pytest.mark.parametrize(("message", "field", "reason"), [
    (_with(STATUS, "sc", None), "sc", "missing"),
    (_with(STATUS, "sc", 7), "sc", "not text"),
    (_with(STATUS, "rm", ["x"]), "rm", "not text"),
    (_with(CORRECTION, "oi", None), "oi", "missing"),
    (_with(CORRECTION, "ci", 1.5), "ci", "not an integer"),
    (_with(CORRECTION, "cp", float("nan")), "cp", "not finite"),
    (_with(CORRECTION, "os", -200), "os", "negative"),
    (_with(CANCEL, "i", None), "i", "missing"),
    (_with(CANCEL, "a", ""), "a", "not text"),
    (_with(CANCEL, "p", "abc"), "p", "not a number"),
    ({**BAR, "T": "u", "h": float("inf")}, "h", "not finite"),
    ({**BAR, "T": "d", "v": None}, "v", "missing"),
    ({"T": "l", "S": "AAPL", "u": 1.0, "d": 0.5, "t": MOMENT}, "T", "unknown type"),
])
def test_the_further_messages_are_rejected_like_quotes(message, field, reason):
    with pytest.raises(MalformedMessageError) as caught:
        parse_market_data(message)
    assert (caught.value.field, caught.value.reason) == (field, reason)


class _Stamp:
    """A timestamp object of another library: read through its ``to_datetime``."""

    def __init__(self, moment: object) -> None:
        self._moment = moment

    def to_datetime(self) -> object:
        return self._moment


def test_a_timestamp_object_is_read_through_to_datetime_or_rejected():
    assert parse_market_data(_with(QUOTE, "t", _Stamp(MOMENT))).timestamp == MOMENT
    with pytest.raises(MalformedMessageError, match="'t' is unreadable"):
        parse_market_data(_with(QUOTE, "t", _Stamp("not a datetime")))


def test_a_parsed_quote_is_the_same_immutable_object_the_constructor_builds():
    quote = parse_market_data({"T": "q", "S": "AAPL", "bp": 1.5, "bs": 2, "ap": 1.6, "as": 3,
                               "t": MOMENT})
    built = Quote("AAPL", Decimal("1.5"), Decimal(2), Decimal("1.6"), Decimal(3), MOMENT)
    assert type(quote) is Quote
    assert quote == built and hash(quote) == hash(built) and repr(quote) == repr(built)
    with pytest.raises(dataclasses.FrozenInstanceError):
        quote.bid_price = Decimal(0)  # type: ignore[misc]


@pytest.mark.parametrize("seconds, nanoseconds", [
    (0, 0), (1_764_550_000, 999_999_999), (1_764_550_000, 1_000), (1_764_550_001, 0),
    (1_764_549_999, 500_000), (951_782_400, 0), (2**33, 123_456_789), (-1, 999_999_000),
])
def test_a_msgpack_timestamp_reads_as_its_own_utc_moment_across_seconds(seconds, nanoseconds):
    stamp = msgpack.Timestamp(seconds, nanoseconds)
    quote = parse_market_data({"T": "q", "S": "AAPL", "bp": 1.5, "bs": 1, "ap": 1.6, "as": 1,
                               "t": stamp})
    expected = stamp.to_datetime()
    assert quote.timestamp == expected.replace(microsecond=nanoseconds // 1000)
    assert quote.timestamp.tzinfo is UTC
