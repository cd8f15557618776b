"""Records, sealed histories and raw SQL access for the audit log tests.

The raw helpers work "behind the back" of AuditLog: a plain SQLAlchemy engine on the test's URL,
and, for tampering, the append-only triggers switched off (SQLite: dropped; PostgreSQL:
``ALTER TABLE ... DISABLE TRIGGER USER``, which needs the table's owner).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from streamwarden import AuditRecord
from streamwarden.audit.chain import GENESIS_HASH, seal
from streamwarden.audit.models import audit_table, record_to_row, row_to_record
from streamwarden.ids import new_id

T0 = datetime(2026, 1, 2, 9, 30, 0, 123456, tzinfo=UTC)


def make_record(index: int = 0, **changes: Any) -> AuditRecord:
    """An unsealed record with a fresh event id; ``changes`` override fields."""
    base = AuditRecord(
        event_id=new_id(), occurred_at=T0 + timedelta(microseconds=index),
        lifecycle_id=f"lc-{index % 3}", fingerprint="f" * 24,
        kind="market_data" if index % 2 == 0 else "trade_updates",
        event="acquire", from_state="idle", to_state="starting", refs_before=0, refs_after=1,
        correlation_id=f"corr-{index % 4}", host="host-1", pid=4242,
        details={"index": index, "symbols": ["AAPL", "MSFT"], "note": "é ✓"},
    )
    return replace(base, **changes)


def seal_all(records: Iterable[AuditRecord]) -> list[AuditRecord]:
    """``records`` numbered from 1 and chained from the genesis hash."""
    sealed: list[AuditRecord] = []
    prev_hash = GENESIS_HASH
    for seq, record in enumerate(records, start=1):
        sealed.append(seal(record, seq=seq, prev_hash=prev_hash))
        prev_hash = sealed[-1].row_hash or ""
    return sealed


def history(count: int) -> list[AuditRecord]:
    """A sealed chain of ``count`` records."""
    return seal_all(make_record(index) for index in range(count))


@contextmanager
def raw(url: str) -> Iterator[sa.Connection]:
    """A plain SQLAlchemy connection in a transaction (committed on success)."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            yield connection
    finally:
        engine.dispose()


def insert_rows(connection: sa.Connection, records: Iterable[AuditRecord]) -> None:
    """Insert sealed records as they are (no numbering, no chaining)."""
    rows = [record_to_row(record) for record in records]
    if rows:
        connection.execute(sa.insert(audit_table), rows)


def stored(url: str) -> list[AuditRecord]:
    """Every row, in seq order."""
    with raw(url) as connection:
        rows = connection.execute(sa.select(audit_table).order_by(audit_table.c.seq))
        return [row_to_record(row) for row in rows]


def disable_triggers(connection: sa.Connection) -> None:
    """Switch the append-only triggers off, so that a test can tamper with the table."""
    if connection.dialect.name == "sqlite":
        connection.exec_driver_sql("DROP TRIGGER IF EXISTS lifecycle_audit_no_update")
        connection.exec_driver_sql("DROP TRIGGER IF EXISTS lifecycle_audit_no_delete")
    else:
        connection.exec_driver_sql("ALTER TABLE lifecycle_audit DISABLE TRIGGER USER")
