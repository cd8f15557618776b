"""Transports over the official alpaca-py SDK: ``StockDataStream`` and ``TradingStream``.

Each :class:`AlpacaTransport` runs the SDK's own connect / reconnect loop as a task on the
manager's engine loop (no thread of its own) and maps what happens on the wire to events:

* authenticated and listening (trade updates) or subscribed (market data) -> ``on_connected``,
  again after each reconnect of the SDK; every subscription acknowledgement ->
  ``on_subscribed`` with the pairs the wire carries;
* socket closed or failed while usable -> ``on_connection_lost`` (the SDK reconnects);
* Alpaca error 401/402/411 or ``unauthorized`` -> AuthenticationError, 406 -> ConnectionLimitError,
  405/409 -> SubscriptionError: fatal, reported once, and the SDK's loop is ended so that it
  does not retry refused credentials forever;
* a failed connect (DNS lookup, refused TCP connection, TLS or WebSocket handshake, open
  timeout) or another Alpaca error before the stream is usable -> ``on_connect_failed`` with
  its cause; the SDK retries after its backoff, within the lifecycle's ``start_timeout``.

``stop`` tells the SDK to stop and closes the socket under it, so a stop does not wait for the
SDK's 5-second receive poll; the close handshake is bounded by the websocket ``close_timeout``.
Each message is parsed once, here, and handed to the leases' delivery queues: no consumer code
runs on the engine loop. A message that cannot be parsed (MalformedMessageError) is reported
through ``on_malformed`` and dropped alone: the adapter catches it per message, so the rest of
its frame is still dispatched.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

from streamwarden._keys import MARKET_DATA, StreamKey
from streamwarden._redaction import guard_websockets_logs
from streamwarden.config import Settings
from streamwarden.credentials import Credentials
from streamwarden.errors import (
    AuthenticationError,
    ConnectionLimitError,
    ConnectionStartError,
    MalformedMessageError,
    SubscriptionError,
)
from streamwarden.marketdata import (
    TRADE_UPDATES_CHANNEL,
    Subscription,
    channel_of,
    parse_market_data,
)
from streamwarden.transports import _sdk_adapter as sdk_adapter
from streamwarden.transports._causes import connect_failure, refusal
from streamwarden.transports._contract import MalformedMessage, StreamMessage, TransportEvents

#: Seconds the close handshake may take beyond ``stop_timeout``: the websocket's own bound.
CLOSE_MARGIN_SECONDS = 0.5
#: Longest symbol of a malformed message that is reported as it is (longer ones are cut).
MAX_REPORTED_SYMBOL = 32

_FATAL_ERRORS: dict[int, type[ConnectionStartError]] = {
    401: AuthenticationError,
    402: AuthenticationError,
    405: SubscriptionError,
    406: ConnectionLimitError,
    409: SubscriptionError,
    411: AuthenticationError,  # the credentials lack the market-data scope
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

    Thread-safety: not thread-safe; every method is called on the engine loop.
    """

    def __init__(self, key: StreamKey, credentials: Credentials, settings: Settings) -> None:
        guard_websockets_logs()  # the SDK's auth frame would show in websockets' DEBUG log
        self._key = key
        self._events: TransportEvents | None = None
        self._stop_requested = False
        self._closing = False
        self._fatal_reported = False
        self._awaiting_ready = False
        self._usable = False
        self._socket_open = False
        self._wanted: frozenset[Subscription] = frozenset()
        self._resync = asyncio.Event()
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
        """Run the SDK's connect / reconnect loop until :meth:`stop` or a fatal refusal."""
        self._events = events
        if self._stop_requested:
            return
        await self._sync()  # the SDK opens its socket once it has a handler
        syncer = asyncio.create_task(self._keep_in_sync(),
                                     name=f"streamwarden-sync-{self._key.fingerprint[:8]}")
        try:
            await sdk_adapter.run_forever(self._stream)
        finally:
            self._closing = True
            self._socket_open = False
            syncer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await syncer
        if not self._stop_requested:
            self._report_fatal(ConnectionStartError("the alpaca-py stream ended by itself"))

    async def stop(self) -> None:
        """Tell the SDK to stop and close its socket (bounded by the websocket close_timeout)."""
        self._stop_requested = True
        self._closing = True
        self._socket_open = False
        await sdk_adapter.request_stop(self._stream)
        await sdk_adapter.close_socket(self._stream)

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

    def on_authenticated(self) -> None:
        self._socket_open = not self._closing
        self._awaiting_ready = True

    def on_ready(self, pairs: frozenset[Subscription]) -> None:
        if self._closing or self._events is None:
            return
        if self._awaiting_ready:
            self._awaiting_ready = False
            self._usable = True
            self._events.on_connected()
        self._events.on_subscribed(pairs)

    def on_connect_failed(self, error: Exception) -> None:
        if not self._closing and self._events is not None:
            url = sdk_adapter.endpoint(self._stream)
            self._events.on_connect_failed(connect_failure(error, url))

    def on_stream_error(self, code: int | None, message: str) -> bool:
        error = fatal_error(code, message)
        if self._closing:
            return False
        if error is None:  # alpaca-py logs it and retries; start_timeout bounds the retries
            if not self._usable and self._events is not None:
                url = sdk_adapter.endpoint(self._stream)
                self._events.on_connect_failed(refusal(code, message, url))
            return False
        self._report_fatal(error)
        return True

    def on_socket_lost(self, reason: str) -> None:
        self._socket_open = False
        was_usable, self._usable, self._awaiting_ready = self._usable, False, False
        if not self._closing and was_usable and self._events is not None:
            self._events.on_connection_lost(reason)

    def on_message_failed(self, message: Mapping[str, Any], error: Exception) -> None:
        if self._events is None:
            return
        if isinstance(error, MalformedMessageError):
            field, reason = error.field, error.reason
        else:  # what the parser did not foresee is still one unreadable message, not a crash
            field, reason = "", f"unreadable ({type(error).__name__})"
        symbol = message.get("S")
        self._events.on_malformed(MalformedMessage(
            channel_of(message) or str(message.get("T"))[:MAX_REPORTED_SYMBOL],
            symbol[:MAX_REPORTED_SYMBOL] if isinstance(symbol, str) else None, field, reason))

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
        # Raises MalformedMessageError: the adapter reports it through on_message_failed.
        payload = parse_market_data(message)
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

    Thread-safety: stateless; called on the engine loop.
    """

    def __call__(
        self, key: StreamKey, credentials: Credentials, settings: Settings
    ) -> AlpacaTransport:
        return AlpacaTransport(key, credentials, settings)
