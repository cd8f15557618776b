"""Timelines: one lifecycle's states in order, with entry, exit and duration."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import pytest
from rich.console import Console

from streamwarden import InMemoryAuditSink, InvalidInputError
from streamwarden.audit.processes import WriterStatus
from streamwarden.audit.timeline import (
    build_timeline,
    format_duration,
    render_timeline,
    timeline_to_json,
)
from tests.audit.histories import T0, record, run_history


def step(seconds: float, event: str, from_state: str, to_state: str | None, **changes):
    return record(occurred_at=T0 + timedelta(seconds=seconds), event=event,
                  from_state=from_state, to_state=to_state, **changes)


STOPPED_LIFECYCLE = [
    step(0, "acquire", "idle", "starting"),
    step(0.5, "connected", "starting", "running"),
    step(10, "acquire", "running", "running"),
    step(20, "release", "running", "running"),
    step(75, "release", "running", "draining"),
    step(75.25, "closed", "draining", "stopped"),
]


def test_states_in_order_with_durations_and_a_terminal_stop():
    timeline = build_timeline(STOPPED_LIFECYCLE)
    assert [p.state for p in timeline.periods] == [
        "idle", "starting", "running", "draining", "stopped"]
    assert [p.duration for p in timeline.periods] == [
        timedelta(0), timedelta(seconds=0.5), timedelta(seconds=74.5),
        timedelta(seconds=0.25), None]
    assert [p.events for p in timeline.periods] == [0, 1, 3, 1, 1]
    assert timeline.periods[1].left_at == timeline.periods[2].entered_at
    assert timeline.stopped and timeline.lifetime == timedelta(seconds=75.25)
    assert (timeline.transitions, timeline.events) == (4, 6)


def test_a_live_lifecycle_ends_open_and_rejections_do_not_change_state():
    live = [*STOPPED_LIFECYCLE[:3],
            step(11, "connected", "running", None, outcome="rejected",
                 error_type="InvalidTransitionError"),
            step(12, "lease_revoked", "running", "running", outcome="failed")]
    timeline = build_timeline(live)
    assert [p.state for p in timeline.periods] == ["idle", "starting", "running"]
    assert timeline.periods[-1].left_at is None and timeline.periods[-1].events == 4
    assert not timeline.stopped and timeline.lifetime is None
    assert timeline_to_json(timeline)["states"][-1]["duration_s"] is None


def test_json_form(tmp_path):
    out = io.StringIO()
    render_timeline(build_timeline(STOPPED_LIFECYCLE), "json", out)
    document = json.loads(out.getvalue())
    assert document["lifecycle_id"] == STOPPED_LIFECYCLE[0].lifecycle_id
    assert document["stopped"] is True and document["lifetime_s"] == 75.25
    assert document["transitions"] == 4 and document["events"] == 6
    running = document["states"][2]
    assert running == {"state": "running", "entered_at": "2026-01-02T09:30:00.500000+00:00",
                       "left_at": "2026-01-02T09:31:15.000000+00:00", "duration_s": 74.5,
                       "events": 3}


def test_table_form():
    out = io.StringIO()
    render_timeline(build_timeline(STOPPED_LIFECYCLE), "table", out,
                    console=Console(file=out, width=200))
    text = out.getvalue()
    assert "stopped after 1 min 15.2 s, 4 transitions, 6 events" in text
    assert "1 min 14.5 s" in text and "0.500 s" in text and "(terminal)" in text
    assert "2026-01-02 09:30:00.500000" in text
    live = io.StringIO()
    render_timeline(build_timeline(STOPPED_LIFECYCLE[:3]), "table", live,
                    console=Console(file=live, width=200))
    assert "(open)" in live.getvalue() and ": live," in live.getvalue()


def table_text(timeline, writer=None) -> str:
    out = io.StringIO()
    render_timeline(timeline, "table", out, console=Console(file=out, width=200), writer=writer)
    return out.getvalue()


def test_a_lifecycle_without_a_final_record_is_live_unterminated_or_unchecked():
    timeline = build_timeline([*STOPPED_LIFECYCLE[:3], step(12, "acquire", "running", "running",
                                                            host="box", pid=4242)])
    assert (timeline.host, timeline.pid, timeline.last_record_at) == (
        "box", 4242, T0 + timedelta(seconds=12))
    last = "last record 2026-01-02 09:30:12.000000 UTC"
    gone = WriterStatus("gone", "box", 4242, timeline.last_record_at)
    text = table_text(timeline, gone)
    assert "ffffffffffffffffffffffff): unterminated, 2 transitions, 4 events\n" in text
    assert f"\nunterminated: no final record, and process 4242 on box is gone ({last})\n" in text
    assert "(unterminated)" in text and "(open)" not in text and "live" not in text
    document = timeline_to_json(timeline, gone)
    assert (document["status"], document["stopped"], document["host"], document["pid"]) == (
        "unterminated", False, "box", 4242)
    assert document["last_record_at"] == "2026-01-02T09:30:12.000000+00:00"
    unchecked = WriterStatus("unchecked", "box", 4242, timeline.last_record_at)
    text = table_text(timeline, unchecked)
    assert "unchecked: no final record; process 4242 on host box cannot be checked" in text
    assert "(unchecked)" in text
    running = WriterStatus("running", "box", 4242, timeline.last_record_at)
    assert "): live, 2 transitions" in table_text(timeline, running)
    assert "\nlive: process 4242 on box is running" in table_text(timeline, running)
    assert "(open)" in table_text(timeline, running)
    assert timeline_to_json(timeline, running)["status"] == "live"
    # A stopped lifecycle is stopped whatever became of its process.
    stopped = build_timeline(STOPPED_LIFECYCLE)
    assert timeline_to_json(stopped, gone)["status"] == "stopped"
    assert "stopped after" in table_text(stopped, gone)
    assert "gone" not in table_text(stopped, gone)


def test_timeline_of_a_real_manager_history(creds, fast_settings):
    sink = InMemoryAuditSink()
    history = run_history(sink, creds, fast_settings)
    records = [r for r in sink.records() if r.lifecycle_id == history.market_data_lifecycle]
    timeline = build_timeline(records)
    assert [p.state for p in timeline.periods] == [
        "idle", "starting", "running", "draining", "stopped"]
    assert timeline.kind == "market_data" and timeline.events == len(records)
    assert sum((p.duration for p in timeline.periods[:-1]), timedelta()) == timeline.lifetime


def test_bad_input():
    with pytest.raises(InvalidInputError, match="at least one"):
        build_timeline([])
    with pytest.raises(InvalidInputError, match="one lifecycle"):
        build_timeline([record(), record(lifecycle_id="another")])
    with pytest.raises(InvalidInputError, match="table, json"):
        render_timeline(build_timeline(STOPPED_LIFECYCLE), "csv", io.StringIO())


@pytest.mark.parametrize(("seconds", "text"), [
    (0.0042, "0.004 s"), (59.9991, "59.999 s"), (123.45, "2 min 3.5 s"),
    (3723.9, "1 h 2 min 3 s"),
])
def test_durations_read_naturally(seconds, text):
    assert format_duration(timedelta(seconds=seconds)) == text
    assert format_duration(None) == ""
