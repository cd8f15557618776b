"""Rendering records: JSON and CSV carry every column losslessly; the table is readable."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timedelta, timezone

import pytest
from rich.console import Console

from streamwarden import InMemoryAuditSink, InvalidInputError
from streamwarden.audit.report import (
    COLUMNS,
    display_time,
    format_time,
    record_to_json,
    render,
    render_table,
    short_id,
)
from tests.audit.histories import record, run_history


@pytest.fixture
def history_records(creds, fast_settings):
    sink = InMemoryAuditSink()
    run_history(sink, creds, fast_settings)
    return sink.records()


def test_columns_are_the_audit_table_columns():
    from streamwarden.audit.models import COLUMNS as TABLE_COLUMNS  # noqa: PLC0415

    assert COLUMNS == TABLE_COLUMNS


def test_json_is_an_array_of_every_column_with_utc_microsecond_times(history_records):
    out = io.StringIO()
    assert render(history_records, "json", out) == len(history_records)
    rows = json.loads(out.getvalue())
    assert [row["seq"] for row in rows] == [r.seq for r in history_records]
    assert all(list(row) == list(COLUMNS) for row in rows)
    first, source = rows[0], history_records[0]
    assert first["occurred_at"] == source.occurred_at.isoformat(timespec="microseconds")
    assert first["occurred_at"].endswith("+00:00") and len(first["occurred_at"]) == 32
    assert first["row_hash"] == source.row_hash and first["owner"] == "momentum"
    assert {row["correlation_id"] for row in rows} == {"run-1", "run-2", "run-3"}


def test_times_in_other_zones_are_written_in_utc():
    eastern = timezone(timedelta(hours=-5))
    moment = datetime(2026, 1, 2, 4, 30, 0, 7, tzinfo=eastern)
    assert format_time(moment) == "2026-01-02T09:30:00.000007+00:00"
    assert display_time(moment) == "2026-01-02 09:30:00.000007"
    with pytest.raises(InvalidInputError, match="timezone-aware"):
        record_to_json(record(occurred_at=datetime(2026, 1, 2)))


def test_csv_has_a_header_of_every_column_and_reads_back(history_records):
    out = io.StringIO()
    render(history_records, "csv", out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert len(rows) == len(history_records)
    for row, source in zip(rows, history_records, strict=True):
        assert list(row) == list(COLUMNS)
        assert int(row["seq"]) == source.seq and row["event"] == source.event
        assert row["lease_id"] == (source.lease_id or "")
        assert json.loads(row["details"]) == dict(source.details)
        assert datetime.fromisoformat(row["occurred_at"]) == source.occurred_at


def test_csv_quotes_commas_quotes_and_newlines():
    awkward = record(seq=1, error_type="X", error_message='a, "quoted"\nsecond line',
                     details={"k": "v,w"})
    out = io.StringIO()
    render([awkward], "csv", out)
    (row,) = csv.DictReader(io.StringIO(out.getvalue()))
    assert row["error_message"] == 'a, "quoted"\nsecond line'
    assert json.loads(row["details"]) == {"k": "v,w"}


def test_table_shows_the_readable_columns_literally(history_records):
    out = io.StringIO()
    assert render_table(history_records, Console(file=out, width=250), title="t") == len(
        history_records)
    text = out.getvalue()
    for header in ("seq", "time (UTC)", "lifecycle", "kind", "event", "from -> to", "refs",
                   "lease", "owner", "correlation", "outcome", "reason", "cause"):
        assert header in text
    first = history_records[0]
    assert short_id(first.lifecycle_id) in text and first.lifecycle_id not in text
    assert "idle -> starting" in text and "0->1" in text
    # Owners are shown literally: rich markup in a value must not be interpreted.
    assert "[bold]mean-reversion[/bold]" in text
    assert display_time(first.occurred_at) in text


def test_table_shows_rejections_and_errors():
    rejected = record(seq=7, outcome="rejected", to_state=None, lease_id=None,
                      error_type="InvalidTransitionError", error_message="stopped")
    bare = record(seq=8, event="closed", from_state=None, to_state="stopped",
                  refs_before=None, refs_after=None, error_message="forced close")
    out = io.StringIO()
    render([rejected, bare], "table", out, console=Console(file=out, width=250))
    text = out.getvalue()
    assert "? -> stopped" in text and "forced close" in text
    assert "idle -> (none)" in text and "rejected" in text
    assert "InvalidTransitionError: stopped" in text


def test_empty_input_renders_empty_documents():
    out = io.StringIO()
    assert render([], "json", out) == 0 and json.loads(out.getvalue()) == []
    out = io.StringIO()
    assert render([], "csv", out) == 0 and out.getvalue().strip() == ",".join(COLUMNS)


def test_unknown_format_is_refused():
    with pytest.raises(InvalidInputError, match="table, json, csv"):
        render([], "xml", io.StringIO())


def test_short_id_is_the_random_tail():
    assert short_id("01JTESTLIFECYCLE0000ABCDEF") == "00ABCDEF"
    assert short_id(None) == ""
