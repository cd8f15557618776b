"""Replaying an audit trail on the spec: does every recorded transition follow the statechart?

Each lifecycle's accepted transitions (outcome other than ``rejected``; lease events aside) are
sent, in ``seq`` order and with their recorded inputs, to a fresh machine built from the spec;
the recorded states and ``refs`` must match what the spec does.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from streamwarden.audit.records import AuditRecord
from streamwarden.errors import InvalidTransitionError
from streamwarden.machine.lifecycle import LifecycleMachine
from streamwarden.machine.spec import LifecycleSpec


def _mismatch(record: AuditRecord, machine: LifecycleMachine) -> str | None:
    recorded_before = (record.from_state, record.refs_before)
    if recorded_before != (machine.state, machine.refs):
        return (f"seq {record.seq}: recorded {record.event} from {recorded_before}, "
                f"spec is at {(machine.state, machine.refs)}")
    inputs = dict(record.details.get("inputs") or {})
    try:
        taken = machine.fire(record.event, **inputs)
    except InvalidTransitionError as exc:
        return f"seq {record.seq}: {exc.message}"
    if (taken.to_state, taken.refs_after) != (record.to_state, record.refs_after):
        recorded_after = (record.to_state, record.refs_after)
        return (f"seq {record.seq}: {record.event} recorded to {recorded_after}, "
                f"spec goes to {(taken.to_state, taken.refs_after)}")
    return None


def replay(spec: LifecycleSpec, records: Iterable[AuditRecord]) -> list[str]:
    """The records that disagree with the spec, described; empty when the trail conforms.

    Thread-safety: pure; safe to call from any thread.
    """
    machines: dict[str, LifecycleMachine] = defaultdict(lambda: LifecycleMachine(spec))
    problems = []
    ordered = sorted(records, key=lambda r: r.seq or 0)
    for record in ordered:
        if record.outcome == "rejected" or record.event not in spec.events:
            continue
        problem = _mismatch(record, machines[record.lifecycle_id])
        if problem is not None:
            problems.append(problem)
    return problems
