"""The crypto, option and news endpoints on the wire, with a plain websockets client."""

from __future__ import annotations

import msgpack
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from streamwarden import InvalidInputError
from streamwarden.simulator import CRYPTO_DATA, MARKET_DATA, NEWS, OPTION_DATA, Simulator
from tests.simulator.conftest import BOUND
from tests.simulator.test_protocol_market_data import authenticate, client, receive, send

CALL = "AAPL241220C00150000"


def test_crypto_acknowledges_its_own_channels_and_publishes_fractional_sizes(sim: Simulator):
    with client(sim.crypto_data_url) as ws:
        authenticate(ws)
        send(ws, {"action": "subscribe", "quotes": ["BTC/USD"], "trades": ["BTC/USD"],
                  "orderbooks": ["ETH/USD"]})
        (ack,) = receive(ws)
        assert ack == {"T": "subscription", "trades": ["BTC/USD"], "quotes": ["BTC/USD"],
                       "bars": [], "updatedBars": [], "dailyBars": [],
                       "orderbooks": ["ETH/USD"]}
        send(ws, {"action": "subscribe", "news": ["AAPL"]})  # another stream's channel
        assert receive(ws)[0]["code"] == 410
        assert sim.publish_crypto_quote("BTC/USD", bid_price=1, ask_price=2,
                                        bid_size="0.25") == 1
        (quote,) = receive(ws)
        assert (quote["T"], quote["S"], quote["bs"]) == ("q", "BTC/USD", 0.25)
        assert isinstance(quote["t"], msgpack.Timestamp)
        assert sim.publish_quote("BTC/USD", bid_price=1, ask_price=2) == 0  # stock only
    stats = sim.stats()
    assert stats.kind(CRYPTO_DATA).opened == 1 and stats.kind(MARKET_DATA).opened == 0
    assert stats.kind(CRYPTO_DATA).data_messages == 1


def test_options_refuse_a_json_client_with_412(sim: Simulator):
    with client(sim.option_data_url("opra"), msgpack_codec=False) as ws:
        assert receive(ws) == [{"T": "error", "code": 412,
                                "msg": "option messages are only available in MsgPack format"}]
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=BOUND)
    assert sim.stats().error_codes(OPTION_DATA) == (412,)


def test_options_serve_quotes_and_trades_only(sim: Simulator):
    with client(sim.option_data_url()) as ws:
        authenticate(ws)
        send(ws, {"action": "subscribe", "bars": [CALL]})  # Alpaca's own example of a 410
        assert receive(ws)[0]["code"] == 410
        send(ws, {"action": "subscribe", "quotes": [CALL], "trades": [CALL]})
        assert receive(ws) == [{"T": "subscription", "trades": [CALL], "quotes": [CALL]}]
        assert sim.publish_option_trade(CALL, price="1.5", size=3) == 1
        (trade,) = receive(ws)
        assert (trade["T"], trade["S"], trade["p"], trade["s"]) == ("t", CALL, 1.5, 3)
    assert sim.stats().connections[0].path == "/v1beta1/indicative"


def test_news_goes_once_to_a_connection_wanting_any_of_its_symbols(sim: Simulator):
    with client(sim.news_url) as pair, client(sim.news_url) as everything:
        authenticate(pair)
        authenticate(everything, key_id="PKSECONDACCOUNT00001")  # one socket per account
        for ws, symbols in ((pair, ["AAPL", "TSLA"]), (everything, ["*"])):
            send(ws, {"action": "subscribe", "news": symbols})
            assert receive(ws) == [{"T": "subscription", "news": sorted(symbols)}]
        assert sim.publish_news("Both", symbols=["AAPL", "TSLA"], article_id=5) == 2
        assert sim.publish_news("Neither", symbols=["MSFT"]) == 1
        (article,) = receive(pair)
        assert (article["T"], article["id"], article["symbols"]) == ("n", 5, ["AAPL", "TSLA"])
        assert isinstance(article["created_at"], msgpack.Timestamp)
        assert [receive(everything)[0]["headline"] for _ in range(2)] == ["Both", "Neither"]
        with pytest.raises(TimeoutError):
            pair.recv(timeout=0.1)
    assert sim.stats().kind(NEWS).data_messages == 3


def test_unknown_paths_are_refused_and_new_kinds_can_be_dropped(sim: Simulator):
    base = sim.market_data_url.rsplit("/v2/", 1)[0]
    for path in ("/v1beta3/crypto", "/v1beta1/sip", "/v1beta2/news"):
        with pytest.raises(InvalidStatus):
            connect(base + path, open_timeout=BOUND).close()
    with client(sim.news_url) as ws:
        authenticate(ws)
        assert sim.drop_connections(NEWS) == 1
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=BOUND)


@pytest.mark.parametrize(("call", "match"), [
    (lambda s: s.publish_crypto_quote("BTC/USD", bid_price=1, ask_price=2, bid_size=0),
     "bid_size"),
    (lambda s: s.publish_crypto_trade("BTC/USD", price="nan"), "price"),
    (lambda s: s.publish_option_quote(CALL, bid_price=1, ask_price=2, ask_size=-1), "ask_size"),
    (lambda s: s.publish_option_trade("", price=1), "symbol"),
    (lambda s: s.publish_news(""), "headline"),
    (lambda s: s.publish_news("x", symbols="AAPL"), "single string"),
    (lambda s: s.publish_crypto_bar("BTC/USD", open_price=2, high_price=1, low_price=1,
                                    close_price=1, volume=1), "high"),
    (lambda s: s.option_data_url("sip"), "feed"),
    (lambda s: s.publish_quotes("AAPL", 1, kind="news"), "kind"),
])
def test_bad_publish_arguments_are_refused(sim: Simulator, call, match):
    with pytest.raises(InvalidInputError, match=match):
        call(sim)
    assert sim.stats().kind(CRYPTO_DATA).data_messages == 0


def test_a_quote_burst_reaches_only_connections_of_its_kind(sim: Simulator):
    with client(sim.crypto_data_url) as crypto, client(sim.market_data_url) as stock:
        for ws in (crypto, stock):
            authenticate(ws)
            send(ws, {"action": "subscribe", "quotes": ["BTC/USD"]})
            receive(ws)
        assert sim.publish_quotes("BTC/USD", 4, batch_size=2, kind=CRYPTO_DATA) == 4
        assert [len(receive(crypto)) for _ in range(2)] == [2, 2]
        with pytest.raises(TimeoutError):
            stock.recv(timeout=0.1)
