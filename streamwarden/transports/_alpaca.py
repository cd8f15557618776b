"""Transports over the official alpaca-py SDK: ``StockDataStream``, ``CryptoDataStream``,
``OptionDataStream``, ``NewsDataStream`` and ``TradingStream``, chosen by the key's kind.

Each :class:`AlpacaTransport` runs its own connect / reconnect loop as a task on the manager's
engine loop (no thread of its own), one SDK connection at a time (:mod:`._sdk_adapter`), and maps
what happens on the wire to events:

* authenticated and listening (trade updates) or subscribed (market data) -> ``on_connected``,
  again after each reconnect; every subscription acknowledgement -> ``on_subscribed`` with the
  pairs the wire carries;
* socket closed or failed while usable -> ``on_connection_lost``, then the loop reconnects;
* Alpaca error 401/402/411 or ``unauthorized`` -> AuthenticationError, 405/409 ->
  SubscriptionError, 406 at the first start -> ConnectionLimitError naming the likely culprit
  (another process or connection holds the account's connection for that endpoint): fatal,
  reported once, and the loop ends so that it does not retry refused credentials forever;
* a trading stream's reconnect is followed by fetching the updates it missed from Alpaca's
  trade events API, delivered before the live ones (:mod:`streamwarden.transports._replay`) ->
  ``on_replayed``;
* ``reconnect`` (a stale socket) closes the socket; the loop reconnects after the backoff's
  first delay, and that loss is not reported (the lifecycle recorded ``went_stale``);
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
runs on the engine loop. A message that cannot be parsed (MalformedMessageError) is reported
through ``on_malformed`` and dropped alone: the adapter catches it per message, so the rest of
its frame is still dispatched.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from streamwarden._keys import (
    CRYPTO_DATA,
    DATA_KINDS,
    MARKET_DATA,
    NEWS,
    OPTION_DATA,
    OPTION_FEEDS,
    StreamKey,
)
from streamwarden._redaction import guard_websockets_logs
from streamwarden.clock import Clock, SystemClock
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
    NEWS_CHANNEL,
    TRADE_UPDATES_CHANNEL,
    Subscription,
    channel_of,
    parse_market_data,
    parse_news,
)
from streamwarden.transports import _sdk_adapter as sdk_adapter
from streamwarden.transports._backoff import Backoff
from streamwarden.transports._causes import (
    connect_failure,
    connection_limit,
    refusal,
    retry_after,
)
from streamwarden.transports._contract import (
    ConnectFailure,
    MalformedMessage,
    ReplayReport,
    StreamMessage,
    TransportEvents,
)
from streamwarden.transports._replay import GapReplay, events_fetcher
from streamwarden.transports._sdk_adapter import error_code

Sleep = Callable[[float], Awaitable[None]]
"""How the loop waits between attempts (``asyncio.sleep``; tests inject one that records)."""

#: Alpaca's trading REST addresses, whose trade events API replays what a reconnect missed.
PAPER_API_URL = "https://paper-api.alpaca.markets"
LIVE_API_URL = "https://api.alpaca.markets"
KEY_HEADER = "APCA-API-KEY-ID"
SECRET_HEADER = "APCA-API-SECRET-KEY"

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


def option_feed_url(override: str | None, feed: str) -> str | None:
    """The option stream's URL override for ``feed``: one override serves both option feeds,
    as Alpaca's two URLs differ only in their last path segment, which is set to ``feed`` when
    it names an option feed.

    >>> option_feed_url("ws://127.0.0.1:8765/v1beta1/indicative", "opra")
    'ws://127.0.0.1:8765/v1beta1/opra'
    >>> option_feed_url("ws://proxy:9000/options", "opra"), option_feed_url(None, "opra")
    ('ws://proxy:9000/options', None)
    """
    if override is None:
        return None
    base, _, last = override.rpartition("/")
    return f"{base}/{feed}" if last in OPTION_FEEDS else override


class AlpacaTransport:
    """One Alpaca stream connection, driven by alpaca-py on the engine loop.

    Args:
        rng: the backoff's random source (default: a fresh ``random.Random()``).
        sleep: how the loop waits between attempts (default ``asyncio.sleep``); a stop
            interrupts the wait either way.

    Thread-safety: not thread-safe; every method is called on the engine loop.
    """

    def __init__(self, key: StreamKey, credentials: Credentials, settings: Settings, *,
                 rng: random.Random | None = None, sleep: Sleep = asyncio.sleep,
                 clock: Clock | None = None) -> None:
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
        self._restarting = False
        self._wanted: frozenset[Subscription] = frozenset()
        self._resync = asyncio.Event()
        self._reconnecting: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._backoff = Backoff(settings.reconnect_backoff_initial,
                                settings.reconnect_backoff_max, rng or random.Random())
        self._sleep = sleep
        self._stream = self._build_stream(credentials, settings)
        self._replay = (None if key.kind in DATA_KINDS
                        else self._build_replay(credentials, settings, clock or SystemClock()))

    def _build_stream(self, credentials: Credentials, settings: Settings) -> Any:
        params = {"ping_interval": 10, "ping_timeout": 180, "max_queue": 1024,
                  "open_timeout": settings.start_timeout,
                  "close_timeout": settings.stop_timeout + CLOSE_MARGIN_SECONDS}
        key_id, secret = credentials.sensitive_values()
        kind = self._key.kind
        if kind == MARKET_DATA:
            return sdk_adapter.AdaptedStockDataStream(
                key_id, secret, feed=self._key.feed or settings.feed,
                url=settings.market_data_url, websocket_params=params, events=self)
        if kind == CRYPTO_DATA:
            return sdk_adapter.AdaptedCryptoDataStream(
                key_id, secret, url=settings.crypto_data_url, websocket_params=params,
                events=self)
        if kind == OPTION_DATA:
            assert self._key.feed is not None, "option keys carry their feed"
            return sdk_adapter.AdaptedOptionDataStream(
                key_id, secret, feed=self._key.feed,
                url=option_feed_url(settings.option_data_url, self._key.feed),
                websocket_params=params, events=self)
        if kind == NEWS:
            return sdk_adapter.AdaptedNewsDataStream(
                key_id, secret, url=settings.news_url, websocket_params=params, events=self)
        return sdk_adapter.AdaptedTradingStream(
            key_id, secret, paper=self._key.paper, url=settings.trade_updates_url,
            websocket_params=params, events=self, on_update=self._on_trade_update)

    def _build_replay(self, credentials: Credentials, settings: Settings,
                      clock: Clock) -> GapReplay:
        key_id, secret = credentials.sensitive_values()
        base_url = settings.trading_api_url or (PAPER_API_URL if self._key.paper else LIVE_API_URL)
        fetch = events_fetcher(base_url, {KEY_HEADER: key_id, SECRET_HEADER: secret},
                               settings.start_timeout)
        return GapReplay(fetch, self._deliver_update, self._report_replay, clock)

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
            if self._replay is not None:
                await self._replay.stop()

    async def stop(self) -> None:
        """End the loop and close the socket (bounded by the websocket close_timeout)."""
        self._stop_requested = True
        self._closing = True
        self._socket_open = False
        self._wake.set()
        await sdk_adapter.request_stop(self._stream)
        await sdk_adapter.close_socket(self._stream)

    def reconnect(self, reason: str) -> None:
        """Close the usable socket; the loop connects again after the backoff's first delay,
        and the loss is not reported (see the contract). The close handshake is bounded by the
        websocket close_timeout."""
        if self._closing or not self._usable:
            return
        self._restarting = True
        self._usable = self._awaiting_ready = self._socket_open = False
        self._reconnecting = asyncio.get_running_loop().create_task(
            sdk_adapter.close_socket(self._stream),
            name=f"streamwarden-reconnect-{self._key.fingerprint[:8]}")

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
        refused = await self._open(url)
        if refused is not None:
            return refused
        self._socket_open = not self._closing
        self._awaiting_ready = True
        if self._key.kind in DATA_KINDS and not sdk_adapter.registered(stream):
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
        return self._ended(was_usable, reason, url), None

    async def _open(self, url: str) -> tuple[ConnectFailure | None, float | None] | None:
        """Connect; None once open, else what :meth:`_connection` returns for the attempt."""
        try:
            await sdk_adapter.open_stream(self._stream)
        except ValueError as exc:  # alpaca-py's way of reporting an Alpaca refusal
            return self._refused(error_code(str(exc)), str(exc), url), None
        except Exception as exc:  # a failed connect, or a greeting the SDK could not read
            failure = connect_failure(exc, url)
            if failure.cause == "rate_limit":
                return failure, self._backoff.rate_limited(retry_after(exc))
            return failure, None
        return None

    def _ended(self, was_usable: bool, reason: str, url: str) -> ConnectFailure | None:
        """After a connection ended: the failed attempt it counts as, if any."""
        if self._closing:
            return None
        if self._restarting:  # closed on purpose by reconnect(): went_stale said why
            self._restarting = False
            return None
        if was_usable:
            if self._events is not None:
                self._events.on_connection_lost(reason)
            return None
        return refusal(None, f"closed before it was usable ({reason})", url)

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
        if self._key.kind not in DATA_KINDS:
            return
        wanted = self._wanted
        registered = sdk_adapter.registered(self._stream)
        await sdk_adapter.unsubscribe(self._stream, registered - wanted)
        await sdk_adapter.subscribe(self._stream, wanted - registered)

    # What the SDK reports (sdk_adapter.StreamEvents), on the loop.

    def on_ready(self, pairs: frozenset[Subscription]) -> None:
        if self._closing or self._events is None:
            return
        if self._awaiting_ready:
            self._awaiting_ready = False
            self._usable = self._ever_usable = True
            self._failures = 0  # usable again: the next drop starts the backoff afresh
            self._events.on_connected()
            if self._replay is not None:
                self._replay.connected()
        self._events.on_subscribed(pairs)

    def on_stream_error(self, code: int | None, message: str) -> bool:
        error = fatal_error(code, message)
        if self._closing or error is None:  # the frame alone does not end the connection
            return False
        self._report_fatal(error)
        return True

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

    def on_data(self, message: Mapping[str, Any]) -> None:
        events = self._events
        if events is None:
            return
        # Raises MalformedMessageError (market data) or ValueError (news): the adapter reports
        # it through on_message_failed.
        channel = channel_of(message)
        if channel is None:  # the only other data type: a news article
            events.on_message(StreamMessage(NEWS_CHANNEL, None, parse_news(message)))
            return
        payload = parse_market_data(message)
        events.on_message(StreamMessage(channel, payload.symbol, payload))

    async def _on_trade_update(self, update: Any) -> None:
        if self._replay is not None:
            self._replay.live(update)

    def _deliver_update(self, update: Any) -> None:
        if self._events is None:
            return
        order = getattr(update, "order", None)
        symbol = getattr(order, "symbol", None)
        self._events.on_message(StreamMessage(TRADE_UPDATES_CHANNEL, symbol, update))


    def _report_replay(self, report: ReplayReport) -> None:
        if self._events is not None and not self._closing:
            self._events.on_replayed(report)


class AlpacaTransportFactory:
    """The default :data:`~streamwarden.transports.TransportFactory`: alpaca-py streams.

    Endpoints come from ``Settings.market_data_url`` / ``trade_updates_url`` /
    ``crypto_data_url`` / ``option_data_url`` / ``news_url`` when set (the simulator's, in
    tests), else Alpaca's: market data for the configured feed, crypto v1beta3 ``us``, options
    for the key's feed, news v1beta1, trade updates for paper or live as the credentials say.

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
