"""Replaying an audit trail on the spec detects records that do not follow it."""

from __future__ import annotations

from dataclasses import replace

from streamwarden.machine.conformance import replay
from streamwarden.machine.spec import default_spec


def trail(manager, creds, sink):
    manager.market_data(creds, symbols=["AAPL"]).release()
    manager.close()
    return [r for r in sink.records() if r.event != "lease_revoked"]


def test_an_untouched_trail_conforms(manager, creds, sink):
    assert replay(default_spec(), trail(manager, creds, sink)) == []


def test_edited_states_refs_and_events_are_reported(manager, creds, sink):
    records = trail(manager, creds, sink)
    spec = default_spec()
    wrong_target = [*records[:1], replace(records[1], to_state="draining"), *records[2:]]
    assert "spec goes to" in replay(spec, wrong_target)[0]
    wrong_refs = [replace(records[0], refs_before=3), *records[1:]]
    assert "recorded acquire from" in replay(spec, wrong_refs)[0]
    not_allowed = [replace(records[0], event="closed", to_state="stopped"), *records[1:]]
    assert "allows no 'closed'" in replay(spec, not_allowed)[0]
