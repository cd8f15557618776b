"""Why a connection attempt failed: the exception a connect raised, named as a start cause.

A failed attempt is classified as one of :data:`~streamwarden.errors.START_CAUSES` and described
in one short line (:class:`~streamwarden.transports.ConnectFailure` bounds its length) naming
the endpoint (host and port only: never the URL's user information) and the reason, for the
audit trail and the start error's message.
"""

from __future__ import annotations

import socket
import ssl
from urllib.parse import urlsplit

import websockets

from streamwarden._redaction import redact_text
from streamwarden.transports._contract import ConnectFailure

_HTTP_AUTH_STATUSES = frozenset({401, 403})
_TOO_MANY_REQUESTS = 429


def _endpoint(url: str) -> tuple[str, str]:
    """``(host, host:port)`` of ``url``, without user information."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    try:
        port = parts.port or (443 if parts.scheme == "wss" else 80)
    except ValueError:  # a malformed port (websockets refused the URL: InvalidURI)
        return host, host
    return host, f"{host}:{port}"


def _reason(error: BaseException) -> str:
    # redact_text: an exception may quote the URL, user information and all.
    text = redact_text(getattr(error, "strerror", None) or str(error))
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _http_status(error: BaseException) -> int | None:
    status = getattr(error, "status_code", None)  # websockets' legacy client
    if status is None:
        status = getattr(getattr(error, "response", None), "status_code", None)
    return status if isinstance(status, int) else None


def _classify(error: BaseException, url: str) -> tuple[str, str]:
    host, where = _endpoint(url)
    reason = _reason(error)
    if isinstance(error, socket.gaierror):
        return "dns", f"DNS lookup failed for {host} ({reason})"
    if isinstance(error, ssl.SSLError) or (
        urlsplit(url).scheme == "wss" and isinstance(error, ConnectionResetError)
    ):  # a plain (not TLS) server resets the connection or answers what TLS cannot read
        return "tls", f"TLS handshake with {where} failed ({reason})"
    if isinstance(error, ConnectionRefusedError):
        return "refused", f"connection to {where} refused ({reason})"
    if isinstance(error, TimeoutError):
        return "timeout", f"no answer from {where} in time ({reason})"
    if isinstance(error, websockets.InvalidHandshake):
        return _handshake_failure(_http_status(error), where, reason)
    return "other", f"connecting to {where} failed ({reason})"


def _handshake_failure(status: int | None, where: str, reason: str) -> tuple[str, str]:
    if status == _TOO_MANY_REQUESTS:
        return "rate_limit", f"{where} answered the WebSocket upgrade with HTTP 429 ({reason})"
    cause = "auth" if status in _HTTP_AUTH_STATUSES else "other"
    return cause, f"WebSocket handshake with {where} failed ({reason})"


def connect_failure(error: BaseException, url: str) -> ConnectFailure:
    """The cause of a failed attempt to connect to ``url``, and its one-line description.

    >>> failure = connect_failure(socket.gaierror(-2, "Name or service not known"),
    ...                           "wss://user:pw@no-such-host.invalid/v2/iex")
    >>> failure.cause, failure.detail
    ('dns', 'DNS lookup failed for no-such-host.invalid (gaierror: Name or service not known)')

    Thread-safety: pure function.
    """
    return ConnectFailure(*_classify(error, url))


def retry_after(error: BaseException) -> float | None:
    """The seconds of the ``Retry-After`` header of an HTTP answer to the upgrade, if it sent
    one in seconds (an HTTP date is ignored).

    Thread-safety: pure function.
    """
    headers = getattr(error, "headers", None)  # websockets' legacy client
    if headers is None:
        headers = getattr(getattr(error, "response", None), "headers", None)
    value = headers.get("Retry-After") if headers is not None else None
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and 0 <= seconds < float("inf") else None


def connection_limit(url: str, *, first_start: bool) -> str:
    """The one-line description of a 406 (connection limit exceeded) from ``url``.

    >>> connection_limit("wss://stream.data.alpaca.markets/v2/iex", first_start=True)[:60]
    'Alpaca error 406: connection limit exceeded at stream.data.a'

    Thread-safety: pure function.
    """
    parts = urlsplit(url)
    where = f"{_endpoint(url)[1]}{parts.path}"
    text = f"Alpaca error 406: connection limit exceeded at {where}"
    if first_start:
        return (f"{text}: another process (or connection) holds this account's connection for "
                "that endpoint; Alpaca allows one per account and endpoint")
    return f"{text}: the dropped socket may still be held (Alpaca keeps it about 90 s)"


def refusal(code: int | None, message: str, url: str) -> ConnectFailure:
    """An Alpaca error that retrying may fix, met while connecting to ``url`` (cause ``other``).

    Thread-safety: pure function.
    """
    text = " ".join(message.split()) or "(no message)"
    error = f"Alpaca error {code}: {text}" if code is not None else text
    return ConnectFailure("other", f"starting the stream at {_endpoint(url)[1]} failed: {error}")
