"""The one place streamwarden reaches into alpaca-py's internals (tested against 0.43-0.44).

alpaca-py's streams (``StockDataStream``, ``CryptoDataStream``, ``OptionDataStream``,
``NewsDataStream``, ``TradingStream``) expose ``run()``/``stop()`` and handler
registration, but not what the lifecycle needs: our own reconnect policy (the SDK's
``_run_forever`` paces its retries itself), *when* the stream is subscribed, *why* it failed
(the Alpaca error code), a way to stop without waiting for its 5-second receive poll, and
subscription changes that do not block the caller. This module gets them by subclassing the
streams and overriding ``_dispatch``, and by driving one connection at a time through the
SDK's own connect / authenticate / subscribe / receive coroutines (:func:`open_stream`,
:func:`consume`); the reconnect loop is the transport's. Any alpaca-py stream class built on
the same coroutines (the SDK's ``DataStream`` family) plugs into that loop unchanged.
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
from alpaca.data.enums import CryptoFeed, DataFeed, OptionsFeed
from alpaca.data.live.crypto import CryptoDataStream
from alpaca.data.live.news import NewsDataStream
from alpaca.data.live.option import OptionDataStream
from alpaca.data.live.stock import StockDataStream
from alpaca.trading.stream import TradingStream

#: (class, attribute) pairs of alpaca-py internals this module relies on.
SDK_INTERNALS: tuple[tuple[type, str], ...] = (
    (StockDataStream, "_start_ws"),
    (StockDataStream, "_dispatch"),
    (StockDataStream, "_consume"),
    (StockDataStream, "_send_subscribe_msg"),
    (StockDataStream, "_send_unsubscribe_msg"),
    (StockDataStream, "stop_ws"),
    (StockDataStream, "close"),
    (TradingStream, "_start_ws"),
    (TradingStream, "_dispatch"),
    (TradingStream, "_consume"),
    (TradingStream, "stop_ws"),
    (TradingStream, "close"),
    *((cls, name) for cls in (CryptoDataStream, OptionDataStream, NewsDataStream)
      for name in ("_start_ws", "_dispatch", "_consume", "_send_subscribe_msg",
                   "_send_unsubscribe_msg", "stop_ws", "close")),
)
#: Instance attributes read or written (checked on constructed streams by the test).
SDK_INSTANCE_ATTRIBUTES = ("_handlers", "_ws", "_running",
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

    def on_ready(self, pairs: frozenset[tuple[str, str]]) -> None:
        """The subscription was acknowledged with the (channel, symbol) ``pairs`` the wire now
        carries (market data), or the listen was confirmed (trading; no pairs)."""

    def on_stream_error(self, code: int | None, message: str) -> bool:
        """Alpaca sent an error frame on an open stream. Returns True when retrying cannot
        help: the stream is then stopped instead of reconnecting."""

    def on_data(self, message: Mapping[str, Any]) -> None:
        """A data message arrived (market data or a news article, :data:`DATA_TYPES`).
        Raising reports it through :meth:`on_message_failed`."""

    def on_message_failed(self, message: Mapping[str, Any], error: Exception) -> None:
        """Handing ``message`` over raised ``error`` (it could not be read); the other
        messages of its frame are still dispatched."""


#: streamwarden's channel -> the SDK's handler table and Alpaca's subscription key.
WIRE_CHANNELS: Mapping[str, str] = {
    "quotes": "quotes", "trades": "trades", "bars": "bars", "updated_bars": "updatedBars",
    "daily_bars": "dailyBars", "statuses": "statuses", "news": "news",
}
_CHANNELS_ON_WIRE = {wire: channel for channel, wire in WIRE_CHANNELS.items()}
#: Alpaca's message types that carry data: quotes, trades, bars (minute, updated, daily),
#: trading statuses, trade corrections and cancels, news articles.
DATA_TYPES = frozenset({"q", "t", "b", "u", "d", "s", "c", "x", "n"})
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

    async def _dispatch(self, msg: dict[str, Any]) -> None:
        if msg.get("stream") == "listening":
            self._streamwarden_events.on_ready(frozenset())
        await super()._dispatch(msg)


class _AdaptedData:
    """What the adapted data streams (stock, crypto, option, news) add to alpaca-py's
    ``DataStream``: connection events reported, and each data message handed to
    :meth:`StreamEvents.on_data` on its own. Mixed in before the SDK class, so ``super()`` is
    the SDK's own method.

    Data messages skip the SDK's dispatch: it would look up the handler of the message's
    symbol, and every subscribed pair has the same one (the SDK's tables, filled by
    :func:`subscribe`, serve only to build its subscribe messages); a news article goes over
    once, not once per subscribed symbol it names.
    """

    _streamwarden_events: StreamEvents

    async def _dispatch(self, msg: dict[str, Any]) -> None:
        kind = msg.get("T")
        events = self._streamwarden_events
        if kind == "subscription":
            events.on_ready(acknowledged(msg))
        elif kind == "error":
            code = msg.get("code")
            if events.on_stream_error(code if isinstance(code, int) else None,
                                      str(msg.get("msg", ""))):
                await self._sdk().stop_ws()
        try:
            if kind in DATA_TYPES:
                events.on_data(msg)
            else:
                await self._sdk()._dispatch(msg)  # the SDK's own: it logs acks and errors
        except Exception as exc:
            # The SDK's _consume dispatches a frame's messages in one loop: an exception
            # escaping here would end that loop and lose every later message of the frame.
            events.on_message_failed(msg, exc)

    def _sdk(self) -> Any:
        """The SDK class's own methods (the next class after this mixin)."""
        return super()


class AdaptedStockDataStream(_AdaptedData, StockDataStream):
    """A raw-mode ``StockDataStream`` that reports its connection events."""

    def __init__(self, api_key: str, secret_key: str, *, feed: str, url: str | None,
                 websocket_params: dict[str, Any], events: StreamEvents) -> None:
        if url is None:
            url = f"{BaseURL.MARKET_DATA_STREAM.value}/v2/{feed}"
        # The feed only selects the URL, which is given; IEX satisfies the SDK's own check.
        super().__init__(api_key, secret_key, raw_data=True, feed=DataFeed.IEX,
                         url_override=url, websocket_params=websocket_params)
        self._streamwarden_events = events

class AdaptedCryptoDataStream(_AdaptedData, CryptoDataStream):
    """A raw-mode ``CryptoDataStream`` (v1beta3, location ``us``) that reports its connection
    events."""

    def __init__(self, api_key: str, secret_key: str, *, url: str | None,
                 websocket_params: dict[str, Any], events: StreamEvents) -> None:
        super().__init__(api_key, secret_key, raw_data=True, feed=CryptoFeed.US,
                         url_override=url, websocket_params=websocket_params)
        self._streamwarden_events = events


class AdaptedOptionDataStream(_AdaptedData, OptionDataStream):
    """A raw-mode ``OptionDataStream`` (MessagePack, as alpaca-py always speaks) for the
    ``indicative`` or ``opra`` feed, that reports its connection events."""

    def __init__(self, api_key: str, secret_key: str, *, feed: str, url: str | None,
                 websocket_params: dict[str, Any], events: StreamEvents) -> None:
        super().__init__(api_key, secret_key, raw_data=True, feed=OptionsFeed(feed),
                         url_override=url, websocket_params=websocket_params)
        self._streamwarden_events = events


class AdaptedNewsDataStream(_AdaptedData, NewsDataStream):
    """A raw-mode ``NewsDataStream`` that reports its connection events and hands each
    article over once (alpaca-py would call a news handler once per subscribed symbol the
    article names)."""

    def __init__(self, api_key: str, secret_key: str, *, url: str | None,
                 websocket_params: dict[str, Any], events: StreamEvents) -> None:
        super().__init__(api_key, secret_key, raw_data=True, url_override=url,
                         websocket_params=websocket_params)
        self._streamwarden_events = events


AdaptedDataStream = (AdaptedStockDataStream | AdaptedCryptoDataStream | AdaptedOptionDataStream
                     | AdaptedNewsDataStream)
AdaptedStream = AdaptedDataStream | AdaptedTradingStream


async def open_stream(stream: AdaptedStream) -> None:
    """Open one connection: connect, authenticate, and subscribe what has a handler (market
    data) or listen to trade updates (trading). A half-open socket is closed on failure.

    Raises:
        ValueError: Alpaca refused (the SDK's way: the error text, see :func:`error_code`).
        OSError / TimeoutError / websockets.WebSocketException: connecting failed
            (:data:`CONNECT_ERRORS`).
    """
    try:
        await stream._start_ws()
        # Running from here: a subscription change made while the first subscribe is being
        # sent goes out on its own (a duplicate is harmless; a gap would not be).
        stream._running = True
        if not isinstance(stream, AdaptedTradingStream) and registered(stream):
            await stream._send_subscribe_msg()
    except BaseException:
        await close(stream)
        raise


async def consume(stream: AdaptedStream) -> None:
    """Receive and dispatch until the socket closes (raises) or a stop is requested (returns).

    Raises:
        websockets.WebSocketException: the socket closed or failed.
    """
    await stream._consume()


async def close(stream: AdaptedStream) -> None:
    """Close the socket of an ended connection (errors of the close itself are ignored: the
    socket is gone either way) and mark the stream not running."""
    try:
        await stream.close()
    except (*CONNECT_ERRORS, RuntimeError):
        stream._ws = None
        stream._running = False


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


def registered(stream: AdaptedDataStream) -> set[tuple[str, str]]:
    """The (channel, symbol) pairs the stream has a handler for."""
    handlers: dict[str, dict[str, Handler]] = stream._handlers
    return {(_CHANNELS_ON_WIRE[wire], symbol) for wire, table in handlers.items()
            if wire in _CHANNELS_ON_WIRE for symbol in table}


def _followers(stream: AdaptedDataStream) -> list[dict[str, Handler]]:
    """The handler tables of what Alpaca sends with a symbol's trades, where the stream has
    them (stocks: corrections and cancel errors; crypto and options: none)."""
    handlers: dict[str, dict[str, Handler]] = stream._handlers
    return [handlers[name] for name in TRADE_FOLLOWERS if name in handlers]


async def _on_wire(message: Any) -> None:
    """The handler the SDK's tables hold for every subscribed pair. The SDK builds its
    subscribe messages from those tables; data messages never reach them (they go to
    :meth:`StreamEvents.on_data`, see :class:`_AdaptedData`)."""


async def subscribe(stream: AdaptedDataStream, pairs: AbstractSet[tuple[str, str]]) -> None:
    """Register ``pairs`` in the SDK's tables (for trades, also the corrections and cancel
    errors Alpaca sends with them) and, if connected, subscribe them on the wire."""
    for channel, symbol in sorted(pairs):
        stream._handlers[WIRE_CHANNELS[channel]][symbol] = _on_wire
        if channel == "trades":
            for follower in _followers(stream):
                follower[symbol] = _on_wire
    if pairs and is_connected(stream):
        await stream._send_subscribe_msg()


async def unsubscribe(stream: AdaptedDataStream,
                      pairs: AbstractSet[tuple[str, str]]) -> None:
    """Unregister ``pairs`` and, if connected, unsubscribe them on the wire."""
    by_channel: dict[str, list[str]] = {}
    for channel, symbol in sorted(pairs):
        wire = WIRE_CHANNELS[channel]
        stream._handlers[wire].pop(symbol, None)
        if channel == "trades":
            for follower in _followers(stream):
                follower.pop(symbol, None)
        by_channel.setdefault(wire, []).append(symbol)
    if is_connected(stream):
        for channel, symbols in by_channel.items():
            await stream._send_unsubscribe_msg(channel, symbols)
