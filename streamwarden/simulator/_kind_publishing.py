"""The :class:`~streamwarden.simulator.Simulator`'s crypto, option and news side: their URLs
and publishing their data messages (see :mod:`streamwarden.simulator.kinds`)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterator
from datetime import datetime
from typing import Any

from streamwarden.clock import Clock
from streamwarden.errors import InvalidInputError
from streamwarden.simulator import kinds, messages
from streamwarden.simulator.messages import Message
from streamwarden.simulator.publisher import Publisher
from streamwarden.simulator.stats import CRYPTO_DATA, NEWS, OPTION_DATA, StreamKind
from streamwarden.simulator.validation import (
    Number,
    check_bar,
    check_count,
    check_price,
    check_symbol,
)

DEFAULT_TIMEOUT = 5.0
"""Seconds a publish may take: ``simulator.DEFAULT_TIMEOUT`` (that module imports this one)."""


class KindPublishing:
    """URLs of, and publishing on, the crypto, option and news streams.

    Mixed into :class:`~streamwarden.simulator.Simulator`, whose ``_base_url``, ``_call`` and
    ``_clock`` it uses. Thread-safety: every method may be called from any thread.
    """

    _clock: Clock
    _base_url: Callable[..., str]
    _call: Callable[..., Any]
    _news_ids: Iterator[int]

    @property
    def crypto_data_url(self) -> str:
        """The crypto URL, ``ws://HOST:PORT/v1beta3/crypto/us``.

        Raises:
            SimulatorError: not started yet.
        """
        return f"{self._base_url()}{kinds.CRYPTO_PATH_PREFIX}us"

    def option_data_url(self, feed: str = "indicative") -> str:
        """The option URL for ``feed``, ``ws://HOST:PORT/v1beta1/<indicative|opra>``.

        Raises:
            InvalidInputError: ``feed`` is not ``indicative`` or ``opra``.
            SimulatorError: not started yet.
        """
        if feed not in kinds.OPTION_FEEDS:
            raise InvalidInputError(f"feed must be one of {kinds.OPTION_FEEDS}, got {feed!r}")
        return f"{self._base_url()}/v1beta1/{feed}"

    @property
    def news_url(self) -> str:
        """The news URL, ``ws://HOST:PORT/v1beta1/news``.

        Raises:
            SimulatorError: not started yet.
        """
        return f"{self._base_url()}{kinds.NEWS_PATH}"

    def _send(self, operation: str, kind: StreamKind, message: Message, timeout: float) -> int:
        def factory(publisher: Publisher) -> Coroutine[Any, Any, int]:
            return publisher.kind_data(kind, message)

        count: int = self._call(operation, factory, timeout)
        return count

    def _now(self, timestamp: datetime | None) -> datetime:
        return timestamp or self._clock.now()

    def publish_crypto_quote(
        self, symbol: str, *, bid_price: Number, ask_price: Number, bid_size: Number = 1,
        ask_size: Number = 1, timestamp: datetime | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> int:
        """Send one crypto quote (``BTC/USD``; fractional sizes) to the crypto connections
        subscribed to its quotes (or ``*``); returns how many.

        Raises:
            InvalidInputError: an empty symbol, a price or size not positive and finite.
            SimulatorError: not running, or not sent within ``timeout`` seconds.
        """
        message = kinds.crypto_quote(
            check_symbol(symbol), bid_price=check_price("bid_price", bid_price),
            ask_price=check_price("ask_price", ask_price),
            bid_size=check_price("bid_size", bid_size),  # fractional sizes: positive, finite
            ask_size=check_price("ask_size", ask_size), timestamp=self._now(timestamp))
        return self._send("publish_crypto_quote", CRYPTO_DATA, message, timeout)

    def publish_crypto_trade(
        self, symbol: str, *, price: Number, size: Number = 1, trade_id: int = 1,
        timestamp: datetime | None = None, timeout: float = DEFAULT_TIMEOUT,
    ) -> int:
        """Send one crypto trade to its subscribers; returns how many.

        Raises:
            InvalidInputError: an empty symbol, a price or size not positive and finite, a
                trade id below 1.
            SimulatorError: not running, or not sent within ``timeout`` seconds.
        """
        message = kinds.crypto_trade(
            check_symbol(symbol), price=check_price("price", price),
            size=check_price("size", size), trade_id=check_count("trade_id", trade_id),
            timestamp=self._now(timestamp))
        return self._send("publish_crypto_trade", CRYPTO_DATA, message, timeout)

    def publish_crypto_bar(
        self, symbol: str, *, open_price: Number, high_price: Number, low_price: Number,
        close_price: Number, volume: int, timestamp: datetime | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> int:
        """Send one crypto minute bar to its subscribers; returns how many.

        Raises:
            InvalidInputError: as :meth:`Simulator.publish_bar`.
            SimulatorError: not running, or not sent within ``timeout`` seconds.
        """
        prices = check_bar(open_price, high_price, low_price, close_price)
        message = messages.bar(
            check_symbol(symbol), **prices, volume=check_count("volume", volume, minimum=0),
            trade_count=1, vwap=prices["close_price"],
            timestamp=self._now(timestamp).replace(second=0, microsecond=0))
        return self._send("publish_crypto_bar", CRYPTO_DATA, message, timeout)

    def publish_option_quote(
        self, symbol: str, *, bid_price: Number, ask_price: Number, bid_size: int = 1,
        ask_size: int = 1, timestamp: datetime | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> int:
        """Send one option quote (an OCC symbol) to the option connections, of either feed,
        subscribed to it; returns how many.

        Raises:
            InvalidInputError: an empty symbol, a price not positive and finite, a size
                below 0.
            SimulatorError: not running, or not sent within ``timeout`` seconds.
        """
        message = kinds.option_quote(
            check_symbol(symbol), bid_price=check_price("bid_price", bid_price),
            ask_price=check_price("ask_price", ask_price),
            bid_size=check_count("bid_size", bid_size, minimum=0),
            ask_size=check_count("ask_size", ask_size, minimum=0),
            timestamp=self._now(timestamp))
        return self._send("publish_option_quote", OPTION_DATA, message, timeout)

    def publish_option_trade(
        self, symbol: str, *, price: Number, size: int = 1, timestamp: datetime | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> int:
        """Send one option trade to its subscribers; returns how many.

        Raises:
            InvalidInputError: an empty symbol, a price not positive and finite, a size
                below 1.
            SimulatorError: not running, or not sent within ``timeout`` seconds.
        """
        message = kinds.option_trade(
            check_symbol(symbol), price=check_price("price", price),
            size=check_count("size", size), timestamp=self._now(timestamp))
        return self._send("publish_option_trade", OPTION_DATA, message, timeout)

    def publish_news(
        self, headline: str, *, symbols: list[str] | tuple[str, ...] = (), summary: str = "",
        author: str = "", source: str = "benzinga", url: str = "", content: str = "",
        article_id: int | None = None, timestamp: datetime | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> int:
        """Send one news article to the news connections that want one of ``symbols`` (or
        ``*``), once each; returns how many. ``article_id`` defaults to the next of a counter
        starting at 1.

        Raises:
            InvalidInputError: an empty headline, a malformed symbol, an id below 1.
            SimulatorError: not running, or not sent within ``timeout`` seconds.
        """
        if not isinstance(headline, str) or not headline:
            raise InvalidInputError("headline must be a non-empty string")
        if isinstance(symbols, str):
            raise InvalidInputError("symbols must be a list of symbols, not a single string")
        message = kinds.news(
            next(self._news_ids) if article_id is None else check_count("article_id",
                                                                          article_id),
            headline=headline, symbols=[check_symbol(s) for s in symbols],
            created_at=self._now(timestamp), summary=summary, author=author, source=source,
            url=url, content=content)
        return self._send("publish_news", NEWS, message, timeout)
