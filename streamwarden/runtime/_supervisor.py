"""The supervisor task of one lifecycle: the only code that changes it.

Each lifecycle gets one task on the engine loop. It owns the sans-I/O :class:`Lifecycle`, its
transport (whose ``run`` it starts as a child task and always ends), and the engine's handles of
its leases. Everything that can change the lifecycle arrives in its inbox, in order: acquires,
releases and subscription changes from the manager, and the transport's connection events. For
each, the task asks the core for the pending change, writes its audit record, then commits (the
effects run) or rolls back. Market-data messages do not go through the inbox: the messages a
transport hands over in one turn of the loop (a WebSocket frame) go straight to the leases'
queues at the end of that turn, grouped by channel and symbol (:mod:`._arrivals`), through the
core's immutable routing snapshot.

One shortcut skips the inbox: with an audit sink that never blocks (the in-memory one), a lease
operation that only counts a lease in or out (the state stays ``running``, the spec attaches no
effect, the wire keeps its pairs and an acquired lease is ready at once) runs on its caller's
thread (:meth:`Supervisor.acquire_here`, :meth:`Supervisor.release_here`). It holds the
lifecycle's lock throughout, and only while the task is not handling anything; the task takes
the same lock to start handling an item, so the two never change the lifecycle at once. The lock
is never held across network I/O, audit I/O (such a sink does none) or consumer code, and market
data never waits for it.

The task waits on its inbox bounded by the lifecycle's next deadline (start timeout, reconnect
grace, connection-limit grace, drain grace, or while running the staleness watchdog's next
check: a channel silent for ``stale_after`` while its market is open sends ``went_stale``, whose
effect closes the socket so that the transport reconnects), and ends the lifecycle when it is
due: it stops the transport within ``stop_timeout`` (cancelling it past the bound), then records
the final event. The final record is retried for at most ``stop_timeout`` more; past that the
lifecycle still reaches ``stopped``, and the loss is logged and counted (invariants.yaml, L2).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog

from streamwarden import logging as events
from streamwarden.audit.records import TRADE_UPDATES_REPLAYED, AuditRecord
from streamwarden.clock import Clock
from streamwarden.config import Settings
from streamwarden.errors import (
    AuditError,
    ConnectionLimitError,
    ConnectionStartError,
    InvalidInputError,
    InvalidTransitionError,
    InvariantViolationError,
    LeaseError,
    LeaseOverflowError,
    LeaseRevokedError,
    ReplayError,
    StartTimeoutError,
    StopTimeoutError,
    StreamwardenError,
)
from streamwarden.machine.spec import LifecycleSpec
from streamwarden.marketdata import Subscription
from streamwarden.runtime._arrivals import group
from streamwarden.runtime._delivery import Callback, CallbackPool, Mailbox, Waiters, wake
from streamwarden.runtime._handle import LeaseHandle, LeaseStatus
from streamwarden.runtime._lifecycle import (
    DRAINING,
    IDLE,
    RUNNING,
    STARTING,
    STOPPED,
    Draft,
    Effects,
    LeaseInfo,
    Lifecycle,
    Pending,
)
from streamwarden.runtime._recording import AuditWriter
from streamwarden.runtime._stats import StreamCounters, bump
from streamwarden.runtime._throttle import LogThrottle
from streamwarden.runtime._watchdog import Watchdog
from streamwarden.runtime.health import LeaseHealth, LifecycleHealth
from streamwarden.transports._contract import (
    ConnectFailure,
    MalformedMessage,
    ReplayReport,
    StreamMessage,
    Transport,
)

#: Seconds a cancelled transport task may take to end before it is counted as abandoned (or
#: ``stop_timeout``, if shorter: the stop's whole bound is at most twice ``stop_timeout``).
CANCEL_GRACE_SECONDS = 0.5
#: Seconds between attempts to write a lifecycle's final record while the sink fails.
AUDIT_RETRY_SECONDS = 0.2
#: At most this many ``transport.malformed_message`` lines per lifecycle per window of
#: :data:`MALFORMED_LOG_WINDOW_SECONDS`; the next line let through counts those held back.
MALFORMED_LOG_LINES = 5
MALFORMED_LOG_WINDOW_SECONDS = 10.0


class Retry:
    """Answer to an acquire sent to a lifecycle that is ending: use its successor."""


RETRY = Retry()


@dataclass(frozen=True)
class Services:
    """What every supervisor of one engine shares. Immutable; the members are thread-safe."""

    spec: LifecycleSpec
    settings: Settings
    clock: Clock
    writer: AuditWriter
    pool: CallbackPool
    log: structlog.stdlib.BoundLogger
    counters: dict[str, int] = field(default_factory=dict)

    def count(self, name: str) -> None:
        """Add one to an engine-wide counter (engine loop only)."""
        self.counters[name] = self.counters.get(name, 0) + 1


@dataclass(frozen=True)
class AcquireRequest:
    """A lease to grant on a lifecycle."""

    lease_id: str
    owner: str | None
    correlation_id: str
    subscriptions: frozenset[Subscription]
    callbacks: Mapping[str, Callback]
    client_order_id_prefix: str | None = None


@dataclass(frozen=True)
class _Call:
    """A command from the manager, with the future its caller awaits."""

    run: Callable[[], Awaitable[Any]]
    future: asyncio.Future[Any]


@dataclass(frozen=True)
class _Event:
    """A connection event from the transport, or an overflow from a delivery queue."""

    run: Callable[[], Awaitable[None]]


_Item = _Call | _Event


class Supervisor:
    """Owns one lifecycle. Every method runs on the engine loop, except those that say they
    may be called from any thread; none blocks the loop for longer than one in-memory lease
    operation holds the lifecycle's lock.

    The transport reports to it through the :class:`~streamwarden.transports.TransportEvents`
    methods ``on_*``.
    """

    def __init__(self, *, lifecycle: Lifecycle, transport: Transport, services: Services,
                 counters: StreamCounters) -> None:
        self.core = lifecycle
        self._counters = counters  # its stream key's, shared with the key's other lifecycles
        self.transport = transport
        self._services = services
        self._clock = services.clock
        self._settings = services.settings
        self._log = services.log.bind(lifecycle_id=lifecycle.lifecycle_id,
                                      fingerprint=lifecycle.key.fingerprint,
                                      kind=lifecycle.key.kind)
        self._inbox: asyncio.Queue[_Item] = asyncio.Queue()
        # Whether an item (or a command run in place, see _call) is being handled: one at a
        # time, in order. ``_free`` is set whenever it is not. ``_busy`` is set under ``_lock``,
        # which a lease operation on its caller's thread holds while it changes the lifecycle
        # (see acquire_here): the task never starts on an item in the middle of one.
        self._lock = threading.Lock()
        self._busy = False
        self._free = asyncio.Event()
        self._free.set()
        # The monotonic time at which the task, waiting on its inbox, wakes by itself (None:
        # it waits for an item only).
        self._wakes_at: float | None = None
        self._handles: dict[str, LeaseHandle] = {}
        self._transport_task: asyncio.Task[None] | None = None
        self._stop_task: asyncio.Task[None] | None = None
        self._connect_failure: ConnectFailure | None = None  # the latest since connected
        self._watchdog = Watchdog(lifecycle.key.kind, services.settings)
        self._retired = False
        self.finished = asyncio.Event()
        self.stop_abandoned = False
        self.messages = 0
        # Messages of the current loop turn, routed together at its end (see on_message), and
        # the numbering that keeps their order across the groups they are routed in.
        self._arrived: list[StreamMessage] = []
        self._sequence = itertools.count()
        self.malformed_messages = 0
        self._malformed_log = LogThrottle(self._clock.monotonic, per_window=MALFORMED_LOG_LINES,
                                          window=MALFORMED_LOG_WINDOW_SECONDS)
        self.created_at: datetime = self._clock.now()
        self.started_at: datetime | None = None
        self.last_transition_at: datetime = self.created_at

    @property
    def lifecycle_id(self) -> str:
        """The lifecycle's id."""
        return self.core.lifecycle_id

    # Commands from the manager (engine loop).

    async def acquire(self, request: AcquireRequest) -> LeaseHandle | Retry:
        """Grant a lease, or RETRY if this lifecycle is ending (acquire on its successor).

        Raises:
            AuditError / InvalidInputError: the acquire could not be recorded; nothing changed.
        """
        result: LeaseHandle | Retry = await self._call(lambda: self._acquire(request), RETRY)
        return result

    async def release(self, handle: LeaseHandle, correlation_id: str,
                      details: Mapping[str, Any] | None = None) -> None:
        """Count ``handle`` out; a no-op if it is no longer live.

        Raises:
            AuditError: the release could not be recorded; the lease stays live.
        """
        await self._call(lambda: self._release(handle, correlation_id, details), None)

    async def change(self, handle: LeaseHandle, pairs: frozenset[Subscription], *,
                     subscribe: bool, correlation_id: str) -> None:
        """Add or remove a lease's (channel, symbol) pairs.

        Raises:
            LeaseError / LeaseRevokedError: the lease is no longer live.
            AuditError: the change could not be recorded; nothing changed.
        """
        gone = LeaseError(f"lease {handle.info.lease_id} is not live", operation="subscribe")
        await self._call(lambda: self._change(handle, pairs, subscribe, correlation_id), gone)

    async def shutdown(self, correlation_id: str, error: LeaseRevokedError) -> None:
        """Revoke every lease and stop (the manager is closing).

        Raises:
            AuditError: the shutdown could not be recorded (the lifecycle will still stop).
        """
        await self._call(lambda: self._shutdown(correlation_id, error), None)

    async def settle(self) -> None:
        """Return once everything posted to the inbox before this call has been handled."""
        await self._call(_nothing, None)

    async def _call(self, run: Callable[[], Awaitable[Any]], if_finished: Any) -> Any:
        if self.finished.is_set():
            if isinstance(if_finished, BaseException):
                raise if_finished
            return if_finished
        if self._services.writer.inline and not self._busy and self._inbox.empty():
            return await self._run_in_place(run)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._inbox.put_nowait(_Call(run, future))
        return await future

    async def _run_in_place(self, run: Callable[[], Awaitable[Any]]) -> Any:
        """Run a command in the caller's task while the supervisor waits on its empty inbox.

        Only with an audit sink that never blocks: then nothing in ``run`` suspends between a
        record and its commit, so the caller being cancelled cannot split them. The same order
        holds as through the inbox (it is empty, and the supervisor waits while this runs);
        the supervisor is woken afterwards when its wait no longer fits the lifecycle (see
        :meth:`_must_wake`).
        """
        self._claim()
        try:
            return await run()
        finally:
            must_wake = self._must_wake()
            self._unclaim()
            if must_wake:
                self._inbox.put_nowait(_Event(_nothing))  # it may have to stop or retire

    def _claim(self) -> bool:
        """Mark the lifecycle busy for the task (engine loop); False if it already is. Waits
        for a lease operation running on a caller's thread to finish (microseconds)."""
        with self._lock:
            if self._busy:
                return False
            self._busy = True
        self._free.clear()
        return True

    def _unclaim(self) -> None:
        self._busy = False
        self._free.set()

    def _must_wake(self) -> bool:
        """Whether the task must look at the lifecycle now, after a command ran in place: the
        lifecycle never left ``idle`` (its first acquire was not recorded) and must retire, or
        it is due to stop, or its next deadline has passed (the injected clock may run apart
        from the loop's) or is earlier than the time the task wakes by itself. Otherwise the
        task's own wake-up (or none) still fits and nothing is posted.
        """
        core = self.core
        now = self._clock.monotonic()
        if core.state == IDLE or core.due(now):
            return True
        deadline = self._deadline()
        if deadline is None:
            return False
        return deadline <= now or self._wakes_at is None or deadline < self._wakes_at

    # What the transport reports (TransportEvents), on the engine loop.

    def on_connected(self) -> None:
        self._post(self._on_connected)

    def on_connection_lost(self, reason: str) -> None:
        self._post(lambda: self._on_lost(reason))

    def on_connect_failed(self, failure: ConnectFailure, attempt: int, delay: float) -> None:
        self._post(lambda: self._on_connect_failed(failure, attempt, delay))

    def on_fatal_error(self, error: ConnectionStartError) -> None:
        self._post(lambda: self._on_fatal(error))

    def on_subscribed(self, pairs: frozenset[Subscription]) -> None:
        self._post(lambda: self._on_acked(pairs))

    def on_replayed(self, report: ReplayReport) -> None:
        self._post(lambda: self._on_replayed(report))

    def on_message(self, message: StreamMessage) -> None:
        if self._retired:
            return
        arrived = self._arrived
        arrived.append(message)
        if len(arrived) == 1:  # the first of this loop turn: route them all at its end
            asyncio.get_running_loop().call_soon(self._route_arrived)

    def _route_arrived(self) -> None:
        """Route the messages of the loop turn that just ended, grouped by channel and
        symbol, through the current routing snapshot."""
        arrived, self._arrived = self._arrived, []
        if self._retired:
            return
        self.messages += len(arrived)
        counts = self._counters.messages
        seen = self._clock.monotonic()
        routes = self.core.routes
        woken: Waiters = []
        for first, arrivals in group(arrived, self._sequence, time.monotonic()):
            channel = first.channel
            counts[channel] = counts.get(channel, 0) + len(arrivals.entries)
            self._watchdog.message(channel, seen)
            for delivery in routes.targets(first):
                waiters = delivery.put(arrivals)
                if waiters:
                    woken += waiters
        if woken:
            wake(woken)

    def on_malformed(self, malformed: MalformedMessage) -> None:
        if self._retired:
            return
        self.malformed_messages += 1
        self._counters.malformed += 1
        held_back = self._malformed_log.admit()
        if held_back is not None:
            self._log.warning(events.MALFORMED_MESSAGE, channel=malformed.channel,
                              symbol=malformed.symbol, field=malformed.field,
                              reason=malformed.reason, suppressed=held_back)

    def _post(self, run: Callable[[], Awaitable[None]]) -> None:
        if self._retired:
            self._log.info(events.TRANSPORT_STALE_CALLBACK)
            return
        self._inbox.put_nowait(_Event(run))

    def _overflowed(self, mailbox: Mailbox) -> None:
        handle = self._handles.get(mailbox.lease_id)
        if handle is not None:
            self._post(lambda: self._on_overflow(handle))

    # The task.

    async def run(self) -> None:
        """Serve the inbox until the lifecycle has stopped (or never started). Never raises."""
        try:
            await self._serve()
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug here must not take the engine's other lifecycles down
            self._log.exception(events.SUPERVISOR_FAILED)
        finally:
            self._retired = True
            self.finished.set()
            self._answer_leftovers()
            if self._transport_task is not None and not self._transport_task.done():
                self._transport_task.cancel()

    async def _serve(self) -> None:
        while True:
            item = await self._next()
            while not self._claim():  # a command running in place (see _call) finishes first
                await self._free.wait()
            # Once it returns (or raises) it stays busy for good: commands then wait in the
            # inbox and get RETRY, and no lease operation runs on a caller's thread.
            if item is not None:
                await self._handle(item)
            state = self.core.state
            if state == STOPPED or (state == IDLE and not self.core.leases):
                return
            if self.core.due(self._clock.monotonic()):
                await self._stop()
                return
            if state == RUNNING:
                await self._check_stale()
            self._unclaim()

    def _deadline(self) -> float | None:
        """When the task must wake by itself: the lifecycle's next deadline, or while running
        the watchdog's next check."""
        core = self.core
        return self._watchdog.deadline() if core.state == RUNNING else core.next_deadline()

    async def _next(self) -> _Item | None:
        deadline = self._deadline()
        self._wakes_at = deadline
        if deadline is None:
            return await self._inbox.get()
        timeout = deadline - self._clock.monotonic()
        if timeout <= 0:
            return None if self._inbox.empty() else self._inbox.get_nowait()
        try:
            async with asyncio.timeout(timeout):
                return await self._inbox.get()
        except TimeoutError:
            return None

    async def _handle(self, item: _Item) -> None:
        if isinstance(item, _Event):
            # Debug mode: a violation was logged, and the transition took effect.
            with contextlib.suppress(InvariantViolationError):
                await item.run()
            return
        if item.future.done():  # its caller gave up
            return
        try:
            result = await item.run()
        except Exception as exc:
            if not item.future.done():
                item.future.set_exception(exc)
            return
        if not item.future.done():
            item.future.set_result(result)
        elif isinstance(result, LeaseHandle):  # its caller gave up meanwhile: nobody holds it
            try:
                await self._release(result, result.info.correlation_id,
                                    {"reason": "acquire_cancelled"})
            except (AuditError, InvalidInputError) as exc:
                self._log.error(events.AUDIT_WRITE_FAILED, spec_event="release", error=str(exc))

    def _answer_leftovers(self) -> None:
        while not self._inbox.empty():
            item = self._inbox.get_nowait()
            if isinstance(item, _Call) and not item.future.done():
                item.future.set_result(RETRY)

    # Commands.

    async def _acquire(self, request: AcquireRequest) -> LeaseHandle | Retry:
        handle = self._new_handle(request)
        try:
            pending = self.core.acquire(handle.info, request.subscriptions, handle.mailbox,
                                        self._clock.monotonic())
        except InvalidTransitionError:
            return RETRY  # stopped, or draining past reuse: the successor takes it
        self._handles[handle.info.lease_id] = handle
        try:
            await self._apply(pending)
        except BaseException:
            del self._handles[handle.info.lease_id]
            raise
        return handle

    def _new_handle(self, request: AcquireRequest) -> LeaseHandle:
        core = self.core
        info = LeaseInfo(request.lease_id, core.lifecycle_id, core.key, request.owner,
                         request.correlation_id, request.client_order_id_prefix)
        mailbox = Mailbox(lease_id=info.lease_id, owner=info.owner,
                          capacity=self._settings.lease_queue_size,
                          callbacks=request.callbacks, pool=self._services.pool,
                          on_overflow=self._overflowed, log=self._log,
                          counters=self._counters,
                          conflate_quotes=self._settings.conflate_quotes)
        return LeaseHandle(info, mailbox, request.subscriptions)

    async def _release(self, handle: LeaseHandle, correlation_id: str,
                       details: Mapping[str, Any] | None) -> None:
        pending = self.core.release(handle.info.lease_id, correlation_id, details=details)
        if pending is None:
            self._log.info(events.RELEASE_IGNORED, lease_id=handle.info.lease_id,
                           status=handle.status.value)
            return
        await self._apply(pending)

    async def _change(self, handle: LeaseHandle, pairs: frozenset[Subscription],
                      subscribe: bool, correlation_id: str) -> None:
        if handle.status is not LeaseStatus.LIVE:
            raise _not_live(handle, "subscribe")
        pending = self.core.change_subscriptions(handle.info.lease_id, pairs,
                                                 subscribe=subscribe,
                                                 correlation_id=correlation_id)
        if pending is not None:
            await self._apply(pending)

    async def _shutdown(self, correlation_id: str, error: LeaseRevokedError) -> None:
        self.core.close_now()
        if self.core.state in (STARTING, RUNNING):
            pending = self.core.signal("shutdown", correlation_id=correlation_id,
                                       revoke_error=error)
            await self._apply(pending)

    # Lease operations on the caller's thread.

    def acquire_here(self, request: AcquireRequest) -> LeaseHandle | None:
        """Grant a lease on the calling thread if that only counts it in: the lifecycle is
        running and idle, its audit sink never blocks, the lease's pairs are on the wire and
        acknowledged (so it is ready at once), and the spec keeps ``running`` with no effect.
        Otherwise None, and nothing changed: :meth:`acquire` on the engine loop does it.

        Raises:
            AuditError / InvalidInputError: the acquire could not be recorded; nothing changed.
            InvariantViolationError: debug mode, an invariant failed after the acquire (which
                took effect).

        Thread-safety: any thread; holds the lifecycle's lock throughout (no I/O under it).
        """
        with self._lock:
            if not self._free_here() or not self.core.carries(request.subscriptions):
                return None
            handle = self._new_handle(request)
            try:
                pending = self.core.acquire(handle.info, request.subscriptions, handle.mailbox,
                                            self._clock.monotonic())
            except InvalidTransitionError:
                return None  # a spec that refuses it here: the engine loop says what to do
            if not self.core.quiet(pending):  # the spec attached an effect after all
                self.core.rollback(pending)
                return None
            self._handles[handle.info.lease_id] = handle
            try:
                self._apply_here(pending)
            except BaseException:
                del self._handles[handle.info.lease_id]
                raise
            return handle

    def release_here(self, handle: LeaseHandle, correlation_id: str) -> bool:
        """Count a ready lease out on the calling thread if that leaves the state (``running``,
        another lease still counted) and the wire as they are; False if the engine loop must
        do it (:meth:`release`), and nothing changed.

        Raises:
            AuditError: the release could not be recorded; the lease stays live.
            InvariantViolationError: debug mode, after the release took effect.

        Thread-safety: any thread; holds the lifecycle's lock throughout (no I/O under it).
        """
        with self._lock:
            lease_id = handle.info.lease_id
            if (not self._free_here() or self._handles.get(lease_id) is not handle
                    or not handle.ready.is_set() or self.core.refs < 2
                    or not self.core.shared(lease_id)):
                return False
            pending = self.core.release(lease_id, correlation_id)
            assert pending is not None, "shared() found the lease live"
            if not self.core.quiet(pending):  # the spec attached an effect after all
                self.core.rollback(pending)
                return False
            self._apply_here(pending)
            return True

    def _free_here(self) -> bool:
        """Whether a lease operation may run on its caller's thread now (under ``_lock``): the
        task is handling nothing and has nothing waiting, the lifecycle is running, and its
        records are appended without I/O."""
        return (not self._busy and not self._retired and self._inbox.empty()
                and self.core.state == RUNNING and self._services.writer.inline)

    def _apply_here(self, pending: Pending) -> None:
        """:meth:`_apply` of a quiet change, on the calling thread (under ``_lock``)."""
        record = self._build(pending.draft)
        try:
            stored = self._services.writer.append(record)
        except BaseException:
            self.core.rollback(pending)
            raise
        self._carry_out(pending, stored)
        if self._settings.debug:
            self.check_invariants()

    # Connection events.

    async def _on_connected(self) -> None:
        self._connect_failure = None
        self._watchdog.lost()  # a new socket: its acknowledgement starts the count again
        await self._signal("connected")

    async def _on_connect_failed(self, failure: ConnectFailure, attempt: int,
                                 delay: float) -> None:
        failure = ConnectFailure(failure.cause, self._redact(failure.detail))
        self._connect_failure = failure
        bump(self._counters.connect_failures, failure.cause)
        self._log.warning(events.TRANSPORT_CONNECT_FAILED, attempt=attempt,
                          delay=round(delay, 3), cause=failure.cause, detail=failure.detail)
        if not self.core.reconnecting:
            return  # a first start: start_timeout bounds it, start_failed names the cause
        pending = self.core.reconnect_failed(attempt, delay, failure.cause, failure.detail)
        try:
            await self._apply(pending)
        except (AuditError, InvalidInputError) as exc:
            self._log.error(events.AUDIT_WRITE_FAILED, spec_event="reconnect_failed",
                            error=str(exc))

    async def _on_lost(self, reason: str) -> None:
        self.core.disconnected()
        self._watchdog.lost()
        await self._signal("connection_lost", details={"reason": self._redact(reason)})

    async def _on_fatal(self, error: ConnectionStartError) -> None:
        message = self._redact(error.message)
        self.core.fail(type(error)(message, cause=error.cause, operation="start",
                                   fingerprint=self.core.key.fingerprint,
                                   state=self.core.state,
                                   correlation_id=self.core.origin_correlation_id))
        if self.core.state == RUNNING:
            await self._signal("connection_lost", details={"reason": message})

    async def _on_replayed(self, report: ReplayReport) -> None:
        details = report.details()
        error = report.error
        if error is None:
            self._log.info(events.TRADE_UPDATES_REPLAYED, **details)
        else:
            error = ReplayError(self._redact(error.message), operation="replay",
                                fingerprint=self.core.key.fingerprint, state=self.core.state)
            self._log.warning(events.TRADE_UPDATES_REPLAY_FAILED, error=error.message,
                              **details)
        await self._record_quietly(self.core.notice(
            TRADE_UPDATES_REPLAYED, details, outcome="ok" if error is None else "failed",
            error=error))

    async def _on_acked(self, pairs: frozenset[Subscription]) -> None:
        self.core.acknowledge(pairs)
        self._watchdog.acknowledged({channel for channel, _ in pairs}, self._clock.monotonic())
        self._update_readiness()

    async def _check_stale(self) -> None:
        """Send ``went_stale`` if a channel on the wire has been silent too long (running)."""
        if not self.core.transport_connected:
            return
        stale = self._watchdog.check(self._clock.monotonic(), self._clock.now())
        if stale is None:
            return
        silent_for = round(stale.silent_for, 3)
        self._log.warning(events.STREAM_STALE, channel=stale.channel, silent_for=silent_for)
        await self._signal("went_stale", details={"channel": stale.channel,
                                                  "silent_for": silent_for})

    async def _on_overflow(self, handle: LeaseHandle) -> None:
        lease_id = handle.info.lease_id
        entry = self.core.leases.get(lease_id)
        if entry is None:
            return
        error = LeaseOverflowError(
            f"lease {lease_id} fell {self._settings.lease_queue_size} trade updates behind; "
            "revoked so that no update is dropped silently",
            operation="deliver", fingerprint=self.core.key.fingerprint,
            correlation_id=handle.info.correlation_id)
        pending = self.core.release(lease_id, handle.info.correlation_id, outcome="failed",
                                    error=error, details={"reason": "delivery_overflow"})
        assert pending is not None
        try:
            await self._apply(pending)
        except (AuditError, InvalidInputError) as exc:
            self._log.error(events.AUDIT_WRITE_FAILED, spec_event="release", error=str(exc))
            return
        self._log.warning(events.LEASE_REVOKED, lease_id=lease_id, owner=handle.info.owner,
                          reason=error.message)
        await self._record_quietly(self.core.revocation(entry, error, self.core.cause_id))

    async def _signal(self, event: str, details: Mapping[str, Any] | None = None) -> None:
        try:
            pending = self.core.signal(event, details=details)
        except InvalidTransitionError as exc:
            self._log.warning(events.TRANSITION_REJECTED, spec_event=event,
                              state=self.core.state, refs=self.core.refs, reason=exc.message)
            await self._record_quietly(self.core.rejection(event, exc))
            return
        try:
            await self._apply(pending)
        except (AuditError, InvalidInputError) as exc:
            self._log.error(events.AUDIT_WRITE_FAILED, spec_event=event, error=str(exc))

    # Applying a change: record, then commit and carry out, or roll back.

    async def _apply(self, pending: Pending) -> Effects:
        core = self.core
        record = self._build(pending.draft)
        try:
            stored = await self._services.writer.write(record)
        except BaseException:
            core.rollback(pending)
            raise
        return await self._commit(pending, stored)

    def _build(self, draft: Draft) -> AuditRecord:
        """The audit record of ``draft``; an error it carries is counted by type."""
        if draft.error is not None:
            bump(self._counters.errors, type(draft.error).__name__)
        return self._services.writer.build(self.core.lifecycle_id, self.core.key, draft)

    async def _commit(self, pending: Pending, record: AuditRecord | None) -> Effects:
        effects = self._carry_out(pending, record)
        await self._record_revocations(effects, record)
        if self._settings.debug:
            self.check_invariants()
        return effects

    def _carry_out(self, pending: Pending, record: AuditRecord | None) -> Effects:
        """Commit ``pending`` (its record written) and carry out its effects, all but the
        ``lease_revoked`` records of the leases it revoked."""
        reconnects = self.core.reconnects
        effects = self.core.commit(pending, record, self._clock.monotonic())
        self._counters.reconnects += self.core.reconnects - reconnects
        self._entered(pending, record)
        if effects.wire is not None:
            self.transport.set_subscriptions(effects.wire)
        if effects.reconnect_transport:
            self._watchdog.lost()
            self.transport.reconnect(pending.draft.event)
        if effects.start_transport:
            self._transport_task = asyncio.create_task(
                self._run_transport(), name=f"streamwarden-transport-{self.lifecycle_id}")
        if effects.ended is not None:
            handle = self._handles.pop(effects.ended.info.lease_id)
            handle.end(LeaseStatus.REVOKED if effects.revoke_error else LeaseStatus.RELEASED,
                       effects.revoke_error)
        if pending.resubscribe is not None:
            handle = self._handles[pending.resubscribe.info.lease_id]
            handle.mailbox.forget(handle.subscriptions - pending.resubscribe.subscriptions)
            handle.subscriptions = pending.resubscribe.subscriptions
        self._end_revoked(effects)
        transition = pending.transition
        entry = pending.add or pending.resubscribe
        if transition is not None and transition.from_state != transition.to_state:
            self._update_readiness()
        elif entry is not None:  # only the lease this change is about can have changed
            self._update_lease_readiness(entry.info.lease_id)
        return effects

    def _entered(self, pending: Pending, record: AuditRecord | None) -> None:
        transition = pending.transition
        if transition is None:
            return
        self._counters.entered(pending.draft.event)
        self.last_transition_at = record.occurred_at if record else self._clock.now()
        if transition.to_state == RUNNING and self.started_at is None:
            self.started_at = self.last_transition_at
        if not self._log.isEnabledFor(logging.INFO):  # not even the fields: a lease op's cost
            return
        draft = pending.draft
        self._log.info(events.TRANSITION, spec_event=draft.event,
                       from_state=draft.from_state, to_state=draft.to_state,
                       refs_before=draft.refs_before, refs_after=draft.refs_after,
                       lease_id=draft.lease_id, owner=draft.owner, outcome=draft.outcome,
                       event_id=record.event_id if record else None)

    def _revocation_error(self, effects: Effects) -> StreamwardenError:
        return effects.revoke_error or ConnectionStartError(
            "the connection failed", fingerprint=self.core.key.fingerprint)

    def _end_revoked(self, effects: Effects) -> None:
        """End the handles of the leases ``effects`` revoked (their records come next)."""
        if not effects.revoked:
            return
        error = self._revocation_error(effects)
        for entry in effects.revoked:
            handle = self._handles.pop(entry.info.lease_id, None)
            if handle is not None:
                handle.end(LeaseStatus.REVOKED, error)
            self._log.warning(events.LEASE_REVOKED, lease_id=entry.info.lease_id,
                              owner=entry.info.owner, reason=error.message)

    async def _record_revocations(self, effects: Effects, cause: AuditRecord | None) -> None:
        """Write a ``lease_revoked`` record for each lease ``effects`` revoked."""
        if not effects.revoked:
            return
        error = self._revocation_error(effects)
        for entry in effects.revoked:
            await self._record_quietly(self.core.revocation(
                entry, error, cause.event_id if cause else None))

    async def _record_quietly(self, draft: Draft) -> None:
        """Record an event that changes nothing; a failure is logged, not raised."""
        record = self._build(draft)
        try:
            await self._services.writer.write(record)
        except (AuditError, InvalidInputError) as exc:
            self._log.error(events.AUDIT_WRITE_FAILED, spec_event=draft.event, error=str(exc))

    def _update_readiness(self) -> None:
        """Set or clear every lease's ready flag (the state or the acknowledged wire changed)."""
        for lease_id in self._handles:
            self._update_lease_readiness(lease_id)

    def _update_lease_readiness(self, lease_id: str) -> None:
        handle = self._handles.get(lease_id)
        if handle is None:
            return
        if self.core.ready(lease_id):
            handle.ready.set()
        else:
            handle.ready.clear()

    # Ending the lifecycle.

    async def _stop(self) -> None:
        self.core.issue_close()
        self._retired = True
        clean = await self._stop_transport()
        await self._finish(clean)

    async def _run_transport(self) -> None:
        try:
            await self.transport.run(self)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a broken transport must not leave the lifecycle starting
            self.on_fatal_error(ConnectionStartError(f"transport failed: {type(exc).__name__}"))

    async def _stop_transport(self) -> bool:
        task = self._transport_task
        if task is None:
            return True
        loop = asyncio.get_running_loop()
        bound = self._settings.stop_timeout
        deadline = loop.time() + bound
        # Not wait_for: past its timeout it waits for the cancelled stop to end, and a stop that
        # swallows the cancellation (websockets' close() does while the peer withholds its close
        # frame) would hold the lifecycle far past stop_timeout.
        stopping = self._stop_task = asyncio.create_task(
            self.transport.stop(), name=f"streamwarden-stop-{self.lifecycle_id}")
        stopping.add_done_callback(_retrieve)
        await asyncio.wait({stopping}, timeout=bound)
        await asyncio.wait({task}, timeout=max(0.0, deadline - loop.time()))
        if stopping.done() and not stopping.cancelled() and stopping.exception() is not None:
            self._log.warning(events.TRANSPORT_STOP_FAILED,
                              error_type=type(stopping.exception()).__name__)
        if task.done() and stopping.done():
            return True
        task.cancel()
        stopping.cancel()
        await asyncio.wait({task, stopping}, timeout=min(CANCEL_GRACE_SECONDS, bound))
        if not (task.done() and stopping.done()):  # its socket may still be open
            self.stop_abandoned = True
            self._services.count("abandoned_transports")
        self._log.error(events.TRANSPORT_STOP_TIMEOUT, stop_timeout=bound,
                        abandoned=self.stop_abandoned)
        return False

    async def _finish(self, clean: bool) -> None:
        event, outcome, error = self._final_event(clean)
        details: dict[str, Any] = {"stop_clean": clean}
        if event == "start_failed":
            details.update(cause_details(self.start_failure()))
        pending = self.core.signal(event, outcome=outcome, error=error,
                                   details=details, revoke_error=error)
        record = self._build(pending.draft)
        stored = await self._write_final(record)
        with contextlib.suppress(InvariantViolationError):  # debug mode: logged, took effect
            await self._commit(pending, stored)

    def _final_event(self, clean: bool) -> tuple[str, Any, StreamwardenError | None]:
        core = self.core
        if core.state == STARTING:
            error = core.failure or self._start_error()
            self._log.warning(events.LIFECYCLE_FAILED, error_type=type(error).__name__,
                              error=error.message)
            return "start_failed", "failed" if clean else "forced", error
        if clean:
            return "closed", "ok", None
        return "close_timeout", "forced", StopTimeoutError(
            f"transport did not stop within stop_timeout={self._settings.stop_timeout}s",
            operation="stop", fingerprint=core.key.fingerprint, state=DRAINING)

    def _start_error(self) -> ConnectionStartError:
        """Why a (re)start that is due without a fatal error failed: its bound ran out."""
        core, settings, failure = self.core, self._settings, self._connect_failure
        context = {"operation": "start", "fingerprint": core.key.fingerprint,
                   "state": STARTING}
        if core.reconnecting and core.connection_limited:
            return ConnectionLimitError(
                "Alpaca still refused the reconnect with 406 (connection limit exceeded) "
                f"connection_limit_grace={settings.connection_limit_grace}s after the drop: "
                f"another connection holds the account's connection for that endpoint"
                f"{cause_suffix(failure)}", **context)
        if core.reconnecting:
            return StartTimeoutError(
                f"not reconnected within reconnect_grace={settings.reconnect_grace}s"
                f"{cause_suffix(failure)}", cause=failure.cause if failure else None,
                **context)
        return StartTimeoutError(
            f"not connected within start_timeout={settings.start_timeout}s"
            f"{cause_suffix(failure)}", cause=failure.cause if failure else None, **context)

    async def _write_final(self, record: AuditRecord) -> AuditRecord | None:
        """Write the final record, retrying for at most ``stop_timeout``; None if it is lost.

        One attempt at a time: an attempt that outlives the bound may still store the record
        later, but it is never written twice.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.stop_timeout
        attempt: asyncio.Future[AuditRecord] | None = None
        while True:
            if attempt is None:
                attempt = asyncio.ensure_future(self._services.writer.write(record))
                attempt.add_done_callback(_retrieve)
            try:
                return await asyncio.wait_for(asyncio.shield(attempt),
                                              max(0.0, deadline - loop.time()))
            except (AuditError, InvalidInputError) as exc:
                attempt = None
                problem = str(exc)
            except TimeoutError:
                problem = "timeout"
            if loop.time() + AUDIT_RETRY_SECONDS >= deadline:
                self._services.count("final_records_lost")
                self._log.error(events.AUDIT_FINAL_RECORD_LOST, spec_event=record.event,
                                event_id=record.event_id, error=problem)
                return None
            await asyncio.sleep(AUDIT_RETRY_SECONDS)

    # Views.

    def start_failure(self) -> ConnectFailure | None:
        """Why the lifecycle is not running yet, if known: the error retrying cannot fix, else
        the latest failed attempt to connect since the last ``connected``."""
        failure = self.core.failure
        if failure is not None:
            cause = failure.cause if isinstance(failure, ConnectionStartError) else "other"
            return ConnectFailure(cause, failure.message)
        return self._connect_failure

    def transport_done(self) -> bool:
        """INV7's ``transport_done``: the transport task ended, or was counted as abandoned."""
        task = self._transport_task
        return task is None or task.done() or self.stop_abandoned

    def violations(self) -> list[str]:
        """The machine- and connection-level invariants that fail now (engine loop)."""
        with self._lock:  # not in the middle of a lease operation on a caller's thread
            return self._violations()

    def _violations(self) -> list[str]:
        env = self.core.invariant_env(socket_open=self.transport.socket_open,
                                      transport_done=self.transport_done(),
                                      wire=self.transport.subscriptions)
        return [f"{inv.id}: {inv.expr.source}"
                for inv in self._services.spec.invariants_in("machine", "connection")
                if not inv.expr.evaluate(env)]

    def check_invariants(self) -> None:
        """Debug mode: log and raise if an invariant fails. Call with the lifecycle held (the
        task busy, or a caller's thread under its lock).

        Raises:
            InvariantViolationError: naming the invariants that fail.
        """
        failed = self._violations()
        if failed:
            self._log.critical(events.INVARIANT_VIOLATED, violations=failed)
            raise InvariantViolationError(f"invariant(s) violated: {'; '.join(failed)}",
                                          state=self.core.state,
                                          fingerprint=self.core.key.fingerprint)

    def health(self) -> LifecycleHealth:
        """This lifecycle as shown in the health report (engine loop)."""
        with self._lock:  # not in the middle of a lease operation on a caller's thread
            return self._health()

    def _health(self) -> LifecycleHealth:
        core = self.core
        leases = []
        for handle in self._handles.values():
            stats = handle.mailbox.stats()
            leases.append(LeaseHealth(
                lease_id=handle.info.lease_id, owner=handle.info.owner,
                correlation_id=handle.info.correlation_id,
                symbols=tuple(sorted({symbol for _, symbol in handle.subscriptions})),
                client_order_id_prefix=handle.info.client_order_id_prefix,
                queue_depth=stats.depth, oldest_undelivered_age=stats.oldest_age,
                delivered=stats.delivered, dropped=stats.dropped,
                callback_errors=stats.callback_errors,
                callback_running_for=stats.callback_running_for,
            ))
        return LifecycleHealth(
            lifecycle_id=core.lifecycle_id, fingerprint=core.key.fingerprint,
            kind=core.key.kind, paper=core.key.paper, feed=core.key.feed, state=core.state,
            refs=core.refs, leases=tuple(leases), created_at=_iso(self.created_at),
            started_at=_iso(self.started_at) if self.started_at else None,
            last_transition_at=_iso(self.last_transition_at), messages=self.messages,
            reconnects=core.reconnects,
            callback_errors=sum(lease.callback_errors for lease in leases),
            stop_abandoned=self.stop_abandoned, malformed_messages=self.malformed_messages,
            message_ages=self._watchdog.ages({channel for channel, _ in core.wire},
                                             self._clock.monotonic()),
        )

    def _redact(self, text: str) -> str:
        return self._services.writer.redact(text)


def cause_details(failure: ConnectFailure | None) -> dict[str, str]:
    """The audit ``details`` naming why a start failed or timed out: ``cause`` (``timeout``
    when no attempt reported a failure) and, when known, ``cause_detail``."""
    if failure is None:
        return {"cause": "timeout"}
    return {"cause": failure.cause, "cause_detail": failure.detail}


def cause_suffix(failure: ConnectFailure | None) -> str:
    """``": <detail>"`` for a start error's message, or nothing when no attempt failed."""
    return f": {failure.detail}" if failure is not None else ""


async def _nothing() -> None:
    return None


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # retrieved: the failure is logged by the loop that awaited it


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds")


def _not_live(handle: LeaseHandle, operation: str) -> LeaseError:
    if handle.status is LeaseStatus.REVOKED:
        return LeaseRevokedError(f"lease {handle.info.lease_id} was revoked",
                                 operation=operation,
                                 correlation_id=handle.info.correlation_id)
    return LeaseError(f"lease {handle.info.lease_id} was released", operation=operation,
                      correlation_id=handle.info.correlation_id)
