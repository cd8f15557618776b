"""Secret canary: a recognisable key id and secret go through every path and never come out.

Checked outputs: every log line at every level (text and JSON), every audit record field, the
health report, reprs, and the text of every exception the library raised.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict

import pytest

from streamwarden import (
    AuthenticationError,
    ConnectionManager,
    Credentials,
    InMemoryAuditSink,
    InvalidInputError,
    Settings,
    StreamMessage,
    StreamwardenError,
)
from streamwarden._redaction import FramePayloadFilter, guard_websockets_logs
from streamwarden.logging import LOGGER_NAME
from streamwarden.simulator import Simulator
from streamwarden.testing import InMemoryTransportFactory, TransportOptions
from tests.conftest import CANARY_KEY_ID, CANARY_SECRET

CANARIES = (CANARY_KEY_ID, CANARY_SECRET)
LEAKY = f"SDK said: key={CANARY_KEY_ID} secret={CANARY_SECRET}"


def exercise(manager: ConnectionManager, factory: InMemoryTransportFactory,
             creds: Credentials) -> list[BaseException]:
    raised: list[BaseException] = []
    lease = manager.market_data(creds, symbols=["AAPL"], owner="momentum", correlation_id="c-1")

    def leaky_callback(update: object) -> None:
        raise RuntimeError(LEAKY)

    manager.trade_updates(creds, on_update=leaky_callback, owner="executor")
    trades = factory.latest()
    trades.emit_message(StreamMessage("trade_updates", None, {"note": "fill"}))
    market = factory.created[0][1]
    market.emit_connection_lost(LEAKY)
    market.emit_connected()
    market.emit_connected()  # rejected: already running
    market.emit_fatal_error(AuthenticationError(LEAKY))
    try:
        lease.wait_ready(timeout=1.0)  # raises what revoked the lease
    except StreamwardenError as exc:
        raised.append(exc)
    factory.options = TransportOptions(fatal_error=AuthenticationError(LEAKY))
    try:
        manager.market_data(creds, symbols=["MSFT"])
    except StreamwardenError as exc:
        raised.append(exc)
    factory.options = TransportOptions(hang_on_stop=True)
    manager.market_data(creds, symbols=["AAPL"]).release()
    for bad in ({"api_key_id": CANARY_KEY_ID, "secret_key": CANARY_SECRET + " "},
                {"api_key_id": CANARY_KEY_ID + "\n", "secret_key": CANARY_SECRET}):
        try:
            Credentials(**bad)
        except InvalidInputError as exc:
            raised.append(exc)
    try:
        manager.market_data(CANARY_SECRET, symbols=["AAPL"])  # type: ignore[arg-type]
    except InvalidInputError as exc:
        raised.append(exc)
    raised.append(ValueError(repr(manager.health())))
    raised.append(ValueError(repr(creds) + repr(lease)))
    return raised


def canary_outputs(caplog: pytest.LogCaptureFixture, sink: InMemoryAuditSink, health: str,
                   raised: list[BaseException]) -> dict[str, str]:
    """Everything a run showed: logs, audit records, the health report, error texts."""
    return {
        # Formatted as a handler would: with any traceback attached to the stdlib record.
        "logs": "\n".join(logging.Formatter().format(record) for record in caplog.records),
        "audit": json.dumps([asdict(r) for r in sink.records()], default=str),
        "health": health,
        "errors": "\n".join(f"{exc!s} {exc!r}" for exc in raised),
    }


def assert_no_canary(outputs: dict[str, str]) -> None:
    for name, text in outputs.items():
        for canary in CANARIES:
            assert canary not in text, f"{canary[:6]}... leaked into {name}"


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_canary_never_leaks(caplog, creds, log_format):
    caplog.set_level(logging.DEBUG, logger=LOGGER_NAME)
    factory = InMemoryTransportFactory()
    sink = InMemoryAuditSink()
    settings = Settings(start_timeout=1.0, stop_timeout=0.1, debug=True)
    manager = ConnectionManager(transport_factory=factory, audit=sink, settings=settings,
                                log_format=log_format)
    raised = exercise(manager, factory, creds)
    health = manager.health().to_json()
    manager.close()

    outputs = canary_outputs(caplog, sink, health, raised)
    # The paths really ran: each output has content from them.
    assert "lease.callback_failed" in outputs["logs"]
    assert "transport.stop_timeout" in outputs["logs"]
    assert "<redacted>" in outputs["audit"] and "AuthenticationError" in outputs["audit"]
    assert len(raised) >= 6
    # The revoked lease raised its cause, and the refused acquire its typed error.
    assert [type(exc) for exc in raised[:2]] == [AuthenticationError, AuthenticationError]
    assert_no_canary(outputs)


def _pieces(secret: str, size: int = 8) -> set[str]:
    """Every ``size``-character piece of ``secret``, as text and as websockets' hex dump."""
    raw = secret.encode()
    text = {secret[i:i + size] for i in range(len(secret) - size + 1)}
    dumped = {" ".join(f"{byte:02x}" for byte in raw[i:i + 6]) for i in range(len(raw) - 5)}
    return text | dumped


def test_no_piece_of_a_secret_in_websockets_debug_log(caplog, creds):
    """alpaca-py over the simulator with every logger at DEBUG: websockets logs each frame
    with the first and last bytes of its payload, which for the auth frames were half the
    secret (trading, JSON) or its last bytes in hex (market data, MessagePack)."""
    caplog.set_level(logging.DEBUG)
    with Simulator(reaper_window=0) as sim:
        settings = Settings(market_data_url=sim.market_data_url,
                            trade_updates_url=sim.trade_updates_url)
        with ConnectionManager(audit=InMemoryAuditSink(), settings=settings) as manager, \
                manager.market_data(creds, symbols=["AAPL"]) as feed, \
                manager.trade_updates(creds, on_update=lambda update: None):
            sim.publish_quote("AAPL", bid_price=1.0, ask_price=1.02)
            feed.wait_for_quote("AAPL", timeout=10.0)
    lines = [logging.Formatter().format(record) for record in caplog.records
             if record.name.startswith("websockets")]
    text = "\n".join(lines)
    for canary in (CANARY_KEY_ID, CANARY_SECRET):
        leaked = sorted(piece for piece in _pieces(canary) if piece in text)
        assert not leaked, leaked
    withheld = [line for line in lines if "[payload withheld:" in line]
    assert any("> TEXT [payload withheld:" in line for line in withheld)  # trading auth, sent
    assert any("< BINARY [payload withheld:" in line for line in withheld)  # market data auth
    assert any(line.startswith("DEBUG:websockets.client:< BINARY") and "withheld" not in line
               for line in [f"DEBUG:{r.name}:{r.getMessage()}" for r in caplog.records])


def test_credential_headers_are_withheld_and_other_headers_kept():
    guard = FramePayloadFilter("<")
    records = [logging.LogRecord("websockets.server", logging.DEBUG, __file__, 1, "< %s: %s",
                                 (name, "PKHEADERCANARY0001"), None)
               for name in ("APCA-API-KEY-ID", "apca-api-secret-key", "Authorization", "Host")]
    assert all(guard.filter(record) for record in records)
    assert [record.getMessage() for record in records] == [
        "< APCA-API-KEY-ID: [withheld]", "< apca-api-secret-key: [withheld]",
        "< Authorization: [withheld]", "< Host: PKHEADERCANARY0001"]


def test_the_frame_filter_leaves_other_records_alone():
    guard = FramePayloadFilter(">")
    plain = logging.LogRecord("websockets.client", logging.DEBUG, __file__, 1, "> %s",
                              ("GET /v2/iex HTTP/1.1",), None)
    assert guard.filter(plain) and plain.getMessage() == "> GET /v2/iex HTTP/1.1"
    eof = logging.LogRecord("websockets.client", logging.DEBUG, __file__, 1, "> EOF", None,
                            None)
    assert guard.filter(eof) and eof.getMessage() == "> EOF"
    guard_websockets_logs()
    guard_websockets_logs()  # idempotent: one filter per logger
    assert sum(isinstance(f, FramePayloadFilter)
               for f in logging.getLogger("websockets.client").filters) == 1
