"""Transports over the official alpaca-py SDK: ``StockDataStream`` and ``TradingStream``.

Each :class:`AlpacaTransport` runs its own connect / reconnect loop as a task on the manager's
engine loop (no thread of its own), one SDK connection at a time (:mod:`._sdk_adapter`), and maps
what happens on the wire to events:

* authenticated and listening (trade updates) or subscribed (market data) -> ``on_connected``,
  again after each reconnect; every subscription acknowledgement -> ``on_subscribed`` with the
  pairs the wire carries;
* socket closed or failed while usable -> ``on_connection_lost``, then the loop reconnects;
* Alpaca error 401/402 or ``unauthorized`` -> AuthenticationError, 405/409 ->
  SubscriptionError, 406 at the first start -> ConnectionLimitError naming the likely culprit
  (another process or connection holds the account's connection for that endpoint): fatal,
  reported once, and the loop ends so that it does not retry refused credentials forever;
* a failed connect (DNS lookup, refused TCP connection, TLS or WebSocket handshake, open
  timeout, HTTP 429 on the upgrade), a 406 once the stream has been usable (Alpaca holds a
  dropped socket for about 90 s), or another Alpaca error before the stream is usable ->
  ``on_connect_failed`` with its cause, the attempt number and the delay before the next
  attempt; the lifecycle bounds the retries (``start_timeout`` for a first start,
  ``reconnect_grace`` and ``connection_limit_grace`` for a reconnect).

Between attempts the loop waits a jittered exponential backoff (:class:`~._backoff.Backoff`,
from ``reconnect_backoff_initial`` to ``reconnect_backoff_max``; after a 429 the answer's
``Retry-After``, else the max); the attempt count starts again once a connection is usable.
Closing the socket under a running transport (``sdk_adapter.close``) is a drop like any other:
it is reported and reconnected through the same loop and backoff.

``stop`` tells the SDK to stop and closes the socket under it, so a stop does not wait for the
SDK's 5-second receive poll; the close handshake is bounded by the websocket ``close_timeout``.
Each message is parsed once, here, and handed to the leases' delivery queues: no consumer code
runs on the engine loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from typing import Any

from streamwarden._keys import MARKET_DATA, StreamKey
from streamwarden._redaction import guard_websockets_logs
from streamwarden.config import Settings
from streamwarden.credentials import Credentials
from streamwarden.errors import (
    AuthenticationError,
    ConnectionLimitError,
    ConnectionStartError,
    SubscriptionError,
)
from streamwarden.marketdata import (
    TRADE_UPDATES_CHANNEL,
    Subscription,
    channel_of,
    parse_market_data,
)
from streamwarden.transports import _sdk_adapter as sdk_adapter
from streamwarden.transports._backoff import Backoff
from streamwarden.transports._causes import (
    connect_failure,
    connection_limit,
    refusal,
    retry_after,
)
from streamwarden.transports._contract import ConnectFailure, StreamMessage, TransportEvents
from streamwarden.transports._sdk_adapter import error_code

Sleep = Callable[[float], Awaitable[None]]
"""How the loop waits between attempts (``asyncio.sleep``; tests inject one that records)."""

#: Seconds the close handshake may take beyond ``stop_timeout``: the websocket's own bound.
CLOSE_MARGIN_SECONDS = 0.5

_FATAL_ERRORS: dict[int, type[ConnectionStartError]] = {
    401: AuthenticationError,
    402: AuthenticationError,
    405: SubscriptionError,
    406: ConnectionLimitError,
    409: SubscriptionError,
}


def fatal_error(code: int | None, message: str) -> ConnectionStartError | None:
    """The typed error of an Alpaca refusal that retrying cannot fix, or None.

    >>> fatal_error(406, "connection limit exceeded")
    ConnectionLimitError('Alpaca error 406: connection limit exceeded')
    >>> fatal_error(500, "internal error") is None
    True
    """
    error_type = _FATAL_ERRORS.get(code) if code is not None else None
    if error_type is None:
        return None
    return error_type(f"Alpaca error {code}: {message}")


class AlpacaTransport:
    """One Alpaca stream connection, driven by alpaca-py on the engine loop.

    Args:
        rng: the backoff's random source (default: a fresh ``random.Random()``).
        sleep: how the loop waits between attempts (default ``asyncio.sleep``); a stop
            interrupts the wait either way.

    Thread-safety: not thread-safe; every method is called on the engine loop.
    """

    def __init__(self, key: StreamKey, credentials: Credentials, settings: Settings, *,
                 rng: random.Random | None = None, sleep: Sleep = asyncio.sleep) -> None:
        guard_websockets_logs()  # the SDK's auth frame would show in websockets' DEBUG log
        self._key = key
        self._events: TransportEvents | None = None
        self._stop_requested = False
        self._closing = False
        self._fatal_reported = False
        self._awaiting_ready = False
        self._usable = False
        self._ever_usable = False
        self._socket_open = False
        self._failures = 0  # attempts that failed since the stream was last usable
        self._wanted: frozenset[Subscription] = frozenset()
        self._resync = asyncio.Event()
        self._wake = asyncio.Event()
        self._backoff = Backoff(settings.reconnect_backoff_initial,
                                settings.reconnect_backoff_max, rng or random.Random())
        self._sleep = sleep
        self._stream = self._build_stream(credentials, settings)

    def _build_stream(self, credentials: Credentials, settings: Settings) -> Any:
        params = {"ping_interval": 10, "ping_timeout": 180, "max_queue": 1024,
                  "open_timeout": settings.start_timeout,
                  "close_timeout": settings.stop_timeout + CLOSE_MARGIN_SECONDS}
        key_id, secret = credentials.sensitive_values()
        if self._key.kind == MARKET_DATA:
            return sdk_adapter.AdaptedStockDataStream(
                key_id, secret, feed=self._key.feed or settings.feed,
                url=settings.market_data_url, websocket_params=params, events=self)
        return sdk_adapter.AdaptedTradingStream(
            key_id, secret, paper=self._key.paper, url=settings.trade_updates_url,
            websocket_params=params, events=self, on_update=self._on_trade_update)

    # Transport protocol.

    async def run(self, events: TransportEvents) -> None:
        """Connect, and reconnect with backoff, until :meth:`stop` or a fatal refusal."""
        self._events = events
        if self._stop_requested:
            return
        await self._sync()  # the first subscribe goes out with the connection
        syncer = asyncio.create_task(self._keep_in_sync(),
                                     name=f"streamwarden-sync-{self._key.fingerprint[:8]}")
        try:
            await self._connect_loop(events)
        finally:
            self._closing = True
            self._socket_open = False
            syncer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await syncer

    async def stop(self) -> None:
        """End the loop and close the socket (bounded by the websocket close_timeout)."""
        self._stop_requested = True
        self._closing = True
        self._socket_open = False
        self._wake.set()
        await sdk_adapter.request_stop(self._stream)
        await sdk_adapter.close_socket(self._stream)

    # The connect / reconnect loop.

    async def _connect_loop(self, events: TransportEvents) -> None:
        while not self._closing:
            failure, imposed = await self._connection()
            if self._closing:
                return
            if failure is not None:
                self._failures += 1
            # After a drop the first wait is attempt 1's; after n failed attempts, attempt n+1's.
            delay = self._backoff.delay(self._failures + 1) if imposed is None else imposed
            if failure is not None:
                events.on_connect_failed(failure, self._failures, delay)
            await self._pause(delay)

    async def _connection(self) -> tuple[ConnectFailure | None, float | None]:
        """One connection, from connect to its end. Returns why it failed before it was usable
        (None after a drop of a usable stream, which is reported as lost) and the delay the
        peer imposed (a 429's), if any."""
        stream = self._stream
        url = sdk_adapter.endpoint(stream)
        try:
            await sdk_adapter.open_stream(stream)
        except ValueError as exc:  # alpaca-py's way of reporting an Alpaca refusal
            return self._refused(error_code(str(exc)), str(exc), url), None
        except Exception as exc:  # a failed connect, or a greeting the SDK could not read
            failure = connect_failure(exc, url)
            if failure.cause == "rate_limit":
                return failure, self._backoff.rate_limited(retry_after(exc))
            return failure, None
        self._socket_open = not self._closing
        self._awaiting_ready = True
        if self._key.kind == MARKET_DATA and not sdk_adapter.registered(stream):
            self.on_ready(frozenset())  # nothing to subscribe: the wire carries nothing
        reason = "the stream ended"
        try:
            await sdk_adapter.consume(stream)
        except Exception as exc:  # closed, failed, or a frame the SDK could not read:
            # either way this socket is done: reported as lost, then reconnected (not fatal).
            reason = f"{type(exc).__name__}: {exc}"
        self._socket_open = False
        was_usable, self._usable, self._awaiting_ready = self._usable, False, False
        await sdk_adapter.close(stream)
        if self._closing:
            return None, None
        if was_usable:
            if self._events is not None:
                self._events.on_connection_lost(reason)
            return None, None
        return refusal(None, f"closed before it was usable ({reason})", url), None

    def _refused(self, code: int | None, message: str, url: str) -> ConnectFailure | None:
        if code == 406:
            if self._ever_usable:  # a reconnect: Alpaca may still hold the dropped socket
                return ConnectFailure("connection_limit",
                                      connection_limit(url, first_start=False))
            self._report_fatal(ConnectionLimitError(connection_limit(url, first_start=True)))
            return None
        error = fatal_error(code, message)
        if error is not None:
            self._report_fatal(error)
            return None
        return refusal(code, message, url)

    async def _pause(self, delay: float) -> None:
        """Wait ``delay`` seconds with the injected sleep, or until :meth:`stop`."""
        sleeper = asyncio.ensure_future(self._sleep(delay))
        waker = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waker.cancel()

    def set_subscriptions(self, pairs: frozenset[Subscription]) -> None:
        """Ask for ``pairs`` on the wire; reconciled by the sync task once running."""
        self._wanted = pairs
        self._resync.set()

    @property
    def subscriptions(self) -> frozenset[Subscription]:
        """The pairs asked for on the wire."""
        return self._wanted

    @property
    def socket_open(self) -> bool:
        """Whether an authenticated socket is open (False from the moment stop is called)."""
        return self._socket_open

    # Keeping the SDK's handler table, and the wire, equal to what the leases want.

    async def _keep_in_sync(self) -> None:
        while True:
            await self._resync.wait()
            self._resync.clear()
            await self._sync()

    async def _sync(self) -> None:
        if self._key.kind != MARKET_DATA:
            return
        wanted = self._wanted
        registered = sdk_adapter.registered(self._stream)
        await sdk_adapter.unsubscribe(self._stream, registered - wanted)
        await sdk_adapter.subscribe(self._stream, wanted - registered, self._on_market_data)

    # What the SDK reports (sdk_adapter.StreamEvents), on the loop.

    def on_ready(self, pairs: frozenset[Subscription]) -> None:
        if self._closing or self._events is None:
            return
        if self._awaiting_ready:
            self._awaiting_ready = False
            self._usable = self._ever_usable = True
            self._failures = 0  # usable again: the next drop starts the backoff afresh
            self._events.on_connected()
        self._events.on_subscribed(pairs)

    def on_stream_error(self, code: int | None, message: str) -> bool:
        error = fatal_error(code, message)
        if self._closing or error is None:  # the frame alone does not end the connection
            return False
        self._report_fatal(error)
        return True

    def _report_fatal(self, error: ConnectionStartError) -> None:
        if self._fatal_reported or self._events is None:
            return
        self._fatal_reported = True
        self._closing = True
        self._events.on_fatal_error(error)

    async def _on_market_data(self, message: dict[str, Any]) -> None:
        channel = channel_of(message)
        if channel is None or self._events is None:
            return
        try:
            payload = parse_market_data(message)
        except ValueError:
            return  # malformed: nothing a lease could use
        self._events.on_message(StreamMessage(channel, payload.symbol, payload))

    async def _on_trade_update(self, update: Any) -> None:
        if self._events is None:
            return
        order = getattr(update, "order", None)
        symbol = getattr(order, "symbol", None)
        self._events.on_message(StreamMessage(TRADE_UPDATES_CHANNEL, symbol, update))


class AlpacaTransportFactory:
    """The default :data:`~streamwarden.transports.TransportFactory`: alpaca-py streams.

    Endpoints come from ``Settings.market_data_url`` / ``trade_updates_url`` when set (the
    simulator's, in tests), else Alpaca's: market data for the configured feed, trade updates
    for paper or live as the credentials say.

    Args:
        rng: the random source of every transport's backoff (seed it in tests); default a
            fresh ``random.Random()`` per transport.
        sleep: how the transports wait between attempts (default ``asyncio.sleep``).

    Thread-safety: called on the engine loop only (the transports share ``rng``).
    """

    def __init__(self, *, rng: random.Random | None = None,
                 sleep: Sleep = asyncio.sleep) -> None:
        self._rng = rng
        self._sleep = sleep

    def __call__(
        self, key: StreamKey, credentials: Credentials, settings: Settings
    ) -> AlpacaTransport:
        return AlpacaTransport(key, credentials, settings, rng=self._rng, sleep=self._sleep)
