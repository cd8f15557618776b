"""Leases: a consumer's claim on a shared connection, one type per stream kind and facade.

A lease is handed out by a manager and counted in its connection's ``refs``. Release it (or
leave its ``with`` / ``async with`` block) when done; a second release is a logged no-op. When
the connection fails or the manager shuts down, the lease is *revoked*: using it raises the
cause (:class:`~streamwarden.errors.LeaseRevokedError` or the connection's error).

Market-data leases serve the stock, crypto and option streams alike (an option lease has no
bars: Alpaca's option stream has quotes and trades only); news leases receive articles.

Messages reach a lease in one of two ways, chosen at acquire: callbacks (``on_quote``,
``on_trade``, ``on_bar``, ``on_news``, ``on_update``), run on the manager's callback workers,
never on the connection's loop, at most one at a time per lease and in order; or, for a lease
acquired without callbacks, the iterators (``quotes()``, ``trades()``, ``bars()``, ``news()``,
``updates()``). Each lease has its own bounded queue: a slow consumer affects only itself
(quotes conflate per symbol, trades, bars and news drop their oldest, both counted in health;
trade updates are never dropped: an overflow revokes the lease with
:class:`~streamwarden.errors.LeaseOverflowError`).

Re-entrancy: every method may be called from inside a callback, including ``release()``,
subscription changes and waits; none deadlocks. Iterating a channel that goes to a callback
raises InvalidInputError at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from streamwarden._keys import OPTION_DATA, StreamKey
from streamwarden.errors import InvalidInputError
from streamwarden.ids import resolve_correlation_id
from streamwarden.marketdata import (
    CHANNELS,
    NEWS_CHANNEL,
    TRADE_UPDATES_CHANNEL,
    Bar,
    Channel,
    News,
    Quote,
    Trade,
    TradeMessage,
    TradingStatus,
)
from streamwarden.runtime._delivery import MailboxClosedError
from streamwarden.runtime._engine import raise_unless_live
from streamwarden.runtime._handle import LeaseHandle, LeaseStatus
from streamwarden.validation import check_option_symbols, check_seconds, check_symbols

if TYPE_CHECKING:
    from streamwarden.marketdata import Subscription
    from streamwarden.runtime._engine import Engine

__all__ = [
    "AsyncMarketDataLease",
    "AsyncNewsLease",
    "AsyncTradeUpdatesLease",
    "LeaseStatus",
    "MarketDataLease",
    "NewsLease",
    "TradeUpdatesLease",
]

#: The channels an option lease may subscribe (Alpaca's option stream has no bars).
OPTION_CHANNELS: tuple[Channel, ...] = ("quotes", "trades")


class _Lease:
    """What every lease has: identity, status, and the checks its operations share."""

    __slots__ = ("_engine", "_handle")

    def __init__(self, handle: LeaseHandle, engine: Engine) -> None:
        self._handle = handle
        self._engine = engine

    @property
    def lease_id(self) -> str:
        """The lease's ULID, as recorded in the audit trail."""
        return self._handle.info.lease_id

    @property
    def correlation_id(self) -> str:
        """The correlation id the lease was acquired under (given, bound, or generated)."""
        return self._handle.info.correlation_id

    @property
    def lifecycle_id(self) -> str:
        """The lifecycle (physical connection) the lease is on."""
        return self._handle.info.lifecycle_id

    @property
    def owner(self) -> str | None:
        """Who holds the lease, as given at acquire."""
        return self._handle.info.owner

    @property
    def key(self) -> StreamKey:
        """The stream key of the lease's connection."""
        return self._handle.info.key

    @property
    def status(self) -> LeaseStatus:
        """Live, released or revoked."""
        return self._handle.status

    @property
    def dropped(self) -> int:
        """Messages the lease's queue has lost so far to its overflow policy (quotes conflated,
        oldest trades, bars or news dropped): a reader that must lose none watches it."""
        return self._handle.mailbox.dropped

    @property
    def is_live(self) -> bool:
        """Neither released nor revoked."""
        return self._handle.status is LeaseStatus.LIVE

    def ensure_live(self) -> None:
        """Raise if the lease may no longer be used.

        Raises:
            LeaseRevokedError: it was revoked (its cause is chained as ``__cause__``).
            LeaseError: it was released.
        """
        raise_unless_live(self._handle, "use", plain=True)

    def issued_by(self, manager: object) -> bool:
        """Whether ``manager`` issued this lease."""
        return getattr(manager, "_engine", None) is self._engine

    def _release_call(self, correlation_id: str | None) -> Any:
        """The engine coroutine of a release, or None when there is nothing left for the
        engine loop to do: the lease is no longer live (a logged no-op that needs no engine,
        so a lease may outlive its manager), or it was released on this thread (see
        :meth:`Engine.release_here`).

        Raises:
            InvalidInputError / AuditError: as :meth:`_SyncLease.release`.
        """
        cid = resolve_correlation_id(correlation_id, default=self.correlation_id)
        if self._handle.status is not LeaseStatus.LIVE:
            return None
        if self._engine.release_here(self._handle, cid):
            return None
        return self._engine.release(self._handle, cid)

    def _ready_call(self, timeout: float | None) -> Any:
        seconds = (self._engine.settings.start_timeout if timeout is None
                   else check_seconds("timeout", timeout))
        raise_unless_live(self._handle, "wait_ready")  # no engine needed to say so
        return self._engine.wait_ready(self._handle, seconds)

    def _pull(self, channel: str) -> None:
        """Raise at once if ``channel`` cannot be iterated on this lease."""
        if self._handle.mailbox.uses_callbacks:
            raise InvalidInputError(f"this lease delivers {channel} to its callbacks; acquire a "
                                    "lease without callbacks to iterate", operation=channel)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(lease_id={self.lease_id!r}, kind={self.key.kind!r}, "
                f"owner={self.owner!r}, status={self.status.value!r})")


class _SyncLease(_Lease):
    """Release and readiness, blocking the calling thread (bounded)."""

    __slots__ = ()

    def release(self, *, correlation_id: str | None = None) -> None:
        """Give the lease back. Idempotent: a second call is a logged no-op.

        Raises:
            InvalidInputError: a malformed correlation id.
            AuditError: the release could not be recorded; the lease stays live.
        """
        call = self._release_call(correlation_id)
        if call is not None:
            self._engine.run_sync(call, self._engine.operation_bound())

    def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until the connection runs with this lease's subscriptions on the wire (for
        leases acquired with ``wait=False``); ``timeout`` defaults to ``start_timeout``.

        Raises:
            StartTimeoutError: not in time (the lease stays live).
            ConnectionStartError: the connection failed (the lease is revoked).
            LeaseRevokedError / LeaseError: the lease was revoked or released.
        """
        call = self._ready_call(timeout)
        self._engine.run_sync(call, self._engine.operation_bound())

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


class _AsyncLease(_Lease):
    """Release and readiness as coroutines that never block the caller's loop."""

    __slots__ = ()

    async def release(self, *, correlation_id: str | None = None) -> None:
        """As :meth:`MarketDataLease.release`."""
        call = self._release_call(correlation_id)
        if call is not None:
            await self._engine.run_async(call, self._engine.operation_bound())

    async def wait_ready(self, timeout: float | None = None) -> None:
        """As :meth:`MarketDataLease.wait_ready`."""
        await self._engine.run_async(self._ready_call(timeout), self._engine.operation_bound())

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.release()


class _MarketData(_Lease):
    """What market-data leases share, sync or async: subscriptions and latest values."""

    __slots__ = ()

    @property
    def subscriptions(self) -> frozenset[Subscription]:
        """The lease's (channel, symbol) pairs."""
        return self._handle.subscriptions

    @property
    def symbols(self) -> frozenset[str]:
        """The symbols this lease subscribes, on any channel."""
        return frozenset(symbol for _, symbol in self._handle.subscriptions)

    def latest_quote(self, symbol: str) -> Quote | None:
        """The latest quote of ``symbol`` this lease received, or None. Never blocks.

        Raises:
            InvalidInputError: the lease does not subscribe quotes of ``symbol``.
            LeaseRevokedError / LeaseError: the lease is no longer live.
        """
        latest = self._handle.mailbox.latest(self._pair("quotes", symbol))
        assert latest is None or isinstance(latest, Quote)
        return latest

    def latest_trade(self, symbol: str) -> Trade | None:
        """The latest trade of ``symbol``, or None. Raises like :meth:`latest_quote`."""
        latest = self._handle.mailbox.latest(self._pair("trades", symbol))
        assert latest is None or isinstance(latest, Trade)
        return latest

    def _checked(self, symbols: object) -> frozenset[str]:
        if self.key.kind == OPTION_DATA:
            return check_option_symbols(symbols)
        return check_symbols(symbols)

    def _pair(self, channel: str, symbol: object) -> Subscription:
        raise_unless_live(self._handle, channel, plain=True)
        (checked,) = self._checked([symbol])
        pair = (channel, checked)
        if pair not in self._handle.subscriptions:
            raise InvalidInputError(f"this lease does not subscribe {channel} of {checked}",
                                    operation=channel, correlation_id=self.correlation_id)
        return pair

    def _change_call(self, channel: object, symbols: object, *, subscribe: bool) -> Any:
        channels = OPTION_CHANNELS if self.key.kind == OPTION_DATA else CHANNELS
        if channel not in channels:
            raise InvalidInputError(f"channel must be one of {', '.join(channels)}; "
                                    f"got {channel!r}", operation="subscribe")
        pairs = frozenset((str(channel), symbol) for symbol in self._checked(symbols))
        raise_unless_live(self._handle, "subscribe", plain=True)  # no engine needed to say so
        return self._engine.change(self._handle, pairs, subscribe=subscribe,
                                   correlation_id=self.correlation_id)

    def _wait_timeout(self, timeout: float | None) -> float:
        return (self._engine.settings.start_timeout if timeout is None
                else check_seconds("timeout", timeout))


class MarketDataLease(_MarketData, _SyncLease):
    """A lease on one of the account's shared market-data connections: stocks, crypto or
    options (``ConnectionManager``).

    Thread-safety: every method may be called from any thread, callbacks included.
    """

    __slots__ = ()

    def subscribe_quotes(self, *symbols: str) -> None:
        """Receive quotes of ``symbols`` too; returns once the wire acknowledged them.

        Raises:
            InvalidInputError: a malformed symbol.
            LeaseError / LeaseRevokedError: the lease is no longer live.
            AuditError: the change could not be recorded; nothing changed.
            WaitTimeoutError: the wire did not acknowledge within start_timeout.
        """
        self._change("quotes", symbols, subscribe=True)

    def subscribe_trades(self, *symbols: str) -> None:
        """Receive trades of ``symbols`` too. Raises like :meth:`subscribe_quotes`."""
        self._change("trades", symbols, subscribe=True)

    def subscribe_bars(self, *symbols: str) -> None:
        """Receive minute bars of ``symbols`` too. Raises like :meth:`subscribe_quotes`."""
        self._change("bars", symbols, subscribe=True)

    def subscribe_updated_bars(self, *symbols: str) -> None:
        """Receive updated minute bars (corrected by late trades) of ``symbols`` too. Raises
        like :meth:`subscribe_quotes`."""
        self._change("updated_bars", symbols, subscribe=True)

    def subscribe_daily_bars(self, *symbols: str) -> None:
        """Receive daily bars of ``symbols`` too. Raises like :meth:`subscribe_quotes`."""
        self._change("daily_bars", symbols, subscribe=True)

    def subscribe_statuses(self, *symbols: str) -> None:
        """Receive trading statuses (halts, resumptions) of ``symbols`` too. Raises like
        :meth:`subscribe_quotes`."""
        self._change("statuses", symbols, subscribe=True)

    def unsubscribe(self, channel: Channel, *symbols: str) -> None:
        """Stop receiving ``channel`` (one of ``marketdata.CHANNELS``) of ``symbols``."""
        self._change(channel, symbols, subscribe=False)

    def _change(self, channel: object, symbols: object, *, subscribe: bool) -> None:
        call = self._change_call(channel, symbols, subscribe=subscribe)
        self._engine.run_sync(call, self._engine.operation_bound())

    def wait_for_quote(self, symbol: str, timeout: float | None = None) -> Quote:
        """The latest quote of ``symbol``, waiting up to ``timeout`` seconds (default
        ``start_timeout``) for the first one.

        Raises:
            InvalidInputError: not subscribed to quotes of ``symbol``, or a bad timeout.
            WaitTimeoutError: no quote arrived in time.
            LeaseRevokedError / LeaseError: the lease was revoked or released meanwhile.
        """
        pair = self._pair("quotes", symbol)
        try:
            quote = self._handle.mailbox.wait_latest(pair, self._wait_timeout(timeout))
        except MailboxClosedError:
            raise_unless_live(self._handle, "quotes", plain=True)
            raise
        assert isinstance(quote, Quote)
        return quote

    def quotes(self, timeout: float | None = None) -> Iterator[Quote]:
        """Every quote of the lease's subscriptions, in order (conflated per symbol when the
        consumer falls behind). Ends when the lease is released.

        Args:
            timeout: seconds to wait for each quote (None: until the lease ends).

        Raises:
            WaitTimeoutError: no quote within ``timeout``.
            LeaseRevokedError (or the connection's error): the lease was revoked.
            InvalidInputError: the lease delivers quotes to ``on_quote``.
        """
        return self._iterate("quotes", timeout)

    def trades(self, timeout: float | None = None) -> Iterator[TradeMessage]:
        """Every trade of the lease's subscriptions, and the corrections and cancels of those
        symbols' trades, in order. As :meth:`quotes`."""
        return self._iterate("trades", timeout)

    def bars(self, timeout: float | None = None) -> Iterator[Bar]:
        """Every bar of the lease's subscriptions. As :meth:`quotes`."""
        return self._iterate("bars", timeout)

    def updated_bars(self, timeout: float | None = None) -> Iterator[Bar]:
        """Every updated bar of the lease's subscriptions. As :meth:`quotes`."""
        return self._iterate("updated_bars", timeout)

    def daily_bars(self, timeout: float | None = None) -> Iterator[Bar]:
        """Every daily bar of the lease's subscriptions. As :meth:`quotes`."""
        return self._iterate("daily_bars", timeout)

    def statuses(self, timeout: float | None = None) -> Iterator[TradingStatus]:
        """Every trading status of the lease's subscriptions. As :meth:`quotes`."""
        return self._iterate("statuses", timeout)

    def _iterate(self, channel: str, timeout: float | None) -> Iterator[Any]:
        self._pull(channel)
        seconds = None if timeout is None else check_seconds("timeout", timeout)
        return _iterate(self._handle, channel, seconds)



class _TradeUpdates(_Lease):
    """What trade-updates leases share, sync or async: the filter given at acquire."""

    __slots__ = ()

    @property
    def client_order_id_prefix(self) -> str | None:
        """The lease receives only updates of orders whose ``client_order_id`` starts with
        this; None: every update of the account."""
        return self._handle.info.client_order_id_prefix


class TradeUpdatesLease(_TradeUpdates, _SyncLease):
    """A lease on the account's shared trade-updates connection (``ConnectionManager``).

    Thread-safety: every method may be called from any thread, callbacks included.
    """

    __slots__ = ()

    def updates(self, timeout: float | None = None) -> Iterator[Any]:
        """Every order update of the account (alpaca-py's ``TradeUpdate``), or of its own
        orders with a ``client_order_id_prefix``, in order. Ends when the lease is released.
        Never drops one: if the consumer falls ``lease_queue_size`` behind, the lease is
        revoked with LeaseOverflowError.

        Raises:
            WaitTimeoutError: no update within ``timeout`` seconds (None: no bound).
            LeaseRevokedError (or a subclass): the lease was revoked.
            InvalidInputError: the lease delivers updates to ``on_update``.
        """
        self._pull(TRADE_UPDATES_CHANNEL)
        seconds = None if timeout is None else check_seconds("timeout", timeout)
        return _iterate(self._handle, TRADE_UPDATES_CHANNEL, seconds)



def _iterate(handle: LeaseHandle, channel: str, timeout: float | None) -> Iterator[Any]:
    while True:
        try:
            yield handle.mailbox.get(channel, timeout)
        except MailboxClosedError:
            return


async def _aiterate(handle: LeaseHandle, channel: str,
                    timeout: float | None) -> AsyncIterator[Any]:
    mailbox = handle.mailbox
    while True:
        found, payload = mailbox.poll(channel)  # a backlog is read without a coroutine each
        if found:
            yield payload
            continue
        try:
            yield await mailbox.aget(channel, timeout)
        except MailboxClosedError:
            return


class AsyncMarketDataLease(_MarketData, _AsyncLease):
    """A lease on a shared stock, crypto or option connection (``AsyncConnectionManager``).

    Its coroutines never block the caller's event loop. Thread-safety: use it from one event
    loop; the non-coroutine methods may be called from anywhere.
    """

    __slots__ = ()

    async def subscribe_quotes(self, *symbols: str) -> None:
        """As :meth:`MarketDataLease.subscribe_quotes`."""
        await self._change("quotes", symbols, subscribe=True)

    async def subscribe_trades(self, *symbols: str) -> None:
        """As :meth:`MarketDataLease.subscribe_trades`."""
        await self._change("trades", symbols, subscribe=True)

    async def subscribe_bars(self, *symbols: str) -> None:
        """As :meth:`MarketDataLease.subscribe_bars`."""
        await self._change("bars", symbols, subscribe=True)

    async def subscribe_updated_bars(self, *symbols: str) -> None:
        """As :meth:`MarketDataLease.subscribe_updated_bars`."""
        await self._change("updated_bars", symbols, subscribe=True)

    async def subscribe_daily_bars(self, *symbols: str) -> None:
        """As :meth:`MarketDataLease.subscribe_daily_bars`."""
        await self._change("daily_bars", symbols, subscribe=True)

    async def subscribe_statuses(self, *symbols: str) -> None:
        """As :meth:`MarketDataLease.subscribe_statuses`."""
        await self._change("statuses", symbols, subscribe=True)

    async def unsubscribe(self, channel: Channel, *symbols: str) -> None:
        """As :meth:`MarketDataLease.unsubscribe`."""
        await self._change(channel, symbols, subscribe=False)

    async def _change(self, channel: object, symbols: object, *, subscribe: bool) -> None:
        call = self._change_call(channel, symbols, subscribe=subscribe)
        await self._engine.run_async(call, self._engine.operation_bound())

    async def wait_for_quote(self, symbol: str, timeout: float | None = None) -> Quote:
        """As :meth:`MarketDataLease.wait_for_quote`."""
        pair = self._pair("quotes", symbol)
        try:
            quote = await self._handle.mailbox.await_latest(pair, self._wait_timeout(timeout))
        except MailboxClosedError:
            raise_unless_live(self._handle, "quotes", plain=True)
            raise
        assert isinstance(quote, Quote)
        return quote

    def quotes(self, timeout: float | None = None) -> AsyncIterator[Quote]:
        """``async for quote in lease.quotes()``: as :meth:`MarketDataLease.quotes`."""
        return self._aiterate("quotes", timeout)

    def trades(self, timeout: float | None = None) -> AsyncIterator[TradeMessage]:
        """As :meth:`MarketDataLease.trades`."""
        return self._aiterate("trades", timeout)

    def bars(self, timeout: float | None = None) -> AsyncIterator[Bar]:
        """As :meth:`MarketDataLease.bars`."""
        return self._aiterate("bars", timeout)

    def updated_bars(self, timeout: float | None = None) -> AsyncIterator[Bar]:
        """As :meth:`MarketDataLease.updated_bars`."""
        return self._aiterate("updated_bars", timeout)

    def daily_bars(self, timeout: float | None = None) -> AsyncIterator[Bar]:
        """As :meth:`MarketDataLease.daily_bars`."""
        return self._aiterate("daily_bars", timeout)

    def statuses(self, timeout: float | None = None) -> AsyncIterator[TradingStatus]:
        """As :meth:`MarketDataLease.statuses`."""
        return self._aiterate("statuses", timeout)

    def _aiterate(self, channel: str, timeout: float | None) -> AsyncIterator[Any]:
        self._pull(channel)
        seconds = None if timeout is None else check_seconds("timeout", timeout)
        return _aiterate(self._handle, channel, seconds)



class AsyncTradeUpdatesLease(_TradeUpdates, _AsyncLease):
    """A lease on the shared trade-updates connection (``AsyncConnectionManager``)."""

    __slots__ = ()

    def updates(self, timeout: float | None = None) -> AsyncIterator[Any]:
        """``async for update in lease.updates()``: as :meth:`TradeUpdatesLease.updates`."""
        self._pull(TRADE_UPDATES_CHANNEL)
        seconds = None if timeout is None else check_seconds("timeout", timeout)
        return _aiterate(self._handle, TRADE_UPDATES_CHANNEL, seconds)


class _News(_Lease):
    """What news leases share, sync or async: the symbols given at acquire."""

    __slots__ = ()

    @property
    def symbols(self) -> frozenset[str]:
        """The symbols whose articles this lease receives (``*``: every article)."""
        return frozenset(symbol for _, symbol in self._handle.subscriptions)


class NewsLease(_News, _SyncLease):
    """A lease on the account's shared news connection (``ConnectionManager``).

    Thread-safety: every method may be called from any thread, callbacks included.
    """

    __slots__ = ()

    def news(self, timeout: float | None = None) -> Iterator[News]:
        """Every article about the lease's symbols (any article with ``*``), once each, in
        order. Ends when the lease is released.

        Raises:
            WaitTimeoutError: no article within ``timeout`` seconds (None: no bound).
            LeaseRevokedError (or the connection's error): the lease was revoked.
            InvalidInputError: the lease delivers news to ``on_news``.
        """
        self._pull(NEWS_CHANNEL)
        seconds = None if timeout is None else check_seconds("timeout", timeout)
        return _iterate(self._handle, NEWS_CHANNEL, seconds)


class AsyncNewsLease(_News, _AsyncLease):
    """A lease on the shared news connection (``AsyncConnectionManager``)."""

    __slots__ = ()

    def news(self, timeout: float | None = None) -> AsyncIterator[News]:
        """``async for article in lease.news()``: as :meth:`NewsLease.news`."""
        self._pull(NEWS_CHANNEL)
        seconds = None if timeout is None else check_seconds("timeout", timeout)
        return _aiterate(self._handle, NEWS_CHANNEL, seconds)
