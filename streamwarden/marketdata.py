"""Market-data messages as leases see them: typed, immutable, prices as :class:`~decimal.Decimal`.

Alpaca's market-data stream sends quotes, trades and bars as msgpack maps with one-letter keys
(``{"T": "q", "S": "AAPL", "bp": 187.1, ...}``). The transport parses each message once, with
:func:`parse_market_data`, and the same immutable object is handed to every interested lease.

>>> from datetime import UTC, datetime, timedelta
>>> quote = parse_market_data({"T": "q", "S": "AAPL", "bp": 187.1, "bs": 3, "ap": 187.12,
...                            "as": 1, "t": datetime(2026, 11, 23, 15, tzinfo=UTC)})
>>> quote.bid_price, quote.ask_price, quote.spread
(Decimal('187.1'), Decimal('187.12'), Decimal('0.02'))
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

Channel = Literal["quotes", "trades", "bars"]
CHANNELS: tuple[Channel, ...] = ("quotes", "trades", "bars")
TRADE_UPDATES_CHANNEL = "trade_updates"

Subscription = tuple[str, str]
"""A (channel, symbol) pair: what a lease asks for and what the wire carries."""


_DECIMALS: dict[float, Decimal] = {}
_DECIMALS_KEPT = 4096
"""Decimals of recently seen float prices: a symbol's prices repeat, and Decimal(str(float))
costs more than the rest of a quote's parse. Cleared when full, so it stays bounded."""


def _price(value: object) -> Decimal:
    # Alpaca sends floats; their shortest repr is the price the exchange quoted.
    if type(value) is float:
        price = _DECIMALS.get(value)
        if price is None:
            price = Decimal(repr(value))
            if value:  # 0.0 and -0.0 are one key but two Decimals: zero is never kept
                if len(_DECIMALS) >= _DECIMALS_KEPT:
                    _DECIMALS.clear()
                _DECIMALS[value] = price
        return price
    if type(value) is int:  # sizes: exact, and the same Decimal as from its str
        return Decimal(value)
    return Decimal(str(value)) if value is not None else Decimal(0)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _time(value: object) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    msgpack = sys.modules.get("msgpack")  # loaded if value is one of its Timestamps
    if msgpack is not None and type(value) is msgpack.Timestamp:  # raw mode: to_datetime, inline
        stamp: Any = value
        return _EPOCH + timedelta(0, stamp.seconds, stamp.nanoseconds // 1000)
    to_datetime = getattr(value, "to_datetime", None)
    if callable(to_datetime):
        moment = to_datetime()
        assert isinstance(moment, datetime)
        return moment
    if isinstance(value, str):
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    raise ValueError(f"unreadable timestamp {value!r}")


@dataclass(frozen=True)
class Quote:
    """The best bid and offer of one symbol at ``timestamp``."""

    symbol: str
    bid_price: Decimal
    bid_size: Decimal
    ask_price: Decimal
    ask_size: Decimal
    timestamp: datetime

    @property
    def spread(self) -> Decimal:
        """Ask minus bid."""
        return self.ask_price - self.bid_price


@dataclass(frozen=True)
class Trade:
    """One print of one symbol."""

    symbol: str
    price: Decimal
    size: Decimal
    timestamp: datetime
    trade_id: int | None = None


@dataclass(frozen=True)
class Bar:
    """A one-minute bar of one symbol."""

    symbol: str
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    timestamp: datetime


MarketData = Quote | Trade | Bar
_TYPE_CHANNEL: dict[str, Channel] = {"q": "quotes", "t": "trades", "b": "bars"}


def channel_of(message: Mapping[str, Any]) -> Channel | None:
    """The channel of a raw market-data message, or None for control and other messages."""
    return _TYPE_CHANNEL.get(message.get("T", ""))


def parse_market_data(message: Mapping[str, Any]) -> MarketData:
    """The typed form of one raw quote, trade or bar message.

    Raises:
        ValueError: if the message is not a quote, trade or bar, or misses a field.
    """
    channel = channel_of(message)
    try:
        symbol = str(message["S"])
        timestamp = _time(message["t"])
        if channel == "quotes":
            return Quote(symbol, _price(message.get("bp")), _price(message.get("bs")),
                         _price(message.get("ap")), _price(message.get("as")), timestamp)
        if channel == "trades":
            trade_id = message.get("i")
            return Trade(symbol, _price(message.get("p")), _price(message.get("s")), timestamp,
                         int(trade_id) if trade_id is not None else None)
        if channel == "bars":
            return Bar(symbol, _price(message.get("o")), _price(message.get("h")),
                       _price(message.get("l")), _price(message.get("c")),
                       _price(message.get("v")), timestamp)
    except KeyError as exc:
        raise ValueError(f"market-data message without {exc.args[0]!r}") from None
    raise ValueError(f"not a quote, trade or bar: T={message.get('T')!r}")


NEWS_CHANNEL = "news"
"""The channel of news articles (the news stream's only one)."""


@dataclass(frozen=True)
class News:
    """One news article, as Alpaca's news stream sends it (created or updated).

    ``symbols`` are the symbols the article concerns (possibly none: then only a ``*``
    subscriber receives it); ``url`` may be None, ``content`` empty.
    """

    id: int
    headline: str
    summary: str
    author: str
    source: str
    url: str | None
    symbols: tuple[str, ...]
    created_at: datetime
    updated_at: datetime
    content: str


def parse_news(message: Mapping[str, Any]) -> News:
    """The typed form of one raw news message (``T`` = ``n``).

    >>> from datetime import UTC, datetime
    >>> moment = datetime(2026, 11, 23, 15, tzinfo=UTC)
    >>> parse_news({"T": "n", "id": 7, "headline": "H", "symbols": ["AAPL"],
    ...             "created_at": moment, "updated_at": moment}).symbols
    ('AAPL',)

    Raises:
        ValueError: if the message is not a news message, or misses its id, headline or
            timestamps, or they are unreadable.
    """
    if message.get("T") != "n":
        raise ValueError(f"not a news message: T={message.get('T')!r}")
    try:
        created_at = _time(message["created_at"])
        updated_at = _time(message["updated_at"])
        article_id, headline = int(message["id"]), str(message["headline"])
    except KeyError as exc:
        raise ValueError(f"news message without {exc.args[0]!r}") from None
    except TypeError as exc:
        raise ValueError(f"news message with an unreadable field: {exc}") from None
    symbols = message.get("symbols") or ()
    url = message.get("url")
    return News(id=article_id, headline=headline, summary=str(message.get("summary") or ""),
                author=str(message.get("author") or ""), source=str(message.get("source") or ""),
                url=str(url) if url else None, symbols=tuple(str(s) for s in symbols),
                created_at=created_at, updated_at=updated_at,
                content=str(message.get("content") or ""))
