"""Wire messages: what alpaca-py's models make of them, codecs, and the order model."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import msgpack
import pytest
from alpaca.data.models import Bar, Quote, Trade
from alpaca.trading.enums import OrderStatus
from alpaca.trading.models import TradeUpdate

from streamwarden._frames import decode_frame
from streamwarden.simulator import messages, orders
from streamwarden.simulator.prices import QuoteSource

MOMENT = datetime(2024, 5, 1, 14, 30, 0, 654321, tzinfo=UTC)


def _through_the_wire(message: messages.Message) -> messages.Message:
    """What alpaca-py's DataStream does with a frame before building a model."""
    (decoded,) = msgpack.unpackb(messages.encode([message], "msgpack"))
    decoded["t"] = decoded["t"].to_datetime()
    return decoded  # type: ignore[no-any-return]


def test_sdk_models_parse_the_builders() -> None:
    quote = Quote("AAPL", _through_the_wire(messages.quote(
        "AAPL", bid_price=1.5, ask_price=1.51, bid_size=2, ask_size=3, timestamp=MOMENT)))
    trade = Trade("AAPL", _through_the_wire(messages.trade(
        "AAPL", price=1.5, size=2, trade_id=7, timestamp=MOMENT)))
    bar = Bar("AAPL", _through_the_wire(messages.bar(
        "AAPL", open_price=1, high_price=2, low_price=0.5, close_price=1.5, volume=10,
        trade_count=3, vwap=1.2, timestamp=MOMENT)))
    assert (quote.bid_price, quote.ask_size, quote.timestamp) == (1.5, 3, MOMENT)
    assert (trade.price, trade.id, trade.conditions) == (1.5, 7, ["@"])
    assert (bar.high, bar.trade_count, bar.vwap) == (2, 3, 1.2)


def test_timestamps_keep_nanoseconds_and_reject_naive_times() -> None:
    other_zone = MOMENT.astimezone(timezone(timedelta(hours=-4)))
    stamp = messages.wire_time(other_zone)
    assert stamp == msgpack.Timestamp(int(MOMENT.timestamp()), 654321000)
    assert messages.rfc3339(msgpack.Timestamp(0, 5)) == "1970-01-01T00:00:00.000000005Z"
    with pytest.raises(ValueError, match="timezone"):
        messages.wire_time(datetime(2024, 1, 1))


def test_codecs_and_decode_errors() -> None:
    assert messages.encode({"a": 1}, "json") == '{"a":1}'
    assert messages.encode({"a": 1}, "json-binary") == b'{"a":1}'
    assert decode_frame(msgpack.packb({"a": 1}), "msgpack") == {"a": 1}
    assert decode_frame(b'{"a":1}', "json") == {"a": 1}
    assert decode_frame('{"a":1}', "msgpack") == {"a": 1}  # text frames are JSON
    for bad, codec in ((b"\x92\x01", "msgpack"), (b"\xff", "json"), ("{", "json")):
        with pytest.raises(ValueError):
            decode_frame(bad, codec)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        messages.encode({"a": object()}, "json")
    with pytest.raises(KeyError):
        messages.error(418)


def test_subscription_ack_lists_every_channel() -> None:
    ack = messages.subscription_ack({"quotes": {"B", "A"}})
    assert ack["quotes"] == ["A", "B"]
    assert set(ack) == {"T", *messages.SUBSCRIBABLE_CHANNELS, *messages.TRADE_FOLLOWERS}


@pytest.mark.parametrize("event", sorted(orders.ORDER_STATUS))
def test_every_trade_update_event_parses(event: str) -> None:
    fill = orders.OrderFill("AAPL", "buy", Decimal(10), price=Decimal("187.5"))
    update = TradeUpdate(**orders.trade_update(event, fill, now=MOMENT)["data"])
    assert update.event == event
    assert update.order.status == OrderStatus(orders.ORDER_STATUS[event])
    assert update.timestamp == MOMENT


def test_trade_update_details() -> None:
    order_id = uuid.uuid4()
    market = orders.OrderFill("TSLA", "sell", Decimal(2), order_id=order_id)
    new = TradeUpdate(**orders.trade_update("new", market, now=MOMENT)["data"])
    assert (new.order.id, new.order.type, new.price, new.execution_id) == (
        order_id, "market", None, None)
    limit = orders.OrderFill("TSLA", "sell", Decimal(2), price=Decimal(3),
                             position_qty=Decimal(-7))
    fill = TradeUpdate(**orders.trade_update("fill", limit, now=MOMENT)["data"])
    assert (fill.qty, fill.position_qty, fill.order.limit_price) == (2, -7, "3")
    with pytest.raises(ValueError, match="needs a price"):
        orders.trade_update("fill", market, now=MOMENT)
    with pytest.raises(ValueError, match="unknown trade update event"):
        orders.trade_update("teleported", market, now=MOMENT)


def test_quote_source_is_deterministic_and_realistic() -> None:
    first, second, other = QuoteSource(1), QuoteSource(1), QuoteSource(2)
    run = [first.next("AAPL") for _ in range(500)]
    assert run == [second.next("AAPL") for _ in range(500)]
    assert run != [other.next("AAPL") for _ in range(500)]
    for values in run:
        assert 0 < values.bid_price < values.ask_price <= values.bid_price + 0.05 + 1e-9
        assert Decimal(str(values.ask_price)).as_tuple().exponent >= -2
        assert values.bid_size >= 1 and values.ask_size >= 1
    assert first.next("MSFT") == second.next("MSFT")  # per-symbol walks are independent
