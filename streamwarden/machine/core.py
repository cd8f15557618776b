"""The manager's shared state and the one place transitions are applied.

:class:`ManagerCore` owns the lock (a :class:`threading.Condition`), the registry of lifecycles
by stream key, and :meth:`ManagerCore.apply`, which fires an event on a connection and then
carries out the effects the spec attached to it (revoke leases, start the transport's
supervisor), retires stopped lifecycles and wakes every waiter. The public API
(:mod:`streamwarden.machine.manager`) and the supervisor threads
(:mod:`streamwarden.machine.supervisor`) both work through it.

Lock order: the core's lock is never held while calling ``Transport.start`` or
``Transport.stop``, nor while running a consumer's callback.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

import structlog

from streamwarden.audit.records import AuditRecord
from streamwarden.clock import Clock
from streamwarden.config import Settings
from streamwarden.credentials import Credentials
from streamwarden.errors import (
    AuditError,
    ConnectionStartError,
    InvalidTransitionError,
    LeaseRevokedError,
    StreamwardenError,
)
from streamwarden.machine.connection import STOPPED, Connection
from streamwarden.machine.keys import StreamKey
from streamwarden.machine.leases import Lease, LeaseStatus
from streamwarden.machine.lifecycle import REVOKE_LEASES, START_TRANSPORT, Transition
from streamwarden.machine.recording import AuditRecorder, RecordContext
from streamwarden.machine.spec import LifecycleSpec
from streamwarden.machine.transport import TransportFactory

RECENTLY_STOPPED = 32


class ManagerCore:
    """Registry, lock and transition application shared by the manager and its supervisors.

    Thread-safety: every method requires ``cond`` to be held by the caller.
    """

    def __init__(
        self,
        *,
        spec: LifecycleSpec,
        settings: Settings,
        clock: Clock,
        recorder: AuditRecorder,
        transport_factory: TransportFactory,
        log: structlog.stdlib.BoundLogger,
        start_supervisor: Callable[[ManagerCore, Connection], threading.Thread],
    ) -> None:
        self.spec = spec
        self.settings = settings
        self.clock = clock
        self.recorder = recorder
        self.log = log
        self.cond = threading.Condition()
        self.by_key: dict[StreamKey, Connection] = {}
        self.active: dict[str, Connection] = {}
        self.recently_stopped: deque[Connection] = deque(maxlen=RECENTLY_STOPPED)
        self.closed = False
        self.abandoned_threads = 0
        self._transport_factory = transport_factory
        self._start_supervisor = start_supervisor

    def new_connection(self, key: StreamKey, credentials: Credentials, origin: str) -> Connection:
        """Create the next lifecycle of ``key`` (in the spec's initial state) and register it."""
        connection = Connection(
            key=key,
            credentials=credentials,
            spec=self.spec,
            transport=self._transport_factory(key, credentials, self.settings),
            recorder=self.recorder,
            clock=self.clock,
            settings=self.settings,
            log=self.log,
        )
        connection.origin_correlation_id = origin
        self.by_key[key] = connection
        self.active[connection.lifecycle_id] = connection
        return connection

    def discard(self, connection: Connection) -> None:
        """Forget a lifecycle that never left its initial state (its first acquire failed)."""
        self.active.pop(connection.lifecycle_id, None)
        if self.by_key.get(connection.key) is connection:
            del self.by_key[connection.key]

    def apply(
        self,
        connection: Connection,
        event: str,
        context: RecordContext,
        *,
        revoke_error: StreamwardenError | None = None,
        **kwargs: Any,
    ) -> tuple[Transition, AuditRecord]:
        """Fire ``event``, then carry out its effects and wake every waiter.

        Raises:
            InvalidTransitionError, AuditError: as :meth:`Connection.fire`; nothing changed.
            InvariantViolationError: in debug mode, if a spec invariant fails afterwards.
        """
        transition, record = connection.fire(event, context, **kwargs)
        if REVOKE_LEASES in transition.effects:
            error = revoke_error or ConnectionStartError(
                "the connection failed", fingerprint=connection.key.fingerprint
            )
            connection.revoke_all(error, record)
        if START_TRANSPORT in transition.effects:
            self._start_supervisor(self, connection)
        if transition.to_state == STOPPED:
            self.discard(connection)
            self.recently_stopped.append(connection)
        self.cond.notify_all()
        if self.settings.debug:
            connection.assert_invariants()
        return transition, record

    def release(self, lease: Lease, correlation_id: str, **kwargs: Any) -> None:
        """Count ``lease`` out of its lifecycle and fire ``release``.

        Raises:
            AuditError: the release could not be recorded; the lease stays live.
        """
        connection = self.active[lease.lifecycle_id]
        connection.remove_lease(lease, LeaseStatus.RELEASED)
        try:
            self.apply(connection, "release", connection.context(correlation_id, lease), **kwargs)
        except (InvalidTransitionError, AuditError, ValueError):  # nothing took effect
            lease.status = LeaseStatus.LIVE
            connection.add_lease(lease)
            raise

    def shutdown_error(self, correlation_id: str) -> LeaseRevokedError:
        """The error leases revoked by a manager shutdown carry."""
        return LeaseRevokedError(
            "the connection manager was closed", operation="close", correlation_id=correlation_id
        )

    def violations(self) -> list[str]:
        """Every invariant that fails now, across all lifecycles (INV1..INV7)."""
        failed: list[str] = []
        for connection in [*self.active.values(), *self.recently_stopped]:
            failed += [f"{connection.lifecycle_id} {v}" for v in connection.violations()]
        per_key = Counter(c.key for c in self.active.values() if c.state != STOPPED)
        env = {"max_lifecycles_per_key": max(per_key.values(), default=0)}
        for invariant in self.spec.invariants_in("manager"):
            if not invariant.expr.evaluate(env):
                failed.append(f"{invariant.id}: {invariant.expr.source}")
        return failed
