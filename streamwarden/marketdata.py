"""Market-data messages as leases see them: typed, immutable, prices as :class:`~decimal.Decimal`.

Alpaca's market-data stream sends quotes, trades and bars as msgpack maps with one-letter keys
(``{"T": "q", "S": "AAPL", "bp": 187.1, ...}``). The transport parses each message once, with
:func:`parse_market_data`, and the same immutable object is handed to every interested lease.

Channels: ``quotes`` (Quote), ``trades`` (Trade, and the TradeCorrection and TradeCancel Alpaca
sends to a symbol's trade subscribers), ``bars`` (minute bars), ``updated_bars`` (a minute bar
corrected by late trades), ``daily_bars`` (the day's bar so far), all three as Bar, and
``statuses`` (TradingStatus: halts and resumptions). LULD bands and order imbalances are not
delivered.

>>> from datetime import UTC, datetime, timedelta
>>> quote = parse_market_data({"T": "q", "S": "AAPL", "bp": 187.1, "bs": 3, "ap": 187.12,
...                            "as": 1, "t": datetime(2026, 11, 23, 15, tzinfo=UTC)})
>>> quote.bid_price, quote.ask_price, quote.spread
(Decimal('187.1'), Decimal('187.12'), Decimal('0.02'))
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from streamwarden.errors import MalformedMessageError

Channel = Literal["quotes", "trades", "bars", "updated_bars", "daily_bars", "statuses"]
CHANNELS: tuple[Channel, ...] = ("quotes", "trades", "bars", "updated_bars", "daily_bars",
                                 "statuses")
TRADE_UPDATES_CHANNEL = "trade_updates"

Subscription = tuple[str, str]
"""A (channel, symbol) pair: what a lease asks for and what the wire carries."""


_DECIMALS: dict[float, Decimal] = {}
_DECIMALS_KEPT = 4096
"""Decimals of recently seen float prices: a symbol's prices repeat, and Decimal(str(float))
costs more than the rest of a quote's parse. Cleared when full, so it stays bounded. Only valid
(finite, non-negative) numbers are kept."""

_INTEGERS: dict[int, Decimal] = {}
"""The same for integer sizes (kept apart: 3 and 3.0 are one key but two Decimals)."""

_INFINITY = float("inf")
_SHOWN_CHARACTERS = 40


def _malformed(key: str, reason: str, value: object = None) -> MalformedMessageError:
    shown = repr(value)
    if len(shown) > _SHOWN_CHARACTERS:
        shown = shown[:_SHOWN_CHARACTERS - 3] + "..."
    detail = "" if reason == "missing" else f": {shown}"
    return MalformedMessageError(f"market-data field {key!r} is {reason}{detail}",
                                 field=key, reason=reason)


def _number(message: Mapping[str, Any], key: str) -> Decimal:
    """The price, size or volume under ``key``: a finite, non-negative number, never made up.

    Raises:
        MalformedMessageError: missing, not a number, not finite or negative.
    """
    value = message.get(key)
    # Alpaca sends floats; their shortest repr is the price the exchange quoted.
    if type(value) is float:
        number = _DECIMALS.get(value)
        if number is None:
            if not 0.0 <= value < _INFINITY:  # false for NaN, the infinities and negatives
                raise _malformed(key, "negative" if math.isfinite(value) else "not finite", value)
            number = Decimal(repr(value))
            if value:  # 0.0 and -0.0 are one key but two Decimals: zero is never kept
                if len(_DECIMALS) >= _DECIMALS_KEPT:
                    _DECIMALS.clear()
                _DECIMALS[value] = number
        return number
    if type(value) is int:  # sizes: exact, and the same Decimal as from its str
        number = _INTEGERS.get(value)
        if number is None:
            if value < 0:
                raise _malformed(key, "negative", value)
            number = Decimal(value)
            if len(_INTEGERS) >= _DECIMALS_KEPT:
                _INTEGERS.clear()
            _INTEGERS[value] = number
        return number
    return _other_number(key, value)


def _other_number(key: str, value: object) -> Decimal:
    if value is None:
        raise _malformed(key, "missing")
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise _malformed(key, "not a number", value)
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value))
    except InvalidOperation:
        raise _malformed(key, "not a number", value) from None
    if not number.is_finite():
        raise _malformed(key, "not finite", value)
    if number < 0:
        raise _malformed(key, "negative", value)
    return number


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _time(value: object) -> datetime:
    """Raises ValueError, TypeError or ArithmeticError (out of range) when unreadable."""
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    msgpack = sys.modules.get("msgpack")  # loaded if value is one of its Timestamps
    if msgpack is not None and type(value) is msgpack.Timestamp:  # raw mode: to_datetime, inline
        stamp: Any = value
        return _from_stamp(stamp.seconds, stamp.nanoseconds // 1000)
    to_datetime = getattr(value, "to_datetime", None)
    if callable(to_datetime):
        moment = to_datetime()
        if isinstance(moment, datetime):
            return _time(moment)
    if isinstance(value, str):
        return _time(datetime.fromisoformat(value.replace("Z", "+00:00")))
    raise ValueError(f"unreadable timestamp {value!r}")


_LAST_SECOND: list[tuple[int, tuple[int, int, int, int, int, int]]] = [
    (0, (1970, 1, 1, 0, 0, 0))]
"""The last whole second read and its calendar fields (a stream's timestamps share it): one
immutable pair, replaced whole, so threads may share it."""


def _from_stamp(seconds: int, microseconds: int) -> datetime:
    """The UTC time ``seconds`` after the epoch plus ``microseconds``."""
    second, fields = _LAST_SECOND[0]
    if second != seconds:
        moment = _EPOCH + timedelta(0, seconds)
        fields = (moment.year, moment.month, moment.day, moment.hour, moment.minute,
                  moment.second)
        _LAST_SECOND[0] = (seconds, fields)
    year, month, day, hour, minute, whole = fields
    return datetime(year, month, day, hour, minute, whole, microseconds, UTC)


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


def _quote(message: Mapping[str, Any], symbol: str, timestamp: datetime) -> Quote:
    """The quote of a raw message, built for the parser's hot path: the instance's fields set
    in one step instead of one ``object.__setattr__`` each, as a frozen dataclass's
    ``__init__`` does (which costs more than the rest of the parse). The same object as
    ``Quote(...)`` builds, and equal to it."""
    quote = object.__new__(Quote)
    object.__setattr__(quote, "__dict__", {
        "symbol": symbol, "bid_price": _number(message, "bp"),
        "bid_size": _number(message, "bs"), "ask_price": _number(message, "ap"),
        "ask_size": _number(message, "as"), "timestamp": timestamp})
    return quote


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


@dataclass(frozen=True)
class TradingStatus:
    """A trading status of one symbol (``statuses``): ``status_code`` as Alpaca sends it (``H``
    halted, ``T`` trading, ...), with the reason when given."""

    symbol: str
    status_code: str
    status_message: str | None
    reason_code: str | None
    reason_message: str | None
    timestamp: datetime


@dataclass(frozen=True)
class TradeCorrection:
    """A correction of an earlier trade of one symbol (delivered on ``trades``)."""

    symbol: str
    original_id: int
    original_price: Decimal
    original_size: Decimal
    corrected_id: int
    corrected_price: Decimal
    corrected_size: Decimal
    timestamp: datetime


@dataclass(frozen=True)
class TradeCancel:
    """A cancelled or erroneous earlier trade of one symbol (delivered on ``trades``);
    ``action`` is ``C`` (cancel) or ``E`` (error) as Alpaca sends it."""

    symbol: str
    trade_id: int
    price: Decimal
    size: Decimal
    action: str
    timestamp: datetime


TradeMessage = Trade | TradeCorrection | TradeCancel
"""What the ``trades`` channel delivers."""
MarketData = Quote | Trade | Bar | TradingStatus | TradeCorrection | TradeCancel
_TYPE_CHANNEL: dict[str, Channel] = {
    "q": "quotes", "t": "trades", "b": "bars", "u": "updated_bars", "d": "daily_bars",
    "s": "statuses", "c": "trades", "x": "trades",
}


def channel_of(message: Mapping[str, Any]) -> Channel | None:
    """The channel of a raw market-data message, or None for control and other messages."""
    return _TYPE_CHANNEL.get(message.get("T", ""))


def _integer(message: Mapping[str, Any], key: str) -> int:
    value = message.get(key)
    if type(value) is not int:
        raise _malformed(key, "missing" if value is None else "not an integer", value)
    return value


def _text(message: Mapping[str, Any], key: str) -> str:
    value = message.get(key)
    if type(value) is not str or not value:
        raise _malformed(key, "missing" if value is None else "not text", value)
    return value


def _optional_text(message: Mapping[str, Any], key: str) -> str | None:
    return None if message.get(key) is None else _text(message, key)


def _trade(message: Mapping[str, Any], symbol: str, timestamp: datetime) -> Trade:
    trade_id = message.get("i")
    if trade_id is not None and type(trade_id) is not int:
        raise _malformed("i", "not an integer", trade_id)
    return Trade(symbol, _number(message, "p"), _number(message, "s"), timestamp, trade_id)


def _bar(message: Mapping[str, Any], symbol: str, timestamp: datetime) -> Bar:
    return Bar(symbol, _number(message, "o"), _number(message, "h"), _number(message, "l"),
               _number(message, "c"), _number(message, "v"), timestamp)


def _status(message: Mapping[str, Any], symbol: str, timestamp: datetime) -> TradingStatus:
    return TradingStatus(symbol, _text(message, "sc"), _optional_text(message, "sm"),
                         _optional_text(message, "rc"), _optional_text(message, "rm"), timestamp)


def _correction(message: Mapping[str, Any], symbol: str,
                timestamp: datetime) -> TradeCorrection:
    return TradeCorrection(symbol, _integer(message, "oi"), _number(message, "op"),
                           _number(message, "os"), _integer(message, "ci"),
                           _number(message, "cp"), _number(message, "cs"), timestamp)


def _cancel(message: Mapping[str, Any], symbol: str, timestamp: datetime) -> TradeCancel:
    return TradeCancel(symbol, _integer(message, "i"), _number(message, "p"),
                       _number(message, "s"), _text(message, "a"), timestamp)


_PARSERS: dict[str, Callable[[Mapping[str, Any], str, datetime], MarketData]] = {
    "t": _trade, "b": _bar, "u": _bar, "d": _bar, "s": _status, "c": _correction, "x": _cancel,
}


def parse_market_data(message: Mapping[str, Any]) -> MarketData:
    """The typed form of one raw market-data message (see the module for the types).

    Every price, size and volume must be present, a number, finite and not negative; the symbol
    a non-empty string; the timestamp readable; a trade's id, when given, an integer (a
    correction's and a cancel's ids are required); a status code and a cancel's action
    non-empty text. Nothing is made up for what is missing. Thread-safe.

    Raises:
        MalformedMessageError: (a ValueError) naming the field at fault and why, or the type
            when the message is not market data streamwarden delivers.
    """
    kind = message.get("T")
    if kind not in _TYPE_CHANNEL:
        raise MalformedMessageError(f"not market data streamwarden delivers: T={kind!r}",
                                    field="T", reason="unknown type")
    symbol = message.get("S")
    if type(symbol) is not str or not symbol:
        raise _malformed("S", "missing" if symbol is None else "unreadable", symbol)
    stamp = message.get("t")
    try:
        timestamp = _time(stamp)
    except (ArithmeticError, TypeError, ValueError):
        raise _malformed("t", "missing" if stamp is None else "unreadable", stamp) from None
    if kind == "q":  # the hot path, without a table look-up and a call
        return _quote(message, symbol, timestamp)
    return _PARSERS[kind](message, symbol, timestamp)


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
