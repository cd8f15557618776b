"""The connection managers: ``ConnectionManager`` (threads) and ``AsyncConnectionManager``.

Both are thin facades over one engine (:mod:`streamwarden.runtime._engine`): the same
lifecycles, leases, audit records and bounds; the sync one waits for the engine from the
caller's thread, the async one awaits it from the caller's event loop and never blocks it.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Awaitable, Callable, Generator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Self, TypeVar

import structlog

from streamwarden import logging as events
from streamwarden._keys import (
    CRYPTO_DATA,
    CRYPTO_LOCATION,
    MARKET_DATA,
    NEWS,
    OPTION_DATA,
    OPTION_FEEDS,
    TRADE_UPDATES,
    StreamKey,
    StreamKind,
)
from streamwarden._redaction import SecretRedactor
from streamwarden.audit.memory import InMemoryAuditSink
from streamwarden.audit.records import AuditSink
from streamwarden.clock import Clock, SystemClock
from streamwarden.config import Settings
from streamwarden.credentials import Credentials
from streamwarden.errors import (
    InvalidInputError,
    ManagerClosedError,
    StopTimeoutError,
    WaitTimeoutError,
)
from streamwarden.ids import new_id, resolve_correlation_id
from streamwarden.logging import make_logger
from streamwarden.machine.spec import LifecycleSpec, default_spec
from streamwarden.marketdata import NEWS_CHANNEL, TRADE_UPDATES_CHANNEL
from streamwarden.runtime._delivery import Callback
from streamwarden.runtime._engine import CLOSE_SLACK_SECONDS, Engine
from streamwarden.runtime._handle import LeaseHandle
from streamwarden.runtime._stats import RuntimeStats
from streamwarden.runtime._supervisor import AcquireRequest
from streamwarden.runtime.health import HealthReport
from streamwarden.runtime.leases import (
    AsyncMarketDataLease,
    AsyncNewsLease,
    AsyncTradeUpdatesLease,
    MarketDataLease,
    NewsLease,
    TradeUpdatesLease,
)
from streamwarden.transports._contract import Transport, TransportFactory
from streamwarden.validation import (
    check_client_order_id_prefix,
    check_credentials,
    check_option_symbols,
    check_owner,
    check_seconds,
    check_symbols,
)

if TYPE_CHECKING:
    from streamwarden.fleet import Fleet
    from streamwarden.runtime._fleet import FleetTransports

#: Records the default in-memory audit sink keeps (a ring: older ones are forgotten).
DEFAULT_MEMORY_AUDIT_RECORDS = 1000

L = TypeVar("L")


def _check_callbacks(**by_channel: object) -> dict[str, Callback]:
    callbacks: dict[str, Callback] = {}
    for channel, callback in by_channel.items():
        if callback is None:
            continue
        if not callable(callback):
            raise InvalidInputError(f"the {channel} callback must be callable",
                                    operation="acquire")
        callbacks[channel] = callback
    return callbacks


async def _noop() -> None:
    return None


def _import_alpaca() -> None:
    """Import alpaca-py (and with it pandas and numpy): about a second, once per process.

    Their C extensions hold the GIL for tens of milliseconds at a time while they load, which
    would stall every thread of the process, so the managers do it up front: the sync one in
    its constructor, the async one off its caller's loop when its ``async with`` begins. Only a
    manager built with the default transports imports it at all.
    """
    importlib.import_module("streamwarden.transports._alpaca")


def _alpaca_transport(key: StreamKey, credentials: Credentials, settings: Settings) -> Transport:
    """The default transport factory: alpaca-py's streams."""
    from streamwarden.transports._alpaca import AlpacaTransport  # noqa: PLC0415

    return AlpacaTransport(key, credentials, settings)


def _fleet_transports(fleet: object, factory: TransportFactory) -> FleetTransports:
    """Start ``fleet`` and wrap ``factory`` in it (imported only for a manager with a fleet:
    psycopg is not loaded otherwise).

    Raises:
        InvalidInputError: ``fleet`` is not a Fleet.
        FleetError: the fleet database could not be reached.
    """
    from streamwarden.fleet import Fleet  # noqa: PLC0415
    from streamwarden.runtime._fleet import FleetTransports  # noqa: PLC0415

    if not isinstance(fleet, Fleet):
        raise InvalidInputError("fleet must be a streamwarden.fleet.Fleet", operation="manager")
    fleet.start()
    return FleetTransports(fleet, factory)


class _Manager:
    """Construction, argument checks and acquire requests shared by both facades."""

    #: Whether the constructor imports alpaca-py (see :func:`_import_alpaca`).
    _import_sdk_at_construction = True

    def __init__(
        self,
        *,
        transport_factory: TransportFactory | None = None,
        audit: AuditSink | None = None,
        settings: Settings | None = None,
        clock: Clock | None = None,
        spec: LifecycleSpec | None = None,
        log_format: str | None = None,
        correlation_id: str | None = None,
        fleet: Fleet | None = None,
    ) -> None:
        if transport_factory is None and self._import_sdk_at_construction:
            _import_alpaca()
        self._settings = settings if settings is not None else Settings.from_env()
        self._correlation_id = resolve_correlation_id(correlation_id)
        self._spec = spec or default_spec()
        self._redactor = SecretRedactor()
        self._log: structlog.stdlib.BoundLogger = make_logger(self._redactor,
                                                              log_format=log_format)
        if audit is None:
            audit = InMemoryAuditSink(capacity=DEFAULT_MEMORY_AUDIT_RECORDS)
            self._log.warning(events.AUDIT_NOT_DURABLE, kept_records=DEFAULT_MEMORY_AUDIT_RECORDS,
                              hint="pass audit=AuditLog.open(...) for a durable trail")
        self._audit = audit
        self._default_transports = transport_factory is None
        factory: TransportFactory = transport_factory or _alpaca_transport
        self._fleet = fleet
        fleet_transports = None if fleet is None else _fleet_transports(fleet, factory)
        if fleet_transports is not None:
            factory = fleet_transports
        self._engine = Engine(spec=self._spec, settings=self._settings,
                              clock=clock or SystemClock(), sink=audit,
                              transport_factory=factory, log=self._log,
                              redactor=self._redactor,
                              key_details=fleet_transports.details if fleet_transports else None)

    @property
    def settings(self) -> Settings:
        """The settings this manager runs with."""
        return self._settings

    @property
    def audit(self) -> AuditSink:
        """The audit sink transitions are recorded in (the caller owns and closes it)."""
        return self._audit

    @property
    def correlation_id(self) -> str:
        """The manager's own correlation id: its shutdown records carry it."""
        return self._correlation_id

    def _request(self, credentials: object, kind: StreamKind, *, owner: object,
                 correlation_id: str | None, subscriptions: frozenset[tuple[str, str]],
                 callbacks: dict[str, Callback], client_order_id_prefix: str | None = None,
                 feed: str | None = None) -> tuple[StreamKey, Credentials, AcquireRequest]:
        checked = check_credentials(credentials)
        self._redactor.register(*checked.sensitive_values())
        key = StreamKey(
            fingerprint=checked.fingerprint(self._settings.fingerprint_key_bytes),
            kind=kind, paper=checked.paper, feed=feed,
        )
        request = AcquireRequest(lease_id=new_id(), owner=check_owner(owner),
                                 correlation_id=resolve_correlation_id(correlation_id),
                                 subscriptions=subscriptions, callbacks=callbacks,
                                 client_order_id_prefix=client_order_id_prefix)
        return key, checked, request

    def _market_request(self, credentials: object, symbols: object, owner: object,
                        correlation_id: str | None, callbacks: dict[str, Callback], *,
                        kind: StreamKind = MARKET_DATA,
                        feed: str | None = None) -> tuple[StreamKey, Credentials,
                                                          AcquireRequest]:
        """An acquire of quotes and trades of ``symbols`` on a stock, crypto or option stream
        (the stock feed from the settings unless given)."""
        checked = check_option_symbols(symbols) if kind == OPTION_DATA else check_symbols(symbols)
        if not checked:
            raise InvalidInputError(f"a {kind} lease needs at least one symbol",
                                    operation="acquire")
        pairs = frozenset((channel, symbol) for symbol in checked
                          for channel in ("quotes", "trades"))
        return self._request(credentials, kind, owner=owner,
                             correlation_id=correlation_id, subscriptions=pairs,
                             callbacks=callbacks,
                             feed=self._settings.feed if kind == MARKET_DATA else feed)

    def _option_request(self, credentials: object, symbols: object, feed: object, *,
                        owner: object, correlation_id: str | None,
                        callbacks: dict[str, Callback]) -> tuple[StreamKey, Credentials,
                                                                  AcquireRequest]:
        if feed not in OPTION_FEEDS:
            raise InvalidInputError(f"feed must be one of {', '.join(OPTION_FEEDS)}; "
                                    f"got {feed!r}", operation="acquire")
        return self._market_request(credentials, symbols, owner, correlation_id, callbacks,
                                    kind=OPTION_DATA, feed=str(feed))

    def _news_request(self, credentials: object, symbols: object, on_news: object,
                      owner: object, correlation_id: str | None) -> tuple[StreamKey, Credentials,
                                                                         AcquireRequest]:
        callbacks = _check_callbacks(**{NEWS_CHANNEL: on_news})
        checked = check_symbols(symbols)
        if not checked:
            raise InvalidInputError("a news lease needs at least one symbol, or [\"*\"] for "
                                    "every article", operation="acquire")
        pairs = frozenset((NEWS_CHANNEL, symbol) for symbol in checked)
        return self._request(credentials, NEWS, owner=owner, correlation_id=correlation_id,
                             subscriptions=pairs, callbacks=callbacks)

    def _trade_request(self, credentials: object, on_update: object, owner: object,
                       correlation_id: str | None,
                       client_order_id_prefix: object) -> tuple[StreamKey, Credentials,
                                                                AcquireRequest]:
        callbacks = _check_callbacks(**{TRADE_UPDATES_CHANNEL: on_update})
        prefix = check_client_order_id_prefix(client_order_id_prefix)
        return self._request(credentials, TRADE_UPDATES, owner=owner,
                             correlation_id=correlation_id, subscriptions=frozenset(),
                             callbacks=callbacks, client_order_id_prefix=prefix)

    # For streamwarden.metrics: blocking reads, from any thread but the engine's (a scrape runs
    # on its own thread, whichever facade the manager is).

    def _runtime_stats(self, timeout: float) -> RuntimeStats:
        """The health report and cumulative counts, read on the engine loop.

        Raises:
            WaitTimeoutError: the engine did not answer within ``timeout`` seconds.
            ReentrancyError: called on the engine thread.
        """
        return self._engine.inspect(self._engine.stats, timeout)

    def _engine_answers(self, timeout: float) -> bool:
        """Whether the engine loop runs a no-op within ``timeout`` seconds (False once closed).

        Raises:
            ReentrancyError: called on the engine thread.
        """
        try:
            self._engine.run_sync(_noop(), timeout)
        except (WaitTimeoutError, ManagerClosedError):
            return False
        return True

    def _close_bound(self, timeout: float | None) -> float:
        return (self._settings.stop_timeout + CLOSE_SLACK_SECONDS if timeout is None
                else check_seconds("timeout", timeout))

    def _close_result(self, result: tuple[list[str], Any], bound: float, cid: str) -> None:
        pending, failure = result
        if failure is not None:
            raise failure
        if pending:
            raise StopTimeoutError(
                f"{len(pending)} lifecycle(s) not stopped within {bound}s: {', '.join(pending)}",
                operation="close", correlation_id=cid)
        self._log.info(events.MANAGER_CLOSED, correlation_id=cid)


class ConnectionManager(_Manager):
    """Shares one connection per account and stream kind among many consumers, via leases.

    With the default transports, building one imports alpaca-py (about a second, once per
    process).

    Args:
        transport_factory: builds the transport of each new lifecycle (default: alpaca-py's
            streams).
        audit: where transitions and lease events are recorded (default: an in-memory ring of
            the last 1,000 records, not durable, and the manager says so once in the log; pass
            an ``AuditLog`` for compliance). The caller owns and closes it.
        settings: default ``Settings.from_env()``.
        clock: default the system clock.
        spec: the lifecycle spec (default: the packaged one).
        log_format: ``json`` or ``text`` (default from ``STREAMWARDEN_LOG_FORMAT``).
        correlation_id: the manager's own id, recorded on the shutdown its ``close`` (or the end
            of its ``with`` block) causes (default: generated).
        fleet: a :class:`~streamwarden.fleet.Fleet` shared with other processes (default:
            none, INV5 per manager only). The manager starts it, and closes it once every
            lifecycle has stopped. Each lifecycle then opens its upstream only as its key's
            owner, and connects to the owner's advertised URL as a follower; every audit
            record carries ``details["fleet_epoch"]`` and ``details["fleet_role"]``.

    Raises:
        InvalidInputError: a malformed correlation id, or ``fleet`` not a Fleet.
        FleetError: the fleet database could not be reached.

    Thread-safety: every method may be called from any thread, lease callbacks included. Each
    waits for the manager's engine thread, within a bound.
    """

    def market_data(
        self,
        credentials: Credentials,
        *,
        symbols: object,
        on_quote: Callback | None = None,
        on_trade: Callback | None = None,
        on_bar: Callback | None = None,
        on_updated_bar: Callback | None = None,
        on_daily_bar: Callback | None = None,
        on_status: Callback | None = None,
        correlation_id: str | None = None,
        owner: str | None = None,
        wait: bool = True,
    ) -> MarketDataLease:
        """A lease on the account's shared market-data connection (the configured feed).

        The lease subscribes quotes and trades of ``symbols`` (at least one: the SDK opens its
        socket on the first subscription) and may add more, and bars, updated bars, daily bars
        and trading statuses, later. With callbacks, each parsed message of the lease's
        subscriptions goes to ``on_quote``, ``on_trade`` (trades, and the TradeCorrection and
        TradeCancel of the symbols whose trades it subscribes), ``on_bar``, ``on_updated_bar``,
        ``on_daily_bar``, ``on_status`` on a callback worker (one that raises is logged and
        counted); without, read them with ``quotes()``, ``trades()``, ``bars()``,
        ``updated_bars()``, ``daily_bars()``, ``statuses()``. With ``wait``
        (default) the call returns once the connection is running and the lease's
        subscriptions are acknowledged on the wire, so no first message is lost.

        Raises:
            InvalidInputError: bad credentials, symbols, callbacks, owner or correlation id;
                nothing changed.
            ConnectionStartError: the connection could not be started (a subclass says why),
                within ``start_timeout`` (+ ``stop_timeout`` if a predecessor was closing).
            ManagerClosedError: the manager was closed.
            AuditError: the acquire could not be recorded; nothing changed.
        """
        callbacks = _check_callbacks(quotes=on_quote, trades=on_trade, bars=on_bar,
                                     updated_bars=on_updated_bar, daily_bars=on_daily_bar,
                                     statuses=on_status)
        key, checked, request = self._market_request(credentials, symbols, owner,
                                                     correlation_id, callbacks)
        handle = self._acquire(key, checked, request, wait)
        return MarketDataLease(handle, self._engine)

    def trade_updates(
        self,
        credentials: Credentials,
        *,
        on_update: Callback | None = None,
        client_order_id_prefix: str | None = None,
        correlation_id: str | None = None,
        owner: str | None = None,
        wait: bool = True,
    ) -> TradeUpdatesLease:
        """A lease on the account's shared trade-updates connection.

        Every order update of the account (alpaca-py's ``TradeUpdate``) goes to ``on_update``
        on a callback worker, or, without it, to ``updates()``. With
        ``client_order_id_prefix`` (1..128 printable characters, Alpaca's limit on a
        ``client_order_id``) the lease receives only the updates of orders whose
        ``client_order_id`` starts with it, e.g. ``"momentum-"`` for a strategy that submits
        its orders as ``momentum-1``, ``momentum-2``, ...; the other updates are not its
        messages (not counted as dropped). The filter is recorded in the lease's ``acquire``
        record (``details.filter``) and shown in ``health()``. Without it the lease receives
        every update of the account. The connection is shared either way.

        Raises:
            InvalidInputError: a bad ``client_order_id_prefix``; otherwise the same errors as
                :meth:`market_data`. Nothing changed.
        """
        key, checked, request = self._trade_request(credentials, on_update, owner,
                                                    correlation_id, client_order_id_prefix)
        handle = self._acquire(key, checked, request, wait)
        return TradeUpdatesLease(handle, self._engine)

    def crypto_data(
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
    ) -> MarketDataLease:
        """A lease on the account's shared crypto connection (Alpaca's v1beta3 ``us`` stream),
        for pairs such as ``BTC/USD``: as :meth:`market_data` (quotes and trades of
        ``symbols``, bars on request; Decimal prices and fractional sizes), on its own stream
        key, connection and lifecycle.

        Raises:
            As :meth:`market_data`; nothing changed.
        """
        callbacks = _check_callbacks(quotes=on_quote, trades=on_trade, bars=on_bar)
        key, checked, request = self._market_request(credentials, symbols, owner,
                                                     correlation_id, callbacks,
                                                     kind=CRYPTO_DATA, feed=CRYPTO_LOCATION)
        handle = self._acquire(key, checked, request, wait)
        return MarketDataLease(handle, self._engine)

    def option_data(
        self,
        credentials: Credentials,
        *,
        symbols: object,
        feed: str = "indicative",
        on_quote: Callback | None = None,
        on_trade: Callback | None = None,
        correlation_id: str | None = None,
        owner: str | None = None,
        wait: bool = True,
    ) -> MarketDataLease:
        """A lease on the account's shared option connection for ``feed`` (``indicative`` or
        ``opra``; MessagePack, the only encoding Alpaca's option stream speaks): quotes and
        trades of the OCC contract ``symbols`` (``AAPL241220C00150000``), as
        :meth:`market_data` but without bars. Each feed is its own stream key.

        Raises:
            InvalidInputError: an unknown feed or a malformed OCC symbol; otherwise as
                :meth:`market_data`. Nothing changed.
        """
        callbacks = _check_callbacks(quotes=on_quote, trades=on_trade)
        key, checked, request = self._option_request(credentials, symbols, feed, owner=owner,
                                                     correlation_id=correlation_id,
                                                     callbacks=callbacks)
        handle = self._acquire(key, checked, request, wait)
        return MarketDataLease(handle, self._engine)

    def news(
        self,
        credentials: Credentials,
        *,
        symbols: object,
        on_news: Callback | None = None,
        correlation_id: str | None = None,
        owner: str | None = None,
        wait: bool = True,
    ) -> NewsLease:
        """A lease on the account's shared news connection: each article about one of
        ``symbols`` (``["*"]``: every article) goes, once, to ``on_news`` on a callback worker,
        or, without it, to ``news()``.

        Raises:
            As :meth:`market_data`; nothing changed.
        """
        key, checked, request = self._news_request(credentials, symbols, on_news, owner,
                                                   correlation_id)
        handle = self._acquire(key, checked, request, wait)
        return NewsLease(handle, self._engine)

    def _acquire(self, key: StreamKey, credentials: Credentials, request: AcquireRequest,
                 wait: bool) -> LeaseHandle:
        with structlog.contextvars.bound_contextvars(correlation_id=request.correlation_id):
            handle = self._engine.acquire_here(key, request)
            if handle is not None:
                return handle
            return self._engine.run_sync(
                self._engine.acquire(key, credentials, request, wait=bool(wait)),
                self._engine.acquire_bound())

    def health(self) -> HealthReport:
        """A typed, JSON-serialisable snapshot of every live lifecycle and lease (queue depth,
        oldest undelivered age, drops); no secret, no key id."""
        return self._engine.inspect(self._engine.health)

    def check_invariants(self) -> list[str]:
        """Every spec invariant (INV1..INV7) that fails now; an empty list when all hold."""
        return self._engine.inspect(lambda: self._engine.violations(self._spec))

    def close(self, timeout: float | None = None, *, correlation_id: str | None = None) -> None:
        """Revoke every lease, drain and stop every lifecycle, end the manager's threads.

        Args:
            timeout: seconds to wait for every lifecycle to stop (default ``stop_timeout`` + 1).
            correlation_id: recorded on the shutdowns (default: the manager's own).

        Raises:
            InvalidInputError: a negative timeout or bad correlation id; nothing changed.
            StopTimeoutError: some lifecycle had not stopped in time (it still will, forced).
            AuditError: a ``shutdown`` could not be recorded; that connection stays up: call
                ``close`` again once the audit sink is back (new leases are refused).

        Idempotent; may be called from a callback.
        """
        bound = self._close_bound(timeout)
        cid = resolve_correlation_id(correlation_id, default=self._correlation_id)
        if self._engine.stopped:
            return
        result = self._engine.run_sync(self._engine.close(cid, bound),
                                       bound + self._engine.operation_bound())
        if result[1] is None:
            self._engine.stop()
            if self._fleet is not None:
                self._fleet.close()
        self._close_result(result, bound, cid)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class Acquiring(Generic[L]):
    """What :class:`AsyncConnectionManager` acquires return: ``await`` it for the lease, or
    ``async with`` it to release the lease when the block ends."""

    __slots__ = ("_acquire", "_lease")

    def __init__(self, acquire: Callable[[], Awaitable[L]]) -> None:
        self._acquire = acquire
        self._lease: L | None = None

    def __await__(self) -> Generator[Any, None, L]:
        return self._acquire().__await__()

    async def __aenter__(self) -> L:
        self._lease = await self._acquire()
        return self._lease

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        lease = self._lease
        if lease is not None:
            await lease.release()  # type: ignore[attr-defined]


class AsyncConnectionManager(_Manager):
    """The asyncio twin of :class:`ConnectionManager`: same arguments, same leases and audit
    records; every call is a coroutine that never blocks the caller's event loop.

    Building one never blocks; entering its ``async with`` imports alpaca-py (with the default
    transports) on a worker thread, once per process; without ``async with``, the first
    connection imports it on the engine thread.

    ``async with AsyncConnectionManager(...) as manager``; ``async with
    manager.market_data(creds, symbols=[...]) as feed`` or ``feed = await
    manager.market_data(...)``; ``async for quote in feed.quotes()``; ``await
    manager.health()``.

    Thread-safety: use one instance from one event loop (any loop: it runs its connections on
    its own engine thread).
    """

    _import_sdk_at_construction = False

    def market_data(
        self,
        credentials: Credentials,
        *,
        symbols: object,
        on_quote: Callback | None = None,
        on_trade: Callback | None = None,
        on_bar: Callback | None = None,
        on_updated_bar: Callback | None = None,
        on_daily_bar: Callback | None = None,
        on_status: Callback | None = None,
        correlation_id: str | None = None,
        owner: str | None = None,
        wait: bool = True,
    ) -> Acquiring[AsyncMarketDataLease]:
        """As :meth:`ConnectionManager.market_data`; callbacks, if given, are plain callables
        run on the callback workers.

        Raises:
            InvalidInputError: at once, before anything is awaited; the rest when awaited.
        """
        callbacks = _check_callbacks(quotes=on_quote, trades=on_trade, bars=on_bar,
                                     updated_bars=on_updated_bar, daily_bars=on_daily_bar,
                                     statuses=on_status)
        key, checked, request = self._market_request(credentials, symbols, owner,
                                                     correlation_id, callbacks)

        async def acquire() -> AsyncMarketDataLease:
            handle = await self._acquire(key, checked, request, wait)
            return AsyncMarketDataLease(handle, self._engine)

        return Acquiring(acquire)

    def trade_updates(
        self,
        credentials: Credentials,
        *,
        on_update: Callback | None = None,
        client_order_id_prefix: str | None = None,
        correlation_id: str | None = None,
        owner: str | None = None,
        wait: bool = True,
    ) -> Acquiring[AsyncTradeUpdatesLease]:
        """As :meth:`ConnectionManager.trade_updates` (``client_order_id_prefix`` included).

        Raises:
            InvalidInputError: at once, before anything is awaited; the rest when awaited.
        """
        key, checked, request = self._trade_request(credentials, on_update, owner,
                                                    correlation_id, client_order_id_prefix)

        async def acquire() -> AsyncTradeUpdatesLease:
            handle = await self._acquire(key, checked, request, wait)
            return AsyncTradeUpdatesLease(handle, self._engine)

        return Acquiring(acquire)

    def crypto_data(
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
    ) -> Acquiring[AsyncMarketDataLease]:
        """As :meth:`ConnectionManager.crypto_data`.

        Raises:
            InvalidInputError: at once, before anything is awaited; the rest when awaited.
        """
        callbacks = _check_callbacks(quotes=on_quote, trades=on_trade, bars=on_bar)
        key, checked, request = self._market_request(credentials, symbols, owner,
                                                     correlation_id, callbacks,
                                                     kind=CRYPTO_DATA, feed=CRYPTO_LOCATION)
        return self._market_lease(key, checked, request, wait)

    def option_data(
        self,
        credentials: Credentials,
        *,
        symbols: object,
        feed: str = "indicative",
        on_quote: Callback | None = None,
        on_trade: Callback | None = None,
        correlation_id: str | None = None,
        owner: str | None = None,
        wait: bool = True,
    ) -> Acquiring[AsyncMarketDataLease]:
        """As :meth:`ConnectionManager.option_data`.

        Raises:
            InvalidInputError: at once, before anything is awaited; the rest when awaited.
        """
        callbacks = _check_callbacks(quotes=on_quote, trades=on_trade)
        key, checked, request = self._option_request(credentials, symbols, feed, owner=owner,
                                                     correlation_id=correlation_id,
                                                     callbacks=callbacks)
        return self._market_lease(key, checked, request, wait)

    def news(
        self,
        credentials: Credentials,
        *,
        symbols: object,
        on_news: Callback | None = None,
        correlation_id: str | None = None,
        owner: str | None = None,
        wait: bool = True,
    ) -> Acquiring[AsyncNewsLease]:
        """As :meth:`ConnectionManager.news`; ``async for article in lease.news()``.

        Raises:
            InvalidInputError: at once, before anything is awaited; the rest when awaited.
        """
        key, checked, request = self._news_request(credentials, symbols, on_news, owner,
                                                   correlation_id)

        async def acquire() -> AsyncNewsLease:
            handle = await self._acquire(key, checked, request, wait)
            return AsyncNewsLease(handle, self._engine)

        return Acquiring(acquire)

    def _market_lease(self, key: StreamKey, credentials: Credentials, request: AcquireRequest,
                      wait: bool) -> Acquiring[AsyncMarketDataLease]:
        async def acquire() -> AsyncMarketDataLease:
            handle = await self._acquire(key, credentials, request, wait)
            return AsyncMarketDataLease(handle, self._engine)

        return Acquiring(acquire)

    async def _acquire(self, key: StreamKey, credentials: Credentials,
                       request: AcquireRequest, wait: bool) -> LeaseHandle:
        with structlog.contextvars.bound_contextvars(correlation_id=request.correlation_id):
            handle = self._engine.acquire_here(key, request)
            if handle is not None:
                return handle
            return await self._engine.run_async(
                self._engine.acquire(key, credentials, request, wait=bool(wait)),
                self._engine.acquire_bound())

    async def health(self) -> HealthReport:
        """As :meth:`ConnectionManager.health`."""
        return await self._engine.ainspect(self._engine.health)

    async def check_invariants(self) -> list[str]:
        """As :meth:`ConnectionManager.check_invariants`."""
        return await self._engine.ainspect(lambda: self._engine.violations(self._spec))

    async def close(self, timeout: float | None = None, *,
                    correlation_id: str | None = None) -> None:
        """As :meth:`ConnectionManager.close`; the engine's threads are joined off the caller's
        loop."""
        bound = self._close_bound(timeout)
        cid = resolve_correlation_id(correlation_id, default=self._correlation_id)
        if self._engine.stopped:
            return
        result = await self._engine.run_async(self._engine.close(cid, bound),
                                              bound + self._engine.operation_bound())
        if result[1] is None:
            await asyncio.to_thread(self._engine.stop)
            if self._fleet is not None:
                await asyncio.to_thread(self._fleet.close)
        self._close_result(result, bound, cid)

    async def __aenter__(self) -> Self:
        if self._default_transports:  # off this loop: see _import_alpaca
            await asyncio.to_thread(_import_alpaca)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()
