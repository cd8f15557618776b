"""The simulator is as strict as Alpaca about connections, on the wire with a plain client: one
market-data socket per account and endpoint (406), a reaper window after an abrupt drop (406
meanwhile), a clean close frees the slot at once, and HTTP 429 on rapid upgrades."""

from __future__ import annotations

import json
import socket
import time

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection

from streamwarden.errors import InvalidInputError
from streamwarden.simulator import MARKET_DATA, Simulator
from tests.simulator.conftest import BOUND, KEY_ID, SECRET
from tests.simulator.test_protocol_market_data import client, receive, send

REFUSED = [{"T": "error", "code": 406, "msg": "connection limit exceeded"}]
AUTHENTICATED = [{"T": "success", "msg": "authenticated"}]


def auth(ws: ClientConnection, key_id: str = KEY_ID) -> list[dict[str, object]]:
    assert receive(ws)[0]["msg"] == "connected"
    send(ws, {"action": "auth", "key": key_id, "secret": SECRET})
    return receive(ws)


def assert_closed(ws: ClientConnection) -> None:
    with pytest.raises(ConnectionClosed):
        ws.recv(timeout=BOUND)


def test_a_second_socket_of_one_account_on_one_endpoint_gets_406_and_is_closed(
        sim: Simulator) -> None:
    with client(sim.market_data_url) as first:
        assert auth(first) == AUTHENTICATED
        with client(sim.market_data_url) as second:
            assert auth(second) == REFUSED
            assert_closed(second)
        # Another account, or another endpoint of the same account, is a slot of its own.
        with client(sim.market_data_url) as other_account:
            assert auth(other_account, key_id="PKSOMEONEELSE0000001") == AUTHENTICATED
        with client(sim.feed_url("sip")) as other_endpoint:
            assert auth(other_endpoint) == AUTHENTICATED
        send(first, {"action": "subscribe", "quotes": ["AAPL"]})
        assert receive(first)[0]["T"] == "subscription"  # the first is untouched
    outcomes = [a.outcome for a in sim.stats().auth_attempts]
    assert outcomes == ["authorized", "connection_limit", "authorized", "authorized"]


def test_a_dropped_socket_holds_the_slot_for_the_reaper_window() -> None:
    with Simulator(reaper_window=0.6) as sim:
        with client(sim.market_data_url) as ws:
            assert auth(ws) == AUTHENTICATED
            dropped_at = time.monotonic()
            assert sim.drop_connections() == 1
            assert_closed(ws)
        with client(sim.market_data_url) as early:
            assert auth(early) == REFUSED
            assert_closed(early)
        assert time.monotonic() - dropped_at < 0.6, "too slow to observe the window"
        time.sleep(max(0.0, dropped_at + 0.7 - time.monotonic()))
        with client(sim.market_data_url) as late:
            assert auth(late) == AUTHENTICATED


def test_a_client_that_vanishes_holds_the_slot_too() -> None:
    with Simulator(reaper_window=30.0) as sim:
        with client(sim.market_data_url) as ws:
            assert auth(ws) == AUTHENTICATED
            ws.socket.shutdown(socket.SHUT_RDWR)  # gone without a close frame
        sim.wait_for(lambda s: s.kind(MARKET_DATA).open == 0, BOUND)
        with client(sim.market_data_url) as again:
            assert auth(again) == REFUSED


def test_a_clean_close_frees_the_slot_at_once() -> None:
    with Simulator() as sim:  # the default 90 s reaper window
        for _ in range(2):
            with client(sim.market_data_url) as ws:
                assert auth(ws) == AUTHENTICATED
            sim.wait_for(lambda s: s.kind(MARKET_DATA).open == 0, BOUND)


def test_the_trading_stream_has_no_connection_limit(sim: Simulator) -> None:
    # Alpaca documents no 406 for trade updates; the simulator refuses nothing there.
    with (client(sim.trade_updates_url, msgpack_codec=False) as first,
          client(sim.trade_updates_url, msgpack_codec=False) as second):
        for ws in (first, second):
            ws.send('{"action":"auth","key":"PKSAMEKEY00000000001","secret":"s"}')
            assert receive_json(ws)["data"]["status"] == "authorized"


def receive_json(ws: ClientConnection) -> dict[str, dict[str, str]]:
    frame = ws.recv(timeout=BOUND)
    decoded: dict[str, dict[str, str]] = json.loads(frame)
    return decoded


def test_rapid_upgrades_get_429_with_retry_after() -> None:
    with Simulator(reaper_window=0, connect_rate_limit=2) as sim:
        with client(sim.market_data_url), client(sim.feed_url("sip")), \
                client(sim.feed_url("sip")):
            # The cap is per endpoint: /v2/iex has had one upgrade, /v2/sip two.
            with pytest.raises(InvalidStatus) as refused, client(sim.feed_url("sip")):
                pass
            assert refused.value.response.status_code == 429
            assert refused.value.response.headers["Retry-After"] == "1"
            with client(sim.market_data_url) as allowed:
                assert auth(allowed, key_id="PKANOTHERACCOUNT0001") == AUTHENTICATED
        time.sleep(1.05)
        with client(sim.feed_url("sip")):
            pass  # a second later the window has moved on
        assert sim.stats().kind(MARKET_DATA).opened == 5  # the refused upgrade opened nothing


@pytest.mark.parametrize("kwargs", [{"reaper_window": -1}, {"reaper_window": float("nan")},
                                    {"connect_rate_limit": 0}, {"connect_rate_limit": 1.5}])
def test_bad_connection_rules_are_typed_errors(kwargs: dict[str, float]) -> None:
    with pytest.raises(InvalidInputError):
        Simulator(**kwargs)  # type: ignore[arg-type]
