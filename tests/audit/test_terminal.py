"""Terminal output that fits: the report is a table on a wide console and a block per record on
a narrow one; ids are never split across lines; reasons and causes are shown."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import pytest
from rich.console import Console

from streamwarden import ConnectionManager, InMemoryAuditSink
from streamwarden.audit.report import display_time, render_table, short_id
from streamwarden.cli import main
from streamwarden.ids import new_id
from streamwarden.testing import InMemoryTransportFactory
from tests.audit.histories import T0, open_log, record, run_history
from tests.waiting import wait_until

#: Lines a record may take in the block layout at 80 columns (the old table took about 32).
BLOCK_LINES_PER_RECORD = 7


@pytest.fixture
def history_records(creds, fast_settings):
    sink = InMemoryAuditSink()
    run_history(sink, creds, fast_settings)
    return sink.records()


def rendered(records, width: int, **options) -> list[str]:
    out = io.StringIO()
    assert render_table(records, Console(file=out, width=width), title="trail",
                        **options) == len(records)
    lines = out.getvalue().splitlines()
    assert all(len(line) <= width for line in lines)
    return lines


def line_of(lines: list[str], *parts: str) -> str:
    """The first line holding every part: none of them was split or moved to another line."""
    found = [line for line in lines if all(part in line for part in parts)]
    assert found, parts
    return found[0]


@pytest.mark.parametrize("width", [160, 200])
def test_a_wide_console_gets_a_table_whose_fixed_columns_never_wrap(history_records, width):
    lines = rendered(history_records, width)
    assert line_of(lines, "seq", "time (UTC)", "lifecycle", "from -> to", "reason", "cause")
    for source in history_records:
        states = f"{source.from_state} -> {source.to_state}"
        line_of(lines, f" {source.seq} ", display_time(source.occurred_at),
                short_id(source.lifecycle_id), source.kind, source.event, states,
                short_id(source.lease_id), source.correlation_id, source.outcome,
                short_id(source.causation_id))
        assert source.lifecycle_id not in "\n".join(lines)
    if width == 200:  # room for every column: one line per record
        assert len(lines) == 3 + len(history_records)


def test_a_narrow_console_gets_a_block_per_record_with_whole_ids(history_records):
    lines = rendered(history_records, 80)
    assert not [line for line in lines if "time (UTC)" in line]  # no table header
    assert len(lines) <= 1 + BLOCK_LINES_PER_RECORD * len(history_records)
    assert not [line for line in lines if len(line.strip()) == 1]  # nothing folded per char
    for source in history_records:
        heading = line_of(lines, f"#{source.seq} ", display_time(source.occurred_at),
                          source.event, source.outcome)
        assert heading.startswith(f"#{source.seq} ")
        line_of(lines, "lifecycle", source.lifecycle_id)
        line_of(lines, "correlation", source.correlation_id)
        if source.lease_id is not None:
            line_of(lines, "lease", source.lease_id, f"owner {source.owner}")
        if source.causation_id is not None:
            line_of(lines, "caused by", source.causation_id)
    assert line_of(lines, "states", "idle -> starting, refs 0->1")


def lost_connection_trail(creds, fast_settings) -> list:
    """A real manager's records: a connection dropped by the peer, reconnected, released."""
    sink, factory = InMemoryAuditSink(), InMemoryTransportFactory()
    manager = ConnectionManager(transport_factory=factory, audit=sink, settings=fast_settings)
    try:
        with manager.market_data(creds, symbols=["AAPL"], owner="momentum") as lease:
            lease.wait_ready(timeout=5)
            transport = factory.latest()
            assert transport.emit_connection_lost("socket closed by peer (1006)")
            assert transport.emit_connected()
            assert wait_until(lambda: sum(r.event == "connected" for r in sink.records()) == 2)
    finally:
        manager.close()
    return sink.records()


def test_the_reason_a_connection_dropped_and_the_cause_are_shown(creds, fast_settings):
    records = lost_connection_trail(creds, fast_settings)
    (lost,) = [r for r in records if r.event == "connection_lost"]
    assert lost.details["reason"] == "socket closed by peer (1006)" and lost.causation_id
    wide = rendered(records, 200)
    line_of(wide, "connection_lost", "socket closed by peer (1006)", short_id(lost.causation_id))
    narrow = rendered(records, 80)
    line_of(narrow, "reason", "socket closed by peer (1006)")
    line_of(narrow, "caused by", lost.causation_id)


def test_failures_show_their_error_as_the_reason():
    revoked = record(seq=5, event="lease_revoked", lease_id="L" * 26, outcome="failed",
                     error_type="LeaseRevokedError", error_message="start_failed under it")
    plain = record(seq=6)
    wide = rendered([revoked, plain], 200)
    line_of(wide, " 5 ", "LeaseRevokedError: start_failed under it")
    narrow = rendered([revoked, plain], 80)
    line_of(narrow, "reason", "LeaseRevokedError: start_failed under it")
    assert len([line for line in narrow if "reason" in line]) == 1  # a plain record has none


def test_full_ids_in_the_table(history_records):
    lines = rendered(history_records, 250, full_ids=True)
    assert line_of(lines, "seq", "time (UTC)")  # still the table
    for source in history_records:
        line_of(lines, f" {source.seq} ", source.lifecycle_id, source.lease_id or "",
                source.causation_id or "")
    # Whole ids need more room: where they do not fit, the blocks (which have them) are used.
    assert not [line for line in rendered(history_records, 160, full_ids=True)
                if "time (UTC)" in line]


def test_long_correlation_ids_are_shortened_in_the_table_only():
    generated = new_id()
    records = [record(seq=1, correlation_id=generated),
               record(seq=2, correlation_id="run-2026-01-02")]
    wide = rendered(records, 200)
    line_of(wide, " 1 ", f"\N{HORIZONTAL ELLIPSIS}{generated[-8:]}")
    assert generated not in "\n".join(wide)
    line_of(wide, " 2 ", "run-2026-01-02")  # short enough to be shown whole
    line_of(rendered(records, 200, full_ids=True), " 1 ", generated)
    line_of(rendered(records, 80), "correlation", generated)


def test_values_are_shown_literally_in_blocks():
    lines = rendered([record(seq=1, owner="[bold]x[/bold]", lease_id="L1")], 80)
    line_of(lines, "lease", "L1, owner [bold]x[/bold]")


# Through the real command line: piped output is PIPE_WIDTH wide unless COLUMNS says otherwise.

@pytest.fixture
def trail_url(sqlite_url, creds, fast_settings):
    with open_log(sqlite_url) as log:
        run_history(log, creds, fast_settings)
        for index in range(8):  # a realistic trail: 18 rows, as the reviewer's demo
            log.append(record(event_id=f"ev-{index}", seq=None,
                              occurred_at=T0 + timedelta(seconds=index)))
    return sqlite_url


def report(capsys, *argv: str) -> list[str]:
    assert main(["audit", "report", *argv]) == 0
    return capsys.readouterr().out.splitlines()


def test_piped_output_is_a_wide_table(trail_url, capsys, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    lines = report(capsys, "--db", trail_url)
    assert line_of(lines, "seq", "time (UTC)", "reason", "cause")
    assert max(len(line) for line in lines) <= 200
    assert len(lines) == 3 + 18  # title, header, rule, one line a record


def test_columns_narrows_the_output_to_blocks(trail_url, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    lines = report(capsys, "--db", trail_url)
    assert not [line for line in lines if "time (UTC)" in line]
    assert max(len(line) for line in lines) <= 80
    assert len(lines) <= 1 + BLOCK_LINES_PER_RECORD * 18
    document = json.loads("".join(report(capsys, "--db", trail_url, "--format", "json")))
    for row in document:
        line_of(lines, "lifecycle", row["lifecycle_id"])


def test_full_ids_flag(trail_url, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")
    rows = json.loads("".join(report(capsys, "--db", trail_url, "--format", "json")))
    lines = report(capsys, "--db", trail_url, "--full-ids", "--limit", "3")
    assert line_of(lines, "seq", "time (UTC)")
    for row in rows[:3]:
        line_of(lines, f" {row['seq']} ", row["lifecycle_id"], row["lease_id"] or "")


def test_blocks_of_unusual_records():
    """Unsealed (no seq yet), an owner without a lease, a lease without an owner, an error
    type without a message; printed without a title."""
    records = [record(seq=None, lease_id=None, owner="solo"),
               record(seq=2, lease_id="L2", owner=None, outcome="failed",
                      error_type="StopTimeoutError", error_message=None)]
    out = io.StringIO()
    render_table(records, Console(file=out, width=80))
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("#-  2026-01-02 09:30:00.000000  market_data  acquire  ok")
    line_of(lines, "owner", "solo")
    assert line_of(lines, "lease", "L2").split() == ["lease", "L2"]
    line_of(lines, "reason", "StopTimeoutError")
    assert records[1].reason == "StopTimeoutError"
