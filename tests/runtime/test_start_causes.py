"""The cause of a failed start, with the in-memory transport (what users' own tests can
simulate), the ConnectFailure contract, and the classification of connect errors.

The end-to-end cases over alpaca-py are in tests/transports/test_start_causes.py.
"""

from __future__ import annotations

import socket
import ssl

import pytest
import websockets
from websockets.datastructures import Headers
from websockets.http11 import Response
from websockets.legacy.exceptions import InvalidStatusCode

from streamwarden import (
    AuthenticationError,
    ConnectFailure,
    ConnectionLimitError,
    ConnectionManager,
    ConnectionStartError,
    InvalidInputError,
    LeaseStatus,
    Settings,
    StartTimeoutError,
)
from streamwarden.errors import START_CAUSES
from streamwarden.testing import TransportOptions
from streamwarden.transports._causes import connect_failure, refusal
from streamwarden.transports._contract import MAX_DETAIL
from tests.conftest import CANARY_SECRET
from tests.waiting import wait_until

SETTINGS = Settings(start_timeout=0.3, stop_timeout=0.5, debug=True)
DNS = ConnectFailure("dns", "DNS lookup failed for no-such-host.invalid (gaierror: ...)")


def start_failed(sink):
    (record,) = [r for r in sink.records() if r.event == "start_failed"]
    return record


def acquire_fails(factory, sink, creds, options: TransportOptions,
                  expected: type[ConnectionStartError] = StartTimeoutError
                  ) -> ConnectionStartError:
    factory.options = options
    with (ConnectionManager(transport_factory=factory, audit=sink, settings=SETTINGS) as manager,
          pytest.raises(expected) as caught):
        manager.market_data(creds, symbols=["AAPL"])
    return caught.value


def test_a_reported_failure_is_the_cause_of_the_timeout(factory, sink, creds):
    error = acquire_fails(factory, sink, creds, TransportOptions(connect_failure=DNS))
    assert error.cause == "dns"
    assert error.message.endswith(f"start_timeout=0.3s: {DNS.detail}")
    record = start_failed(sink)
    assert record.error_message == f"not connected within start_timeout=0.3s: {DNS.detail}"
    assert record.details == {"stop_clean": True, "cause": "dns", "cause_detail": DNS.detail}


def test_without_a_reported_failure_the_cause_is_timeout(factory, sink, creds):
    factory.options = TransportOptions(auto_connect=False)
    with ConnectionManager(transport_factory=factory, audit=sink, settings=SETTINGS) as manager:
        lease = manager.market_data(creds, symbols=["AAPL"], wait=False)
        assert wait_until(lambda: lease.status is LeaseStatus.REVOKED)
    record = start_failed(sink)
    assert record.details == {"stop_clean": True, "cause": "timeout"}
    assert record.error_message == "not connected within start_timeout=0.3s"


def test_the_acquirers_own_timeout_names_the_cause_too(factory, sink, creds):
    factory.options = TransportOptions(connect_failure=ConnectFailure("refused", "port 1 shut"))
    with ConnectionManager(transport_factory=factory, audit=sink, settings=SETTINGS) as manager:
        lease = manager.market_data(creds, symbols=["AAPL"], wait=False)
        assert wait_until(lambda: factory.latest().started)
        with pytest.raises(StartTimeoutError) as caught:
            lease.wait_ready(timeout=0.05)
        assert caught.value.cause == "refused" and caught.value.message.endswith(": port 1 shut")
        assert lease.is_live  # wait_ready gives nothing back


def test_the_cause_is_forgotten_once_connected(factory, sink, creds):
    factory.options = TransportOptions(auto_connect=False)
    settings = SETTINGS.replace(reconnect_grace=0.3)
    with ConnectionManager(transport_factory=factory, audit=sink, settings=settings) as manager:
        lease = manager.market_data(creds, symbols=["AAPL"], wait=False)
        assert wait_until(lambda: factory.latest().started)
        transport = factory.latest()
        assert transport.emit_connect_failed(DNS)
        assert transport.emit_connected()
        lease.wait_ready(timeout=1.0)
        assert transport.emit_connection_lost("peer went away")  # reconnecting: starting again
        assert wait_until(lambda: lease.status is LeaseStatus.REVOKED)
    assert start_failed(sink).details == {"stop_clean": True, "cause": "timeout"}
    assert start_failed(sink).error_message == "not reconnected within reconnect_grace=0.3s"


@pytest.mark.parametrize(("error", "cause"), [
    (AuthenticationError("Alpaca error 402: auth failed"), "auth"),
    (ConnectionLimitError("Alpaca error 406: connection limit exceeded"), "connection_limit"),
    (ConnectionStartError("refused by policy", cause="refused"), "refused"),
])
def test_a_fatal_error_carries_its_cause(factory, sink, creds, error, cause):
    raised = acquire_fails(factory, sink, creds, TransportOptions(fatal_error=error), type(error))
    assert raised.cause == cause
    assert start_failed(sink).details == {"stop_clean": True, "cause": cause,
                                          "cause_detail": error.message}


def test_a_detail_holding_a_secret_is_redacted(factory, sink, creds):
    leaky = ConnectFailure("other", f"proxy said: bad key {CANARY_SECRET}")
    error = acquire_fails(factory, sink, creds, TransportOptions(connect_failure=leaky))
    record = start_failed(sink)
    assert CANARY_SECRET not in str(error) and CANARY_SECRET not in str(record)
    assert record.details["cause_detail"] == "proxy said: bad key <redacted>"


# The contract.


def test_a_connect_failure_is_one_bounded_line_with_a_known_cause():
    failure = ConnectFailure("tls", "handshake\n  failed " + "x" * 1000)
    assert failure.detail.startswith("handshake failed xxx") and "\n" not in failure.detail
    assert len(failure.detail) == MAX_DETAIL and failure.detail.endswith("...")
    with pytest.raises(InvalidInputError, match="cause must be one of dns, refused, tls"):
        ConnectFailure("gremlins", "?")
    with pytest.raises(InvalidInputError, match="detail must be a string"):
        ConnectFailure("dns", None)  # type: ignore[arg-type]
    assert START_CAUSES == ("dns", "refused", "tls", "auth", "timeout", "other",
                            "connection_limit", "rate_limit")


def test_start_errors_carry_their_cause_through_derive():
    assert ConnectionStartError("x").cause == "other"
    assert StartTimeoutError("x").cause == "timeout"
    assert AuthenticationError("x").cause == "auth"
    derived = StartTimeoutError("x", cause="dns").derive(operation="acquire")
    assert (derived.cause, derived.operation) == ("dns", "acquire")


# Classifying what a connect raised (real exception objects, as the SDK raises them).

URL = "wss://alice:pw-CANARY-42@stream.example:8443/v2/iex"


@pytest.mark.parametrize(("error", "cause", "detail"), [
    (socket.gaierror(-3, "Temporary failure in name resolution"), "dns",
     "DNS lookup failed for stream.example (gaierror: Temporary failure in name resolution)"),
    (ConnectionRefusedError(111, "Connect call failed"), "refused",
     "connection to stream.example:8443 refused (ConnectionRefusedError: Connect call failed)"),
    (ssl.SSLCertVerificationError(1, "certificate verify failed"), "tls",
     "TLS handshake with stream.example:8443 failed (SSLCertVerificationError: "),
    (ConnectionResetError(), "tls",
     "TLS handshake with stream.example:8443 failed (ConnectionResetError)"),
    (TimeoutError(), "timeout", "no answer from stream.example:8443 in time (TimeoutError)"),
    (InvalidStatusCode(403, None), "auth",  # type: ignore[arg-type]
     "WebSocket handshake with stream.example:8443 failed (InvalidStatusCode: server rejected"),
    (websockets.InvalidURI(URL, "bad port"), "other",
     "connecting to stream.example:8443 failed (InvalidURI: "
     "wss://alice:***@stream.example:8443/v2/iex isn't a valid URI: bad port)"),
    (OSError(113, "No route to host"), "other",
     "connecting to stream.example:8443 failed (OSError: No route to host)"),
])
def test_connect_errors_are_classified(error, cause, detail):
    failure = connect_failure(error, URL)
    assert failure.cause == cause and failure.detail.startswith(detail)
    assert "pw-CANARY-42" not in failure.detail


def test_a_refused_handshake_of_the_current_websockets_client_is_read_too():
    response = Response(401, "Unauthorized", Headers())
    failure = connect_failure(websockets.InvalidStatus(response), URL)
    assert failure == ConnectFailure("auth", "WebSocket handshake with stream.example:8443 "
                                             "failed (InvalidStatus: server rejected WebSocket "
                                             "connection: HTTP 401)")


def test_a_reset_on_a_plain_websocket_url_is_not_tls():
    failure = connect_failure(ConnectionResetError(), "ws://127.0.0.1:9/v2/iex")
    assert failure == ConnectFailure("other", "connecting to 127.0.0.1:9 failed "
                                              "(ConnectionResetError)")


def test_endpoints_without_port_or_with_a_malformed_one():
    assert connect_failure(TimeoutError(), "wss://stream.example/v2/iex").detail.startswith(
        "no answer from stream.example:443 in time")
    assert connect_failure(TimeoutError(), "ws://stream.example/v2/iex").detail.startswith(
        "no answer from stream.example:80 in time")
    assert connect_failure(TimeoutError(), "ws://stream.example:port/").detail.startswith(
        "no answer from stream.example in time")


def test_an_alpaca_error_while_starting():
    assert refusal(500, "internal\nerror", URL) == ConnectFailure(
        "other", "starting the stream at stream.example:8443 failed: Alpaca error 500: "
                 "internal error")
    assert refusal(None, "", URL).detail.endswith("failed: (no message)")
