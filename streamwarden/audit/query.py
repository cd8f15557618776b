"""Filters over the audit trail and the SQL that selects them.

:class:`AuditFilter` is what a reviewer asks for (the same filters as ``AuditLog.query``, the
report and the export); :func:`select_records` turns it into one ``SELECT`` over
``lifecycle_audit`` in ``seq`` order, with keyset pagination (``after_seq``) so that a caller
can stream millions of rows in constant memory.

Time bounds are half-open: ``since <= occurred_at < until``. :func:`select_matching_ids` finds
the ids a reader may mean by a prefix or by the short form the table shows.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from streamwarden._keys import STREAM_KINDS
from streamwarden.audit.models import audit_table, raw_select
from streamwarden.audit.records import LEASE_EVENTS, STREAM_EVENTS
from streamwarden.errors import InvalidInputError

KINDS: tuple[str, ...] = STREAM_KINDS
MAX_ID_LENGTH = 256
#: The id columns :func:`select_matching_ids` resolves.
ID_COLUMNS: tuple[str, ...] = ("lifecycle_id", "lease_id", "correlation_id")
_ID_FIELDS = ("correlation_id", "lifecycle_id", "lease_id", "fingerprint", "owner", "event")
#: What the table puts before the tail of a shortened id; ignored in an id a reader types.
ELLIPSIS = "\N{HORIZONTAL ELLIPSIS}"


def _check_id(name: str, value: object) -> str | None:
    return None if value is None else check_id(name, value)


def check_id(name: str, value: object) -> str:
    """``value`` if it is a string of 1..:data:`MAX_ID_LENGTH` printable characters.

    Raises:
        InvalidInputError: otherwise, naming ``name``.

    Thread-safety: pure function.
    """
    if not isinstance(value, str):
        raise InvalidInputError(f"{name} must be a string, got {type(value).__name__}")
    if not 1 <= len(value) <= MAX_ID_LENGTH:
        raise InvalidInputError(f"{name} must be 1..{MAX_ID_LENGTH} characters, got {len(value)}")
    if not value.isprintable():
        raise InvalidInputError(f"{name} must be printable")
    return value


def _check_time(name: str, value: object) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise InvalidInputError(f"{name} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInputError(f"{name} must be timezone-aware (for example UTC)")
    return value


@functools.cache
def audit_events() -> tuple[str, ...]:
    """Every event the audit trail can hold: the events of the spec's transitions (the
    runtime records refused ones under the same names), then the lease events.

    Loads the packaged spec on the first call (not at import: the command line stays fast).

    Thread-safety: safe from any thread.
    """
    from streamwarden.machine.spec import default_spec  # noqa: PLC0415

    spec_events = dict.fromkeys(transition.event for transition in default_spec().transitions)
    return (*spec_events, *LEASE_EVENTS, *STREAM_EVENTS)


def check_event(value: str) -> str:
    """``value`` if the trail can hold records of that event (:func:`audit_events`).

    Raises:
        InvalidInputError: otherwise, listing the events (a misspelt name would select
            nothing without a word).

    Thread-safety: safe from any thread.
    """
    events = audit_events()
    if value not in events:
        raise InvalidInputError(f"unknown event {value!r}; the audit trail holds "
                                f"{', '.join(events)}")
    return value


def check_limit(name: str, value: object) -> int | None:
    """``value`` if it is None or a positive int (bools are refused).

    Raises:
        InvalidInputError: otherwise, naming ``name``.

    Thread-safety: pure function.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(f"{name} must be a whole number, got {type(value).__name__}")
    if value < 1:
        raise InvalidInputError(f"{name} must be at least 1, got {value}")
    return value


def parse_time(name: str, text: str) -> datetime:
    """An ISO 8601 timestamp with a UTC offset (``2026-01-02T03:04:05Z``, ``...+02:00``).

    Raises:
        InvalidInputError: if ``text`` is not ISO 8601 or has no offset (a local time would be
            ambiguous across hosts), naming ``name``.

    Thread-safety: pure function.
    """
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidInputError(
            f"{name} must be an ISO 8601 timestamp such as 2026-01-02T03:04:05Z, got {text!r}"
        ) from None
    if value.tzinfo is None:
        raise InvalidInputError(
            f"{name} {text!r} has no time zone; add Z for UTC or an offset such as +02:00"
        )
    return value


@dataclass(frozen=True)
class AuditFilter:
    """Which audit records to select; every field is optional and they combine with AND.

    Attributes:
        correlation_id, lifecycle_id, lease_id, fingerprint, owner: exact matches.
        event: an exact match, one of :func:`audit_events`.
        kind: one of :data:`KINDS` (``market_data``, ``trade_updates``, ``crypto_data``,
            ``option_data``, ``news``).
        since: inclusive lower bound on ``occurred_at`` (timezone-aware).
        until: exclusive upper bound on ``occurred_at`` (timezone-aware).
        limit: at most this many records (the first ones in ``seq`` order).

    Raises:
        InvalidInputError: on construction, if a field is ill-typed, empty, an event the
            trail cannot hold, a time is naive, ``since`` is not before ``until``, or
            ``limit`` is not a positive int.

    Thread-safety: immutable.
    """

    correlation_id: str | None = None
    lifecycle_id: str | None = None
    fingerprint: str | None = None
    kind: str | None = None
    event: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int | None = None
    owner: str | None = None
    lease_id: str | None = None

    def __post_init__(self) -> None:
        for name in _ID_FIELDS:
            _check_id(name, getattr(self, name))
        if self.event is not None:
            check_event(self.event)
        if self.kind is not None and self.kind not in KINDS:
            raise InvalidInputError(f"kind must be one of {', '.join(KINDS)}; got {self.kind!r}")
        since = _check_time("since", self.since)
        until = _check_time("until", self.until)
        if since is not None and until is not None and since >= until:
            raise InvalidInputError(
                f"since ({since.isoformat()}) must be before until ({until.isoformat()})"
            )
        check_limit("limit", self.limit)


def _conditions(flt: AuditFilter) -> list[sa.ColumnElement[bool]]:
    columns = audit_table.c
    conditions: list[sa.ColumnElement[bool]] = []
    for name in (*_ID_FIELDS, "kind"):
        value = getattr(flt, name)
        if value is not None:
            conditions.append(columns[name] == value)
    # The column type converts the bounds to UTC (and to naive UTC text on SQLite).
    if flt.since is not None:
        conditions.append(columns.occurred_at >= flt.since)
    if flt.until is not None:
        conditions.append(columns.occurred_at < flt.until)
    return conditions


def select_records(
    flt: AuditFilter, *, dialect_name: str = "sqlite", after_seq: int | None = None,
    limit: int | None = None, newest_first: bool = False,
) -> sa.Select[Any]:
    """``SELECT`` every column of ``lifecycle_audit`` matching ``flt``, in ``seq`` order
    (descending if ``newest_first``), as stored
    (:func:`streamwarden.audit.models.raw_select` for ``dialect_name``).

    Rows convert with :func:`streamwarden.audit.models.decode_row`.

    Args:
        flt: the filter; its ``limit`` caps this one query.
        after_seq: keyset pagination: only rows with ``seq > after_seq``.
        limit: page size; the query returns at most ``min(limit, flt.limit)`` rows. A caller
            paging with ``after_seq`` counts rows itself to honour ``flt.limit`` overall.

    Raises:
        InvalidInputError: if ``after_seq`` is not an int >= 0 or ``limit`` not a positive int.

    Thread-safety: pure function; the statement may be executed from any thread.
    """
    if after_seq is not None and (
        isinstance(after_seq, bool) or not isinstance(after_seq, int) or after_seq < 0
    ):
        raise InvalidInputError(f"after_seq must be a whole number >= 0, got {after_seq!r}")
    check_limit("limit", limit)
    statement = raw_select(dialect_name).where(*_conditions(flt))
    if after_seq is not None:
        statement = statement.where(audit_table.c.seq > after_seq)
    seq = audit_table.c.seq
    statement = statement.order_by(seq.desc() if newest_first else seq)
    bounds = [bound for bound in (limit, flt.limit) if bound is not None]
    if bounds:
        statement = statement.limit(min(bounds))
    return statement


def select_matching_ids(column: str, text: str, *, limit: int) -> sa.Select[Any]:
    """``SELECT DISTINCT`` the values of ``column`` (one of :data:`ID_COLUMNS`) equal to, or
    starting or ending with, ``text``: what a reader may mean by an id, a prefix of one, or
    the short form a table shows (its last characters). Rows are ``(value, exact)``: the
    value equal to ``text`` first (``exact`` true), then the others sorted, at most ``limit``.

    A leading ``…`` (as the table marks a shortened correlation id) is ignored. ``text`` is
    compared as is, case included, and ``%``, ``_`` and ``\\`` are plain characters, on SQLite
    and PostgreSQL alike. The database scans the column; no row is loaded.

    Raises:
        InvalidInputError: if ``column`` is not an id column, ``text`` is empty, longer than
            :data:`MAX_ID_LENGTH` or not printable, or ``limit`` is not a positive int.

    Thread-safety: pure function.
    """
    if column not in ID_COLUMNS:
        raise InvalidInputError(f"ids are matched in {', '.join(ID_COLUMNS)}; got {column!r}")
    wanted = check_id(column, text.removeprefix(ELLIPSIS) if isinstance(text, str) else text)
    check_limit("limit", limit)
    values = audit_table.c[column]
    size = len(wanted)
    # substr, not LIKE: case-sensitive on SQLite too, and nothing in ``text`` to escape.
    starts = sa.func.substr(values, 1, size) == wanted
    ends = sa.func.substr(values, sa.func.length(values) - size + 1) == wanted
    exact = (values == wanted).label("exact")
    return (sa.select(values, exact).distinct().where(sa.or_(starts, ends))
            .order_by(exact.desc(), values).limit(limit))
