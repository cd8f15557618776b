"""The market-data protocol on the wire, byte for byte, with a plain websockets client."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import msgpack
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from streamwarden.errors import InvalidInputError
from streamwarden.simulator import MARKET_DATA, Faults, Simulator
from tests.simulator.conftest import BOUND, KEY_ID, SECRET

MSGPACK = {"Content-Type": "application/msgpack"}


@contextmanager
def client(url: str, *, msgpack_codec: bool = True) -> Iterator[ClientConnection]:
    headers = MSGPACK if msgpack_codec else None
    with connect(url, additional_headers=headers, open_timeout=BOUND,
                 close_timeout=BOUND) as connection:
        yield connection


def send(connection: ClientConnection, request: dict[str, Any]) -> None:
    connection.send(msgpack.packb(request))


def receive(connection: ClientConnection) -> list[dict[str, Any]]:
    frame = connection.recv(timeout=BOUND)
    decoded: list[dict[str, Any]] = (
        msgpack.unpackb(frame) if isinstance(frame, bytes) else json.loads(frame))
    return decoded


def authenticate(connection: ClientConnection, key_id: str = KEY_ID) -> None:
    assert receive(connection) == [{"T": "success", "msg": "connected"}]
    send(connection, {"action": "auth", "key": key_id, "secret": SECRET})
    assert receive(connection) == [{"T": "success", "msg": "authenticated"}]


def test_handshake_subscribe_and_unsubscribe_acks(sim: Simulator) -> None:
    with client(sim.market_data_url) as ws:
        authenticate(ws)
        send(ws, {"action": "subscribe", "trades": ["AAPL"], "quotes": ["MSFT", "AMD"],
                  "bars": ["*"], "dailyBars": ["SPY"]})
        (ack,) = receive(ws)
        assert ack == {
            "T": "subscription", "trades": ["AAPL"], "quotes": ["AMD", "MSFT"], "bars": ["*"],
            "updatedBars": [], "dailyBars": ["SPY"], "statuses": [], "lulds": [],
            "corrections": ["AAPL"], "cancelErrors": ["AAPL"],
        }
        send(ws, {"action": "unsubscribe", "quotes": ["MSFT"], "bars": ["*"]})
        (ack,) = receive(ws)
        assert (ack["quotes"], ack["bars"], ack["trades"]) == (["AMD"], [], ["AAPL"])
        (connection,) = sim.stats().open_connections(MARKET_DATA)
        assert connection.subscription == {
            "trades": {"AAPL"}, "quotes": {"AMD"}, "dailyBars": {"SPY"}}


def test_errors_before_and_after_auth(sim: Simulator) -> None:
    with client(sim.feed_url("sip")) as ws:
        assert receive(ws)[0]["msg"] == "connected"
        send(ws, {"action": "subscribe", "trades": ["AAPL"]})
        assert receive(ws) == [{"T": "error", "code": 401, "msg": "not authenticated"}]
        ws.send(b"\xc1 not msgpack")
        assert receive(ws)[0]["code"] == 400
        send(ws, {"action": "auth", "key": "", "secret": SECRET})
        assert receive(ws) == [{"T": "error", "code": 402, "msg": "auth failed"}]
        send(ws, {"action": "auth", "key": KEY_ID, "secret": SECRET})  # may try again
        assert receive(ws)[0]["msg"] == "authenticated"
        send(ws, {"action": "auth", "key": KEY_ID, "secret": SECRET})
        assert receive(ws)[0] == {"T": "error", "code": 403, "msg": "already authenticated"}
        for bad in ({"action": "dance"}, ["auth"], {"action": "subscribe", "gossip": ["AAPL"]},
                    {"action": "subscribe", "trades": "AAPL"},
                    {"action": "subscribe", "trades": [""]}):
            ws.send(msgpack.packb(bad))
            assert receive(ws)[0]["code"] == 400, bad
    stats = sim.stats()
    assert stats.error_codes() == (401, 400, 402, 403, 400, 400, 400, 400, 400)
    assert [a.outcome for a in stats.auth_attempts] == ["auth_failed", "authorized"]
    assert stats.connections[0].path == "/v2/sip"


@pytest.mark.parametrize("channel", ["news", "orderbooks"])
def test_a_channel_of_another_stream_is_an_invalid_subscribe_action_410(
        sim: Simulator, channel: str) -> None:
    with client(sim.market_data_url) as ws:
        authenticate(ws)
        send(ws, {"action": "subscribe", "trades": ["AAPL"], channel: ["AAPL"]})
        assert receive(ws) == [{"T": "error", "code": 410,
                                "msg": "invalid subscribe action for this feed"}]
        send(ws, {"action": "subscribe", "quotes": ["MSFT"]})  # the socket stays usable
        (ack,) = receive(ws)
        assert (ack["quotes"], ack["trades"]) == (["MSFT"], [])  # the refused one changed nothing


def test_insufficient_scope_answers_a_valid_auth_with_411(sim: Simulator) -> None:
    sim.set_faults(Faults(insufficient_scope=True))
    with client(sim.market_data_url) as ws:
        assert receive(ws)[0]["msg"] == "connected"
        send(ws, {"action": "auth", "key": KEY_ID, "secret": SECRET})
        assert receive(ws) == [{"T": "error", "code": 411, "msg": "insufficient scope"}]
        send(ws, {"action": "subscribe", "quotes": ["MSFT"]})
        assert receive(ws)[0]["code"] == 401  # not authenticated: the socket stays open
    assert [a.outcome for a in sim.stats().auth_attempts] == ["insufficient_scope"]
    assert Faults.parse(["insufficient_scope"]) == Faults(insufficient_scope=True)
    assert Faults(insufficient_scope=True).describe() == "insufficient_scope"


def test_json_codec_without_the_msgpack_header(sim: Simulator) -> None:
    with client(sim.market_data_url, msgpack_codec=False) as ws:
        assert receive(ws) == [{"T": "success", "msg": "connected"}]
        ws.send(json.dumps({"action": "auth", "key": KEY_ID, "secret": SECRET}))
        assert receive(ws)[0]["msg"] == "authenticated"
        ws.send(json.dumps({"action": "subscribe", "trades": ["AAPL"]}).encode())  # binary JSON
        assert receive(ws)[0]["trades"] == ["AAPL"]
        ws.send("{not json")
        assert receive(ws)[0]["code"] == 400
        sim.publish_trade("AAPL", price="187.25", size=2, trade_id=9,
                          timestamp=msgpack.Timestamp(1714573800, 123456789).to_datetime())
        frame = ws.recv(timeout=BOUND)
    assert isinstance(frame, str)
    (trade,) = json.loads(frame)
    assert trade == {"T": "t", "S": "AAPL", "i": 9, "x": "V", "p": 187.25, "s": 2, "c": ["@"],
                     "z": "C", "t": "2024-05-01T14:30:00.123456000Z"}


def test_configured_credentials_only() -> None:
    with Simulator(credentials={KEY_ID: SECRET}) as sim, client(sim.market_data_url) as ws:
        assert receive(ws)[0]["msg"] == "connected"
        send(ws, {"action": "auth", "key": KEY_ID, "secret": "wrong"})
        assert receive(ws)[0]["code"] == 402
        send(ws, {"action": "auth", "key": "OTHER", "secret": SECRET})
        assert receive(ws)[0]["code"] == 402
        send(ws, {"action": "auth", "key": KEY_ID, "secret": SECRET})
        assert receive(ws)[0]["msg"] == "authenticated"
        assert SECRET not in repr(sim) and SECRET not in repr(sim.stats())


def test_auth_timeout_closes_with_404() -> None:
    with Simulator(auth_timeout=0.2) as sim, client(sim.market_data_url) as ws:
        assert receive(ws)[0]["msg"] == "connected"
        assert receive(ws) == [{"T": "error", "code": 404, "msg": "auth timeout"}]
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=BOUND)


def test_connection_limit_then_close(sim: Simulator) -> None:
    sim.set_faults(Faults(connection_limit=True))
    with client(sim.market_data_url) as ws:
        assert receive(ws)[0]["msg"] == "connected"
        send(ws, {"action": "auth", "key": KEY_ID, "secret": SECRET})
        assert receive(ws) == [{"T": "error", "code": 406, "msg": "connection limit exceeded"}]
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=BOUND)


def test_unknown_path_is_refused_during_the_handshake(sim: Simulator) -> None:
    with pytest.raises(InvalidStatus) as refused:
        connect(f"ws://127.0.0.1:{sim.port}/v1beta3/forex/us", open_timeout=BOUND)
    assert refused.value.response.status_code == 404
    assert sim.stats().kind(MARKET_DATA).opened == 0


def test_drop_after_drops_every_connection_without_once(sim: Simulator) -> None:
    sim.set_faults(Faults(drop_after=2))
    for _ in range(2):
        with client(sim.market_data_url) as ws:
            authenticate(ws)
            send(ws, {"action": "subscribe", "quotes": ["AAPL"]})
            receive(ws)
            assert sim.publish_quotes("AAPL", 5, batch_size=5) == 2
            assert len(receive(ws)) == 2
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=BOUND)
            assert closed.value.rcvd is None  # aborted: no close frame
    stats = sim.wait_for(lambda s: s.kind(MARKET_DATA).open == 0, BOUND)
    assert stats.kind(MARKET_DATA).drops == 2
    assert [c.data_messages for c in stats.connections] == [2, 2]


def test_hang_on_close_never_answers_and_stop_aborts(sim: Simulator) -> None:
    sim.set_faults(Faults(hang_on_close=True))
    with connect(sim.market_data_url, additional_headers=MSGPACK, close_timeout=0.3) as ws:
        authenticate(ws)
        begin = time.monotonic()
    # Leaving the block closed it: the server never answered, the client gave up after 0.3 s.
    assert time.monotonic() - begin >= 0.3
    stats = sim.wait_for(lambda s: s.connections[0].hung, BOUND)
    assert stats.kind(MARKET_DATA).open == 1  # still open on the server side


def test_slow_start_delays_the_greeting() -> None:
    with Simulator(faults=Faults(slow_start=0.3)) as sim:
        begin = time.monotonic()
        with client(sim.market_data_url) as ws:
            assert receive(ws)[0]["msg"] == "connected"
            assert time.monotonic() - begin >= 0.3


def test_slow_start_ends_early_when_the_client_leaves() -> None:
    with Simulator(faults=Faults(slow_start=30)) as sim:
        with client(sim.market_data_url):
            sim.wait_for(lambda s: s.kind(MARKET_DATA).open == 1, BOUND)
        stats = sim.wait_for(lambda s: s.kind(MARKET_DATA).open == 0, BOUND)
    assert stats.connections[0].control_messages == 0


def test_mute_keeps_the_socket_open_and_answering_but_sends_no_data(sim: Simulator) -> None:
    with client(sim.market_data_url) as ws:
        authenticate(ws)
        send(ws, {"action": "subscribe", "quotes": ["AAPL"]})
        receive(ws)
        assert sim.mute() is True and sim.faults.active == ("mute",)
        assert sim.publish_quote("AAPL", bid_price=1, ask_price=2) == 0
        assert sim.publish_quotes("AAPL", 3, batch_size=3) == 0
        ws.ping().wait(BOUND)  # answered
        send(ws, {"action": "subscribe", "trades": ["AAPL"]})
        (ack,) = receive(ws)  # control replies still flow
        assert ack["trades"] == ["AAPL"]
        with pytest.raises(TimeoutError):  # the muted quotes were dropped, not held back
            ws.recv(timeout=0.3)
        assert sim.unmute() is False
        assert sim.publish_quote("AAPL", bid_price=3, ask_price=4) == 1
        (message,) = receive(ws)
        assert (message["T"], message["bp"]) == ("q", 3)
    (connection,) = sim.stats().connections
    assert connection.data_messages == 1


def test_mute_from_the_command_line_and_the_fault_flag() -> None:
    assert Faults.parse(["mute"]) == Faults(mute=True)
    with Simulator(faults=Faults(mute=True)) as sim, client(sim.market_data_url) as ws:
        authenticate(ws)
        send(ws, {"action": "subscribe", "quotes": ["AAPL"]})
        receive(ws)
        assert sim.publish_quote("AAPL", bid_price=1, ask_price=2) == 0
        assert sim.unmute() is False
        assert sim.publish_quote("AAPL", bid_price=1, ask_price=2) == 1


def test_publish_raw_sends_unchecked_messages_in_one_frame_to_their_subscribers(
        sim: Simulator) -> None:
    moment = datetime(2026, 11, 23, 15, tzinfo=UTC)
    batch = [
        {"T": "q", "S": "AAPL", "bp": 1.5, "bs": 1, "ap": 1.6, "as": 1, "t": moment},
        {"T": "q", "S": "AAPL", "bp": "abc", "t": "not a time"},
        {"T": "t", "S": "MSFT", "p": float("nan"), "s": -3, "t": moment},
        {"T": "q", "bp": 1.0},  # no symbol: selects no connection, sent along all the same
    ]
    with client(sim.market_data_url) as ws, client(sim.market_data_url) as other:
        authenticate(ws)
        authenticate(other, key_id="PKSECONDACCOUNT00001")  # one socket per account
        for connection, subscription in ((ws, {"trades": ["MSFT"]}),
                                         (other, {"bars": ["AAPL"]})):
            send(connection, {"action": "subscribe", **subscription})
            receive(connection)
        assert sim.publish_raw(batch) == 1  # only ws subscribes one of them
        frame = receive(ws)  # the whole batch, in one frame, as given
        assert [m.get("bp") for m in frame[:2]] == [1.5, "abc"]
        assert frame[0]["t"] == msgpack.Timestamp.from_datetime(moment)
        assert frame[1]["t"] == "not a time" and frame[2]["s"] == -3
        assert frame[2]["p"] != frame[2]["p"] and frame[3] == {"T": "q", "bp": 1.0}  # NaN
        with pytest.raises(TimeoutError):
            other.recv(timeout=0.2)


@pytest.mark.parametrize(("batch", "error"), [
    ([], "non-empty sequence"),
    ("q", "non-empty sequence"),
    ([["T", "q"]], "map with string keys"),
    ([{1: "q"}], "map with string keys"),
    ([{"T": "q", "t": datetime(2026, 11, 23)}], "cannot be sent as msgpack"),  # naive
    ([{"T": "q", "x": object()}], "cannot be sent as msgpack"),
    ([{"T": "q", "x": b"\xff"}], "cannot be sent as json"),
])
def test_publish_raw_refuses_what_the_wire_cannot_carry(
        sim: Simulator, batch: Any, error: str) -> None:
    with pytest.raises(InvalidInputError, match=error):
        sim.publish_raw(batch)


def test_a_client_that_reads_nothing_is_cut_off_as_a_slow_client_407() -> None:
    with Simulator(port=0, slow_client_timeout=0.2) as sim, client(sim.market_data_url) as ws:
        authenticate(ws)
        send(ws, {"action": "subscribe", "quotes": ["AAPL"]})
        receive(ws)
        # Far more than the socket buffers hold; the client reads none of it.
        sent = sim.publish_quotes("AAPL", 400_000, batch_size=2000, timeout=30.0)
        assert 0 < sent < 400_000  # the burst ended when the client was cut off
        stats = sim.wait_for(lambda s: s.kinds[MARKET_DATA].open == 0, timeout=BOUND)
        assert stats.error_codes() == (407,)
        assert stats.errors[-1].message == "slow client"
        with pytest.raises(ConnectionClosed):  # what was buffered, then the cut
            while True:
                ws.recv(timeout=BOUND)
