"""The one place streamwarden reaches into alpaca-py's internals (tested against 0.43-0.44).

alpaca-py's ``StockDataStream`` and ``TradingStream`` expose ``run()``/``stop()`` and handler
registration, but not what the lifecycle needs: *when* the stream is authenticated and
subscribed, *why* it failed (the Alpaca error code), a way to stop without waiting for its
5-second receive poll, and subscription changes that do not block the caller. This module gets
them by subclassing the streams and overriding their private coroutines (``_start_ws``,
``_dispatch``, ``_consume``) and by driving ``_run_forever`` and the handler tables directly.
Every private name used is listed in :data:`SDK_INTERNALS`;
``tests/transports/test_sdk_adapter.py`` fails loudly when an alpaca-py release changes any of
them.

Every coroutine here runs on the manager's engine loop, which all of a manager's streams share.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from collections.abc import Set as AbstractSet
from typing import Any, Protocol

import websockets
from alpaca.common.enums import BaseURL
from alpaca.data.enums import DataFeed
from alpaca.data.live.stock import StockDataStream
from alpaca.trading.stream import TradingStream

#: (class, attribute) pairs of alpaca-py internals this module relies on.
SDK_INTERNALS: tuple[tuple[type, str], ...] = (
    (StockDataStream, "_start_ws"),
    (StockDataStream, "_dispatch"),
    (StockDataStream, "_consume"),
    (StockDataStream, "_run_forever"),
    (StockDataStream, "_send_subscribe_msg"),
    (StockDataStream, "_send_unsubscribe_msg"),
    (StockDataStream, "stop_ws"),
    (TradingStream, "_start_ws"),
    (TradingStream, "_dispatch"),
    (TradingStream, "_consume"),
    (TradingStream, "_run_forever"),
    (TradingStream, "stop_ws"),
)
#: Instance attributes read or written (checked on constructed streams by the test).
SDK_INSTANCE_ATTRIBUTES = ("_handlers", "_ws", "_running", "_should_run",
                           "_trade_updates_handler", "_endpoint")
#: What connecting can raise besides an Alpaca refusal: a failed name lookup, TCP connect or
#: TLS handshake (OSError), the open timeout, a refused or broken WebSocket handshake.
CONNECT_ERRORS = (OSError, TimeoutError, websockets.WebSocketException)

# Alpaca's stream error codes and, for errors alpaca-py turns into a bare ValueError during
# connect/auth, the message texts Alpaca sends with them.
ERROR_TEXT_CODES: Mapping[str, int] = {
    "not authenticated": 401,
    "auth failed": 402,
    "failed to authenticate": 402,  # TradingStream's text for status "unauthorized"
    "symbol limit exceeded": 405,
    "connection limit exceeded": 406,
    "insufficient subscription": 409,
    "insufficient scope": 411,
}

Handler = Callable[[Any], Awaitable[None]]


class StreamEvents(Protocol):
    """What the adapted streams report, on the stream's loop."""

    def on_authenticated(self) -> None:
        """Connected and authenticated (again, after a reconnect)."""

    def on_ready(self, pairs: frozenset[tuple[str, str]]) -> None:
        """The subscription was acknowledged with the (channel, symbol) ``pairs`` the wire now
        carries (market data), or the listen was confirmed (trading; no pairs)."""

    def on_connect_failed(self, error: Exception) -> None:
        """Connecting or authenticating failed with ``error`` (one of :data:`CONNECT_ERRORS`);
        the SDK retries."""

    def on_stream_error(self, code: int | None, message: str) -> bool:
        """Alpaca refused something: an error frame, or a failed connect/auth. Returns True
        when retrying cannot help: the stream is then stopped instead of reconnecting."""

    def on_socket_lost(self, reason: str) -> None:
        """The socket closed or failed while the stream was usable."""

    def on_message_failed(self, message: Mapping[str, Any], error: Exception) -> None:
        """Handing ``message`` to its handler raised ``error`` (it could not be read); the
        other messages of its frame are still dispatched."""


#: streamwarden's channel -> the SDK's handler table and Alpaca's subscription key.
WIRE_CHANNELS: Mapping[str, str] = {
    "quotes": "quotes", "trades": "trades", "bars": "bars", "updated_bars": "updatedBars",
    "daily_bars": "dailyBars", "statuses": "statuses",
}
_CHANNELS_ON_WIRE = {wire: channel for channel, wire in WIRE_CHANNELS.items()}
#: The SDK's tables of what Alpaca sends to a symbol's trade subscribers.
TRADE_FOLLOWERS = ("corrections", "cancelErrors")


def acknowledged(message: Mapping[str, Any]) -> frozenset[tuple[str, str]]:
    """The (channel, symbol) pairs a market-data ``subscription`` message says the wire carries.

    >>> sorted(acknowledged({"T": "subscription", "quotes": ["AAPL"], "trades": [], "bars": None,
    ...                      "dailyBars": ["SPY"], "corrections": ["MSFT"]}))
    [('daily_bars', 'SPY'), ('quotes', 'AAPL')]
    """
    return frozenset((channel, str(symbol)) for wire, channel in _CHANNELS_ON_WIRE.items()
                     for symbol in message.get(wire) or ())


def error_code(message: str) -> int | None:
    """The Alpaca error code of an error text alpaca-py raised, if it is a known one.

    >>> error_code("connection limit exceeded"), error_code("something else")
    (406, None)
    """
    return ERROR_TEXT_CODES.get(message.strip().lower())


async def _start(start_ws: Callable[[], Awaitable[None]], stop_ws: Callable[[], Awaitable[None]],
                 events: StreamEvents) -> None:
    try:
        await start_ws()
    except ValueError as exc:  # alpaca-py's way of reporting an Alpaca refusal
        if events.on_stream_error(error_code(str(exc)), str(exc)):
            await stop_ws()
        raise
    except CONNECT_ERRORS as exc:  # alpaca-py logs it and retries after its backoff
        events.on_connect_failed(exc)
        raise
    events.on_authenticated()


async def _consume(stream: AdaptedStream, consume: Callable[[], Awaitable[Any]],
                   events: StreamEvents) -> Any:
    try:
        return await consume()
    except websockets.WebSocketException as exc:
        if not stream._should_run:
            # Our own stop closed the socket under the SDK's receive: end the way the SDK's own
            # stop does, without its "restarting connection" warning (nothing restarts).
            return False
        events.on_socket_lost(f"{type(exc).__name__}: {exc}")
        raise


class AdaptedStockDataStream(StockDataStream):
    """A raw-mode ``StockDataStream`` that reports its connection events."""

    def __init__(self, api_key: str, secret_key: str, *, feed: str, url: str | None,
                 websocket_params: dict[str, Any], events: StreamEvents) -> None:
        if url is None:
            url = f"{BaseURL.MARKET_DATA_STREAM.value}/v2/{feed}"
        # The feed only selects the URL, which is given; IEX satisfies the SDK's own check.
        super().__init__(api_key, secret_key, raw_data=True, feed=DataFeed.IEX,
                         url_override=url, websocket_params=websocket_params)
        self._streamwarden_events = events

    async def _start_ws(self) -> None:
        await _start(super()._start_ws, self.stop_ws, self._streamwarden_events)

    async def _consume(self) -> bool:
        stale: bool = await _consume(self, super()._consume, self._streamwarden_events)
        return stale

    async def _dispatch(self, msg: dict[str, Any]) -> None:
        kind = msg.get("T")
        if kind == "subscription":
            self._streamwarden_events.on_ready(acknowledged(msg))
        elif kind == "error":
            code = msg.get("code")
            if self._streamwarden_events.on_stream_error(
                    code if isinstance(code, int) else None, str(msg.get("msg", ""))):
                await self.stop_ws()
        try:
            await super()._dispatch(msg)
        except Exception as exc:
            # The SDK's _consume dispatches a frame's messages in one loop: an exception
            # escaping here would end that loop and lose every later message of the frame.
            self._streamwarden_events.on_message_failed(msg, exc)


class AdaptedTradingStream(TradingStream):
    """A ``TradingStream`` (parsed mode) that reports its connection events."""

    def __init__(self, api_key: str, secret_key: str, *, paper: bool, url: str | None,
                 websocket_params: dict[str, Any], events: StreamEvents,
                 on_update: Handler) -> None:
        # Without an override the SDK picks Alpaca's paper or live endpoint.
        super().__init__(api_key, secret_key, paper=paper, url_override=url or "",
                         websocket_params=websocket_params)
        self._streamwarden_events = events
        self.subscribe_trade_updates(on_update)

    async def _start_ws(self) -> None:
        await _start(super()._start_ws, self.stop_ws, self._streamwarden_events)

    async def _consume(self) -> None:
        await _consume(self, super()._consume, self._streamwarden_events)

    async def _dispatch(self, msg: dict[str, Any]) -> None:
        if msg.get("stream") == "listening":
            self._streamwarden_events.on_ready(frozenset())
        await super()._dispatch(msg)


AdaptedStream = AdaptedStockDataStream | AdaptedTradingStream


async def run_forever(stream: AdaptedStream) -> None:
    """The SDK's own connect / reconnect loop; returns when the SDK gives up or is stopped."""
    await stream._run_forever()


async def request_stop(stream: AdaptedStream) -> None:
    """Ask the SDK's loop to end: it returns instead of reconnecting when its socket closes."""
    await stream.stop_ws()


async def close_socket(stream: AdaptedStream) -> None:
    """Close the stream's socket, if any, leaving the SDK's own bookkeeping to its loop.

    The close handshake is bounded by the ``close_timeout`` websocket parameter.
    """
    socket = stream._ws
    if socket is not None:
        await socket.close()


def endpoint(stream: AdaptedStream) -> str:
    """The URL the stream connects to (the override, or the one the SDK chose)."""
    url: str = stream._endpoint
    return url


def is_connected(stream: AdaptedStream) -> bool:
    """Whether the stream has an authenticated socket."""
    return bool(stream._running) and stream._ws is not None


def registered(stream: AdaptedStockDataStream) -> set[tuple[str, str]]:
    """The (channel, symbol) pairs the stream has a handler for."""
    handlers: dict[str, dict[str, Handler]] = stream._handlers
    return {(_CHANNELS_ON_WIRE[wire], symbol) for wire, table in handlers.items()
            if wire in _CHANNELS_ON_WIRE for symbol in table}


async def subscribe(stream: AdaptedStockDataStream, pairs: AbstractSet[tuple[str, str]],
                    handler: Handler) -> None:
    """Register ``handler`` for ``pairs`` (for trades, also for the corrections and cancel
    errors Alpaca sends with them) and, if connected, subscribe them on the wire."""
    for channel, symbol in sorted(pairs):
        stream._handlers[WIRE_CHANNELS[channel]][symbol] = handler
        if channel == "trades":
            for follower in TRADE_FOLLOWERS:
                stream._handlers[follower][symbol] = handler
    if pairs and is_connected(stream):
        await stream._send_subscribe_msg()


async def unsubscribe(stream: AdaptedStockDataStream,
                      pairs: AbstractSet[tuple[str, str]]) -> None:
    """Unregister ``pairs`` and, if connected, unsubscribe them on the wire."""
    by_channel: dict[str, list[str]] = {}
    for channel, symbol in sorted(pairs):
        wire = WIRE_CHANNELS[channel]
        stream._handlers[wire].pop(symbol, None)
        if channel == "trades":
            for follower in TRADE_FOLLOWERS:
                stream._handlers[follower].pop(symbol, None)
        by_channel.setdefault(wire, []).append(symbol)
    if is_connected(stream):
        for channel, symbols in by_channel.items():
            await stream._send_unsubscribe_msg(channel, symbols)
