"""Appending to the hash chain in SQL: lock the tail, number, seal and insert in one transaction.

The chain stays linear under concurrent writers in several processes because each append
transaction first takes a database-wide lock on the chain: ``BEGIN IMMEDIATE`` on SQLite (the
database's write lock), a transaction-scoped advisory lock keyed on the table on PostgreSQL
(``pg_advisory_xact_lock``, which needs no privilege beyond INSERT and SELECT). Only then is
the tail row read, so two writers can never seal after the same row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields

import sqlalchemy as sa
from sqlalchemy import Connection, Engine
from sqlalchemy.engine import URL

from streamwarden.audit.chain import GENESIS_HASH, canonical, seal
from streamwarden.audit.database import LOCK_TIMEOUT, WRITE_OPTION, is_sqlite, translate_error
from streamwarden.audit.models import audit_table, record_to_row
from streamwarden.audit.records import AuditRecord
from streamwarden.errors import InvalidInputError

# Advisory lock key: "SW" in the high bits, the table's oid in the low 32 bits, so that
# tables in different schemas of one database do not share a lock.
_LOCK_NAMESPACE = 0x5357 << 48
_PG_LOCK = sa.text(
    "SELECT pg_advisory_xact_lock(:namespace + CAST(CAST(CAST(:table AS regclass) AS oid) "
    "AS bigint))"
)
_PG_LOCK_TIMEOUT = sa.text(f"SET LOCAL lock_timeout = '{int(LOCK_TIMEOUT * 1000)}ms'")
_TAIL = (
    sa.select(audit_table.c.seq, audit_table.c.row_hash)
    .order_by(audit_table.c.seq.desc())
    .limit(1)
)
_CHUNK = 500
_TEXT_FIELDS = tuple(f.name for f in fields(AuditRecord) if f.name != "details")


def check_record(record: AuditRecord) -> None:
    """Refuse a record that cannot be stored the same way on SQLite and PostgreSQL.

    Raises:
        InvalidInputError: not an AuditRecord, details not JSON-serialisable, a naive
            timestamp, or a NUL character in a text field (PostgreSQL refuses those).

    Thread-safety: pure function.
    """
    if not isinstance(record, AuditRecord):
        raise InvalidInputError(f"expected an AuditRecord, got {type(record).__name__}")
    canonical(record)  # raises InvalidInputError for details that are not JSON-serialisable
    for name in _TEXT_FIELDS:
        value = getattr(record, name)
        if isinstance(value, str) and "\x00" in value:
            raise InvalidInputError(f"audit field {name} contains a NUL character",
                                    operation="audit.append", correlation_id=record.correlation_id)


def append_chain(
    engine: Engine, url: URL, records: Sequence[AuditRecord], *, skip_stored: bool = False
) -> list[AuditRecord]:
    """Seal ``records`` after the chain's tail, in order, and insert them in one transaction.

    With ``skip_stored``, records whose ``event_id`` is already in the table are left out
    (replaying a spool that was partly written before is then harmless).

    Returns:
        The records as stored (``seq``, ``prev_hash``, ``row_hash`` set), in order.

    Raises:
        InvalidInputError: if a record cannot be encoded or the database refuses it (for
            example a duplicate ``event_id``); nothing was written.
        AuditUnavailableError: if the database is unreachable or the chain lock was not
            obtained within :data:`LOCK_TIMEOUT`; nothing was written, unless the connection
            was lost while committing, in which case the outcome is unknown (a spool replay
            with ``skip_stored`` then does not duplicate them).
        AuditError: on any other database error; nothing was written.

    Thread-safety: safe to call from any thread and process at the same time.
    """
    try:
        with engine.connect() as connection:
            connection.execution_options(**{WRITE_OPTION: True})
            with connection.begin():
                _lock_chain(connection, url)
                todo = _unstored(connection, records) if skip_stored else list(records)
                sealed = _seal_after_tail(connection, todo)
                if sealed:
                    connection.execute(
                        sa.insert(audit_table), [record_to_row(record) for record in sealed]
                    )
            return sealed
    except (sa.exc.IntegrityError, sa.exc.DataError) as exc:
        reason = " ".join(str(exc.orig).split())[:300]
        raise InvalidInputError(
            f"the audit database refused the record: {reason}", operation="audit.append"
        ) from None
    except sa.exc.SQLAlchemyError as exc:
        raise translate_error(exc, url, "audit.append") from None


def _lock_chain(connection: Connection, url: URL) -> None:
    if is_sqlite(url):
        return  # BEGIN IMMEDIATE (WRITE_OPTION) already holds the database's write lock
    connection.execute(_PG_LOCK_TIMEOUT)
    connection.execute(_PG_LOCK, {"namespace": _LOCK_NAMESPACE, "table": audit_table.name})


def _unstored(connection: Connection, records: Sequence[AuditRecord]) -> list[AuditRecord]:
    stored: set[str] = set()
    for start in range(0, len(records), _CHUNK):
        ids = [record.event_id for record in records[start:start + _CHUNK]]
        query = sa.select(audit_table.c.event_id).where(audit_table.c.event_id.in_(ids))
        stored.update(connection.execute(query).scalars())
    return [record for record in records if record.event_id not in stored]


def _seal_after_tail(connection: Connection, records: Sequence[AuditRecord]) -> list[AuditRecord]:
    tail = connection.execute(_TAIL).first()
    seq, prev_hash = (0, GENESIS_HASH) if tail is None else (int(tail.seq), str(tail.row_hash))
    sealed = []
    for record in records:
        seq += 1
        stored = seal(record, seq=seq, prev_hash=prev_hash)
        prev_hash = str(stored.row_hash)
        sealed.append(stored)
    return sealed
