"""The lifecycle_audit model: exact round trips of records through SQL on both engines."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from streamwarden import InvalidInputError
from streamwarden.audit.chain import link
from streamwarden.audit.migrate import upgrade
from streamwarden.audit.models import (
    COLUMNS,
    AuditRow,
    UTCDateTime,
    audit_table,
    record_to_row,
    row_to_record,
)
from streamwarden.audit.records import AuditRecord
from tests.audit.chain_data import history, insert_rows, make_record, raw, stored


def test_the_model_has_every_field_of_the_record_and_the_report_indexes():
    assert set(COLUMNS) == set(AuditRecord.__dataclass_fields__)
    assert audit_table.name == "lifecycle_audit"
    assert [column.name for column in audit_table.primary_key] == ["seq"]
    indexed = {tuple(column.name for column in index.columns) for index in audit_table.indexes}
    assert {("correlation_id", "seq"), ("lifecycle_id", "seq"), ("fingerprint", "seq"),
            ("kind", "event", "seq"), ("occurred_at",)} <= indexed
    assert not audit_table.c.correlation_id.nullable and audit_table.c.lease_id.nullable


def test_record_to_row_and_back_without_sql():
    sealed = history(2)[1]
    row = record_to_row(sealed)
    assert row["details"] == dict(sealed.details) and row["seq"] == 2
    assert row_to_record(row) == sealed
    assert row_to_record(AuditRow(**row)) == sealed


def test_record_to_row_refuses_unsealed_records():
    with pytest.raises(InvalidInputError, match="sealed"):
        record_to_row(make_record())


def test_utc_datetime_refuses_naive_times():
    column = UTCDateTime()
    with pytest.raises(InvalidInputError, match="timezone-aware"):
        column.process_bind_param(datetime(2026, 1, 1), sa.create_engine("sqlite://").dialect)
    assert column.process_bind_param(None, sa.create_engine("sqlite://").dialect) is None
    assert column.process_result_value(None, sa.create_engine("sqlite://").dialect) is None


def test_rows_round_trip_exactly(db_url):
    upgrade(db_url)
    tokyo = timezone(timedelta(hours=9))
    records = history(3)
    odd = replace(records[2], occurred_at=datetime(2026, 3, 4, 23, 59, 59, 999999, tokyo),
                  details={"nested": {"list": [1, 2.5, None, True]}, "text": "naïve \"q\" ✓"},
                  owner=None, lease_id="lease-1", error_type="X", error_message="m")
    written = [*records[:2], odd]
    with raw(db_url) as connection:
        insert_rows(connection, written)
    back = stored(db_url)
    assert back[:2] == records[:2]
    assert back[2].occurred_at == odd.occurred_at
    assert back[2].occurred_at.tzinfo == UTC
    assert back[2].occurred_at.microsecond == 999999
    assert back[2].details == odd.details
    for record in back:  # the content hashes the same after the round trip
        assert link(record, record.prev_hash or "") == link(
            next(r for r in written if r.seq == record.seq), record.prev_hash or "")


def test_time_bounds_compare_in_utc(db_url):
    upgrade(db_url)
    with raw(db_url) as connection:
        insert_rows(connection, history(3))
        column = audit_table.c.occurred_at
        paris = timezone(timedelta(hours=1))
        bound = history(3)[1].occurred_at.astimezone(paris)
        seqs = connection.execute(sa.select(audit_table.c.seq).where(column >= bound)).scalars()
        assert list(seqs) == [2, 3]
