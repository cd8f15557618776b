"""Identifiers: ULIDs for leases, lifecycles and audit events; correlation id rules.

A correlation id ties every audit record and log line of one piece of work together. A public
call takes an explicit ``correlation_id``; without one, the id bound in structlog's contextvars
(``structlog.contextvars.bind_contextvars(correlation_id=...)``) is used; without that, a new
ULID is generated.
"""

from __future__ import annotations

import structlog
from ulid import ULID

from streamwarden.errors import InvalidInputError

MAX_CORRELATION_ID_LENGTH = 128


def new_id() -> str:
    """A new ULID as its 26-character string: unique and sortable by creation time."""
    return str(ULID())


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
