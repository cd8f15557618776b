"""Appending to the hash chain in SQL: lock the tail, number, seal and insert in one transaction.

The chain stays linear under concurrent writers in several processes because each append
transaction first takes a database-wide lock on the chain: ``BEGIN IMMEDIATE`` on SQLite (the
database's write lock), a transaction-scoped advisory lock keyed on the table on PostgreSQL
(``pg_advisory_xact_lock``, which needs no privilege beyond INSERT and SELECT). Only then is
the tail row read, so two writers can never seal after the same row. On SQLite the tail
is not read again when no other connection has committed since this appender's last commit
on the same connection (``PRAGMA data_version`` unchanged under the write lock, see
:class:`Tail`). On PostgreSQL, after the tail this appender left, one statement bounds the
transaction, takes the lock and inserts the first new row, only if that tail is still the
chain's last row; only if it is not is the lock taken again and the tail read. (That check
may see the table as it was before the statement waited for the lock: a row another writer
added meanwhile then has the new row's ``seq``, the primary key refuses the insert, and the
append is made again from the tail as read.)

Before chaining onto the tail row the appender checks it: its hash must match its content,
its ``seq`` must leave room for the new rows, and it must link to the row before it (or be
row 1 after the genesis hash). A row inserted behind the log's back with ``seq = 2^63 - 1``,
``seq = 10^9`` or a wrong ``row_hash`` is refused with :class:`AuditIntegrityError` instead of
being chained onto.

An append engine need not test pooled connections before use (a round trip per append):
a connection found lost before the append's ``COMMIT`` was sent has committed nothing, and
the append is made once more on a fresh connection.

Every append transaction is bounded. SQLite: the busy timeout (a writer waits that long for
another's lock, then fails). PostgreSQL: ``lock_timeout`` and ``statement_timeout`` of
``lock_timeout`` seconds, and ``idle_in_transaction_session_timeout`` of half of it, so the
server ends the session of a writer frozen inside its transaction (paused, partitioned) and
releases the chain lock before the other writers' waits run out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy import Connection, Engine
from sqlalchemy.engine import URL

from streamwarden.audit.chain import (
    GENESIS_HASH,
    RAW_FIELDS,
    RawRow,
    canonical,
    raw_row,
    seal_row,
    sealed_record,
)
from streamwarden.audit.database import LOCK_TIMEOUT, WRITE_OPTION, is_sqlite, translate_error
from streamwarden.audit.models import audit_table, raw_select
from streamwarden.audit.records import OUTCOMES, SCHEMA_VERSION, AuditRecord
from streamwarden.audit.verify import self_hash
from streamwarden.errors import AuditError, AuditIntegrityError, InvalidInputError

# Advisory lock key: "SW" in the high bits, the table's oid in the low 32 bits, so that
# tables in different schemas of one database do not share a lock. One round trip sets the
# transaction's bounds, then waits for the lock (the select list is evaluated in order).
_LOCK_NAMESPACE = 0x5357 << 48
_PG_BOUNDED_LOCK = (
    "SELECT set_config('lock_timeout', %s, true), "
    "set_config('statement_timeout', %s, true), "
    "set_config('idle_in_transaction_session_timeout', %s, true), "
    "pg_advisory_xact_lock(%s + CAST(CAST(CAST(%s AS regclass) AS oid) AS bigint))"
)
#: The largest ``seq`` (PostgreSQL ``bigint``).
MAX_SEQ = 2**63 - 1
#: What an integer column holds on SQLite and PostgreSQL (BIGINT).
_INT64_MIN, _INT64_MAX = -(2**63), MAX_SEQ
_CHUNK = 500
_SEQ, _PREV, _ROW = (RAW_FIELDS.index(name) for name in ("seq", "prev_hash", "row_hash"))
_TAIL = sa.select(audit_table.c.seq, audit_table.c.row_hash).order_by(
    audit_table.c.seq.desc()).limit(1)
_WITNESS = "streamwarden_chain_witness"
_TAILS: dict[str, sa.Select[tuple[object, ...]]] = {
    name: raw_select(name).order_by(audit_table.c.seq.desc()).limit(2)
    for name in ("sqlite", "postgresql")
}


def _insert_sql(dialect_name: str, *, guarded: bool = False) -> str:
    """``INSERT`` of one row as stored (:data:`RAW_FIELDS` order, the values
    :func:`~streamwarden.audit.chain.raw_row` gives) for the driver's own cursor: the text
    the table stores on SQLite; on PostgreSQL each value cast to its column's type, the
    timestamp read as UTC and the details as ``json``, which keeps their text as it is (what
    :func:`raw_select` reads back).

    ``guarded`` (PostgreSQL): the statement first bounds the transaction and takes the chain
    lock (the parameters of :data:`_PG_BOUNDED_LOCK` come first), then inserts the row only
    if the chain's last row is the one whose ``seq`` and ``row_hash`` follow as two more
    parameters: lock, tail check and insert in one round trip.
    """
    if dialect_name == "sqlite":
        values = ", ".join("?" for _ in RAW_FIELDS)
        return f"INSERT INTO {audit_table.name} ({', '.join(RAW_FIELDS)}) VALUES ({values})"
    types = {name: "BIGINT" if name == "seq" else "json" if name == "details"
             else "INTEGER" if isinstance(audit_table.c[name].type, sa.Integer) else "VARCHAR"
             for name in RAW_FIELDS}
    values = ", ".join(
        "CAST(%s AS timestamp) AT TIME ZONE 'UTC'" if name == "occurred_at"
        else f"CAST(%s AS {types[name]})" for name in RAW_FIELDS)
    insert = f"INSERT INTO {audit_table.name} ({', '.join(RAW_FIELDS)}) "
    if not guarded:
        return f"{insert}VALUES ({values})"
    table = audit_table.name
    # The last row by a backward scan of the primary key: the same cheap plan whatever the
    # parameters (a generic plan for "NOT EXISTS (... seq > %s)" may scan the whole table).
    return (f"WITH chain_lock AS ({_PG_BOUNDED_LOCK}) {insert}SELECT {values} FROM chain_lock "
            f"WHERE (SELECT (seq, row_hash) FROM {table} ORDER BY seq DESC LIMIT 1) "
            "= (CAST(%s AS BIGINT), CAST(%s AS VARCHAR))")


_INSERTS = {name: _insert_sql(name) for name in ("sqlite", "postgresql")}
_GUARDED_INSERT = _insert_sql("postgresql", guarded=True)


@dataclass(frozen=True)
class Tail:
    """The chain's last row as an appender left it: its ``seq`` and ``row_hash``. A tail
    found equal to it was sealed by this appender and is not checked again.

    ``witness`` (SQLite) is the connection that committed it and that connection's
    ``PRAGMA data_version`` read under the write lock: while the same connection reads the
    same value under the lock again, no other connection has committed since, so the tail is
    still this one and is not even read. Immutable.
    """

    seq: int
    row_hash: str
    witness: tuple[object, int] | None = None


class Appended(NamedTuple):
    """What :func:`append_chain` stored: the records and the rows they were stored as (in
    order), and the tail they left (None when nothing was stored)."""

    prepared: Sequence[Prepared]
    rows: list[RawRow]
    tail: Tail | None

    def records(self) -> list[AuditRecord]:
        """The records as sealed (``seq``, ``prev_hash``, ``row_hash`` set), built on demand:
        a batch of appends needs only the tail."""
        return [sealed_record(prepared.record, row)
                for prepared, row in zip(self.prepared, self.rows, strict=True)]


class Prepared(NamedTuple):
    """A record :func:`prepare` checked, and its row as stored (:func:`raw_row`; the
    ``seq`` and hashes it carries are ignored, they are assigned when it is sealed)."""

    record: AuditRecord
    row: RawRow

    @property
    def event_id(self) -> str:
        """The record's ``event_id``."""
        return self.record.event_id


def prepare(record: AuditRecord) -> Prepared:
    """Check that ``record`` can be stored the same way on SQLite and PostgreSQL, and encode
    its row (each value once: sealing and inserting reuse it).

    Raises:
        InvalidInputError: not an AuditRecord, details not JSON-serialisable, a naive
            timestamp, an unknown outcome or schema version, a NUL character or lone
            surrogate in a text field (PostgreSQL refuses those), or an integer out of the
            64-bit range.

    Thread-safety: pure function.
    """
    if not isinstance(record, AuditRecord):
        raise InvalidInputError(f"expected an AuditRecord, got {type(record).__name__}")
    if record.schema_version != SCHEMA_VERSION:
        canonical(record)  # an older version's encoding, if it is one this version knows
    row = raw_row(record)
    if record.outcome not in OUTCOMES:
        raise InvalidInputError(f"audit outcome must be one of {', '.join(OUTCOMES)}",
                                operation="audit.append", correlation_id=record.correlation_id)
    # details is JSON text: a NUL in it is escaped, a lone surrogate is not.
    texts = [value for value in row if isinstance(value, str)]
    if _bad_text("".join(texts)):  # one pass over all of them; then find which
        name = next(name for name, value in zip(RAW_FIELDS, row, strict=True)
                    if isinstance(value, str) and _bad_text(value))
        raise InvalidInputError(f"audit field {name} contains a NUL character or a lone "
                                "surrogate", operation="audit.append",
                                correlation_id=record.correlation_id)
    numbers = [value for value in row if type(value) is int]
    if numbers and not _INT64_MIN <= min(numbers) <= max(numbers) <= _INT64_MAX:
        name = next(name for name, value in zip(RAW_FIELDS, row, strict=True)
                    if type(value) is int and not _INT64_MIN <= value <= _INT64_MAX)
        raise InvalidInputError(f"audit field {name} is out of the 64-bit integer range",
                                operation="audit.append", correlation_id=record.correlation_id)
    return Prepared(record, row)


def _bad_text(text: str) -> bool:
    if "\x00" in text:
        return True
    if text.isascii():
        return False
    try:
        text.encode()
    except UnicodeEncodeError:
        return True
    return False


def append_chain(
    engine: Engine, url: URL, records: Sequence[Prepared], *, skip_stored: bool = False,
    lock_timeout: float | None = None, trusted: Tail | None = None,
) -> Appended:
    """Seal ``records`` (from :func:`prepare`) after the chain's tail, in order, and insert
    them in one transaction.

    With ``skip_stored``, records whose ``event_id`` is already in the table are left out
    (replaying a spool that was partly written before is then harmless). ``trusted`` is the
    tail this appender left last time (not checked again if it is still the tail).

    Returns:
        The records as stored (``seq``, ``prev_hash``, ``row_hash`` set), in order, and the
        tail they left (pass it as ``trusted`` to the next call).

    Raises:
        AuditIntegrityError: if the tail row is not a row to chain onto (its hash does not
            match its content, it does not link to the row before it, or its ``seq`` leaves
            no room); the message names its ``seq``; nothing was written.
        InvalidInputError: if a record of an unknown schema version cannot be sealed;
            nothing was written.
        AuditUnavailableError: if the database is unreachable or the chain lock was not
            obtained within ``lock_timeout`` (default :data:`LOCK_TIMEOUT`); nothing was
            written, unless the connection was lost while committing, in which case the
            outcome is unknown (a spool replay with ``skip_stored`` then does not duplicate
            them).
        AuditError: if the database refused the rows (for example a duplicate ``event_id``)
            or failed otherwise; nothing was written.

    Thread-safety: safe to call from any thread and process at the same time.
    """
    guarded = trusted if records and not skip_stored and not is_sqlite(url) else None
    try:
        try:
            return _append_reconnecting(engine, url, records, skip_stored=skip_stored,
                                        lock_timeout=lock_timeout, trusted=trusted,
                                        guarded=guarded)
        except sa.exc.IntegrityError:
            if guarded is None:
                raise
            # Another writer added a row while this statement waited for the lock (module
            # docstring): append again, from the tail as read under the lock.
            return _append_reconnecting(engine, url, records, skip_stored=skip_stored,
                                        lock_timeout=lock_timeout, trusted=None, guarded=None)
    except (sa.exc.IntegrityError, sa.exc.DataError) as exc:
        reason = " ".join(str(exc.orig).split())[:300]
        raise AuditError(
            f"the audit database refused the record: {reason}", operation="audit.append"
        ) from None
    except sa.exc.SQLAlchemyError as exc:
        raise translate_error(exc, url, "audit.append") from None


class _LostConnectionError(Exception):
    """The connection was found lost before the append's ``COMMIT`` was sent: nothing was
    committed. ``error`` is the driver's error, as SQLAlchemy raised it."""

    def __init__(self, error: sa.exc.DBAPIError) -> None:
        super().__init__(str(error))
        self.error = error


def _append_reconnecting(engine: Engine, url: URL, records: Sequence[Prepared], *,
                         skip_stored: bool, lock_timeout: float | None, trusted: Tail | None,
                         guarded: Tail | None) -> Appended:
    """:func:`_append_once`, made once more on a fresh connection if the pooled one was
    found lost before anything was committed (a server restarted since it was last used)."""
    attempt = partial(_append_once, engine, url, records, skip_stored=skip_stored,
                      lock_timeout=lock_timeout, trusted=trusted, guarded=guarded)
    try:
        return attempt()
    except _LostConnectionError:
        engine.dispose(close=False)  # its other pooled connections are as stale
    try:
        return attempt()
    except _LostConnectionError as lost:
        raise lost.error from None


def _append_once(engine: Engine, url: URL, records: Sequence[Prepared], *, skip_stored: bool,
                 lock_timeout: float | None, trusted: Tail | None, guarded: Tail | None
                 ) -> Appended:
    """One append transaction (see :func:`append_chain`); ``guarded``: the tail to try the
    single-statement insert after (PostgreSQL).

    Raises:
        _LostConnectionError: the connection was lost before ``COMMIT`` (nothing committed).
    """
    with engine.connect() as connection:
        connection.execution_options(**{WRITE_OPTION: True})
        with connection.begin():
            try:
                todo, rows, witness = _statements(
                    connection, url, records, skip_stored=skip_stored,
                    lock_timeout=lock_timeout, trusted=trusted, guarded=guarded)
            except sa.exc.DBAPIError as exc:
                if exc.connection_invalidated:
                    raise _LostConnectionError(exc) from exc
                raise
        if not rows:
            return Appended(todo, rows, None)
        return Appended(todo, rows, Tail(rows[-1][_SEQ], rows[-1][_ROW], witness))


def _statements(connection: Connection, url: URL, records: Sequence[Prepared], *,
                skip_stored: bool, lock_timeout: float | None, trusted: Tail | None,
                guarded: Tail | None
                ) -> tuple[Sequence[Prepared], list[RawRow], tuple[object, int] | None]:
    """The statements of one append transaction: the records stored, their rows, and the
    SQLite witness of the tail they leave."""
    if guarded is not None:
        rows = _insert_after(connection, records, guarded, lock_timeout)
        if rows is not None:
            return records, rows, None
    begin_append(connection, url, lock_timeout)
    witness = _witness(connection) if is_sqlite(url) else None
    todo = _unstored(connection, records) if skip_stored else records
    return todo, _seal_and_insert(connection, url, todo, trusted, witness), witness


def _bounds(lock_timeout: float | None) -> tuple[str, str, str, int, str]:
    """The parameters of :data:`_PG_BOUNDED_LOCK`."""
    wait = LOCK_TIMEOUT if lock_timeout is None else lock_timeout
    lock_ms = f"{max(1, int(wait * 1000))}ms"
    return (lock_ms, lock_ms, f"{max(1, int(wait * 500))}ms", _LOCK_NAMESPACE,
            audit_table.name)


def _insert_after(connection: Connection, records: Sequence[Prepared], tail: Tail,
                  lock_timeout: float | None) -> list[RawRow] | None:
    """PostgreSQL: ``records`` sealed after ``tail`` and inserted, the first in the statement
    that takes the chain lock and checks that ``tail`` is still the last row; None (nothing
    inserted) if it is not."""
    rows = _seal(records, tail.seq, tail.row_hash)
    if not _execute(connection, _GUARDED_INSERT,
                    [(*_bounds(lock_timeout), *rows[0], tail.seq, tail.row_hash)]):
        return None
    _execute(connection, _INSERTS["postgresql"], rows[1:])
    return rows


def begin_append(connection: Connection, url: URL, lock_timeout: float | None = None) -> None:
    """Take the chain lock in ``connection``'s transaction, bounded as the module says.

    The connection must carry the :data:`~streamwarden.audit.database.WRITE_OPTION`
    execution option and be inside a transaction (SQLite: ``BEGIN IMMEDIATE`` took the lock).

    Raises:
        sqlalchemy.exc.SQLAlchemyError: if the lock is not obtained in time.

    Thread-safety: one call per connection at a time.
    """
    if is_sqlite(url):
        return  # BEGIN IMMEDIATE (WRITE_OPTION) already holds the database's write lock
    _execute(connection, _PG_BOUNDED_LOCK, [_bounds(lock_timeout)])


def _seal_and_insert(connection: Connection, url: URL, records: Sequence[Prepared],
                     trusted: Tail | None, witness: tuple[object, int] | None
                     ) -> list[RawRow]:
    """Seal ``records`` after the chain's tail, read (unless the SQLite ``witness`` vouches
    for it) and checked as :func:`check_tail` says, and insert them; returns their rows."""
    rows = _seal_after_tail(connection, url, records, trusted, witness)
    _execute(connection, _INSERTS[connection.dialect.name], rows)
    return rows


def _execute(connection: Connection, sql: str, rows: Sequence[Sequence[object]]) -> int:
    """Execute ``sql`` once per row of parameters through the driver's own cursor, in
    ``connection``'s transaction (no compilation or per-row conversion by SQLAlchemy);
    returns how many rows it changed.

    Raises:
        sqlalchemy.exc.DBAPIError: the driver's error, as SQLAlchemy would raise it (the
            connection invalidated if the driver lost it).
    """
    if not rows:
        return 0
    dialect = connection.dialect
    driver = connection.connection.driver_connection
    assert driver is not None
    cursor = driver.cursor()
    try:
        try:
            if len(rows) == 1:
                cursor.execute(sql, rows[0])
            else:
                cursor.executemany(sql, rows)
            return int(cursor.rowcount)
        finally:
            cursor.close()
    except dialect.loaded_dbapi.Error as exc:
        lost = dialect.is_disconnect(exc, connection.connection.dbapi_connection, cursor)
        if lost:
            connection.invalidate(exc)
        raise sa.exc.DBAPIError.instance(sql, rows, exc, dialect.loaded_dbapi.Error,
                                         connection_invalidated=lost,
                                         dialect=dialect) from exc


def _unstored(connection: Connection, records: Sequence[Prepared]) -> list[Prepared]:
    stored: set[str] = set()
    for start in range(0, len(records), _CHUNK):
        ids = [record.event_id for record in records[start:start + _CHUNK]]
        query = sa.select(audit_table.c.event_id).where(audit_table.c.event_id.in_(ids))
        stored.update(connection.execute(query).scalars())
    return [record for record in records if record.event_id not in stored]


def _witness(connection: Connection) -> tuple[object, int]:
    """A token of the SQLite connection (kept in the pool's per-DBAPI-connection ``info``,
    which a reconnect clears) and its ``PRAGMA data_version``, read under the write lock."""
    pooled = connection.connection
    token = pooled.info.setdefault(_WITNESS, object())
    cursor = pooled.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        version = cursor.execute("PRAGMA data_version").fetchone()[0]
    finally:
        cursor.close()
    return token, int(version)


def _seal_after_tail(connection: Connection, url: URL, records: Sequence[Prepared],
                     trusted: Tail | None, witness: tuple[object, int] | None
                     ) -> list[RawRow]:
    """The rows of ``records`` sealed after the chain's tail (checked unless ``trusted``)."""
    seq, prev_hash = 0, GENESIS_HASH
    if trusted is not None and witness is not None and trusted.witness == witness:
        # Same connection, no commit by any other since it sealed the trusted tail.
        tail: Any = (trusted.seq, trusted.row_hash)
    else:
        tail = connection.execute(_TAIL).first()
    if trusted is not None and tail is not None and tuple(tail) == (trusted.seq,
                                                                    trusted.row_hash):
        seq, prev_hash = trusted.seq, trusted.row_hash
    elif tail is not None:
        rows = [tuple(row) for row in connection.execute(
            _TAILS["sqlite" if is_sqlite(url) else "postgresql"])]
        seq, prev_hash = check_tail(rows[0], rows[1] if len(rows) > 1 else None, len(records))
    return _seal(records, seq, prev_hash)


def _seal(records: Sequence[Prepared], seq: int, prev_hash: str) -> list[RawRow]:
    """The rows of ``records`` sealed as numbers ``seq + 1, ...`` after ``prev_hash``."""
    rows = []
    for record, unsealed in records:
        seq += 1
        row = seal_row(record, unsealed, seq=seq, prev_hash=prev_hash)
        prev_hash = row[_ROW]
        rows.append(row)
    return rows


def check_tail(tail: RawRow, before: RawRow | None, adding: int) -> tuple[int, str]:
    """The ``seq`` and ``row_hash`` of ``tail`` (the chain's last row; ``before`` the one
    before it), after checking that ``adding`` rows can be chained onto it.

    Raises:
        AuditIntegrityError: naming the tail's ``seq``, if its hash does not match its
            content, it does not link to ``before`` (or to the genesis hash as row 1), or
            ``adding`` more rows would not fit in a ``bigint``.

    Thread-safety: pure function.
    """
    seq, row_hash = tail[_SEQ], tail[_ROW]
    problem = _tail_problem(tail, before, adding)
    if problem is not None:
        raise AuditIntegrityError(
            f"refusing to append after the audit chain's last row (seq {seq!r:.40}): {problem};"
            " run `streamwarden audit verify`", operation="audit.append",
        )
    return seq, row_hash


def _tail_problem(tail: RawRow, before: RawRow | None, adding: int) -> str | None:
    seq = tail[_SEQ]
    if type(seq) is not int or seq < 1:
        return "its seq is not a positive whole number"
    if seq > MAX_SEQ - adding:
        return f"its seq leaves no room for {adding} more rows below 2^63"
    if self_hash(tail, seq) != tail[_ROW]:
        return "its row_hash does not match its content"
    if seq == 1:
        return None if tail[_PREV] == GENESIS_HASH else "row 1 does not follow the genesis hash"
    if before is None or before[_SEQ] != seq - 1 or before[_ROW] != tail[_PREV]:
        return f"it does not link to row {seq - 1} (missing, or with another hash)"
    return None
