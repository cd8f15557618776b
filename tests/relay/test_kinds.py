"""Trade updates through the relay reach every client; crypto, option and news messages pass
through to unmodified alpaca-py clients (options: MessagePack, as alpaca-py asks)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from streamwarden.simulator import Simulator
from tests.relay.conftest import BOUND, CLIENT, CLIENT_TOKEN, Client, Relay, audit_rows
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(90)

CONTRACT = "AAPL261218C00150000"


def test_trade_updates_reach_every_client(sim: Simulator, relay: Relay,
                                          clients: Callable[..., Client]) -> None:
    first = clients("trading", "/stream")
    second = clients("trading", "/stream", key=CLIENT, secret=CLIENT_TOKEN)
    sim.wait_for(lambda s: len([c for c in s.open_connections("trade_updates")
                                if c.symbols("streams")]) == 1, BOUND)
    assert wait_until(lambda: len([row for row in audit_rows(relay) if row["event"] == "acquire"
                                   and row["kind"] == "trade_updates"]) == 2, BOUND)
    sim.publish_trade_update("fill", symbol="AAPL", price=187.5, client_order_id="order-1")
    for client in (first, second):
        client.output.wait(lambda line: '"order": "order-1"' in line)
        assert [item["update"] for item in client.output.items() if "update" in item] == [
            "fill"]
    assert sim.stats().kind("trade_updates").opened == 1


def test_crypto_options_and_news_pass_through(sim: Simulator,
                                              clients: Callable[..., Client]) -> None:
    crypto = clients("crypto", "/v1beta3/crypto/us", "BTC/USD")
    option = clients("options", "/v1beta1/indicative", CONTRACT)
    news = clients("news", "/v1beta1/news", "AAPL")
    sim.wait_for(lambda s: all(s.kind(kind).authorized for kind in
                               ("crypto_data", "option_data", "news")), BOUND)
    for client in (crypto, option, news):
        client.wait_log("subscribed")
    sim.publish_crypto_quote("BTC/USD", bid_price=65000.5, ask_price=65001, bid_size=0.25)
    sim.publish_option_quote(CONTRACT, bid_price=2.5, ask_price=2.6)
    sim.publish_news("Apple ships", symbols=["AAPL"])
    sim.publish_news("Not about Apple", symbols=["TSLA"])
    sim.publish_news("Apple again", symbols=["AAPL", "TSLA"])
    crypto.wait_quote("BTC/USD", 65000.5)
    option.wait_quote(CONTRACT, 2.5)
    news.output.wait(lambda line: "Apple again" in line)
    assert [item["news"] for item in news.output.items() if "news" in item] == [
        "Apple ships", "Apple again"]
