"""The trading-stream protocol on the wire with a plain websockets client."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from streamwarden.errors import InvalidInputError
from streamwarden.simulator import TRADE_UPDATES, Faults, Simulator, orders
from tests.simulator.conftest import BOUND, KEY_ID, SECRET

AUTHENTICATE = {"action": "authenticate", "data": {"key_id": KEY_ID, "secret_key": SECRET}}
LISTEN = {"action": "listen", "data": {"streams": ["trade_updates"]}}


@contextmanager
def client(sim: Simulator) -> Iterator[ClientConnection]:
    with connect(sim.trade_updates_url, open_timeout=BOUND, close_timeout=BOUND) as ws:
        yield ws


def exchange(ws: ClientConnection, request: dict[str, Any] | str) -> dict[str, Any]:
    ws.send(request if isinstance(request, str) else json.dumps(request))
    reply: dict[str, Any] = json.loads(ws.recv(timeout=BOUND))
    return reply


def test_authenticate_listen_and_receive(sim: Simulator) -> None:
    with client(sim) as ws:
        assert exchange(ws, LISTEN) == {
            "stream": "authorization", "data": {"status": "unauthorized", "action": "listen"}}
        assert exchange(ws, AUTHENTICATE) == {
            "stream": "authorization",
            "data": {"status": "authorized", "action": "authenticate"}}
        assert exchange(ws, {"action": "listen", "data": {"streams": ["trade_updates", "x"]}}) \
            == {"stream": "listening", "data": {"streams": ["trade_updates"]}}
        assert sim.publish_trade_update("canceled", symbol="AAPL") == 1
        frame = ws.recv(timeout=BOUND)
        assert isinstance(frame, str)
        assert json.loads(frame)["data"]["order"]["status"] == "canceled"
        assert exchange(ws, {"action": "listen", "data": {"streams": []}}) == {
            "stream": "listening", "data": {"streams": []}}
        assert sim.publish_trade_update("new") == 0


def test_newer_auth_form_and_binary_frames_both_ways() -> None:
    with Simulator(trading_frames="binary") as sim, client(sim) as ws:
        ws.send(json.dumps({"action": "auth", "key": KEY_ID, "secret": SECRET}).encode())
        reply = ws.recv(timeout=BOUND)
        assert isinstance(reply, bytes)
        assert json.loads(reply)["data"]["status"] == "authorized"
        assert sim.stats().auth_attempts[0].key_id == KEY_ID


@pytest.mark.parametrize("bad", [
    "not json", "[1, 2]", json.dumps({"action": "dance"}),
    json.dumps({"action": "listen", "data": {"streams": "trade_updates"}}),
])
def test_invalid_requests_get_an_error_then_close(sim: Simulator, bad: str) -> None:
    with client(sim) as ws:
        exchange(ws, AUTHENTICATE)
        assert exchange(ws, bad) == {"action": "error",
                                     "data": {"error_message": "invalid syntax"}}
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=BOUND)
    assert sim.stats().error_codes(TRADE_UPDATES) == (0,)


def test_unauthorized_with_bad_credentials(sim: Simulator) -> None:
    with client(sim) as ws:
        reply = exchange(ws, {"action": "authenticate", "data": {"key_id": KEY_ID}})
        assert reply["data"] == {"status": "unauthorized", "action": "authenticate"}
    assert sim.stats().auth_attempts[0].outcome == "auth_failed"


def test_slow_start_delays_the_authorization() -> None:
    with Simulator(faults=Faults(slow_start=0.3)) as sim, client(sim) as ws:
        begin = time.monotonic()
        assert exchange(ws, AUTHENTICATE)["data"]["status"] == "authorized"
        assert time.monotonic() - begin >= 0.3


def test_slow_start_ends_early_when_the_client_leaves() -> None:
    with Simulator(faults=Faults(slow_start=30)) as sim:
        with client(sim) as ws:
            ws.send(json.dumps(AUTHENTICATE))
        stats = sim.wait_for(lambda s: s.kind(TRADE_UPDATES).open == 0, BOUND)
    assert stats.kind(TRADE_UPDATES).auth_attempts == 0


def test_drop_after_counts_trade_updates(sim: Simulator) -> None:
    sim.set_faults(Faults(drop_after=1))
    with client(sim) as ws:
        exchange(ws, AUTHENTICATE)
        exchange(ws, LISTEN)
        assert sim.publish_trade_update("new") == 1
        ws.recv(timeout=BOUND)
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=BOUND)
    assert sim.publish_trade_update("new") == 0
    assert sim.stats().kind(TRADE_UPDATES).drops == 1


def test_a_trade_update_carries_the_given_client_order_id() -> None:
    fill = orders.OrderFill("AAPL", "buy", Decimal(1), Decimal("10"), client_order_id="mom-1")
    message = orders.trade_update("fill", fill, now=datetime(2026, 1, 2, tzinfo=UTC))
    assert message["data"]["order"]["client_order_id"] == "mom-1"
    derived = orders.trade_update("fill", orders.OrderFill("AAPL", "buy", Decimal(1),
                                                           Decimal("10")),
                                  now=datetime(2026, 1, 2, tzinfo=UTC))
    assert derived["data"]["order"]["client_order_id"]
    with Simulator() as sim, pytest.raises(InvalidInputError, match="client_order_id"):
        sim.publish_trade_update("fill", price="1", client_order_id="x" * 129)
