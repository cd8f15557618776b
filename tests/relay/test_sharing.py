"""Two alpaca-py clients in their own processes through one relay process share one upstream
socket; each gets only its own symbols; unsubscribe and ``*`` work; leases are audited under
the clients' names; refused credentials get 402 and an audit record without the secret."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from streamwarden.simulator import Simulator
from tests.relay.conftest import (
    BOUND,
    CLIENT,
    CLIENT_TOKEN,
    UPSTREAM_KEY,
    UPSTREAM_SECRET,
    Client,
    Relay,
    audit_rows,
)

pytestmark = pytest.mark.timeout(90)


def wire_has(sim: Simulator, *symbols: str) -> None:
    sim.wait_for(lambda s: set(symbols) <= set(s.wire_subscription("quotes")), BOUND)


def test_two_clients_share_one_upstream_and_get_only_their_symbols(
        sim: Simulator, relay: Relay, clients: Callable[..., Client]) -> None:
    first = clients("stocks", "/v2/iex", "AAPL", "IBM")
    second = clients("stocks", "/v2/iex", "MSFT", key=CLIENT, secret=CLIENT_TOKEN)
    wire_has(sim, "AAPL", "IBM", "MSFT")
    sim.publish_quote("AAPL", bid_price=101, ask_price=102)
    sim.publish_quote("MSFT", bid_price=201, ask_price=202)
    sim.publish_quote("IBM", bid_price=301, ask_price=302)
    first.wait_quote("IBM", 301.0)
    second.wait_quote("MSFT", 201.0)
    sim.publish_quote("MSFT", bid_price=203, ask_price=204)  # after it, the second saw all
    second.wait_quote("MSFT", 203.0)
    assert first.quotes("AAPL") == [101.0] and first.quotes("MSFT") == []
    assert second.quotes() == [201.0, 203.0]
    stats = sim.stats().kind("market_data")
    assert (stats.opened, stats.open) == (1, 1)  # one upstream socket for both clients

    second.send("subscribe *")  # every symbol: the second now gets AAPL too
    second.wait_log("quotes: ['*', 'MSFT']")  # the relay's acknowledgement, as alpaca-py logs it
    first.send("unsubscribe AAPL")
    sim.wait_for(lambda s: "*" in s.wire_subscription("quotes"), BOUND)
    first.wait_log("quotes: ['IBM']")
    sim.publish_quote("AAPL", bid_price=111, ask_price=112)
    sim.publish_quote("IBM", bid_price=311, ask_price=312)
    second.wait_quote("IBM", 311.0)
    first.wait_quote("IBM", 311.0)
    assert second.quotes("AAPL") == [111.0]
    assert first.quotes("AAPL") == [101.0]  # unsubscribed: no second AAPL quote
    assert sim.stats().kind("market_data").opened == 1

    owners = {row["owner"] for row in audit_rows(relay) if row["event"] == "acquire"}
    assert CLIENT in owners and any(owner.startswith("127.0.0.1:") for owner in owners)


def auth_reply(relay: Relay, key: str, secret: str) -> list[dict[str, Any]]:
    with connect(relay.url + "/v2/iex", open_timeout=BOUND) as ws:
        assert json.loads(ws.recv(BOUND)) == [{"T": "success", "msg": "connected"}]
        ws.send(json.dumps({"action": "auth", "key": key, "secret": secret}))
        reply = json.loads(ws.recv(BOUND))
        with pytest.raises(ConnectionClosed):  # closed after the refusal
            ws.recv(BOUND)
    assert isinstance(reply, list)
    return reply


def test_wrong_secret_and_unknown_token_are_refused_with_402_and_audited(
        relay: Relay) -> None:
    wrong = auth_reply(relay, UPSTREAM_KEY, "not-the-secret-CANARY")
    unknown = auth_reply(relay, "nobody", "tok-UNKNOWN-CANARY")
    stolen = auth_reply(relay, CLIENT, UPSTREAM_SECRET)  # a real secret under another name
    for reply in (wrong, unknown, stolen):
        assert reply == [{"T": "error", "code": 402, "msg": "auth failed"}]
    refused = [row for row in audit_rows(relay) if row["event"] == "relay_auth_refused"]
    assert len(refused) == 3
    assert all(row["outcome"] == "rejected" and row["owner"].startswith("127.0.0.1:")
               for row in refused)
    trail = json.dumps(audit_rows(relay), default=str) + relay.stderr
    for secret in ("not-the-secret-CANARY", "tok-UNKNOWN-CANARY", UPSTREAM_SECRET, CLIENT_TOKEN):
        assert secret not in trail


def test_protocol_errors_as_alpaca_answers_them(relay: Relay) -> None:
    with connect(relay.url + "/v2/iex", open_timeout=BOUND) as ws:
        ws.recv(BOUND)
        ws.send(json.dumps({"action": "subscribe", "quotes": ["AAPL"]}))
        assert json.loads(ws.recv(BOUND))[0]["code"] == 401
        ws.send("not json")
        assert json.loads(ws.recv(BOUND))[0]["code"] == 400
        ws.send(json.dumps({"action": "auth", "key": UPSTREAM_KEY, "secret": UPSTREAM_SECRET}))
        assert json.loads(ws.recv(BOUND)) == [{"T": "success", "msg": "authenticated"}]
        ws.send(json.dumps({"action": "auth", "key": UPSTREAM_KEY, "secret": UPSTREAM_SECRET}))
        assert json.loads(ws.recv(BOUND))[0]["code"] == 403
        ws.send(json.dumps({"action": "subscribe", "news": ["AAPL"]}))
        assert json.loads(ws.recv(BOUND))[0]["code"] == 410
        ws.send(json.dumps({"action": "subscribe", "quotes": "AAPL"}))
        assert json.loads(ws.recv(BOUND))[0]["code"] == 400
    with connect(relay.url + "/v2/iex", open_timeout=BOUND) as ws:  # --auth-timeout 2
        ws.recv(BOUND)
        assert json.loads(ws.recv(BOUND)) == [{"T": "error", "code": 404,
                                               "msg": "auth timeout"}]
    with connect(relay.url + "/v1beta1/indicative", open_timeout=BOUND) as ws:  # JSON: refused
        assert json.loads(ws.recv(BOUND))[0]["code"] == 412
    with pytest.raises(Exception, match="404"):
        connect(relay.url + "/v2/sip", open_timeout=BOUND)  # not the relay's feed
