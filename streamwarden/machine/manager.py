"""The connection manager: one shared connection per stream key, handed out as leases.

>>> from streamwarden import ConnectionManager, Credentials, Settings
>>> from streamwarden.machine.memory_transport import InMemoryTransportFactory
>>> manager = ConnectionManager(transport_factory=InMemoryTransportFactory(),
...                             settings=Settings())
>>> creds = Credentials("PKEXAMPLE", "example-secret")
>>> with manager.market_data(creds, symbols=["AAPL"], owner="momentum") as feed:
...     with manager.market_data(creds, symbols=["MSFT"], owner="pairs") as other:
...         [lc.refs for lc in manager.health().lifecycles]
[2]
>>> manager.close()
>>> manager.health().lifecycles
()
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType

import structlog

from streamwarden import logging as events
from streamwarden.audit.memory import InMemoryAuditSink
from streamwarden.audit.records import AuditSink
from streamwarden.clock import Clock, SystemClock
from streamwarden.config import Settings
from streamwarden.credentials import Credentials
from streamwarden.errors import (
    AuditError,
    InvalidInputError,
    InvalidTransitionError,
    ManagerClosedError,
    StartTimeoutError,
    StopTimeoutError,
)
from streamwarden.ids import new_id, resolve_correlation_id
from streamwarden.logging import SecretRedactor, make_logger
from streamwarden.machine.alpaca_transport import AlpacaTransportFactory
from streamwarden.machine.connection import DRAINING, RUNNING, STARTING, STOPPED, Connection
from streamwarden.machine.core import ManagerCore
from streamwarden.machine.health import HealthReport
from streamwarden.machine.keys import MARKET_DATA, TRADE_UPDATES, StreamKey, StreamKind
from streamwarden.machine.leases import Callback, Lease, LeaseInfo, LeaseStatus
from streamwarden.machine.market_data import TRADE_UPDATES_CHANNEL, MarketData, Subscription
from streamwarden.machine.market_feed import MarketFeed, check_callbacks, describe
from streamwarden.machine.recording import AuditRecorder
from streamwarden.machine.spec import LifecycleSpec, default_spec
from streamwarden.machine.supervisor import start_supervisor
from streamwarden.machine.transport import TransportFactory
from streamwarden.validation import check_credentials, check_owner, check_seconds, check_symbols

#: Extra seconds :meth:`ConnectionManager.close` allows beyond ``stop_timeout`` by default, for
#: the bookkeeping after the transports have stopped.
CLOSE_SLACK_SECONDS = 1.0


@dataclass(frozen=True)
class _AcquireRequest:
    credentials: Credentials
    kind: StreamKind
    owner: str | None
    correlation_id: str
    wait: bool
    subscriptions: frozenset[Subscription] = frozenset()
    callbacks: Mapping[str, Callback] = field(default_factory=dict)


class ConnectionManager:
    """Shares one connection per (account, stream kind, paper/live, feed) among many leases.

    Args:
        transport_factory: builds the transport of each new lifecycle (default: alpaca-py's
            streams, :class:`~streamwarden.machine.alpaca_transport.AlpacaTransportFactory`).
        audit: where transitions and lease events are recorded (default: in memory, not
            durable; pass an ``AuditLog`` for compliance). The caller owns and closes it.
        settings: default ``Settings.from_env()``.
        clock: default the system clock.
        spec: the lifecycle spec (default: the packaged one).
        log_format: ``json`` or ``text`` (default from ``STREAMWARDEN_LOG_FORMAT``).

    Thread-safety: every method may be called from any thread.
    """

    def __init__(
        self,
        *,
        transport_factory: TransportFactory | None = None,
        audit: AuditSink | None = None,
        settings: Settings | None = None,
        clock: Clock | None = None,
        spec: LifecycleSpec | None = None,
        log_format: str | None = None,
    ) -> None:
        self._settings = settings if settings is not None else Settings.from_env()
        self._clock = clock or SystemClock()
        self._redactor = SecretRedactor()
        self._log = make_logger(self._redactor, log_format=log_format)
        self._core = ManagerCore(
            spec=spec or default_spec(),
            settings=self._settings,
            clock=self._clock,
            recorder=AuditRecorder(audit or InMemoryAuditSink(), self._clock, self._redactor),
            transport_factory=transport_factory or AlpacaTransportFactory(),
            log=self._log,
            start_supervisor=start_supervisor,
        )
        self._feed = MarketFeed(self._core)

    @property
    def settings(self) -> Settings:
        """The settings this manager runs with."""
        return self._settings

    @property
    def audit(self) -> AuditSink:
        """The audit sink transitions are recorded in."""
        return self._core.recorder.sink

    def market_data(
        self,
        credentials: Credentials,
        *,
        symbols: object,
        on_quote: Callback | None = None,
        on_trade: Callback | None = None,
        on_bar: Callback | None = None,
        correlation_id: str | None = None,
        owner: str | None = None,
        wait: bool = True,
    ) -> Lease:
        """A lease on the account's shared market-data connection (the configured feed).

        The lease subscribes quotes and trades of ``symbols`` (at least one: the SDK opens its
        socket on the first subscription) and may add more, and bars, later. ``on_quote``,
        ``on_trade`` and ``on_bar`` receive each parsed Quote, Trade or Bar of the lease's
        subscriptions, on the transport's thread, outside every streamwarden lock; one that
        raises is logged and counted without affecting the stream or other leases. With
        ``wait`` (default) the call returns once the connection is running.

        Raises:
            InvalidInputError: bad credentials, symbols, callbacks, owner or correlation id;
                nothing changed.
            ConnectionStartError: the connection could not be started (a subclass says why),
                within ``start_timeout`` (+ ``stop_timeout`` if a predecessor was closing).
            ManagerClosedError: the manager was closed.
            AuditError: the acquire could not be recorded; nothing changed.
        """
        checked = check_symbols(symbols)
        if not checked:
            raise InvalidInputError("a market-data lease needs at least one symbol",
                                    operation="acquire")
        callbacks = check_callbacks(quotes=on_quote, trades=on_trade, bars=on_bar)
        request = _AcquireRequest(
            credentials=check_credentials(credentials),
            kind=MARKET_DATA,
            owner=check_owner(owner),
            correlation_id=resolve_correlation_id(correlation_id),
            wait=bool(wait),
            subscriptions=frozenset((channel, symbol) for symbol in checked
                                    for channel in ("quotes", "trades")),
            callbacks=callbacks,
        )
        return self._acquire(request)

    def trade_updates(
        self,
        credentials: Credentials,
        *,
        on_update: Callback,
        correlation_id: str | None = None,
        owner: str | None = None,
        wait: bool = True,
    ) -> Lease:
        """A lease on the account's shared trade-updates connection.

        ``on_update`` is called, on the transport's thread and outside every streamwarden lock,
        with every order update (the SDK's ``TradeUpdate``) while the lease is live; every
        lease's callback is called, and one that raises is logged and counted without
        affecting the others.

        Raises:
            The same errors as :meth:`market_data`; InvalidInputError if ``on_update`` is not
            callable.
        """
        request = _AcquireRequest(
            credentials=check_credentials(credentials),
            kind=TRADE_UPDATES,
            owner=check_owner(owner),
            correlation_id=resolve_correlation_id(correlation_id),
            wait=bool(wait),
            callbacks=check_callbacks(**{TRADE_UPDATES_CHANNEL: on_update}, required=True),
        )
        return self._acquire(request)

    def _key(self, request: _AcquireRequest) -> StreamKey:
        credentials = request.credentials
        return StreamKey(
            fingerprint=credentials.fingerprint(self._settings.fingerprint_key_bytes),
            kind=request.kind,
            paper=credentials.paper,
            feed=self._settings.feed if request.kind == MARKET_DATA else None,
        )

    def _acquire(self, request: _AcquireRequest) -> Lease:
        key = self._key(request)
        self._redactor.register(*request.credentials.sensitive_values())
        core = self._core
        with structlog.contextvars.bound_contextvars(correlation_id=request.correlation_id), \
                core.cond:
            if core.closed:
                raise ManagerClosedError("the connection manager is closed", operation="acquire",
                                         correlation_id=request.correlation_id)
            connection = self._usable_connection(key, request)
            lease = Lease(
                LeaseInfo(new_id(), connection.lifecycle_id, key, request.owner,
                          request.correlation_id),
                self,
                subscriptions=request.subscriptions,
                callbacks=request.callbacks,
            )
            self._take_lease(connection, lease)
            if request.wait:
                deadline = self._clock.monotonic() + self._settings.start_timeout
                self._await_running(lease, connection, deadline, release_on_timeout=True)
            return lease

    def _take_lease(self, connection: Connection, lease: Lease) -> None:
        inputs = {"reusable": connection.reusable()} if connection.state == DRAINING else None
        details = {"subscriptions": describe(lease.subscriptions)} if lease.subscriptions else None
        connection.add_lease(lease)
        try:
            self._core.apply(connection, "acquire", connection.context(lease.correlation_id, lease),
                             inputs=inputs, details=details)
        except (InvalidTransitionError, AuditError, ValueError):  # nothing took effect
            connection.remove_lease(lease, LeaseStatus.RELEASED)
            if connection.state == self._core.spec.initial_state:
                self._core.discard(connection)
            raise

    def _usable_connection(self, key: StreamKey, request: _AcquireRequest) -> Connection:
        """The lifecycle to acquire on: the current one, or a new one once the old has stopped."""
        core = self._core
        deadline: float | None = None
        while True:
            connection = core.by_key.get(key)
            if connection is None or connection.state == STOPPED:
                return core.new_connection(key, request.credentials, request.correlation_id)
            if connection.state != DRAINING or connection.reusable():
                return connection
            # L1: a closing predecessor is waited for, at most stop_timeout (+ slack).
            now = self._clock.monotonic()
            if deadline is None:
                deadline = now + self._settings.stop_timeout + CLOSE_SLACK_SECONDS
            if now >= deadline:
                raise StartTimeoutError(
                    "the previous connection of this stream did not stop in time",
                    operation="acquire", fingerprint=key.fingerprint, state=DRAINING,
                    correlation_id=request.correlation_id,
                )
            core.cond.wait(deadline - now)

    def _await_running(
        self, lease: Lease, connection: Connection, deadline: float, *, release_on_timeout: bool
    ) -> None:
        core = self._core
        ready = core.cond.wait_for(
            lambda: not lease.is_live or connection.state == RUNNING,
            timeout=max(0.0, deadline - self._clock.monotonic()),
        )
        lease.raise_unless_live()
        if not ready:
            state = connection.state
            if release_on_timeout:
                core.release(lease, lease.correlation_id, details={"reason": "start_timeout"})
            raise StartTimeoutError(
                f"connection not running within start_timeout={self._settings.start_timeout}s",
                operation="acquire", fingerprint=connection.key.fingerprint, state=state,
                correlation_id=lease.correlation_id,
            )

    def wait_ready(self, lease: Lease, timeout: float | None = None) -> None:
        """Wait until ``lease``'s connection is running. See :meth:`Lease.wait_ready`."""
        self._check_issued(lease, "wait_ready")
        seconds = self._settings.start_timeout if timeout is None else check_seconds(
            "timeout", timeout)
        with self._core.cond:
            lease.raise_unless_live()
            connection = self._core.active[lease.lifecycle_id]
            deadline = self._clock.monotonic() + seconds
            self._await_running(lease, connection, deadline, release_on_timeout=False)

    def _check_issued(self, lease: object, operation: str) -> None:
        if not isinstance(lease, Lease) or not lease.issued_by(self):
            raise InvalidInputError("this lease was not issued by this connection manager",
                                    operation=operation)

    def release(self, lease: Lease, *, correlation_id: str | None = None) -> None:
        """Give ``lease`` back; the last release drains and stops the connection.

        A second release of the same lease is a logged no-op.

        Raises:
            InvalidInputError: ``lease`` was not issued by this manager, or a bad correlation id.
            AuditError: the release could not be recorded; the lease stays live.
        """
        self._check_issued(lease, "release")
        cid = resolve_correlation_id(correlation_id, default=lease.correlation_id)
        with self._core.cond:
            if not lease.is_live:
                self._log.info(events.RELEASE_IGNORED, lease_id=lease.lease_id,
                               status=lease.status.value)
                return
            self._core.release(lease, cid)

    def change_subscriptions(
        self, lease: Lease, channel: str, symbols: object, *, subscribe: bool
    ) -> None:
        """Add or remove ``symbols`` of ``channel``. See :meth:`Lease.subscribe_quotes`."""
        self._check_issued(lease, "subscribe")
        self._feed.change(lease, channel, symbols, subscribe=subscribe)

    def latest(self, lease: Lease, channel: str, symbol: str) -> MarketData | None:
        """The latest quote or trade. See :meth:`Lease.latest_quote`."""
        self._check_issued(lease, channel)
        return self._feed.latest(lease, channel, symbol)

    def wait_for_market_data(
        self, lease: Lease, channel: str, symbol: str, timeout: float | None = None
    ) -> MarketData:
        """The latest message, waiting for the first. See :meth:`Lease.wait_for_quote`."""
        self._check_issued(lease, channel)
        seconds = self._settings.start_timeout if timeout is None else timeout
        return self._feed.wait(lease, channel, symbol, seconds)

    def health(self) -> HealthReport:
        """A typed, JSON-serialisable snapshot of every live lifecycle; no secret, no key id.

        Thread-safety: consistent snapshot taken under the manager's lock.
        """
        with self._core.cond:
            return HealthReport(
                generated_at=self._clock.now().isoformat(timespec="microseconds"),
                closed=self._core.closed,
                abandoned_threads=self._core.abandoned_threads,
                lifecycles=tuple(c.health() for c in self._core.active.values()),
            )

    def check_invariants(self) -> list[str]:
        """Every spec invariant (INV1..INV7) that fails now; an empty list when all hold."""
        with self._core.cond:
            return self._core.violations()

    def close(self, timeout: float | None = None, *, correlation_id: str | None = None) -> None:
        """Revoke every lease, drain and stop every lifecycle; later acquires are refused.

        Args:
            timeout: seconds to wait for every lifecycle to stop (default ``stop_timeout`` + 1).

        Raises:
            InvalidInputError: on a negative timeout or bad correlation id; nothing changed.
            StopTimeoutError: if some lifecycle had not stopped in time (it still will, forced).
            AuditError: if a ``shutdown`` could not be recorded; call ``close`` again once the
                audit sink is back (the manager already refuses new leases).

        Idempotent; thread-safe.
        """
        bound = (self._settings.stop_timeout + CLOSE_SLACK_SECONDS if timeout is None
                 else check_seconds("timeout", timeout))
        cid = resolve_correlation_id(correlation_id)
        core = self._core
        with core.cond:
            core.closed = True
            for connection in list(core.active.values()):
                connection.close_now = True
                if connection.state in (STARTING, RUNNING):
                    core.apply(connection, "shutdown", connection.context(cid),
                               revoke_error=core.shutdown_error(cid))
            core.cond.notify_all()
            stopped = core.cond.wait_for(lambda: not core.active, timeout=bound)
            pending = sorted(core.active)
        if not stopped:
            raise StopTimeoutError(
                f"{len(pending)} lifecycle(s) not stopped within {bound}s: {', '.join(pending)}",
                operation="close", correlation_id=cid,
            )
        self._log.info(events.MANAGER_CLOSED, correlation_id=cid)

    def __enter__(self) -> ConnectionManager:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
