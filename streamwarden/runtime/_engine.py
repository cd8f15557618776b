"""The engine: one event-loop thread per manager, and everything that runs on it.

The engine owns the manager's registry of lifecycles (at most one non-stopped lifecycle per
stream key, INV5) and runs every lifecycle's :class:`Supervisor` (and, under it, its transport)
as a task of one ``asyncio.TaskGroup`` on one named thread. Threads do not grow with
connections: the engine thread, one audit writer thread (for a sink that may block), and a fixed
pool of callback workers.

The coroutines here are the one implementation under both facades: ``ConnectionManager`` waits
for them from its caller's thread, ``AsyncConnectionManager`` awaits them from its caller's loop.
The registry is touched only on the engine loop, so it needs no lock.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import threading
from collections import Counter, deque
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar

import structlog

from streamwarden import logging as events
from streamwarden._keys import StreamKey
from streamwarden._redaction import SecretRedactor
from streamwarden.audit.records import AuditSink
from streamwarden.clock import Clock
from streamwarden.config import Settings
from streamwarden.credentials import Credentials
from streamwarden.errors import (
    AuditError,
    InvariantViolationError,
    LeaseError,
    LeaseRevokedError,
    ManagerClosedError,
    ReentrancyError,
    StartTimeoutError,
    StreamwardenError,
    WaitTimeoutError,
)
from streamwarden.ids import new_id
from streamwarden.machine.spec import LifecycleSpec
from streamwarden.marketdata import Subscription
from streamwarden.runtime._delivery import CallbackPool
from streamwarden.runtime._handle import LeaseHandle, LeaseStatus
from streamwarden.runtime._lifecycle import RUNNING, STARTING, STOPPED, Lifecycle, Timing
from streamwarden.runtime._recording import AuditWriter
from streamwarden.runtime._stats import (
    HistogramSnapshot,
    RuntimeStats,
    StreamCounters,
    StreamTotals,
)
from streamwarden.runtime._supervisor import (
    AcquireRequest,
    Services,
    Supervisor,
    cause_details,
    cause_suffix,
)
from streamwarden.runtime.health import HealthReport
from streamwarden.transports._contract import TransportFactory

T = TypeVar("T")

#: Seconds an acquire waits for a closing predecessor beyond ``stop_timeout`` (L1).
CLOSE_SLACK_SECONDS = 1.0
#: Seconds a blocking call may wait for audit I/O beyond the lifecycle's own bounds; past it
#: the call gives up with WaitTimeoutError (a safety net: the sink's own timeouts come first).
AUDIT_SLACK_SECONDS = 30.0
#: Seconds the engine thread may take to start or to end.
THREAD_BOUND_SECONDS = 5.0
RECENTLY_STOPPED = 32

_numbers = itertools.count(1)


class Engine:
    """One manager's event loop, registry and shared services.

    Thread-safety: :meth:`run_sync` and :meth:`run_async` may be called from any thread except
    the engine's own; every coroutine method runs on the engine loop.
    """

    def __init__(
        self,
        *,
        spec: LifecycleSpec,
        settings: Settings,
        clock: Clock,
        sink: AuditSink,
        transport_factory: TransportFactory,
        log: structlog.stdlib.BoundLogger,
        redactor: SecretRedactor,
        key_details: Callable[[StreamKey], Mapping[str, Any]] | None = None,
    ) -> None:
        self.name = f"streamwarden-{next(_numbers)}"
        self.settings = settings
        self._clock = clock
        self._factory = transport_factory
        self._log = log
        self._writer = AuditWriter(sink, clock, redactor, thread_name=f"{self.name}-audit",
                                   key_details=key_details)
        self._pool = CallbackPool(settings.callback_workers, self.name)
        self._services = Services(spec=spec, settings=settings, clock=clock,
                                  writer=self._writer, pool=self._pool, log=log)
        self._by_key: dict[StreamKey, Supervisor] = {}
        self._counters: dict[StreamKey, StreamCounters] = {}  # every key ever served
        self._active: dict[str, Supervisor] = {}
        self._recent: deque[Supervisor] = deque(maxlen=RECENTLY_STOPPED)
        self._closed = False
        self._loop = asyncio.new_event_loop()
        self._group: asyncio.TaskGroup | None = None
        self._stopping: asyncio.Event | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{self.name}-engine",
                                        daemon=True)
        self._thread.start()
        if not self._started.wait(THREAD_BOUND_SECONDS):
            raise StreamwardenError("the engine thread did not start", operation="start")

    # The thread.

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        finally:
            leftovers = asyncio.all_tasks(self._loop)
            for task in leftovers:
                task.cancel()
            if leftovers:
                self._loop.run_until_complete(asyncio.wait(leftovers,
                                                           timeout=THREAD_BOUND_SECONDS))
            self._loop.close()

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        async with asyncio.TaskGroup() as group:
            self._group = group
            self._started.set()
            await self._stopping.wait()
            for supervisor in list(self._active.values()):
                supervisor.finished.set()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task() and not task.done():
                    task.cancel()

    def threads(self) -> tuple[threading.Thread, ...]:
        """Every thread this engine has started that is still alive."""
        own = [self._thread, *self._pool.threads]
        named = [t for t in threading.enumerate() if t.name.startswith(f"{self.name}-audit")]
        return tuple(t for t in [*own, *named] if t.is_alive())

    @property
    def stopped(self) -> bool:
        """Whether the engine thread has ended (after :meth:`stop`)."""
        return not self._thread.is_alive()

    def _check_running(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        if self.stopped:
            coroutine.close()
            raise ManagerClosedError("the connection manager is closed", operation="call")
        if threading.current_thread() is self._thread:
            coroutine.close()
            raise ReentrancyError("a blocking streamwarden call was made on the manager's own "
                                  "engine thread; use the AsyncConnectionManager there")

    def inspect(self, view: Callable[[], T], timeout: float = THREAD_BOUND_SECONDS) -> T:
        """Compute ``view`` on the engine loop (directly once the engine has stopped), waiting
        at most ``timeout`` seconds.

        Raises:
            ReentrancyError / WaitTimeoutError: as :meth:`run_sync`.
        """
        if self.stopped:
            return view()

        async def run() -> T:
            return view()

        return self.run_sync(run(), timeout)

    async def ainspect(self, view: Callable[[], T]) -> T:
        """:meth:`inspect` for a coroutine on another loop."""
        if self.stopped:
            return view()

        async def run() -> T:
            return view()

        return await self.run_async(run(), THREAD_BOUND_SECONDS)

    def run_sync(self, coroutine: Coroutine[Any, Any, T], timeout: float) -> T:
        """Run ``coroutine`` on the engine and wait for it from this thread.

        Raises:
            ManagerClosedError: the engine has stopped.
            ReentrancyError: called on the engine thread itself (it would wait for itself).
            WaitTimeoutError: no result within ``timeout`` (the coroutine is cancelled).
            Whatever the coroutine raises.
        """
        self._check_running(coroutine)
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise WaitTimeoutError(f"no answer from the engine within {timeout:.1f}s",
                                   operation="call") from None

    async def run_async(self, coroutine: Coroutine[Any, Any, T], timeout: float) -> T:
        """Run ``coroutine`` on the engine and await it from the caller's loop (never blocks it).

        Raises:
            ManagerClosedError / ReentrancyError / WaitTimeoutError: as :meth:`run_sync`.
            Whatever the coroutine raises.
        """
        self._check_running(coroutine)
        future = asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coroutine, self._loop))
        try:
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError:
            raise WaitTimeoutError(f"no answer from the engine within {timeout:.1f}s",
                                   operation="call") from None

    def stop(self) -> int:
        """End the engine thread and the workers; returns the callback workers left stuck.

        Call after :meth:`close`. Idempotent.
        """
        if self._thread.is_alive() and self._stopping is not None:
            stopping = self._stopping
            with contextlib.suppress(RuntimeError):  # the loop already ended
                self._loop.call_soon_threadsafe(stopping.set)
            if threading.current_thread() is not self._thread:
                self._thread.join(THREAD_BOUND_SECONDS)
        self._writer.shutdown()
        stuck = self._pool.shutdown(self.settings.stop_timeout)
        if stuck:
            self._log.warning(events.CALLBACK_WORKERS_STUCK, workers=stuck)
        return stuck

    # Bounds of the blocking facades.

    def acquire_bound(self) -> float:
        """The longest an acquire may take: L1 plus the audit slack."""
        settings = self.settings
        return (settings.start_timeout + settings.stop_timeout + CLOSE_SLACK_SECONDS
                + AUDIT_SLACK_SECONDS)

    def operation_bound(self) -> float:
        """The longest a release or subscription change may take."""
        return self.settings.start_timeout + AUDIT_SLACK_SECONDS

    # Operations (engine loop).

    async def acquire(self, key: StreamKey, credentials: Credentials, request: AcquireRequest,
                      *, wait: bool) -> LeaseHandle:
        """Grant a lease on the stream key's lifecycle (starting one if needed).

        Raises:
            ManagerClosedError: the manager is closed.
            StartTimeoutError: a closing predecessor did not stop in time, or (``wait``) the
                connection was not running with the lease's subscriptions within start_timeout.
            ConnectionStartError: the lifecycle failed (its error, e.g. AuthenticationError).
            AuditError: the acquire could not be recorded; nothing changed.
        """
        loop = asyncio.get_running_loop()
        predecessor_deadline: float | None = None
        while True:
            if self._closed:
                raise ManagerClosedError("the connection manager is closed", operation="acquire",
                                         correlation_id=request.correlation_id)
            supervisor = self._by_key.get(key)
            if supervisor is None or supervisor.finished.is_set():
                supervisor = self._spawn(key, credentials, request.correlation_id)
            result = await supervisor.acquire(request)
            if isinstance(result, LeaseHandle):
                break
            if predecessor_deadline is None:
                predecessor_deadline = (loop.time() + self.settings.stop_timeout
                                        + CLOSE_SLACK_SECONDS)
            await self._await_predecessor(supervisor, predecessor_deadline, request)
        if wait:
            await self._await_ready(result, supervisor, self.settings.start_timeout,
                                    release_on_timeout=True)
        return result

    def acquire_here(self, key: StreamKey, request: AcquireRequest) -> LeaseHandle | None:
        """Grant a lease on the calling thread when that needs nothing from the engine loop
        (see :meth:`Supervisor.acquire_here`): the key's lifecycle is running with the lease's
        pairs acknowledged, and the audit sink never blocks. None otherwise, and nothing
        changed: :meth:`acquire` does it. The lease returned is ready.

        Raises:
            AuditError / InvalidInputError: the acquire could not be recorded; nothing changed.

        Thread-safety: any thread (None on the engine's own).
        """
        if self._closed or threading.current_thread() is self._thread:
            return None
        supervisor = self._by_key.get(key)
        return None if supervisor is None else supervisor.acquire_here(request)

    def release_here(self, handle: LeaseHandle, correlation_id: str) -> bool:
        """Count a lease out on the calling thread when that needs nothing from the engine
        loop (see :meth:`Supervisor.release_here`); False otherwise, and nothing changed:
        :meth:`release` does it.

        Raises:
            AuditError: the release could not be recorded; the lease stays live.

        Thread-safety: any thread (False on the engine's own).
        """
        if threading.current_thread() is self._thread:
            return False
        supervisor = self._active.get(handle.info.lifecycle_id)
        return supervisor is not None and supervisor.release_here(handle, correlation_id)

    async def _await_predecessor(self, supervisor: Supervisor, deadline: float,
                                 request: AcquireRequest) -> None:
        """L1: a closing predecessor is waited for, at most stop_timeout (+ slack)."""
        remaining = deadline - asyncio.get_running_loop().time()
        try:
            async with asyncio.timeout(max(0.0, remaining)):
                await supervisor.finished.wait()
        except TimeoutError:
            raise StartTimeoutError(
                "the previous connection of this stream did not stop in time",
                operation="acquire", fingerprint=supervisor.core.key.fingerprint,
                state=supervisor.core.state, correlation_id=request.correlation_id,
            ) from None

    def _spawn(self, key: StreamKey, credentials: Credentials, correlation_id: str) -> Supervisor:
        lifecycle = Lifecycle(
            lifecycle_id=new_id(), key=key, spec=self._services.spec,
            timing=Timing(self.settings.start_timeout, self.settings.drain_grace,
                          self.settings.reconnect_grace, self.settings.connection_limit_grace),
            origin_correlation_id=correlation_id,
        )
        transport = self._factory(key, credentials, self.settings)
        counters = self._counters.get(key)
        if counters is None:
            counters = self._counters[key] = StreamCounters()
        supervisor = Supervisor(lifecycle=lifecycle, transport=transport,
                                services=self._services, counters=counters)
        self._by_key[key] = supervisor
        self._active[supervisor.lifecycle_id] = supervisor
        assert self._group is not None
        task = self._group.create_task(supervisor.run(),
                                       name=f"{self.name}-lifecycle-{supervisor.lifecycle_id}")
        task.add_done_callback(lambda _: self._retire(supervisor))
        return supervisor

    def _retire(self, supervisor: Supervisor) -> None:
        self._active.pop(supervisor.lifecycle_id, None)
        if self._by_key.get(supervisor.core.key) is supervisor:
            del self._by_key[supervisor.core.key]
        if supervisor.core.state == STOPPED:
            self._recent.append(supervisor)

    async def _await_ready(self, handle: LeaseHandle, supervisor: Supervisor, timeout: float,
                           *, release_on_timeout: bool) -> None:
        if not handle.ready.is_set():  # ready already (its pairs on the wire): nothing to wait
            await self._wait_ready_within(handle, supervisor, timeout,
                                          release_on_timeout=release_on_timeout)
        raise_unless_live(handle, "acquire")

    async def _wait_ready_within(self, handle: LeaseHandle, supervisor: Supervisor,
                                 timeout: float, *, release_on_timeout: bool) -> None:
        try:
            async with asyncio.timeout(timeout):
                await handle.ready.wait()
        except TimeoutError:
            if handle.status is LeaseStatus.LIVE:
                state = supervisor.core.state
                failure = supervisor.start_failure()
                if release_on_timeout:
                    await supervisor.release(handle, handle.info.correlation_id, details={
                        "reason": "start_timeout", **cause_details(failure)})
                raise StartTimeoutError(
                    f"connection not running with the lease's subscriptions within "
                    f"start_timeout={timeout}s{cause_suffix(failure)}",
                    cause=failure.cause if failure else None, operation="acquire",
                    fingerprint=handle.info.key.fingerprint, state=state,
                    correlation_id=handle.info.correlation_id) from None
        except asyncio.CancelledError:
            if release_on_timeout and handle.status is LeaseStatus.LIVE:
                await supervisor.release(handle, handle.info.correlation_id,
                                         details={"reason": "acquire_cancelled"})
            raise

    async def wait_ready(self, handle: LeaseHandle, timeout: float) -> None:
        """Wait until the lease's connection is running with its subscriptions on the wire.

        Raises:
            StartTimeoutError: not within ``timeout`` (the lease stays live).
            ConnectionStartError / LeaseRevokedError / LeaseError: as :func:`raise_unless_live`.
        """
        raise_unless_live(handle, "wait_ready")
        supervisor = self._active[handle.info.lifecycle_id]
        await self._await_ready(handle, supervisor, timeout, release_on_timeout=False)

    async def release(self, handle: LeaseHandle, correlation_id: str) -> None:
        """Count the lease out; a logged no-op if it is no longer live.

        Raises:
            AuditError: the release could not be recorded; the lease stays live.
        """
        supervisor = self._active.get(handle.info.lifecycle_id)
        if supervisor is None or handle.status is not LeaseStatus.LIVE:
            self._log.info(events.RELEASE_IGNORED, lease_id=handle.info.lease_id,
                           status=handle.status.value)
            return
        await supervisor.release(handle, correlation_id)

    async def change(self, handle: LeaseHandle, pairs: frozenset[Subscription], *,
                     subscribe: bool, correlation_id: str) -> None:
        """Add or remove pairs; a subscribe returns once the wire acknowledged them.

        Raises:
            LeaseError / LeaseRevokedError: the lease is no longer live.
            AuditError: the change could not be recorded; nothing changed.
            WaitTimeoutError: the connection is running but the wire did not acknowledge the
                new pairs within start_timeout (the change stays recorded and requested).
        """
        raise_unless_live(handle, "subscribe", plain=True)
        supervisor = self._active[handle.info.lifecycle_id]
        await supervisor.change(handle, pairs, subscribe=subscribe,
                                correlation_id=correlation_id)
        raise_unless_live(handle, "subscribe", plain=True)
        if subscribe and supervisor.core.state == RUNNING:
            try:
                async with asyncio.timeout(self.settings.start_timeout):
                    await handle.ready.wait()
            except TimeoutError:
                raise WaitTimeoutError("the wire did not acknowledge the new subscriptions "
                                       f"within start_timeout={self.settings.start_timeout}s",
                                       operation="subscribe",
                                       correlation_id=correlation_id) from None

    async def close(self, correlation_id: str,
                    timeout: float) -> tuple[list[str], AuditError | None]:
        """Refuse new leases, revoke every lease, drain and stop every lifecycle.

        Returns:
            The lifecycles not stopped within ``timeout`` and the first AuditError met while
            recording a shutdown (that lifecycle stays up; call close again).
        """
        self._closed = True
        error = LeaseRevokedError("the connection manager was closed", operation="close",
                                  correlation_id=correlation_id)
        failure: AuditError | None = None
        for supervisor in list(self._active.values()):
            try:
                await supervisor.shutdown(correlation_id, error)
            except AuditError as exc:
                failure = failure or exc
            except InvariantViolationError:
                pass  # debug mode: logged, and the shutdown took effect
        waiting = [s for s in self._active.values()
                   if s.core.state not in (RUNNING, STARTING)]
        waiters = [asyncio.ensure_future(s.finished.wait()) for s in waiting]
        if waiters:
            await asyncio.wait(waiters, timeout=timeout)
            for waiter in waiters:
                waiter.cancel()
        pending = sorted(s.lifecycle_id for s in waiting if not s.finished.is_set())
        return pending, failure

    async def settle(self) -> None:
        """Return once every lifecycle has handled what was posted to it before this call (for
        tests that drive a transport by hand)."""
        for supervisor in list(self._active.values()):
            await supervisor.settle()

    def health(self) -> HealthReport:
        """A snapshot of every live lifecycle. Call through :meth:`inspect`."""
        counters = self._services.counters
        return HealthReport(
            generated_at=self._clock.now().isoformat(timespec="microseconds"),
            closed=self._closed,
            durable_audit=not getattr(self._writer.sink, "nonblocking", False),
            abandoned_transports=counters.get("abandoned_transports", 0),
            final_records_lost=counters.get("final_records_lost", 0),
            threads=len(self.threads()),
            lifecycles=tuple(s.health() for s in self._active.values()),
        )

    def stats(self) -> RuntimeStats:
        """The health report and the cumulative counts, for metrics. Call through
        :meth:`inspect`."""
        workers = self._pool.stats
        writer = self._writer
        return RuntimeStats(
            health=self.health(),
            states=self._services.spec.states,
            streams=tuple(
                StreamTotals(fingerprint=key.fingerprint, kind=key.kind, feed=key.feed,
                             messages=dict(c.messages), transitions=dict(c.transitions),
                             connect_failures=dict(c.connect_failures), errors=dict(c.errors),
                             reconnects=c.reconnects, dropped=c.dropped, malformed=c.malformed,
                             connected=c.connected)
                for key, c in self._counters.items()),
            callback_durations=HistogramSnapshot.merge(w.durations.snapshot() for w in workers),
            callback_errors=sum(w.errors for w in workers),
            audit_append_durations=writer.append_durations.snapshot(),
            audit_append_failed=writer.append_failed,
        )

    def violations(self, spec: LifecycleSpec) -> list[str]:
        """Every invariant (INV1..INV7) that fails now, across all lifecycles. Call through
        :meth:`inspect`."""
        failed: list[str] = []
        for supervisor in [*self._active.values(), *self._recent]:
            failed += [f"{supervisor.lifecycle_id} {v}" for v in supervisor.violations()]
        per_key = Counter(s.core.key for s in self._active.values()
                          if s.core.state != STOPPED)
        env = {"max_lifecycles_per_key": max(per_key.values(), default=0)}
        for invariant in spec.invariants_in("manager"):
            if not invariant.expr.evaluate(env):
                failed.append(f"{invariant.id}: {invariant.expr.source}")
        return failed


def raise_unless_live(handle: LeaseHandle, operation: str, *, plain: bool = False) -> None:
    """Raise why ``handle`` is no longer live, if it is not.

    Raises:
        StreamwardenError: a revoked lease's cause itself (for example the AuthenticationError
            that failed its connection), or LeaseRevokedError with ``plain``.
        LeaseError: the lease was released.
    """
    if handle.status is LeaseStatus.REVOKED:
        cause = handle.revocation
        if cause is None or plain:
            raise LeaseRevokedError(f"lease {handle.info.lease_id} was revoked",
                                    operation=operation,
                                    correlation_id=handle.info.correlation_id,
                                    fingerprint=handle.info.key.fingerprint) from cause
        raise cause.derive(operation=operation, correlation_id=handle.info.correlation_id)
    if handle.status is LeaseStatus.RELEASED:
        raise LeaseError(f"lease {handle.info.lease_id} was released", operation=operation,
                         correlation_id=handle.info.correlation_id)
