"""Identifiers: ULIDs for leases, lifecycles and audit events; correlation id rules.

A correlation id ties every audit record and log line of one piece of work together. A public
call takes an explicit ``correlation_id``; without one, the id bound in structlog's contextvars
(``structlog.contextvars.bind_contextvars(correlation_id=...)``) is used; without that, a new
ULID is generated.
"""

from __future__ import annotations

import os
import random
import threading
import time

import structlog

from streamwarden.errors import InvalidInputError

MAX_CORRELATION_ID_LENGTH = 128

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
#: Every 10-bit value as its two Crockford base32 digits: a ULID is 13 such pairs.
_PAIRS = tuple(first + second for first in _CROCKFORD for second in _CROCKFORD)


class _Ulids:
    """ULID strings (48-bit millisecond time, 80 random bits), strictly increasing within the
    process: within one millisecond, or if the clock steps back, the next id is the previous
    one plus one (the ULID spec's monotonic rule). An id is an identifier, not a secret, so the
    random bits come from :mod:`random` (reseeded in a forked child), not from a system call.

    Thread-safety: calls from any thread (the last id is kept under a lock).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = 0
        # A child forked while another thread held the lock would wait for it forever.
        os.register_at_fork(after_in_child=self._forked)

    def _forked(self) -> None:
        self._lock = threading.Lock()

    def __call__(self) -> str:
        value = (time.time_ns() // 1_000_000) << 80 | random.getrandbits(80)
        with self._lock:
            if value <= self._last:
                value = self._last + 1
            self._last = value
        pairs = _PAIRS
        return "".join((
            pairs[value >> 120], pairs[value >> 110 & 1023], pairs[value >> 100 & 1023],
            pairs[value >> 90 & 1023], pairs[value >> 80 & 1023], pairs[value >> 70 & 1023],
            pairs[value >> 60 & 1023], pairs[value >> 50 & 1023], pairs[value >> 40 & 1023],
            pairs[value >> 30 & 1023], pairs[value >> 20 & 1023], pairs[value >> 10 & 1023],
            pairs[value & 1023],
        ))


_new_ulid = _Ulids()


def new_id() -> str:
    """A new ULID as its 26-character string: unique and sortable by creation time (strictly
    increasing within a process).

    Thread-safety: any thread.
    """
    return _new_ulid()


def check_correlation_id(value: object) -> str:
    """``value`` if it is a valid correlation id: 1..128 printable ASCII characters.

    Raises:
        InvalidInputError: naming what is wrong (the value itself is not echoed when it is
            not printable, so control characters cannot reach a log).
    """
    if not isinstance(value, str):
        raise InvalidInputError(f"correlation_id must be a string, got {type(value).__name__}")
    if not 1 <= len(value) <= MAX_CORRELATION_ID_LENGTH:
        raise InvalidInputError(
            f"correlation_id must be 1..{MAX_CORRELATION_ID_LENGTH} characters, got {len(value)}"
        )
    if not (value.isascii() and value.isprintable()):
        raise InvalidInputError("correlation_id must be printable ASCII")
    return value


def resolve_correlation_id(explicit: str | None, default: str | None = None) -> str:
    """The correlation id for a call: explicit, else bound in contextvars, else ``default``,
    else a new ULID.

    Raises:
        InvalidInputError: if the explicit or the bound id is malformed.
    """
    if explicit is not None:
        return check_correlation_id(explicit)
    bound = structlog.contextvars.get_contextvars().get("correlation_id")
    if bound is not None:
        return check_correlation_id(bound)
    return default if default is not None else new_id()
