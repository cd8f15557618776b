"""Crypto, option and news messages published from another process: the control requests
and ``streamwarden simulator publish crypto-quote|crypto-trade|option-quote|option-trade|news``,
received by plain clients of each endpoint."""

from __future__ import annotations

import pytest

from streamwarden.simulator import Simulator
from tests.cli_run import run
from tests.simulator.test_control import control
from tests.simulator.test_protocol_kinds import CALL
from tests.simulator.test_protocol_market_data import authenticate, client, receive, send


def test_each_kinds_messages_published_over_http(sim: Simulator):
    base = f"{sim.control_url}/control"
    with client(sim.crypto_data_url) as crypto, client(sim.option_data_url()) as option, \
            client(sim.news_url) as news:
        for ws, request in ((crypto, {"quotes": ["BTC/USD"], "trades": ["BTC/USD"]}),
                            (option, {"quotes": [CALL], "trades": [CALL]}),
                            (news, {"news": ["*"]})):
            authenticate(ws)
            send(ws, {"action": "subscribe", **request})
            receive(ws)
        assert control(f"{base}/crypto_quote?symbol=BTC/USD&bid_price=1.5&ask_price=1.6"
                       "&bid_size=0.25") == (200, {"sent_to": 1})
        assert control(f"{base}/crypto_trade?symbol=BTC/USD&price=1.55&size=0.5&trade_id=9"
                       ) == (200, {"sent_to": 1})
        assert control(f"{base}/option_quote?symbol={CALL}&bid_price=4.1&ask_price=4.2"
                       "&ask_size=7") == (200, {"sent_to": 1})
        assert control(f"{base}/option_trade?symbol={CALL}&price=4.15&size=2") == (
            200, {"sent_to": 1})
        assert control(f"{base}/news?headline=Hello&symbols=AAPL,TSLA&article_id=3") == (
            200, {"sent_to": 1})
        assert [m["bs"] for m in receive(crypto)] == [0.25]
        assert [(m["s"], m["i"]) for m in receive(crypto)] == [(0.5, 9)]
        assert [m["as"] for m in receive(option)] == [7]
        assert [m["s"] for m in receive(option)] == [2]
        (article,) = receive(news)
        assert (article["headline"], article["symbols"], article["id"]) == (
            "Hello", ["AAPL", "TSLA"], 3)
    assert control(f"{base}/option_quote?symbol={CALL}&bid_price=1&ask_price=2&bid_size=0.5"
                   )[0] == 400  # option sizes are whole numbers
    assert control(f"{base}/news?summary=x")[0] == 400  # no headline


def test_the_publish_commands_send_each_kinds_messages(sim: Simulator, capsys):
    url = sim.control_url
    with client(sim.crypto_data_url) as crypto, client(sim.news_url) as news:
        for ws, request in ((crypto, {"quotes": ["BTC/USD"], "trades": ["BTC/USD"]}),
                            (news, {"news": ["AAPL"]})):
            authenticate(ws)
            send(ws, {"action": "subscribe", **request})
            receive(ws)
        commands = [
            (["crypto-quote", "--symbol", "BTC/USD", "--bid", "1", "--ask", "2",
              "--ask-size", "0.75"], "crypto_quote BTC/USD sent to 1 connection"),
            (["crypto-trade", "--symbol", "BTC/USD", "--price", "1.5", "--size", "0.1"],
             "crypto_trade BTC/USD sent to 1 connection"),
            (["option-quote", "--symbol", CALL, "--bid", "1", "--ask", "2"],
             f"option_quote {CALL} sent to 0 connections"),
            (["option-trade", "--symbol", CALL, "--price", "1"],
             f"option_trade {CALL} sent to 0 connections"),
            (["news", "--headline", "Apple up", "--symbols", "AAPL", "--article-url",
              "https://example.com/a", "--source", "wire"],
             "news 'Apple up' sent to 1 connection"),
        ]
        for argv, printed in commands:
            status, out, _ = run(capsys, "simulator", "publish", *argv, "--url", url)
            assert (status, out) == (0, printed + "\n")
        assert receive(crypto)[0]["as"] == 0.75
        assert receive(crypto)[0]["s"] == 0.1
        (article,) = receive(news)
        assert (article["url"], article["source"]) == ("https://example.com/a", "wire")


@pytest.mark.parametrize("argv", [
    ["option-quote", "--symbol", CALL, "--bid", "1", "--ask", "2", "--bid-size", "0.5"],
    ["crypto-trade", "--symbol", "BTC/USD", "--price", "-1"],
    ["news", "--symbols", "AAPL"],
])
def test_bad_publish_arguments_exit_2(sim: Simulator, capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        run(capsys, "simulator", "publish", *argv, "--url", sim.control_url)
    assert exit_info.value.code == 2
