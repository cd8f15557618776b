"""The ``lifecycle_audit`` table as a SQLAlchemy 2.x typed declarative model.

One :class:`AuditRow` is one :class:`~streamwarden.audit.records.AuditRecord`;
:func:`record_to_row` and :func:`row_to_record` convert between them without loss, so that a
record read back hashes to the same ``row_hash`` as the record written (see
:mod:`streamwarden.audit.chain`).

The schema itself is created only by the Alembic migrations in :mod:`streamwarden.migrations`;
this model is what the code reads and writes, and the tests check that the two do not drift.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from streamwarden.audit.chain import RAW_FIELDS, RawRow, details_text
from streamwarden.audit.records import OUTCOMES, AuditRecord, Outcome
from streamwarden.errors import InvalidInputError

TABLE_NAME = "lifecycle_audit"

NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp with microseconds that round-trips exactly.

    PostgreSQL stores it as ``timestamp with time zone``; SQLite, which has no time zones, as
    naive UTC text in SQLAlchemy's fixed-width format (so text order is time order). Reading
    gives back a ``datetime`` in :data:`datetime.UTC` on both.

    Raises:
        InvalidInputError: when binding a naive ``datetime``.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise InvalidInputError("audit timestamps must be timezone-aware")
        utc = value.astimezone(UTC)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class CanonicalJSON(sa.types.TypeDecorator[dict[str, Any]]):
    """A JSON column written as canonical JSON text (``chain.details_text``), so that the
    stored text is the one the hash chain covers and verification can hash it without
    parsing it. Reads as the impl's JSON does.

    Raises:
        InvalidInputError: when binding a value that is not JSON-serialisable.
    """

    impl = sa.JSON
    cache_ok = True

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], str | None]:
        def process(value: Any) -> str | None:
            return None if value is None else details_text(value)

        return process


class AuditBase(DeclarativeBase):
    """Declarative base of the audit models; its metadata is what the migrations create."""

    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


_OUTCOME_CHECK = "outcome IN (" + ", ".join(f"'{outcome}'" for outcome in OUTCOMES) + ")"


class AuditRow(AuditBase):
    """One row of ``lifecycle_audit``: an appended, numbered and chained audit record.

    Append-only: the migration adds triggers that refuse UPDATE and DELETE.
    """

    __tablename__ = TABLE_NAME
    __table_args__ = (
        sa.CheckConstraint(_OUTCOME_CHECK, name="outcome"),
        sa.Index(None, "correlation_id", "seq"),
        sa.Index(None, "lifecycle_id", "seq"),
        sa.Index(None, "fingerprint", "seq"),
        sa.Index(None, "kind", "event", "seq"),
        sa.Index(None, "occurred_at"),
    )

    seq: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True, autoincrement=False)
    event_id: Mapped[str] = mapped_column(sa.String, unique=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    lifecycle_id: Mapped[str] = mapped_column(sa.String)
    fingerprint: Mapped[str] = mapped_column(sa.String)
    kind: Mapped[str] = mapped_column(sa.String)
    event: Mapped[str] = mapped_column(sa.String)
    from_state: Mapped[str | None] = mapped_column(sa.String)
    to_state: Mapped[str | None] = mapped_column(sa.String)
    refs_before: Mapped[int | None] = mapped_column(sa.Integer)
    refs_after: Mapped[int | None] = mapped_column(sa.Integer)
    lease_id: Mapped[str | None] = mapped_column(sa.String)
    owner: Mapped[str | None] = mapped_column(sa.String)
    correlation_id: Mapped[str] = mapped_column(sa.String)
    causation_id: Mapped[str | None] = mapped_column(sa.String)
    host: Mapped[str] = mapped_column(sa.String)
    pid: Mapped[int] = mapped_column(sa.Integer)
    outcome: Mapped[str] = mapped_column(sa.String)
    error_type: Mapped[str | None] = mapped_column(sa.String)
    error_message: Mapped[str | None] = mapped_column(sa.String)
    details: Mapped[dict[str, Any]] = mapped_column(CanonicalJSON)
    schema_version: Mapped[int] = mapped_column(sa.Integer)
    prev_hash: Mapped[str] = mapped_column(sa.String(64))
    row_hash: Mapped[str] = mapped_column(sa.String(64))


audit_table: sa.Table = cast(sa.Table, AuditRow.__table__)
#: Column names in table order; the same names as the fields of :class:`AuditRecord`.
COLUMNS: tuple[str, ...] = tuple(column.name for column in audit_table.columns)
_COLUMN_VALUES = attrgetter(*COLUMNS)


def record_to_row(record: AuditRecord) -> dict[str, Any]:
    """The column values of a sealed ``record``, ready for ``insert(audit_table)``.

    Raises:
        InvalidInputError: if ``record`` has no ``seq``, ``prev_hash`` or ``row_hash`` yet.

    Thread-safety: pure.
    """
    if record.seq is None or record.prev_hash is None or record.row_hash is None:
        raise InvalidInputError(
            "only sealed audit records (seq and hashes set) can be written",
            operation="audit.append", correlation_id=record.correlation_id,
        )
    values = dict(zip(COLUMNS, _COLUMN_VALUES(record), strict=True))
    values["details"] = dict(record.details)
    return values


def row_to_record(row: AuditRow | sa.Row[Any] | Mapping[str, Any]) -> AuditRecord:
    """The :class:`AuditRecord` stored in ``row``.

    ``row`` may be an :class:`AuditRow`, a Core result row over the table's columns, or a
    mapping of column names to values (``result.mappings()``).

    Raises:
        KeyError: if a column is missing from a row or mapping.

    Thread-safety: pure.
    """
    if isinstance(row, AuditRow):
        values: Mapping[Any, Any] = {name: getattr(row, name) for name in COLUMNS}
    elif isinstance(row, sa.Row):
        values = row._mapping
    else:
        values = row
    return AuditRecord(
        seq=values["seq"],
        event_id=values["event_id"],
        occurred_at=values["occurred_at"],
        lifecycle_id=values["lifecycle_id"],
        fingerprint=values["fingerprint"],
        kind=values["kind"],
        event=values["event"],
        from_state=values["from_state"],
        to_state=values["to_state"],
        refs_before=values["refs_before"],
        refs_after=values["refs_after"],
        lease_id=values["lease_id"],
        owner=values["owner"],
        correlation_id=values["correlation_id"],
        causation_id=values["causation_id"],
        host=values["host"],
        pid=values["pid"],
        outcome=cast(Outcome, values["outcome"]),
        error_type=values["error_type"],
        error_message=values["error_message"],
        details=dict(values["details"]),
        schema_version=values["schema_version"],
        prev_hash=values["prev_hash"],
        row_hash=values["row_hash"],
    )


class UndecodableRowError(ValueError):
    """A stored row that is not an audit record: a column has the wrong type, the timestamp
    or the details do not parse, the outcome is unknown. ``seq`` is the row's ``seq`` as
    stored (maybe not an int); the message says which column."""

    def __init__(self, seq: object, message: str) -> None:
        super().__init__(message)
        self.seq = seq


_TEXT = (str,)
_OPTIONAL_TEXT = (str, type(None))
_INT = (int,)
_OPTIONAL_INT = (int, type(None))
#: The Python types a stored row's values may have, in :data:`RAW_FIELDS` order.
RAW_TYPES: tuple[tuple[type, ...], ...] = tuple(
    _INT if name in ("seq", "pid", "schema_version")
    else _OPTIONAL_INT if name in ("refs_before", "refs_after")
    else _TEXT if not audit_table.c[name].nullable
    else _OPTIONAL_TEXT
    for name in RAW_FIELDS
)
_OUTCOMES = frozenset(OUTCOMES)
_INDEX = {name: index for index, name in enumerate(RAW_FIELDS)}


def raw_select(dialect_name: str) -> sa.Select[Any]:
    """``SELECT`` of every column in :data:`RAW_FIELDS` order, as stored: the timestamp as
    ``YYYY-MM-DD HH:MM:SS.ffffff`` UTC text and ``details`` as its JSON text (add filters,
    order and limit). Decode the rows with :func:`decode_row`.

    Thread-safety: pure function.
    """
    columns: list[sa.ColumnElement[Any]] = []
    for name in RAW_FIELDS:
        column = audit_table.c[name]
        if name == "occurred_at":
            columns.append(
                sa.type_coerce(column, sa.String) if dialect_name == "sqlite"
                else sa.func.to_char(sa.func.timezone("UTC", column),
                                     "YYYY-MM-DD HH24:MI:SS.US"))
        elif name == "details":
            columns.append(sa.type_coerce(column, sa.String) if dialect_name == "sqlite"
                           else sa.cast(column, sa.Text))
        else:
            columns.append(column)
    return sa.select(*columns)


def decode_row(row: RawRow) -> AuditRecord:
    """The :class:`AuditRecord` of a stored row (:func:`raw_select`).

    Raises:
        UndecodableRowError: if a column has the wrong type or does not parse (bad timestamp,
            details not a JSON object, unknown outcome); the message names the column.

    Thread-safety: pure function.
    """
    if len(row) != len(RAW_FIELDS):
        raise UndecodableRowError(None, f"has {len(row)} columns, not {len(RAW_FIELDS)}")
    seq = row[_INDEX["seq"]]
    for name, value, types in zip(RAW_FIELDS, row, RAW_TYPES, strict=True):
        if type(value) not in types:
            raise UndecodableRowError(seq, f"{name} is {_describe(value)}")
        if type(value) is str and not value.isascii() and not _utf8(value):
            raise UndecodableRowError(seq, f"{name} is not UTF-8 text")
    values = dict(zip(RAW_FIELDS, row, strict=True))
    try:
        occurred_at = datetime.fromisoformat(values["occurred_at"])
    except ValueError:
        raise UndecodableRowError(seq, f"occurred_at {values['occurred_at']!r:.40} is not a "
                                       "timestamp") from None
    if occurred_at.tzinfo is not None:
        raise UndecodableRowError(seq, "occurred_at is not stored in UTC")
    details = _details(seq, values["details"])
    if values["outcome"] not in _OUTCOMES:
        raise UndecodableRowError(seq, f"outcome {values['outcome']!r:.40} is unknown")
    values["occurred_at"] = occurred_at.replace(tzinfo=UTC)
    values["details"] = details
    return AuditRecord(**values)


def _details(seq: Any, text: str) -> dict[str, Any]:
    try:
        details = json.loads(text)
    except ValueError:
        raise UndecodableRowError(seq, "details is not valid JSON") from None
    except RecursionError:  # the parser recurses: a deep enough nesting exhausts the stack
        raise UndecodableRowError(seq, "details is nested too deeply") from None
    if type(details) is not dict:
        raise UndecodableRowError(seq, "details is not a JSON object")
    return details


def _utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _describe(value: object) -> str:
    if value is None:
        return "NULL"
    return f"a {type(value).__name__} ({value!r:.40})"
