"""The supervisor thread of a lifecycle, and the listener its transport reports to.

One named thread per lifecycle (``streamwarden-supervisor-<lifecycle id>``) owns the transport:
it starts it, waits (bounded) until the lifecycle must end, stops it within ``stop_timeout``,
then fires the final event. It ends the lifecycle when

* starting: the transport reported a fatal error, or ``start_timeout`` ran out -> start_failed;
* draining: the drain grace ran out, the socket is down, or the manager is closing -> closed
  (close_timeout, flagged ``forced``, when the transport's thread had to be abandoned).

Once the supervisor has decided to stop, the transport is *retired*: callbacks it still makes
are logged as stale and change nothing.
"""

from __future__ import annotations

import threading

from streamwarden import logging as events
from streamwarden.errors import (
    AuditError,
    ConnectionStartError,
    InvalidTransitionError,
    InvariantViolationError,
    StartTimeoutError,
    StopTimeoutError,
)
from streamwarden.machine.connection import DRAINING, RUNNING, STARTING, Connection
from streamwarden.machine.core import ManagerCore
from streamwarden.machine.leases import Lease
from streamwarden.machine.transport import StreamMessage

RUNNING_RECHECK_SECONDS = 1.0
AUDIT_RETRY_SECONDS = 0.5


def start_supervisor(core: ManagerCore, connection: Connection) -> threading.Thread:
    """Start the supervisor thread of ``connection``. Call with ``core.cond`` held."""
    thread = threading.Thread(
        target=_supervise,
        args=(core, connection),
        name=f"streamwarden-supervisor-{connection.lifecycle_id}",
        daemon=True,
    )
    thread.start()
    return thread


def _supervise(core: ManagerCore, connection: Connection) -> None:
    listener = ConnectionListener(core, connection)
    try:
        connection.transport.start(listener)
    except Exception as exc:  # a broken transport must not leave the lifecycle starting
        listener.on_fatal_error(ConnectionStartError(f"transport failed to start: {exc}"))
    with core.cond:
        _wait_until_done(core, connection)
        connection.transport_retired = True
        connection.close_issued = True
    clean = connection.transport.stop(core.settings.stop_timeout)
    with core.cond:
        _finish(core, connection, clean)


def _wait_until_done(core: ManagerCore, connection: Connection) -> None:
    while True:
        now = core.clock.monotonic()
        state = connection.state
        if state == DRAINING:
            if (connection.close_now or not connection.transport_connected
                    or now >= connection.drain_deadline):
                return
            timeout = connection.drain_deadline - now
        elif state == STARTING:
            if connection.failure is not None:
                return
            if now >= connection.start_deadline:
                connection.failure = StartTimeoutError(
                    f"not connected within start_timeout={core.settings.start_timeout}s",
                    operation="start", fingerprint=connection.key.fingerprint, state=state,
                )
                return
            timeout = connection.start_deadline - now
        else:
            timeout = RUNNING_RECHECK_SECONDS
        core.cond.wait(timeout)


def _finish(core: ManagerCore, connection: Connection, clean: bool) -> None:
    if not clean:
        core.abandoned_threads += 1
        connection.stop_abandoned = True
        core.log.error(events.TRANSPORT_STOP_TIMEOUT, lifecycle_id=connection.lifecycle_id,
                       stop_timeout=core.settings.stop_timeout)
    while True:
        try:
            _fire_final(core, connection, clean)
            return
        except InvariantViolationError:
            return  # debug mode: the transition took effect and the violation was logged
        except AuditError as exc:
            # The transition was rolled back; it must still be recorded before it takes effect.
            core.log.error(events.AUDIT_WRITE_FAILED, lifecycle_id=connection.lifecycle_id,
                           error=exc.message)
            core.cond.wait(AUDIT_RETRY_SECONDS)


def _fire_final(core: ManagerCore, connection: Connection, clean: bool) -> None:
    context = connection.context(connection.origin_correlation_id or connection.lifecycle_id)
    details = {"stop_clean": clean}
    if connection.state == STARTING:
        error = connection.failure or ConnectionStartError("the connection failed")
        core.log.warning(events.LIFECYCLE_FAILED, lifecycle_id=connection.lifecycle_id,
                         error_type=type(error).__name__, error=error.message)
        core.apply(connection, "start_failed", context, outcome="failed" if clean else "forced",
                   error=error, revoke_error=error, details=details)
    elif clean:
        core.apply(connection, "closed", context, details=details)
    else:
        error = StopTimeoutError(
            f"transport did not stop within stop_timeout={core.settings.stop_timeout}s; "
            "its thread was abandoned",
            operation="stop", fingerprint=connection.key.fingerprint, state=connection.state,
        )
        core.apply(connection, "close_timeout", context, outcome="forced", error=error,
                   details=details)


class ConnectionListener:
    """Receives one transport's callbacks and turns them into spec events.

    Thread-safety: callbacks may come from any thread, including from inside
    ``Transport.start``; each takes the manager's lock, and consumer callbacks run outside it.
    """

    def __init__(self, core: ManagerCore, connection: Connection) -> None:
        self._core = core
        self._connection = connection

    def _stale(self, callback: str) -> bool:
        if self._connection.transport_retired:
            self._core.log.info(events.TRANSPORT_STALE_CALLBACK, callback=callback,
                                lifecycle_id=self._connection.lifecycle_id)
            return True
        return False

    def _fire(self, event: str, details: dict[str, str] | None = None) -> None:
        connection = self._connection
        correlation_id = connection.origin_correlation_id or connection.lifecycle_id
        try:
            self._core.apply(connection, event, connection.context(correlation_id),
                             details=details)
        except InvalidTransitionError as exc:
            connection.reject(event, exc, correlation_id)
        except InvariantViolationError:
            pass  # debug mode: the transition took effect and the violation was logged
        except AuditError as exc:
            self._core.log.error(events.AUDIT_WRITE_FAILED, spec_event=event, error=exc.message,
                                 lifecycle_id=connection.lifecycle_id)

    def on_connected(self) -> None:
        with self._core.cond:
            if self._stale("connected"):
                return
            self._connection.transport_connected = True
            self._fire("connected")

    def on_connection_lost(self, reason: str) -> None:
        with self._core.cond:
            if self._stale("connection_lost"):
                return
            self._connection.transport_connected = False
            self._fire("connection_lost", {"reason": self._core.recorder.redact(reason)})

    def on_fatal_error(self, error: ConnectionStartError) -> None:
        with self._core.cond:
            if self._stale("fatal_error"):
                return
            connection = self._connection
            connection.transport_connected = False
            message = self._core.recorder.redact(error.message)
            connection.failure = type(error)(
                message, operation="start", fingerprint=connection.key.fingerprint,
                state=connection.state, correlation_id=connection.origin_correlation_id,
            )
            if connection.state == RUNNING:
                self._fire("connection_lost", {"reason": message})
            self._core.cond.notify_all()

    def on_message(self, message: StreamMessage) -> None:
        with self._core.cond:
            if self._connection.transport_retired:
                return
            self._connection.messages += 1
            targets = self._connection.fanout.route(message)
            if self._connection.market_data_waiters:
                self._core.cond.notify_all()
        for lease in targets:
            self._deliver(lease, message)

    def _deliver(self, lease: Lease, message: StreamMessage) -> None:
        callback = lease.callbacks.get(message.channel)
        if callback is None:
            return
        try:
            callback(message.payload)
        except Exception:
            with self._core.cond:
                self._connection.callback_errors += 1
            self._core.log.exception(events.CALLBACK_FAILED, lease_id=lease.lease_id,
                                     owner=lease.owner, channel=message.channel,
                                     symbol=message.symbol,
                                     lifecycle_id=self._connection.lifecycle_id)
