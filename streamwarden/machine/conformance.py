"""Replaying an audit trail on the spec: does every recorded transition follow the statechart?

Each lifecycle's accepted transitions (outcome other than ``rejected``; lease events aside) are
sent, in ``seq`` order and with their recorded inputs, to a fresh machine built from the spec;
the recorded states and ``refs`` must match what the spec does.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from streamwarden.errors import InvalidTransitionError
from streamwarden.machine.lifecycle import LifecycleMachine
from streamwarden.machine.spec import LifecycleSpec


class RecordedTransition(Protocol):
    """What the replay reads of an audit record
    (:class:`streamwarden.audit.records.AuditRecord` is one); the machine stays independent
    of the audit package."""

    @property
    def seq(self) -> int | None: ...
    @property
    def lifecycle_id(self) -> str: ...
    @property
    def event(self) -> str: ...
    @property
    def outcome(self) -> str: ...
    @property
    def from_state(self) -> str | None: ...
    @property
    def to_state(self) -> str | None: ...
    @property
    def refs_before(self) -> int | None: ...
    @property
    def refs_after(self) -> int | None: ...
    @property
    def details(self) -> Mapping[str, Any]: ...


def _mismatch(record: RecordedTransition, machine: LifecycleMachine) -> str | None:
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


def replay(spec: LifecycleSpec, records: Iterable[RecordedTransition]) -> list[str]:
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
