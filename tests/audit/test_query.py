"""Audit filters: validation, and the SQL they select on SQLite and PostgreSQL."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from streamwarden import ConnectionManager, InMemoryAuditSink, InvalidInputError
from streamwarden.audit.models import decode_row
from streamwarden.audit.query import (
    AuditFilter,
    audit_events,
    check_event,
    parse_time,
    select_records,
)
from streamwarden.audit.records import LEASE_EVENTS, STREAM_EVENTS
from streamwarden.errors import ConnectionStartError, InvalidTransitionError
from streamwarden.machine.spec import load_spec
from streamwarden.testing import InMemoryTransportFactory
from tests.audit.histories import T0, fill, open_log, run_history
from tests.waiting import wait_until

ROWS = 200  # synthetic rows: lc-0..lc-9 round robin, one microsecond apart from T0


@pytest.mark.parametrize(("changes", "message"), [
    ({"correlation_id": ""}, "correlation_id must be 1..256 characters"),
    ({"lifecycle_id": "x" * 257}, "lifecycle_id must be 1..256"),
    ({"fingerprint": 42}, "fingerprint must be a string, got int"),
    ({"event": "acq\nuire"}, "event must be printable"),
    ({"kind": "quotes"}, "kind must be one of market_data, trade_updates, crypto_data, "
                         "option_data, news; got 'quotes'"),
    ({"since": datetime(2026, 1, 2)}, "since must be timezone-aware"),
    ({"until": "2026-01-02T00:00:00Z"}, "until must be a datetime, got str"),
    ({"since": T0, "until": T0}, "must be before until"),
    ({"limit": 0}, "limit must be at least 1, got 0"),
    ({"limit": True}, "limit must be a whole number, got bool"),
    ({"limit": 2.5}, "limit must be a whole number, got float"),
    ({"owner": ""}, "owner must be 1..256 characters"),
    ({"lease_id": 7}, "lease_id must be a string, got int"),
    ({"event": "released"}, "unknown event 'released'; the audit trail holds acquire, release"),
])
def test_bad_filters_are_refused_with_a_clear_reason(changes, message):
    with pytest.raises(InvalidInputError, match=message.replace("(", r"\(")):
        AuditFilter(**changes)


def test_timestamps_from_command_line_text():
    assert parse_time("since", "2026-01-02T09:30:00Z") == T0
    assert parse_time("until", " 2026-01-02T11:30:00.000001+02:00 ") == T0 + timedelta(
        microseconds=1)


@pytest.mark.parametrize(("text", "message"), [
    ("yesterday", "ISO 8601 timestamp"),
    ("2026-01-02T09:30:00", "has no time zone; add Z"),
    ("2026-13-02T09:30:00Z", "ISO 8601 timestamp"),
])
def test_bad_timestamps(text, message):
    with pytest.raises(InvalidInputError, match=message):
        parse_time("since", text)


def test_select_is_ordered_by_seq_and_pages_by_keyset():
    sql = str(select_records(AuditFilter(kind="market_data", limit=10), after_seq=5, limit=3)
              .compile(compile_kwargs={"literal_binds": True}))
    assert "lifecycle_audit.kind = 'market_data'" in sql
    assert "lifecycle_audit.seq > 5" in sql
    assert "ORDER BY lifecycle_audit.seq" in sql and "LIMIT 3" in sql
    with pytest.raises(InvalidInputError, match="after_seq"):
        select_records(AuditFilter(), after_seq=-1)
    with pytest.raises(InvalidInputError, match="limit must be at least 1"):
        select_records(AuditFilter(), limit=0)


@pytest.fixture
def filled(db_url, creds, fast_settings):
    """A database with a real manager history followed by ROWS synthetic records."""
    with open_log(db_url, batched=True) as log:
        history = run_history(log, creds, fast_settings)
        fill(log, ROWS)
    return db_url, history


def run(db_url, flt, **page):
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            statement = select_records(flt, dialect_name=conn.dialect.name, **page)
            return [decode_row(tuple(row)) for row in conn.execute(statement)]
    finally:
        engine.dispose()


def test_each_filter_selects_exactly_its_records(filled):
    db_url, history = filled
    everything = run(db_url, AuditFilter())
    seqs = [r.seq for r in everything]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    checks = {
        "correlation_id": "run-2", "lifecycle_id": history.trade_updates_lifecycle,
        "fingerprint": everything[0].fingerprint, "kind": "trade_updates", "event": "release",
        "owner": "momentum", "lease_id": everything[0].lease_id,
    }
    for name, value in checks.items():
        selected = run(db_url, AuditFilter(**{name: value}))
        expected = [r for r in everything if getattr(r, name) == value]
        assert selected == expected and selected, name
    both = run(db_url, AuditFilter(correlation_id="corr-3", event="release"))
    assert both and all((r.correlation_id, r.event) == ("corr-3", "release") for r in both)
    assert run(db_url, AuditFilter(correlation_id="no-such-run")) == []


def test_time_bounds_are_half_open_and_zone_independent(filled):
    db_url, _ = filled
    plus_two = timezone(timedelta(hours=2))
    since = (T0 + timedelta(microseconds=10)).astimezone(plus_two)
    until = T0 + timedelta(microseconds=20)
    selected = run(db_url, AuditFilter(since=since, until=until))
    assert [r.event_id for r in selected] == [f"ev-{i:08d}" for i in range(10, 20)]
    assert all(r.occurred_at.tzinfo is UTC or r.occurred_at.utcoffset() == timedelta(0)
               for r in selected)


def test_limit_and_keyset_pages(filled):
    db_url, _ = filled
    flt = AuditFilter(kind="market_data")
    everything = run(db_url, flt)
    assert run(db_url, replace(flt, limit=7)) == everything[:7]
    pages, after = [], None
    while True:
        page = run(db_url, flt, after_seq=after, limit=30)
        if not page:
            break
        pages.extend(page)
        after = page[-1].seq
    assert pages == everything
    # The filter's own limit caps a page too.
    assert run(db_url, replace(flt, limit=5), after_seq=everything[2].seq, limit=30) == \
        everything[3:8]


def test_audit_log_query_uses_the_same_filters(filled):
    db_url, _ = filled
    with open_log(db_url) as log:
        by_log = log.query(correlation_id="corr-4", since=T0, limit=3)
        streamed = list(log.iter_records(kind="trade_updates", batch_size=7))
        by_owner = log.query(owner="executor", event="release")
        lease_id = by_owner[0].lease_id
        by_lease = list(log.iter_records(lease_id=lease_id))
    assert by_log == run(db_url, AuditFilter(correlation_id="corr-4", since=T0, limit=3))
    assert streamed == run(db_url, AuditFilter(kind="trade_updates"))
    assert [(r.owner, r.event) for r in by_owner] == [("executor", "release")]
    assert [r.event for r in by_lease] == ["acquire", "release"]
    assert by_lease == run(db_url, AuditFilter(lease_id=lease_id))


def test_the_newest_record_of_a_lifecycle(filled):
    db_url, history = filled
    with open_log(db_url) as log:
        records = log.query(lifecycle_id=history.market_data_lifecycle)
        assert log.newest(history.market_data_lifecycle) == records[-1]
        assert records[-1].to_state == "stopped"
        running = log.newest(history.market_data_lifecycle, to_state="running")
        assert running == [r for r in records if r.to_state == "running"][-1]
        assert log.newest(history.market_data_lifecycle, to_state="no-such-state") is None
        assert log.newest("no-such-lifecycle") is None
        with pytest.raises(InvalidInputError, match="to_state must be printable"):
            log.newest(history.market_data_lifecycle, to_state="a\nb")


def test_the_events_of_the_trail_come_from_the_spec_the_lease_and_the_stream_events():
    spec = load_spec()
    from_spec = list(dict.fromkeys(transition.event for transition in spec.transitions))
    assert audit_events() == (*from_spec, *LEASE_EVENTS, *STREAM_EVENTS)
    assert {"acquire", "release", "connection_lost", "closed", "close_timeout",
            "lease_revoked", "lease_subscribed", "trade_updates_replayed"} <= set(audit_events())
    assert check_event("connection_lost") == "connection_lost"
    with pytest.raises(InvalidInputError) as caught:
        check_event("Release")
    assert caught.value.message == ("unknown event 'Release'; the audit trail holds "
                                    + ", ".join(audit_events()))


def test_every_event_a_real_manager_records_is_a_known_event(creds, fast_settings):
    """Subscriptions, a dropped connection, a refused event, a failed start and its revoked
    lease, releases and shutdowns: the filter accepts every event name these write."""
    sink = InMemoryAuditSink()
    factory = InMemoryTransportFactory()
    manager = ConnectionManager(transport_factory=factory, audit=sink, settings=fast_settings)
    try:
        lease = manager.market_data(creds, symbols=["AAPL"])
        lease.subscribe_quotes("MSFT")
        lease.unsubscribe("quotes", "MSFT")
        transport = factory.latest()
        transport.emit_connected()  # refused: already running
        assert wait_until(lambda: any(r.outcome == "rejected" for r in sink.records()))
        transport.emit_connection_lost("peer closed")
        transport.emit_fatal_error(ConnectionStartError("refused"))  # revokes the lease
        assert wait_until(lambda: not lease.is_live)
        with manager.trade_updates(creds, on_update=lambda message: None):
            pass
    finally:
        manager.close()
    recorded = {r.event for r in sink.records()}
    assert {"lease_subscribed", "lease_unsubscribed", "connection_lost", "start_failed",
            "lease_revoked"} <= recorded
    assert recorded <= set(audit_events())
    assert InvalidTransitionError.__name__ in {r.error_type for r in sink.records()}
