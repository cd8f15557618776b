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

import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from streamwarden.errors import MalformedMessageError

Channel = Literal["quotes", "trades", "bars"]
CHANNELS: tuple[Channel, ...] = ("quotes", "trades", "bars")
TRADE_UPDATES_CHANNEL = "trade_updates"

Subscription = tuple[str, str]
"""A (channel, symbol) pair: what a lease asks for and what the wire carries."""


_DECIMALS: dict[float, Decimal] = {}
_DECIMALS_KEPT = 4096
"""Decimals of recently seen float prices: a symbol's prices repeat, and Decimal(str(float))
costs more than the rest of a quote's parse. Cleared when full, so it stays bounded. Only valid
(finite, non-negative) numbers are kept."""

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
        if value < 0:
            raise _malformed(key, "negative", value)
        return Decimal(value)
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
        return _EPOCH + timedelta(0, stamp.seconds, stamp.nanoseconds // 1000)
    to_datetime = getattr(value, "to_datetime", None)
    if callable(to_datetime):
        moment = to_datetime()
        if isinstance(moment, datetime):
            return _time(moment)
    if isinstance(value, str):
        return _time(datetime.fromisoformat(value.replace("Z", "+00:00")))
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

    Every price, size and volume must be present, a number, finite and not negative; the symbol
    a non-empty string; the timestamp readable; a trade's id, when given, an integer. Nothing
    is made up for what is missing. Thread-safe.

    Raises:
        MalformedMessageError: (a ValueError) naming the field at fault and why, or the type
            when the message is not a quote, trade or bar.
    """
    kind = message.get("T")
    if kind not in _TYPE_CHANNEL:
        raise MalformedMessageError(f"not a quote, trade or bar: T={kind!r}", field="T",
                                    reason="unknown type")
    symbol = message.get("S")
    if type(symbol) is not str or not symbol:
        raise _malformed("S", "missing" if symbol is None else "unreadable", symbol)
    stamp = message.get("t")
    try:
        timestamp = _time(stamp)
    except (ArithmeticError, TypeError, ValueError):
        raise _malformed("t", "missing" if stamp is None else "unreadable", stamp) from None
    if kind == "q":
        return Quote(symbol, _number(message, "bp"), _number(message, "bs"),
                     _number(message, "ap"), _number(message, "as"), timestamp)
    if kind == "t":
        trade_id = message.get("i")
        if trade_id is not None and type(trade_id) is not int:
            raise _malformed("i", "not an integer", trade_id)
        return Trade(symbol, _number(message, "p"), _number(message, "s"), timestamp, trade_id)
    return Bar(symbol, _number(message, "o"), _number(message, "h"), _number(message, "l"),
               _number(message, "c"), _number(message, "v"), timestamp)
