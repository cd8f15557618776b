"""Trade updates through the real alpaca-py TradingStream: authenticate, listen, parse."""

from __future__ import annotations

import uuid
from typing import Literal

import pytest
from alpaca.trading.enums import OrderSide, OrderStatus, TradeEvent
from alpaca.trading.models import TradeUpdate

from streamwarden.simulator import TRADE_UPDATES, Simulator
from tests.simulator.conftest import KEY_ID, Received, SdkRunner, wait_connected


def test_fill_parses_into_trade_update(sim: Simulator, sdk: SdkRunner) -> None:
    stream, received = sdk.trading(), Received()
    stream.subscribe_trade_updates(received.handle)
    sdk.run(stream)
    wait_connected(sim, TRADE_UPDATES, channel="streams")
    order_id = str(uuid.uuid4())

    assert sim.publish_trade_update("fill", symbol="AAPL", side="sell", qty=3,
                                    price="187.21", order_id=order_id) == 1
    (update,) = received.wait(1)

    assert isinstance(update, TradeUpdate)
    assert update.event == TradeEvent.FILL
    assert (update.price, update.qty, update.position_qty) == (187.21, 3, -3)
    assert update.execution_id is not None
    order = update.order
    assert (str(order.id), order.symbol, order.side) == (order_id, "AAPL", OrderSide.SELL)
    assert (order.status, order.filled_qty, order.filled_avg_price) == (
        OrderStatus.FILLED, "3", "187.21")
    (connection,) = sim.stats().open_connections(TRADE_UPDATES)
    assert connection.key_id == KEY_ID
    assert connection.symbols("streams") == {"trade_updates"}
    assert connection.data_messages == 1


@pytest.mark.parametrize("trading_frames", ["text", "binary"])
def test_every_event_parses_in_both_frame_types(trading_frames: Literal["text", "binary"]) -> None:
    events = ["new", "partial_fill", "canceled", "expired", "rejected", "replaced"]
    with Simulator(trading_frames=trading_frames) as sim:
        runner, received = SdkRunner(sim), Received()
        stream = runner.trading()
        stream.subscribe_trade_updates(received.handle)
        runner.run(stream)
        wait_connected(sim, TRADE_UPDATES, channel="streams")
        for event in events:
            sim.publish_trade_update(event, symbol="MSFT", qty=4, price="410.5")
        updates = received.wait(len(events))
        runner.stop(stream)

    assert [u.event for u in updates] == events
    partial = updates[1]
    assert (partial.order.status, partial.qty, partial.position_qty) == (
        OrderStatus.PARTIALLY_FILLED, 2, 2)
    assert updates[2].order.canceled_at is not None
    assert updates[0].price is None


def test_raw_mode_gets_the_stream_message(sim: Simulator, sdk: SdkRunner) -> None:
    stream, received = sdk.trading(raw_data=True), Received()
    stream.subscribe_trade_updates(received.handle)
    sdk.run(stream)
    wait_connected(sim, TRADE_UPDATES, channel="streams")

    sim.publish_trade_update("new", symbol="TSLA")
    (raw,) = received.wait(1)

    assert raw["stream"] == "trade_updates"
    assert raw["data"]["event"] == "new"
    assert raw["data"]["order"]["symbol"] == "TSLA"
    assert raw["data"]["order"]["type"] == "market"
