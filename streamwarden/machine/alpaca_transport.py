"""Transports over the official alpaca-py SDK: ``StockDataStream`` and ``TradingStream``.

Each :class:`AlpacaTransport` runs the SDK's connect/reconnect loop on its own event loop in a
named thread and maps what happens on the wire to spec events:

* authenticated and subscribed (market data) or listening (trade updates) -> ``connected``,
  again after each reconnect of the SDK;
* socket closed or failed while usable -> ``connection_lost`` (the SDK reconnects);
* Alpaca error 401/402 or ``unauthorized`` -> AuthenticationError, 406 -> ConnectionLimitError,
  405/409 -> SubscriptionError: fatal, reported once, and the SDK's loop is ended so that it
  does not retry refused credentials forever.

``stop`` cancels the SDK's loop and closes the socket from inside it, so a stop does not wait for
the SDK's 5-second receive poll; the close handshake is bounded by ``stop_timeout`` (+ a
margin), after which the thread ends on its own even when the peer never answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Collection
from typing import Any

from streamwarden.config import Settings
from streamwarden.credentials import Credentials
from streamwarden.errors import (
    AuthenticationError,
    ConnectionLimitError,
    ConnectionStartError,
    SubscriptionError,
)
from streamwarden.machine import sdk_adapter
from streamwarden.machine.keys import MARKET_DATA, StreamKey
from streamwarden.machine.market_data import (
    TRADE_UPDATES_CHANNEL,
    Subscription,
    channel_of,
    parse_market_data,
)
from streamwarden.machine.transport import StreamMessage, TransportListener

#: Seconds the close handshake may take beyond ``stop_timeout`` before the socket is dropped:
#: a peer that hangs makes the stop overrun ``stop_timeout`` (forced), yet the thread ends.
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
    """One Alpaca stream connection, driven by alpaca-py in a thread of its own.

    Thread-safety: every public method may be called from any thread; listener callbacks come
    from the transport's thread, consumer callbacks included.
    """

    def __init__(self, key: StreamKey, credentials: Credentials, settings: Settings) -> None:
        self._key = key
        self._lock = threading.Lock()
        self._listener: TransportListener | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_signal: asyncio.Event | None = None
        self._stop_requested = False
        self._closing = False
        self._fatal_reported = False
        self._awaiting_ready = False
        self._usable = False
        self._socket_open = False
        self._wanted: set[Subscription] = set()
        self._sync_lock: asyncio.Lock | None = None
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

    def start(self, listener: TransportListener) -> None:
        """Start the SDK's loop in a named thread; returns at once."""
        with self._lock:
            if self._thread is not None or self._stop_requested:
                return
            self._listener = listener
            self._thread = threading.Thread(
                target=self._run, daemon=True,
                name=f"streamwarden-alpaca-{self._key.kind}-{self._key.fingerprint[:8]}")
            self._thread.start()

    def stop(self, timeout: float) -> bool:
        """Cancel the SDK's loop, close the socket from inside it, join within ``timeout``."""
        with self._lock:
            self._stop_requested = True
            self._socket_open = False
            loop, signal, thread = self._loop, self._stop_signal, self._thread
        if loop is not None and signal is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(signal.set)
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def subscribe(self, subscriptions: Collection[Subscription]) -> None:
        """Queue (channel, symbol) pairs for the wire; does not block."""
        with self._lock:
            self._wanted.update(subscriptions)
        self._request_sync()

    def unsubscribe(self, subscriptions: Collection[Subscription]) -> None:
        """Queue the removal of (channel, symbol) pairs from the wire; does not block."""
        with self._lock:
            self._wanted.difference_update(subscriptions)
        self._request_sync()

    @property
    def socket_open(self) -> bool:
        """Whether an authenticated socket is open (False from the moment stop is called)."""
        return self._socket_open

    @property
    def thread_alive(self) -> bool:
        """Whether the SDK's thread is running."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    @property
    def subscriptions(self) -> frozenset[Subscription]:
        """The pairs requested on the wire (a queued change included)."""
        with self._lock:
            return frozenset(self._wanted)

    # The thread and its event loop.

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception as exc:  # a bug here must still end the lifecycle
            self._report_fatal(ConnectionStartError(f"transport failed: {type(exc).__name__}"))

    async def _main(self) -> None:
        signal = asyncio.Event()
        with self._lock:
            if self._stop_requested:
                return
            self._loop, self._stop_signal = asyncio.get_running_loop(), signal
        self._sync_lock = asyncio.Lock()
        await self._sync()
        runner = asyncio.ensure_future(sdk_adapter.run_forever(self._stream))
        stopper = asyncio.ensure_future(signal.wait())
        await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
        self._closing = True
        self._socket_open = False
        stopper.cancel()
        await self._shut_down(runner)
        if not self._stop_requested:
            self._report_fatal(ConnectionStartError("the alpaca-py stream ended by itself"))

    async def _shut_down(self, runner: asyncio.Future[None]) -> None:
        """End the SDK's loop the way its own ``stop`` does, without its 5-second poll.

        The SDK is told to stop, then its socket is closed under it, which wakes its receive at
        once. Cancelling the loop is only the fallback: on Python 3.11 ``asyncio.wait_for`` may
        swallow a cancellation that races with a message (fixed in 3.12).
        """
        await sdk_adapter.request_stop(self._stream)
        await sdk_adapter.close_socket(self._stream)
        await asyncio.wait({runner}, timeout=CLOSE_MARGIN_SECONDS)
        if not runner.done():
            runner.cancel()
            await asyncio.wait({runner}, timeout=CLOSE_MARGIN_SECONDS)
        if runner.done() and not runner.cancelled():
            runner.exception()  # retrieved: the SDK logs its own errors
        await sdk_adapter.close_socket(self._stream)  # one opened while the loop was ending

    def _request_sync(self) -> None:
        loop = self._loop
        if loop is None or self._key.kind != MARKET_DATA:
            return  # the loop syncs once it starts
        with contextlib.suppress(RuntimeError):  # the loop already ended
            loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self._sync()))

    async def _sync(self) -> None:
        """Make the SDK's handlers (and the wire, if connected) match ``_wanted``."""
        if self._key.kind != MARKET_DATA or self._sync_lock is None:
            return
        async with self._sync_lock:
            with self._lock:
                wanted = set(self._wanted)
            registered = sdk_adapter.registered(self._stream)
            await sdk_adapter.unsubscribe(self._stream, registered - wanted)
            await sdk_adapter.subscribe(self._stream, wanted - registered,
                                        self._on_market_data)

    # What the SDK reports (sdk_adapter.StreamEvents), on the loop.

    def on_authenticated(self) -> None:
        self._socket_open = not self._closing
        self._awaiting_ready = True

    def on_ready(self) -> None:
        if self._awaiting_ready and not self._closing and self._listener is not None:
            self._awaiting_ready = False
            self._usable = True
            self._listener.on_connected()

    def on_stream_error(self, code: int | None, message: str) -> None:
        error = fatal_error(code, message)
        if error is None or self._closing:
            return  # alpaca-py logs it and retries; start_timeout bounds the retries
        self._report_fatal(error)
        if self._stop_signal is not None:
            self._stop_signal.set()

    def on_socket_lost(self, reason: str) -> None:
        self._socket_open = False
        was_usable, self._usable, self._awaiting_ready = self._usable, False, False
        if not self._closing and was_usable and self._listener is not None:
            self._listener.on_connection_lost(reason)

    def _report_fatal(self, error: ConnectionStartError) -> None:
        if self._fatal_reported or self._listener is None:
            return
        self._fatal_reported = True
        self._listener.on_fatal_error(error)

    async def _on_market_data(self, message: dict[str, Any]) -> None:
        channel = channel_of(message)
        if channel is None or self._listener is None:
            return
        try:
            payload = parse_market_data(message)
        except ValueError:
            return  # malformed: nothing a lease could use
        self._listener.on_message(StreamMessage(channel, payload.symbol, payload))

    async def _on_trade_update(self, update: Any) -> None:
        if self._listener is None:
            return
        order = getattr(update, "order", None)
        symbol = getattr(order, "symbol", None)
        self._listener.on_message(StreamMessage(TRADE_UPDATES_CHANNEL, symbol, update))


class AlpacaTransportFactory:
    """The default :data:`~streamwarden.machine.transport.TransportFactory`: alpaca-py streams.

    Endpoints come from ``Settings.market_data_url`` / ``trade_updates_url`` when set (the
    simulator's, in tests), else Alpaca's: market data for the configured feed, trade updates
    for paper or live as the credentials say.

    Thread-safety: stateless; safe to call from any thread.
    """

    def __call__(
        self, key: StreamKey, credentials: Credentials, settings: Settings
    ) -> AlpacaTransport:
        return AlpacaTransport(key, credentials, settings)
