"""The run-time record of one lifecycle: machine, leases, transport, counters and deadlines.

Every method here must be called with the manager's lock held; the manager is the only caller.
A transition is *transactional*: :meth:`Connection.fire` asks the spec's machine, writes the
audit record, and only then updates deadlines and counters; if the audit write fails the machine
is rolled back and nothing changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import structlog

from streamwarden import logging as events
from streamwarden.audit.records import LEASE_REVOKED, AuditRecord, Outcome
from streamwarden.clock import Clock
from streamwarden.config import Settings
from streamwarden.credentials import Credentials
from streamwarden.errors import (
    AuditError,
    InvalidTransitionError,
    InvariantViolationError,
    StreamwardenError,
)
from streamwarden.ids import new_id
from streamwarden.machine.fanout import FanOut
from streamwarden.machine.health import LeaseHealth, LifecycleHealth
from streamwarden.machine.keys import StreamKey
from streamwarden.machine.leases import Lease, LeaseStatus
from streamwarden.machine.lifecycle import LifecycleMachine, Transition
from streamwarden.machine.recording import AuditRecorder, RecordContext
from streamwarden.machine.spec import LifecycleSpec
from streamwarden.machine.transport import Transport

STARTING, RUNNING, DRAINING, STOPPED = "starting", "running", "draining", "stopped"


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="microseconds") if moment is not None else None


class Connection:
    """One lifecycle of one stream key. Not thread-safe: callers hold the manager's lock."""

    def __init__(
        self,
        *,
        key: StreamKey,
        credentials: Credentials,
        spec: LifecycleSpec,
        transport: Transport,
        recorder: AuditRecorder,
        clock: Clock,
        settings: Settings,
        log: structlog.stdlib.BoundLogger,
    ) -> None:
        self.lifecycle_id = new_id()
        self.key = key
        self.credentials = credentials
        self.transport = transport
        self.machine = LifecycleMachine(spec)
        self._spec = spec
        self._recorder = recorder
        self._clock = clock
        self._settings = settings
        self._log = log.bind(lifecycle_id=self.lifecycle_id, fingerprint=key.fingerprint,
                             kind=key.kind)
        self.leases: dict[str, Lease] = {}
        self.fanout = FanOut(transport)
        # Set by the manager and the supervisor thread.
        self.failure: StreamwardenError | None = None
        self.origin_correlation_id: str | None = None
        self.cause_id: str | None = None
        self.start_deadline = 0.0
        self.drain_deadline = 0.0
        self.close_now = False
        self.close_issued = False
        self.transport_retired = False
        self.transport_connected = False
        self.stop_abandoned = False
        # Counters and timestamps for health.
        self.created_at = clock.now()
        self.started_at: datetime | None = None
        self.last_transition_at = self.created_at
        self.messages = 0
        self.reconnects = 0
        self.callback_errors = 0
        self.market_data_waiters = 0

    @property
    def state(self) -> str:
        """The lifecycle's current state."""
        return self.machine.state

    def reusable(self) -> bool:
        """The spec's ``reusable`` input: socket up, no close issued, within the drain grace."""
        return (
            self.transport_connected
            and not self.close_issued
            and self._clock.monotonic() <= self.drain_deadline
        )

    def context(self, correlation_id: str, lease: Lease | None = None) -> RecordContext:
        """The audit context of an event of this lifecycle."""
        return RecordContext(
            lifecycle_id=self.lifecycle_id,
            key=self.key,
            correlation_id=correlation_id,
            causation_id=self.cause_id,
            lease_id=lease.lease_id if lease is not None else None,
            owner=lease.owner if lease is not None else None,
        )

    def fire(
        self,
        event: str,
        context: RecordContext,
        *,
        outcome: Outcome = "ok",
        error: BaseException | None = None,
        details: Mapping[str, Any] | None = None,
        inputs: Mapping[str, Any] | None = None,
    ) -> tuple[Transition, AuditRecord]:
        """Take ``event`` through the spec, record it, then update deadlines and counters.

        ``inputs`` are the spec's environment inputs set before the event (``reusable``); they
        are recorded in the audit record's details, so the trail can be replayed on the spec.

        Raises:
            InvalidTransitionError: the spec does not allow it; nothing changed, nothing recorded.
            AuditError: the record could not be written; the machine was rolled back.
        """
        transition = self.machine.fire(event, **(inputs or {}))
        if inputs:
            details = {**(details or {}), "inputs": dict(inputs)}
        try:
            record = self._recorder.append(
                context, event=event, states=(transition.from_state, transition.to_state),
                refs=(transition.refs_before, transition.refs_after), outcome=outcome,
                error=error, details=details,
            )
        except (AuditError, ValueError):
            self.machine.rollback(transition)
            raise
        self._entered(transition, record)
        self._log.info(
            events.TRANSITION, spec_event=event, from_state=transition.from_state,
            to_state=transition.to_state, refs_before=transition.refs_before,
            refs_after=transition.refs_after, lease_id=context.lease_id, owner=context.owner,
            outcome=outcome, event_id=record.event_id,
        )
        return transition, record

    def _entered(self, transition: Transition, record: AuditRecord) -> None:
        now = self._clock.monotonic()
        self.last_transition_at = record.occurred_at
        if transition.to_state != transition.from_state:
            self.cause_id = record.event_id
        if transition.to_state == STARTING and transition.from_state != STARTING:
            self.start_deadline = now + self._settings.start_timeout
        if transition.to_state == DRAINING and transition.from_state != DRAINING:
            self.drain_deadline = now + self._settings.drain_grace
        if transition.to_state == RUNNING and self.started_at is None:
            self.started_at = record.occurred_at
        if transition.event == "connection_lost":
            self.reconnects += 1

    def reject(self, event: str, error: InvalidTransitionError, correlation_id: str) -> None:
        """Record and log an event the spec refused (it changed nothing)."""
        self._log.warning(events.TRANSITION_REJECTED, spec_event=event, state=self.state,
                          refs=self.machine.refs, reason=error.message)
        try:
            self._recorder.append(
                self.context(correlation_id), event=event, states=(self.state, None),
                refs=(self.machine.refs, self.machine.refs), outcome="rejected", error=error,
            )
        except AuditError as exc:
            self._log.error(events.AUDIT_WRITE_FAILED, spec_event=event, error=exc.message)

    # Leases and the wire subscription (INV4, INV6).

    def add_lease(self, lease: Lease) -> None:
        """Count ``lease`` in and subscribe what no other live lease wanted yet."""
        self.leases[lease.lease_id] = lease
        self.fanout.add(lease, lease.subscriptions)

    def remove_lease(self, lease: Lease, status: LeaseStatus) -> None:
        """Count ``lease`` out (released or revoked) and unsubscribe what nobody wants now."""
        lease.status = status
        if self.leases.pop(lease.lease_id, None) is not None:
            self.fanout.drop(lease)

    def record_lease_event(
        self,
        event: str,
        lease: Lease,
        *,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        outcome: Outcome = "ok",
        error: BaseException | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> AuditRecord:
        """Record an event of ``lease`` that is not a transition (revoked, subscribed, ...).

        Raises:
            AuditError: the record could not be written.
        """
        context = RecordContext(
            lifecycle_id=self.lifecycle_id, key=self.key,
            correlation_id=correlation_id or lease.correlation_id,
            causation_id=causation_id or self.cause_id,
            lease_id=lease.lease_id, owner=lease.owner,
        )
        return self._recorder.append(
            context, event=event, states=(self.state, self.state),
            refs=(self.machine.refs, self.machine.refs), outcome=outcome, error=error,
            details=details,
        )

    def revoke_all(self, error: StreamwardenError, cause: AuditRecord) -> None:
        """Revoke every live lease because of ``cause``; each revocation is recorded."""
        revoked = list(self.leases.values())
        for lease in revoked:
            lease.revocation = error
            self.remove_lease(lease, LeaseStatus.REVOKED)
            self._log.warning(events.LEASE_REVOKED, lease_id=lease.lease_id, owner=lease.owner,
                              reason=error.message)
            try:
                self.record_lease_event(LEASE_REVOKED, lease, causation_id=cause.event_id,
                                        outcome="failed", error=error)
            except AuditError as exc:
                self._log.error(events.AUDIT_WRITE_FAILED, spec_event=LEASE_REVOKED,
                                error=exc.message)

    # Views.

    def invariant_env(self) -> dict[str, Any]:
        """The variables of the ``machine`` and ``connection`` invariants, for this lifecycle."""
        lease_subscriptions: set[tuple[str, str]] = set()
        for lease in self.leases.values():
            if lease.is_live:
                lease_subscriptions.update(lease.subscriptions)
        return {
            "state": self.state,
            "refs": self.machine.refs,
            "live_leases": sum(1 for lease in self.leases.values() if lease.is_live),
            "kind": self.key.kind,
            "wire_symbols": self.transport.subscriptions,
            "lease_symbols": frozenset(lease_subscriptions),
            "socket_open": self.transport.socket_open,
            "transport_done": not self.transport.thread_alive or self.stop_abandoned,
        }

    def violations(self) -> list[str]:
        """The ids and expressions of the connection-level invariants that fail now."""
        env = self.invariant_env()
        return [
            f"{inv.id}: {inv.expr.source}"
            for inv in self._spec.invariants_in("machine", "connection")
            if not inv.expr.evaluate(env)
        ]

    def assert_invariants(self) -> None:
        """Raise if a connection-level invariant fails (debug mode).

        Raises:
            InvariantViolationError: naming the invariants that fail.
        """
        failed = self.violations()
        if failed:
            self._log.critical(events.INVARIANT_VIOLATED, violations=failed)
            raise InvariantViolationError(
                f"invariant(s) violated: {'; '.join(failed)}", state=self.state,
                fingerprint=self.key.fingerprint,
            )

    def health(self) -> LifecycleHealth:
        """This lifecycle as shown in the health report."""
        return LifecycleHealth(
            lifecycle_id=self.lifecycle_id,
            fingerprint=self.key.fingerprint,
            kind=self.key.kind,
            paper=self.key.paper,
            feed=self.key.feed,
            state=self.state,
            refs=self.machine.refs,
            leases=tuple(
                LeaseHealth(lease.lease_id, lease.owner, lease.correlation_id,
                            tuple(sorted(lease.symbols)))
                for lease in self.leases.values()
            ),
            created_at=_iso(self.created_at) or "",
            started_at=_iso(self.started_at),
            last_transition_at=_iso(self.last_transition_at) or "",
            messages=self.messages,
            reconnects=self.reconnects,
            callback_errors=self.callback_errors,
            stop_abandoned=self.stop_abandoned,
        )
