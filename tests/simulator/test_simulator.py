"""The Simulator's lifecycle, bounds, argument checks and secrecy."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import threading
import time
from datetime import UTC, datetime
from typing import Any

import msgpack
import pytest
from websockets.sync.client import connect

from streamwarden.errors import InvalidInputError
from streamwarden.simulator import (
    MARKET_DATA,
    TRADE_UPDATES,
    Faults,
    Simulator,
    SimulatorError,
)
from streamwarden.simulator import runtime as runtime_module
from streamwarden.simulator.accounts import Accounts
from streamwarden.simulator.server import SimulatorServer
from tests.simulator.conftest import BOUND, KEY_ID, SECRET, simulator_threads


def _open_sockets() -> int:
    fd_dir = f"/proc/{os.getpid()}/fd"
    count = 0
    for fd in os.listdir(fd_dir):
        try:
            count += os.readlink(f"{fd_dir}/{fd}").startswith("socket:")
        except OSError:
            continue
    return count


def _refused(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(BOUND)
        return probe.connect_ex(("127.0.0.1", port)) != 0


def test_start_stop_leaves_no_thread_or_socket() -> None:
    baseline = _open_sockets()
    for _ in range(5):
        sim = Simulator().start()
        assert [t.name for t in simulator_threads()] == ["streamwarden-simulator"]
        with connect(sim.market_data_url, open_timeout=BOUND) as ws:
            ws.recv(timeout=BOUND)
            begin = time.monotonic()
            sim.stop()
            assert time.monotonic() - begin < 1.0
        sim.stop()  # idempotent
        assert simulator_threads() == []
        assert _refused(sim.port)
    assert _open_sockets() == baseline


def test_stop_aborts_a_client_that_ignores_the_close_frame() -> None:
    sim = Simulator().start()
    raw = socket.create_connection(("127.0.0.1", sim.port), timeout=BOUND)
    raw.sendall(b"GET /v2/iex HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade"
                b"\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                b"Sec-WebSocket-Version: 13\r\n\r\n")
    sim.wait_for(lambda s: s.kind(MARKET_DATA).open == 1, BOUND)
    begin = time.monotonic()
    sim.stop(timeout=0.4)  # the client never reads: the grace ends and the socket is aborted
    assert time.monotonic() - begin < 1.0
    raw.close()
    assert simulator_threads() == []


def test_stop_timeout_raises_and_a_second_stop_finishes(monkeypatch: pytest.MonkeyPatch) -> None:
    class SlowToStop(SimulatorServer):
        async def _shutdown(self, *args: Any) -> None:
            await asyncio.sleep(0.5)
            await super()._shutdown(*args)

    monkeypatch.setattr(runtime_module, "SimulatorServer", SlowToStop)
    sim = Simulator().start()
    with pytest.raises(SimulatorError, match=r"did not stop within 0\.1 s"):
        sim.stop(timeout=0.1)
    sim.stop()
    assert simulator_threads() == []


def test_lifecycle_errors() -> None:
    sim = Simulator()
    sim.stop()  # never started: nothing to do
    with pytest.raises(SimulatorError, match="not started"):
        _ = sim.port
    with pytest.raises(SimulatorError, match="not running"):
        sim.publish_quote("AAPL", bid_price=1, ask_price=2)
    with pytest.raises(SimulatorError, match="not running"):
        sim.drop_connections()
    with sim, pytest.raises(SimulatorError, match="only once"):
        sim.start()
    with pytest.raises(SimulatorError, match="not running"):
        sim.publish_trade("AAPL", price=1)


def test_busy_port_is_a_start_error() -> None:
    with Simulator() as first:
        second = Simulator(port=first.port)
        with pytest.raises(SimulatorError, match=f"cannot listen on 127.0.0.1:{first.port}"):
            second.start()
    assert simulator_threads() == []


def test_start_timeout_abandons_the_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    class SlowServer(SimulatorServer):
        async def run(self, *args: Any) -> None:
            await asyncio.sleep(0.3)  # slower to listen than start() waits
            await super().run(*args)

    monkeypatch.setattr(runtime_module, "SimulatorServer", SlowServer)
    sim = Simulator()
    with pytest.raises(SimulatorError, match=r"not listening within 0\.05 s"):
        sim.start(timeout=0.05)
    for thread in simulator_threads():  # it listens late, sees it was abandoned, and stops
        thread.join(BOUND)
    assert simulator_threads() == []
    sim.stop()  # nothing left to stop


def test_a_dead_loop_is_reported_not_hung_on() -> None:
    sim = Simulator().start()
    sim._runtime._request_stop()  # the loop ends behind the simulator's back, as if crashed
    for thread in simulator_threads():
        thread.join(BOUND)
    with pytest.raises(SimulatorError, match="stopped"):
        sim.publish_quote("AAPL", bid_price=1, ask_price=2)
    sim.set_quote_rate(1.0)  # nothing to wake; no error
    sim.stop()


def test_a_burst_that_takes_too_long_is_cancelled() -> None:
    with Simulator() as sim, connect(sim.market_data_url, additional_headers={
            "Content-Type": "application/msgpack"}, open_timeout=BOUND, close_timeout=0.1) as ws:
        ws.recv(timeout=BOUND)
        ws.send(msgpack.packb({"action": "auth", "key": KEY_ID, "secret": SECRET}))
        ws.recv(timeout=BOUND)
        ws.send(msgpack.packb({"action": "subscribe", "quotes": ["AAPL"]}))
        ws.recv(timeout=BOUND)
        # The client reads nothing more: the burst stalls on back-pressure and times out.
        with pytest.raises(SimulatorError, match="not done within"):
            sim.publish_quotes("AAPL", 200_000, timeout=0.2)
        begin = time.monotonic()
        sim.stop()
        assert time.monotonic() - begin < 2.0


def test_urls_and_ipv6() -> None:
    with Simulator() as sim:
        assert sim.market_data_url == f"ws://127.0.0.1:{sim.port}/v2/iex"
        assert sim.feed_url("sip") == f"ws://127.0.0.1:{sim.port}/v2/sip"
        assert sim.trade_updates_url == f"ws://127.0.0.1:{sim.port}/stream"
        with pytest.raises(InvalidInputError, match="plain name"):
            sim.feed_url("../etc")
    with Simulator(host="::1") as sim6:
        assert sim6.trade_updates_url == f"ws://[::1]:{sim6.port}/stream"
        with connect(sim6.trade_updates_url, open_timeout=BOUND):
            sim6.wait_for(lambda s: s.kind(TRADE_UPDATES).open == 1, BOUND)


@pytest.mark.parametrize("kwargs", [
    {"port": 70000}, {"trading_frames": "morse"}, {"credentials": {"": "x"}},
    {"credentials": {"k": ""}}, {"quote_rate": -1}, {"quote_rate": float("nan")},
    {"quote_rate": True}, {"auth_timeout": 0}, {"history": 0},
])
def test_invalid_constructor_arguments(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidInputError):
        Simulator(**kwargs)  # type: ignore[arg-type]


def test_invalid_publish_arguments(sim: Simulator) -> None:
    bad_calls = [
        lambda: sim.publish_quote("", bid_price=1, ask_price=2),
        lambda: sim.publish_quote("A B", bid_price=1, ask_price=2),
        lambda: sim.publish_quote("AAPL", bid_price=0, ask_price=2),
        lambda: sim.publish_quote("AAPL", bid_price="abc", ask_price=2),
        lambda: sim.publish_quote("AAPL", bid_price=[1], ask_price=2),
        lambda: sim.publish_quote("AAPL", bid_price=float("inf"), ask_price=2),
        lambda: sim.publish_quote("AAPL", bid_price=1, ask_price=2, bid_size=-1),
        lambda: sim.publish_trade("AAPL", price=1, size=0),
        lambda: sim.publish_bar("AAPL", open_price=1, high_price=1, low_price=2,
                                close_price=1, volume=1),
        lambda: sim.publish_bar("AAPL", open_price=3, high_price=2, low_price=1,
                                close_price=1, volume=1),
        lambda: sim.publish_quotes("AAPL", 0),
        lambda: sim.publish_quotes("AAPL", 1, batch_size=0),
        lambda: sim.publish_trade_update("teleported"),
        lambda: sim.publish_trade_update("fill"),
        lambda: sim.publish_trade_update("new", side="short"),  # type: ignore[arg-type]
        lambda: sim.publish_trade_update("new", order_id="not-a-uuid"),
        lambda: sim.publish_trade_update("new", qty="many"),
        lambda: sim.drop_connections("stocks"),  # type: ignore[arg-type]
        lambda: sim.set_quote_rate(-1),
        lambda: sim.wait_for(lambda s: True, timeout=-1),
        lambda: sim.publish_quote("AAPL", bid_price=1, ask_price=2, timeout=0),
    ]
    for call in bad_calls:
        with pytest.raises(InvalidInputError):
            call()
    with pytest.raises(TypeError):
        sim.update_faults(teleport=True)
    with pytest.raises(ValueError, match="drop_once"):
        sim.update_faults(drop_once=True)


def test_publishing_without_subscribers_reaches_no_one(sim: Simulator) -> None:
    assert sim.publish_quote("AAPL", bid_price=1, ask_price=2) == 0
    assert sim.publish_trade("AAPL", price=1) == 0
    assert sim.publish_bar("AAPL", open_price=1, high_price=1, low_price=1, close_price=1,
                           volume=0, timestamp=datetime(2024, 5, 1, tzinfo=UTC)) == 0
    assert sim.publish_quotes("AAPL", 10) == 0
    assert sim.publish_trade_update("fill", price=1) == 0
    assert sim.drop_connections(TRADE_UPDATES) == 0


def test_faults_can_change_at_run_time(sim: Simulator) -> None:
    assert sim.set_faults(Faults(auth_failure=True)) == Faults()
    assert sim.faults.auth_failure
    assert sim.update_faults(auth_failure=False, drop_after=2) == Faults(drop_after=2)
    assert "drop_after=2" in repr(sim)


def test_wait_for_times_out_with_the_totals(sim: Simulator) -> None:
    begin = time.monotonic()
    with pytest.raises(TimeoutError, match=r"not met within 0\.1 s"):
        sim.wait_for(lambda s: s.kind(MARKET_DATA).opened > 0, timeout=0.1)
    assert time.monotonic() - begin < 1.0


def test_wait_for_wakes_on_changes_from_another_thread(sim: Simulator) -> None:
    def connect_later() -> None:
        with connect(sim.market_data_url, open_timeout=BOUND) as ws:
            ws.recv(timeout=BOUND)

    worker = threading.Thread(target=connect_later, name="test-connect-later")
    worker.start()
    stats = sim.wait_for(lambda s: s.kind(MARKET_DATA).opened == 1, BOUND)
    worker.join(BOUND)
    assert stats.connections[0].kind == MARKET_DATA


def test_history_is_bounded() -> None:
    with Simulator(history=2) as sim:
        for _ in range(4):
            with connect(sim.market_data_url, open_timeout=BOUND) as ws:
                ws.recv(timeout=BOUND)
        stats = sim.wait_for(lambda s: s.kind(MARKET_DATA).open == 0, BOUND)
    assert [c.id for c in stats.connections] == [3, 4]
    assert stats.kind(MARKET_DATA).opened == 4


def test_secret_never_in_repr_stats_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    sim = Simulator(credentials={KEY_ID: SECRET}, faults=Faults(auth_failure=True))
    accounts = Accounts({KEY_ID: SECRET})
    with sim, connect(sim.trade_updates_url, open_timeout=BOUND) as ws:
        ws.send(json.dumps({"action": "authenticate",
                            "data": {"key_id": KEY_ID, "secret_key": SECRET}}))
        ws.recv(timeout=BOUND)
        stats = sim.stats()
    assert stats.auth_attempts[0].key_id == KEY_ID
    for text in (repr(sim), repr(stats), repr(accounts), caplog.text, str(vars(sim))):
        assert SECRET not in text
    assert SECRET not in repr(vars(accounts))
    assert "simulator.auth" in caplog.text and KEY_ID not in caplog.text


def _blocked_burst(sim: Simulator, ws: Any) -> tuple[threading.Thread, list[object]]:
    """Subscribe ``ws`` to AAPL quotes, then start a burst it will never read to the end."""
    ws.recv(timeout=BOUND)
    ws.send(msgpack.packb({"action": "auth", "key": KEY_ID, "secret": SECRET}))
    ws.recv(timeout=BOUND)
    ws.send(msgpack.packb({"action": "subscribe", "quotes": ["AAPL"]}))
    ws.recv(timeout=BOUND)
    outcome: list[object] = []

    def burst() -> None:
        try:
            outcome.append(sim.publish_quotes("AAPL", 500_000, timeout=3 * BOUND))
        except SimulatorError as exc:
            outcome.append(exc)

    worker = threading.Thread(target=burst, name="test-burst")
    worker.start()
    sim.wait_for(lambda s: s.kind(MARKET_DATA).data_messages > 1000, BOUND)
    return worker, outcome


def test_dropping_the_reader_ends_a_blocked_burst_early() -> None:
    with Simulator() as sim, connect(sim.market_data_url, additional_headers={
            "Content-Type": "application/msgpack"}, open_timeout=BOUND, close_timeout=0.1) as ws:
        worker, outcome = _blocked_burst(sim, ws)
        assert sim.drop_connections() == 1
        worker.join(BOUND)
        assert not worker.is_alive()
    (sent,) = outcome
    assert isinstance(sent, int) and 1000 < sent < 500_000


def test_stop_during_a_blocked_burst_is_bounded_and_ends_the_burst() -> None:
    with Simulator() as sim, connect(sim.market_data_url, additional_headers={
            "Content-Type": "application/msgpack"}, open_timeout=BOUND, close_timeout=0.1) as ws:
        worker, outcome = _blocked_burst(sim, ws)
        begin = time.monotonic()
        sim.stop()
        assert time.monotonic() - begin < 2.0  # the reader never answers the close: aborted
        worker.join(BOUND)
        assert not worker.is_alive()
    (sent,) = outcome
    assert isinstance(sent, int) and 1000 < sent < 500_000


def test_quote_rate_set_before_start_applies_at_start() -> None:
    sim = Simulator()
    sim.set_quote_rate(50.0)
    with sim, connect(sim.market_data_url, additional_headers={
            "Content-Type": "application/msgpack"}, open_timeout=BOUND) as ws:
        ws.recv(timeout=BOUND)
        ws.send(msgpack.packb({"action": "auth", "key": KEY_ID, "secret": SECRET}))
        ws.recv(timeout=BOUND)
        ws.send(msgpack.packb({"action": "subscribe", "quotes": ["AAPL"]}))
        ws.recv(timeout=BOUND)
        (quote,) = msgpack.unpackb(ws.recv(timeout=BOUND))
    assert quote["T"] == "q" and quote["S"] == "AAPL"
