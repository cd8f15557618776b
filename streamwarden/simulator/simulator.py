"""The public :class:`Simulator`: addresses, faults, publishing and observation.

The thread and its event loop are :class:`~streamwarden.simulator.runtime.Runtime`'s job.
"""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

from streamwarden._redaction import SecretRedactor
from streamwarden.clock import Clock, SystemClock
from streamwarden.errors import InvalidInputError
from streamwarden.logging import make_logger
from streamwarden.simulator import messages, orders
from streamwarden.simulator._control import Control
from streamwarden.simulator._errors import SimulatorError
from streamwarden.simulator._kind_publishing import KindPublishing
from streamwarden.simulator._trade_events import TradeEventLog
from streamwarden.simulator.accounts import Accounts
from streamwarden.simulator.events import STARTED, STOPPED
from streamwarden.simulator.faults import Faults
from streamwarden.simulator.publisher import Publisher
from streamwarden.simulator.registry import ConnectionRules, Registry
from streamwarden.simulator.runtime import Runtime, ServerConfig
from streamwarden.simulator.server import TRADING_PATH
from streamwarden.simulator.stats import (
    CRYPTO_DATA,
    MARKET_DATA,
    OPTION_DATA,
    STREAM_KINDS,
    SimulatorStats,
    StreamKind,
)
from streamwarden.simulator.validation import (
    Number,
    check_bar,
    check_client_order_id,
    check_count,
    check_decimal,
    check_price,
    check_rate,
    check_symbol,
    raw_batch,
)
from streamwarden.validation import check_seconds

T = TypeVar("T")
DEFAULT_TIMEOUT = 5.0  # _kind_publishing.DEFAULT_TIMEOUT too
TRADE_EVENTS_KEPT = 10_000
"""How many published trade updates the trade events API (``/v2/events/trades``) keeps."""
_FEED = re.compile(r"[A-Za-z0-9_.-]+")

__all__ = ["DEFAULT_TIMEOUT", "Simulator", "SimulatorError"]

#: The kinds :meth:`Simulator.publish_quotes` can send quotes on.
QUOTE_KINDS: tuple[StreamKind, ...] = (MARKET_DATA, CRYPTO_DATA, OPTION_DATA)


class Simulator(KindPublishing):
    """An Alpaca protocol simulator on loopback: market data v2 (stocks), crypto, options,
    news and the trading stream.

    See the package docstring for the protocol and the faults. All arguments are keywords.

    Args:
        host: the address to listen on.
        port: the port, 0 for any free one (read :attr:`port` after :meth:`start`).
        faults: the faults to inject from the start.
        quote_rate: generated quotes per second per subscribed symbol; 0 turns it off.
        seed: seed of the generated quote values.
        credentials: accepted key id -> secret pairs; by default any non-empty pair. Secrets
            are kept only as salted digests.
        auth_timeout: seconds a market-data client has to authenticate (then error 404).
        reaper_window: seconds a market-data socket that ended without a close handshake (the
            ``drop`` control, ``drop_after``, a killed client) still holds its account's slot
            on that endpoint, as Alpaca's does (about 90 s): a reconnect meanwhile gets error
            406. 0 frees the slot at once. A second live socket of an account on one endpoint
            is always refused with 406.
        connect_rate_limit: WebSocket upgrades per endpoint per second beyond which the
            upgrade is answered HTTP 429 with ``Retry-After: 1``; None (default) for no cap.
        trading_frames: ``"text"`` or ``"binary"`` frames on the trading stream (Alpaca's
            paper endpoint sends binary frames).
        clock: where message timestamps come from.
        history: how many closed connections, auth attempts and errors stats keep.
        slow_client_timeout: seconds a market-data send may wait on a client that does not
            read (its socket's buffers full) before the client is cut off as a slow client:
            error 407 is recorded and the connection aborted. As Alpaca warns, the 407 frame
            itself does not reach a client that reads nothing.

    Raises:
        InvalidInputError: an argument is out of range (rate, timeout, port, frames, history,
            empty credentials).

    Thread-safety: every public method may be called from any thread.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: Faults | None = None,
        quote_rate: float = 0.0,
        seed: int = 0,
        credentials: Mapping[str, str] | None = None,
        auth_timeout: float = 10.0,
        reaper_window: float = 90.0,
        connect_rate_limit: int | None = None,
        trading_frames: Literal["text", "binary"] = "text",
        clock: Clock | None = None,
        history: int = 1000,
        slow_client_timeout: float = 10.0,
    ) -> None:
        if not 0 <= port <= 65535:
            raise InvalidInputError(f"port must be in 0..65535, got {port}")
        if trading_frames not in ("text", "binary"):
            raise InvalidInputError(f"trading_frames must be 'text' or 'binary', got "
                                    f"{trading_frames!r}")
        try:
            accounts = Accounts(credentials)
        except ValueError as exc:
            raise InvalidInputError(str(exc)) from None
        self._host = host
        self._requested_port = port
        rules = ConnectionRules(
            reaper_window=check_seconds("reaper_window", reaper_window),
            connect_rate_limit=None if connect_rate_limit is None
            else check_count("connect_rate_limit", connect_rate_limit))
        self._registry = Registry(faults or Faults(), check_rate(quote_rate),
                                  history=check_count("history", history), rules=rules)
        self._accounts = accounts
        self._clock = clock or SystemClock()
        self._log = make_logger(SecretRedactor())
        self._trade_ids = itertools.count(1)
        self._trade_events = TradeEventLog(capacity=TRADE_EVENTS_KEPT)
        self._news_ids = itertools.count(1)
        self._runtime = Runtime(ServerConfig(
            host=host, port=port, registry=self._registry, accounts=accounts,
            auth_timeout=check_seconds("auth_timeout", auth_timeout, allow_zero=False),
            trading_codec="json" if trading_frames == "text" else "json-binary",
            seed=seed, clock=self._clock, log=self._log, control=Control(self, self._log),
            trade_events=self._trade_events,
            slow_client_timeout=check_seconds("slow_client_timeout", slow_client_timeout,
                                              allow_zero=False),
        ))

    # Lifecycle.

    def start(self, timeout: float = DEFAULT_TIMEOUT) -> Self:
        """Start listening in a new thread; returns once the port is bound.

        Raises:
            InvalidInputError: ``timeout`` negative or not finite.
            SimulatorError: already started, the address cannot be bound, or not listening
                within ``timeout`` seconds (the thread is then told to stop).
        """
        self._runtime.start(check_seconds("timeout", timeout))
        self._log.info(STARTED, host=self._host, port=self._runtime.port)
        return self

    def stop(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Close every connection (hung ones included), stop listening, join the thread.

        Open connections get a close frame and half of ``timeout`` to answer it; what is left
        then is aborted. Idempotent; a simulator that never started is left as is.

        Raises:
            InvalidInputError: ``timeout`` negative or not finite.
            SimulatorError: the thread did not end within ``timeout`` seconds (call again to
                wait longer).
        """
        if self._runtime.stop(check_seconds("timeout", timeout)):
            self._log.info(STOPPED, host=self._host, port=self._runtime.port)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # Addresses.

    @property
    def host(self) -> str:
        """The address listened on."""
        return self._host

    @property
    def port(self) -> int:
        """The bound port.

        Raises:
            SimulatorError: not started yet.
        """
        port = self._runtime.port
        if port is None:
            raise SimulatorError("the simulator has not started", operation="simulator.port")
        return port

    def _base_url(self, scheme: str = "ws") -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{scheme}://{host}:{self.port}"

    def feed_url(self, feed: str = "iex") -> str:
        """The market-data URL for ``feed`` (``ws://127.0.0.1:PORT/v2/<feed>``).

        Raises:
            InvalidInputError: ``feed`` is not a plain name.
            SimulatorError: not started yet.
        """
        if not _FEED.fullmatch(feed):
            raise InvalidInputError(f"feed must be a plain name such as iex or sip, got {feed!r}")
        return f"{self._base_url()}/v2/{feed}"

    @property
    def market_data_url(self) -> str:
        """The IEX market-data URL, ``ws://HOST:PORT/v2/iex`` (see :meth:`feed_url`)."""
        return self.feed_url("iex")

    @property
    def trade_updates_url(self) -> str:
        """The trading-stream URL, ``ws://HOST:PORT/stream``."""
        return f"{self._base_url()}{TRADING_PATH}"

    @property
    def trading_api_url(self) -> str:
        """The trading REST address, ``http://HOST:PORT``: the simulator serves Alpaca's trade
        events (``GET /v2/events/trades``, server-sent events) there, for
        ``Settings.trading_api_url``.

        Raises:
            SimulatorError: not started yet.
        """
        return self._base_url("http")

    @property
    def control_url(self) -> str:
        """The simulator's HTTP address, ``http://HOST:PORT``, for control requests from
        another process: ``GET {control_url}/control/<action>`` (answered from loopback only;
        see :mod:`streamwarden.simulator._control`), or ``streamwarden simulator publish ...
        --url {control_url}``.

        Raises:
            SimulatorError: not started yet.
        """
        return self._base_url("http")

    # Faults and generator.

    @property
    def faults(self) -> Faults:
        """The faults in force."""
        return self._registry.faults

    def set_faults(self, faults: Faults) -> Faults:
        """Replace the faults (re-arming ``drop_once``); returns the previous ones.

        Takes effect at the next protocol step of every connection.
        """
        return self._registry.set_faults(faults)

    def update_faults(self, **changes: Any) -> Faults:
        """Change some fault attributes (``update_faults(auth_failure=False)``); returns the
        new faults.

        Raises:
            TypeError: an unknown attribute.
            ValueError: an invalid combination (see :class:`Faults`).
        """
        faults = replace(self._registry.faults, **changes)
        self._registry.set_faults(faults)
        return faults

    def mute(self) -> bool:
        """Switch the ``mute`` fault on: sockets stay open and answer pings and control
        messages, but every data message published from now on is dropped. Returns True (the
        simulator is muted)."""
        return self.update_faults(mute=True).mute

    def unmute(self) -> bool:
        """Switch the ``mute`` fault off: data published from now on is sent again (nothing
        dropped while muted is replayed). Returns False (the simulator is not muted)."""
        return self.update_faults(mute=False).mute

    @property
    def quote_rate(self) -> float:
        """Generated quotes per second per subscribed symbol."""
        return self._registry.quote_rate

    def set_quote_rate(self, rate: float) -> None:
        """Change the generator's rate now (0 stops it).

        Raises:
            InvalidInputError: ``rate`` negative or not finite.
        """
        self._registry.set_quote_rate(check_rate(rate))
        self._runtime.wake_generator()

    # Publishing.

    def _call(self, operation: str, factory: Callable[[Publisher], Coroutine[Any, Any, T]],
              timeout: float) -> T:
        return self._runtime.call(f"simulator.{operation}", factory,
                                  check_seconds("timeout", timeout, allow_zero=False))

    def publish_quote(
        self, symbol: str, *, bid_price: Number, ask_price: Number, bid_size: int = 1,
        ask_size: int = 1, timestamp: datetime | None = None, timeout: float = DEFAULT_TIMEOUT,
    ) -> int:
        """Send one quote to every connection subscribed to ``symbol``'s quotes (or ``*``).

        Returns:
            How many connections it was sent to.

        Raises:
            InvalidInputError: an empty symbol, a price not positive and finite, a size below 0.
            SimulatorError: not running, or not sent within ``timeout`` seconds.
        """
        message = messages.quote(
            check_symbol(symbol), bid_price=check_price("bid_price", bid_price),
            ask_price=check_price("ask_price", ask_price),
            bid_size=check_count("bid_size", bid_size, minimum=0),
            ask_size=check_count("ask_size", ask_size, minimum=0),
            timestamp=timestamp or self._clock.now(),
        )
        return self._call("publish_quote", lambda p: p.market_data(message), timeout)

    def publish_trade(
        self, symbol: str, *, price: Number, size: int = 1, trade_id: int | None = None,
        timestamp: datetime | None = None, timeout: float = DEFAULT_TIMEOUT,
    ) -> int:
        """Send one trade to every connection subscribed to ``symbol``'s trades (or ``*``).

        ``trade_id`` defaults to the next of a counter starting at 1.

        Returns:
            How many connections it was sent to.

        Raises:
            InvalidInputError: an empty symbol, a price not positive and finite, a size below 1.
            SimulatorError: not running, or not sent within ``timeout`` seconds.
        """
        message = messages.trade(
            check_symbol(symbol), price=check_price("price", price),
            size=check_count("size", size),
            trade_id=next(self._trade_ids) if trade_id is None else trade_id,
            timestamp=timestamp or self._clock.now(),
        )
        return self._call("publish_trade", lambda p: p.market_data(message), timeout)

    def publish_bar(
        self, symbol: str, *, open_price: Number, high_price: Number, low_price: Number,
        close_price: Number, volume: int, trade_count: int = 1, vwap: Number | None = None,
        timestamp: datetime | None = None, timeout: float = DEFAULT_TIMEOUT,
    ) -> int:
        """Send one minute bar to every connection subscribed to ``symbol``'s bars (or ``*``).

        ``vwap`` defaults to the close; ``timestamp`` (the bar's opening minute) to now,
        truncated to the minute.

        Returns:
            How many connections it was sent to.

        Raises:
            InvalidInputError: an empty symbol, a price not positive and finite, ``low_price``
                above the open or close or ``high_price`` below them, a count below 0.
            SimulatorError: not running, or not sent within ``timeout`` seconds.
        """
        prices = check_bar(open_price, high_price, low_price, close_price)
        message = messages.bar(
            check_symbol(symbol), **prices, volume=check_count("volume", volume, minimum=0),
            trade_count=check_count("trade_count", trade_count, minimum=0),
            vwap=prices["close_price"] if vwap is None else check_price("vwap", vwap),
            timestamp=timestamp or self._clock.now().replace(second=0, microsecond=0),
        )
        return self._call("publish_bar", lambda p: p.market_data(message), timeout)

    def publish_raw(self, batch: Sequence[Mapping[str, Any]], *,
                    timeout: float = DEFAULT_TIMEOUT) -> int:
        """Send market-data messages exactly as given, unchecked, in ONE frame, to every
        connection that subscribes the channel and symbol (``T`` and ``S``) of any of them: for
        testing how a client meets malformed data (``{"T": "q", "bp": "abc", ...}``, NaN, a
        missing price) between valid messages. Timestamps may be ``datetime`` objects (sent as
        Alpaca sends them) or any other value.

        Returns:
            How many connections it was sent to.

        Raises:
            InvalidInputError: ``batch`` empty, not a sequence of maps with string keys, or
                holding a value the wire encodings cannot carry.
            SimulatorError: not running, or not sent within ``timeout`` seconds.
        """
        messages_ = raw_batch(batch)
        return self._call("publish_raw", lambda publisher: publisher.raw(messages_), timeout)

    def publish_quotes(
        self, symbol: str, count: int, *, batch_size: int = 1, timeout: float = 30.0,
        kind: StreamKind = MARKET_DATA,
    ) -> int:
        """Send ``count`` generated quotes of ``symbol`` to its subscribers on ``kind``
        connections (stocks by default; crypto and option quotes alike) as fast as they take
        them, ``batch_size`` messages per frame (for benchmarks).

        Returns:
            The total of quote messages sent, over all connections.

        Raises:
            InvalidInputError: an empty symbol, ``count`` or ``batch_size`` below 1, a kind
                without quotes.
            SimulatorError: not running, or not all sent within ``timeout`` seconds.
        """
        if kind not in QUOTE_KINDS:
            raise InvalidInputError(f"kind must be one of {QUOTE_KINDS}, got {kind!r}")
        symbol = check_symbol(symbol)
        count = check_count("count", count)
        batch_size = check_count("batch_size", batch_size)
        return self._call("publish_quotes",
                          lambda publisher: publisher.quote_burst(symbol, count, batch_size,
                                                                 kind),
                          timeout)

    def publish_trade_update(
        self, event: str = "fill", *, symbol: str = "AAPL", side: Literal["buy", "sell"] = "buy",
        qty: Number = 1, price: Number | None = None, order_id: str | None = None,
        position_qty: Number | None = None, client_order_id: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> int:
        """Send one ``trade_updates`` event to every connection listening to trade updates,
        and keep it for the trade events API (:attr:`trading_api_url`), which also serves it to
        a client that was not listening.

        ``client_order_id`` is the id the order carries (Alpaca allows up to 128 characters);
        one derived from ``order_id`` when None.

        Returns:
            How many connections it was sent to.

        Raises:
            InvalidInputError: an unknown event, a fill without a price, a bad side, symbol,
                quantity or order id.
            SimulatorError: not running, or not sent within ``timeout`` seconds.
        """
        if side not in ("buy", "sell"):
            raise InvalidInputError(f"side must be 'buy' or 'sell', got {side!r}")
        try:
            fill = orders.OrderFill(
                symbol=check_symbol(symbol), side=side,
                qty=check_decimal("qty", qty),
                price=None if price is None else check_decimal("price", price),
                order_id=None if order_id is None else uuid.UUID(order_id),
                position_qty=None if position_qty is None else Decimal(str(position_qty)),
                client_order_id=check_client_order_id(client_order_id),
            )
            now = self._clock.now()
            message = orders.trade_update(event, fill, now=now)
        except (ArithmeticError, ValueError) as exc:
            raise InvalidInputError(f"bad trade update: {exc}") from None
        self._trade_events.append(message["data"], now)  # served at /v2/events/trades
        return self._call("publish_trade_update",
                          lambda publisher: publisher.trade_update(message), timeout)

    def drop_connections(self, kind: StreamKind = MARKET_DATA,
                         timeout: float = DEFAULT_TIMEOUT) -> int:
        """Abort every open connection of ``kind`` now (no close frame; clients reconnect).

        Returns:
            How many connections were dropped.

        Raises:
            InvalidInputError: an unknown kind.
            SimulatorError: not running, or not done within ``timeout`` seconds.
        """
        if kind not in STREAM_KINDS:
            raise InvalidInputError(f"kind must be one of {STREAM_KINDS}, got {kind!r}")
        return self._call("drop_connections", lambda p: p.drop_connections(kind), timeout)

    # Observation.

    def stats(self) -> SimulatorStats:
        """A snapshot of connections, auth attempts, errors and totals (never a secret)."""
        return self._registry.snapshot()

    def wait_for(self, predicate: Callable[[SimulatorStats], bool],
                 timeout: float = DEFAULT_TIMEOUT) -> SimulatorStats:
        """Block until ``predicate(stats)`` holds; returns those stats. No polling: it wakes
        on every change.

        Raises:
            TimeoutError: still false after ``timeout`` seconds.
        """
        return self._registry.wait_for(predicate, check_seconds("timeout", timeout))

    def __repr__(self) -> str:
        port = self._runtime.port if self._runtime.port is not None else self._requested_port
        return (f"Simulator(host={self._host!r}, port={port}, state={self._runtime.state}, "
                f"faults={self.faults.describe()!r}, quote_rate={self.quote_rate:g}, "
                f"credentials={self._accounts!r})")
