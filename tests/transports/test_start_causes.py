"""Why a start failed, in the audit trail and in the error: the real alpaca-py SDK through a real
ConnectionManager, against endpoints that fail for real on 127.0.0.1 (or, for DNS, a name under
``.invalid``, which never resolves).

No mock: a closed port refuses, a plain TCP server cannot speak TLS, the simulator refuses the
key, a server that never answers runs the clock out.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing

import msgpack
import pytest
from websockets.sync.server import ServerConnection, serve

import streamwarden as sw
from streamwarden.simulator import Faults, Simulator
from tests.test_secret_canary import assert_no_canary, canary_outputs

START_TIMEOUT = 1.0
BOUND = 5.0
"""How much longer than start_timeout an acquire may take (the stop and the audit write)."""

pytestmark = pytest.mark.timeout(120)


class TcpServer:
    """A TCP server on 127.0.0.1 that answers every connection with ``reply`` (after reading
    the request) and closes it, or, with ``reply`` None, holds it open and never answers."""

    def __init__(self, reply: bytes | None) -> None:
        self._reply = reply
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._held: list[socket.socket] = []
        self.port: int = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, name="test-tcp-server", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:  # closed
                return
            if self._reply is None:
                self._held.append(connection)
                continue
            with closing(connection):
                try:
                    connection.recv(4096)
                    connection.sendall(self._reply)
                except OSError:
                    pass

    def close(self) -> None:
        self._listener.close()
        for connection in self._held:
            connection.close()
        self._thread.join(BOUND)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(port=0, reaper_window=0) as simulator:
        yield simulator


@pytest.fixture
def servers() -> Iterator[Callable[[bytes | None], TcpServer]]:
    started: list[TcpServer] = []

    def start(reply: bytes | None) -> TcpServer:
        started.append(TcpServer(reply))
        return started[-1]

    yield start
    for server in started:
        server.close()


def start_fails(url: str, kind: str, creds: sw.Credentials,
                sink: sw.InMemoryAuditSink) -> tuple[sw.ConnectionStartError, sw.AuditRecord]:
    """Acquire a lease of ``kind`` on ``url``; returns the start error and the start_failed
    record."""
    endpoint = "market_data_url" if kind == "market_data" else "trade_updates_url"
    settings = sw.Settings(start_timeout=START_TIMEOUT, stop_timeout=0.5, **{endpoint: url})
    with sw.ConnectionManager(audit=sink, settings=settings) as manager:
        started = time.monotonic()
        with pytest.raises(sw.ConnectionStartError) as caught:
            if kind == "market_data":
                manager.market_data(creds, symbols=["AAPL"])
            else:
                manager.trade_updates(creds, on_update=print)
        assert time.monotonic() - started < START_TIMEOUT + BOUND
    (record,) = [r for r in sink.records() if r.event == "start_failed"]
    return caught.value, record


HTTP_400 = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
HTTP_401 = b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


def http_429(retry_after: str) -> bytes:
    return (f"HTTP/1.1 429 Too Many Requests\r\nRetry-After: {retry_after}\r\n"
            "Content-Length: 0\r\nConnection: close\r\n\r\n").encode()


@pytest.mark.parametrize("kind", ["market_data", "trade_updates"])
def test_dns(kind, creds, sink, caplog):
    caplog.set_level(logging.DEBUG)
    error, record = start_fails("wss://no-such-host.invalid/v2/iex", kind, creds, sink)
    # The resolver's own words vary ("Name or service not known" where it answers).
    detail = record.details["cause_detail"]
    assert detail.startswith("DNS lookup failed for no-such-host.invalid (gaierror: ")
    assert isinstance(error, sw.StartTimeoutError) and error.cause == "dns"
    assert error.message.endswith(f"within start_timeout={START_TIMEOUT}s: {detail}")
    assert record.outcome == "failed" and record.error_type == "StartTimeoutError"
    assert record.error_message == f"not connected within start_timeout={START_TIMEOUT}s: {detail}"
    assert record.details == {"stop_clean": True, "cause": "dns", "cause_detail": detail}
    assert_no_canary(canary_outputs(caplog, sink, "", [error]))


def test_refused(creds, sink):
    port = closed_port()
    error, record = start_fails(f"ws://127.0.0.1:{port}/v2/iex", "market_data", creds, sink)
    expected = (f"connection to 127.0.0.1:{port} refused (ConnectionRefusedError: Connect call "
                f"failed ('127.0.0.1', {port}))")
    assert isinstance(error, sw.StartTimeoutError) and error.cause == "refused"
    assert error.message.endswith(f": {expected}")
    assert record.details == {"stop_clean": True, "cause": "refused", "cause_detail": expected}


def test_tls_to_a_server_that_does_not_speak_it(creds, sink, servers):
    port = servers(HTTP_400).port  # answers a TLS hello in plain HTTP
    error, record = start_fails(f"wss://127.0.0.1:{port}/v2/iex", "market_data", creds, sink)
    expected = (f"TLS handshake with 127.0.0.1:{port} failed (SSLError: [SSL: "
                "WRONG_VERSION_NUMBER] wrong version number")
    assert error.cause == "tls" and expected in error.message
    assert record.details["cause"] == "tls" and expected in record.details["cause_detail"]


def test_tls_to_the_simulators_plain_websocket_port(sim, creds, sink):
    url = sim.market_data_url.replace("ws://", "wss://")
    error, record = start_fails(url, "market_data", creds, sink)
    expected = f"TLS handshake with 127.0.0.1:{sim.port} failed (ConnectionResetError"
    assert error.cause == "tls" and expected in error.message
    assert record.details["cause"] == "tls" and expected in record.details["cause_detail"]


@pytest.mark.parametrize("kind", ["market_data", "trade_updates"])
def test_auth_refused_by_alpaca(kind, sim, creds, sink, caplog):
    caplog.set_level(logging.DEBUG)
    sim.set_faults(Faults(auth_failure=True))
    url = sim.market_data_url if kind == "market_data" else sim.trade_updates_url
    error, record = start_fails(url, kind, creds, sink)
    text = "Alpaca error 402: auth failed" if kind == "market_data" else (
        "Alpaca error 402: failed to authenticate")
    assert isinstance(error, sw.AuthenticationError) and error.cause == "auth"
    assert error.message == text
    assert record.error_type == "AuthenticationError" and record.error_message == text
    assert record.details == {"stop_clean": True, "cause": "auth", "cause_detail": text}
    assert_no_canary(canary_outputs(caplog, sink, "", [error]))


def test_auth_refused_in_the_websocket_handshake(creds, sink, servers):
    port = servers(HTTP_401).port
    error, record = start_fails(f"ws://127.0.0.1:{port}/v2/iex", "market_data", creds, sink)
    expected = (f"WebSocket handshake with 127.0.0.1:{port} failed (InvalidStatusCode: server "
                "rejected WebSocket connection: HTTP 401)")
    assert error.cause == "auth" and error.message.endswith(expected)
    assert record.details == {"stop_clean": True, "cause": "auth", "cause_detail": expected}


def test_a_wrong_path_is_another_cause(sim, creds, sink):
    url = sim.market_data_url.replace("/v2/iex", "/no-such-stream")
    error, record = start_fails(url, "market_data", creds, sink)
    assert error.cause == "other" and "HTTP 404" in error.message
    assert record.details["cause"] == "other"
    assert f"WebSocket handshake with 127.0.0.1:{sim.port} failed" in record.details["cause_detail"]


def test_an_alpaca_error_that_retrying_may_fix_is_another_cause(creds, sink):
    def greet_with_an_error(connection: ServerConnection) -> None:
        connection.send(msgpack.packb([{"T": "error", "code": 500, "msg": "internal error"}]))
        connection.recv(timeout=BOUND)

    with serve(greet_with_an_error, "127.0.0.1", 0) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port = server.socket.getsockname()[1]
        error, record = start_fails(f"ws://127.0.0.1:{port}/v2/iex", "market_data", creds, sink)
        server.shutdown()
    # alpaca-py reads the error where it expects its greeting, and says so.
    expected = f"starting the stream at 127.0.0.1:{port} failed: connected message not received"
    assert error.cause == "other" and error.message.endswith(expected)
    assert record.details == {"stop_clean": True, "cause": "other", "cause_detail": expected}


def test_nothing_answering_is_a_timeout(creds, sink, servers):
    port = servers(None).port  # accepts, then says nothing
    error, record = start_fails(f"ws://127.0.0.1:{port}/v2/iex", "market_data", creds, sink)
    assert isinstance(error, sw.StartTimeoutError) and error.cause == "timeout"
    assert f"within start_timeout={START_TIMEOUT}s" in error.message
    assert record.details["cause"] == "timeout"


@pytest.mark.parametrize(("retry_after", "delay"), [
    ("7", "delay=7.0"),
    ("Wed, 21 Oct 2037 07:28:00 GMT", "delay=30.0"),  # not seconds: the backoff's maximum
], ids=["seconds", "http-date"])
def test_a_429_on_the_upgrade_is_rate_limit_and_waits_its_retry_after(
        retry_after, delay, *, creds, sink, servers, caplog):
    caplog.set_level(logging.WARNING, logger="streamwarden")
    port = servers(http_429(retry_after)).port
    error, record = start_fails(f"ws://127.0.0.1:{port}/v2/iex", "market_data", creds, sink)
    expected = f"127.0.0.1:{port} answered the WebSocket upgrade with HTTP 429"
    assert isinstance(error, sw.StartTimeoutError) and error.cause == "rate_limit"
    assert record.details["cause"] == "rate_limit" and expected in record.details["cause_detail"]
    (logged,) = [r.getMessage() for r in caplog.records
                 if "transport.connect_failed" in r.getMessage()]
    assert "attempt=1" in logged and delay in logged  # one attempt: the wait outlasts the start
