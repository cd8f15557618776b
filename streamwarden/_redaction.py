"""Keeping secrets out of text: credentials a process has seen, and database passwords.

Standard library only, so that even a failing import elsewhere can be reported without a secret
(the command line's last-resort error message relies on it).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

from streamwarden.credentials import REDACTED, Secret

_PASSWORD_IN_TEXT = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")
_SECRET_IN_TEXT = re.compile(r"(?i)\b(password|passfile|sslpassword)=[^&\s'\"]*")


def redact_text(text: str) -> str:
    """``text`` (an error message, a connection string) with ``user:password@`` and
    ``password=``, ``passfile=``, ``sslpassword=`` values replaced by ``***``.

    Thread-safety: pure function.
    """
    return _SECRET_IN_TEXT.sub(r"\1=***", _PASSWORD_IN_TEXT.sub(r"\1***@", text))


class SecretRedactor:
    """A structlog processor that removes secrets from every field of a log event.

    It replaces any :class:`~streamwarden.credentials.Secret` value with ``<redacted>``, and every
    occurrence of a registered sensitive string (key ids and secrets of the credentials a manager
    has seen) inside any string value, nested containers and rendered exceptions included. Place
    it after ``format_exc_info`` and before the renderer.

    Thread-safety: :meth:`register` and :meth:`__call__` may be called from any thread.
    """

    def __init__(self, sensitive: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._sensitive: tuple[str, ...] = ()
        self.register(*sensitive)

    def register(self, *values: str) -> None:
        """Add strings that must never appear in output (empty strings are ignored)."""
        known = self._sensitive
        if all(value in known or not value for value in values):  # every acquire registers
            return
        with self._lock:
            merged = set(self._sensitive) | {value for value in values if value}
            # Longest first, so a secret that contains another is replaced whole.
            self._sensitive = tuple(sorted(merged, key=len, reverse=True))

    def redact_text(self, text: str) -> str:
        """``text`` with every registered sensitive string replaced by ``<redacted>``."""
        for value in self._sensitive:
            if value in text:
                text = text.replace(value, REDACTED)
        return text

    def redact(self, value: object) -> object:
        """A copy of ``value`` with secrets removed, walking mappings, lists, tuples and sets."""
        if isinstance(value, Secret):
            return REDACTED
        if isinstance(value, str):
            return self.redact_text(value)
        if isinstance(value, Mapping):
            return {self.redact(key): self.redact(item) for key, item in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self.redact(item) for item in value]
        if isinstance(value, int | float | bool) or value is None:
            return value
        return self.redact_text(repr(value) if isinstance(value, BaseException) else str(value))

    def __call__(
        self, logger: object, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key in list(event_dict):
            event_dict[key] = self.redact(event_dict[key])
        return event_dict


#: websockets' loggers, and the direction of the frames each must not show: what a client
#: sends and what a server receives (authentication frames among them).
_WEBSOCKETS_LOGGERS = {"websockets.client": ">", "websockets.server": "<"}
_DATA_OPCODES = frozenset({"TEXT", "BINARY", "CONT"})
#: Request headers that carry credentials (lower case): Alpaca's REST key headers, HTTP auth.
_CREDENTIAL_HEADERS = frozenset({"apca-api-key-id", "apca-api-secret-key", "authorization"})


class FramePayloadFilter(logging.Filter):
    """Withholds the payload of the data frames, and the value of the credential headers, that
    travel in one direction from a websockets logger's records.

    At DEBUG, websockets logs every frame as ``"> %s"`` (sent) or ``"< %s"`` (received) with
    the frame, whose text shows the payload's first and last bytes: enough of an Alpaca
    authentication frame to give away half a secret, or its last bytes in hex. The record keeps
    the frame's type and size (``> TEXT [payload withheld: 125 bytes]``). It also logs each
    header of an HTTP request as ``"< %s: %s"``: the value of a credential header (Alpaca's
    ``APCA-API-KEY-ID`` / ``APCA-API-SECRET-KEY``, ``Authorization``) becomes ``[withheld]``.
    Other records pass unchanged.

    Thread-safety: stateless; safe on any thread.
    """

    def __init__(self, direction: str) -> None:
        super().__init__()
        self._message = f"{direction} %s"
        self._header = f"{direction} %s: %s"

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite a matching frame record in place; never drops a record."""
        args = record.args
        if record.msg == self._message and isinstance(args, tuple) and len(args) == 1:
            opcode = getattr(getattr(args[0], "opcode", None), "name", None)
            data = getattr(args[0], "data", None)
            if opcode in _DATA_OPCODES and isinstance(data, bytes | bytearray | memoryview):
                record.args = (f"{opcode} [payload withheld: {len(data)} bytes]",)
        elif (record.msg == self._header and isinstance(args, tuple) and len(args) == 2
              and str(args[0]).lower() in _CREDENTIAL_HEADERS):
            record.args = (args[0], "[withheld]")
        return True


def guard_websockets_logs() -> None:
    """Install :class:`FramePayloadFilter` on websockets' client (frames and headers sent) and
    server (frames and headers received) loggers, once: no authentication frame or credential
    header reaches a log at any level.

    Called when streamwarden's transports and the simulator load; idempotent.

    Thread-safety: safe to call from any thread (the logging module locks).
    """
    for name, direction in _WEBSOCKETS_LOGGERS.items():
        logger = logging.getLogger(name)
        if not any(isinstance(existing, FramePayloadFilter) for existing in logger.filters):
            logger.addFilter(FramePayloadFilter(direction))
