"""Wire messages of Alpaca's market-data v2 stream and how frames are encoded and decoded.

Market data: every server frame is an array of messages, each with a ``T`` type field
(``success``, ``error``, ``subscription``, ``q``, ``t``, ``b``). With the request header
``Content-Type: application/msgpack`` (what alpaca-py sends) frames are binary MessagePack and
``t`` is a MessagePack Timestamp (extension type -1); otherwise frames are JSON text and ``t`` an
RFC 3339 string with nanoseconds. Prices are numbers, sizes whole numbers, as Alpaca sends them.

Trading stream frames (one JSON object each) are built in :mod:`streamwarden.simulator.orders`;
:func:`encode` and :func:`decode` handle both kinds.

All functions are pure and thread-safe.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import msgpack  # type: ignore[import-untyped]  # no stubs; alpaca-py's codec

Message = dict[str, Any]
Codec = Literal["msgpack", "json", "json-binary"]
"""How a connection's frames are encoded: MessagePack, JSON text, or JSON in binary frames."""

ERRORS: Mapping[int, str] = {
    400: "invalid syntax",
    401: "not authenticated",
    402: "auth failed",
    403: "already authenticated",
    404: "auth timeout",
    405: "symbol limit exceeded",
    406: "connection limit exceeded",
    407: "slow client",
    409: "insufficient subscription",
    410: "invalid subscribe action for this feed",
    411: "insufficient scope",
    500: "internal error",
}
"""Alpaca's market-data error codes and their messages."""

SUBSCRIBABLE_CHANNELS = (
    "trades", "quotes", "bars", "updatedBars", "dailyBars", "statuses", "lulds",
)
"""Channels a market-data client may name in subscribe and unsubscribe."""

TRADE_FOLLOWERS = ("corrections", "cancelErrors")
"""Channels Alpaca subscribes along with ``trades`` (acknowledged, never named by clients)."""

IEX_EXCHANGE = "V"


def connected() -> Message:
    """The greeting: ``{"T": "success", "msg": "connected"}``."""
    return {"T": "success", "msg": "connected"}


def authenticated() -> Message:
    """The reply to a successful auth: ``{"T": "success", "msg": "authenticated"}``."""
    return {"T": "success", "msg": "authenticated"}


def error(code: int) -> Message:
    """An error message with Alpaca's text for ``code``.

    Raises:
        KeyError: ``code`` is not one of :data:`ERRORS`.
    """
    return {"T": "error", "code": code, "msg": ERRORS[code]}


def subscription_ack(subscription: Mapping[str, Iterable[str]]) -> Message:
    """The ``subscription`` message listing a connection's whole current subscription.

    Every subscribable channel is listed (empty when not subscribed), plus ``corrections`` and
    ``cancelErrors``, which follow ``trades``. Symbols are sorted.
    """
    ack: Message = {"T": "subscription"}
    for channel in SUBSCRIBABLE_CHANNELS:
        ack[channel] = sorted(subscription.get(channel, ()))
    for channel in TRADE_FOLLOWERS:
        ack[channel] = list(ack["trades"])
    return ack


def wire_time(moment: datetime) -> msgpack.Timestamp:
    """``moment`` as the MessagePack Timestamp Alpaca sends in ``t``.

    Raises:
        ValueError: ``moment`` is naive (no timezone).
    """
    if moment.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    return msgpack.Timestamp.from_datetime(moment)


def quote(
    symbol: str,
    *,
    bid_price: float,
    ask_price: float,
    bid_size: int,
    ask_size: int,
    timestamp: datetime,
    exchange: str = IEX_EXCHANGE,
) -> Message:
    """A quote (``T`` = ``q``): best bid and ask, IEX-style condition and tape."""
    return {
        "T": "q", "S": symbol,
        "bx": exchange, "bp": bid_price, "bs": bid_size,
        "ax": exchange, "ap": ask_price, "as": ask_size,
        "c": ["R"], "z": "C", "t": wire_time(timestamp),
    }


def trade(
    symbol: str,
    *,
    price: float,
    size: int,
    trade_id: int,
    timestamp: datetime,
    exchange: str = IEX_EXCHANGE,
) -> Message:
    """A trade (``T`` = ``t``) with a trade id, regular-sale condition and tape."""
    return {
        "T": "t", "S": symbol, "i": trade_id, "x": exchange, "p": price, "s": size,
        "c": ["@"], "z": "C", "t": wire_time(timestamp),
    }


def bar(
    symbol: str,
    *,
    open_price: float,
    high_price: float,
    low_price: float,
    close_price: float,
    volume: int,
    trade_count: int,
    vwap: float,
    timestamp: datetime,
) -> Message:
    """A minute bar (``T`` = ``b``) opening at ``timestamp``."""
    return {
        "T": "b", "S": symbol,
        "o": open_price, "h": high_price, "l": low_price, "c": close_price,
        "v": volume, "t": wire_time(timestamp), "n": trade_count, "vw": vwap,
    }


def rfc3339(stamp: msgpack.Timestamp) -> str:
    """``stamp`` as Alpaca's JSON text: ``2024-05-01T14:30:00.123456789Z``."""
    moment = datetime.fromtimestamp(stamp.seconds, UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{stamp.nanoseconds:09d}Z"


def _json_default(value: object) -> str:
    if isinstance(value, msgpack.Timestamp):
        return rfc3339(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def encode(payload: Sequence[Message] | Message, codec: Codec) -> bytes | str:
    """One frame carrying ``payload`` in ``codec``: bytes for binary frames, str for text.

    Raises:
        TypeError: ``payload`` holds a value the codec cannot encode.
    """
    if codec == "msgpack":
        packed: bytes = msgpack.packb(payload)
        return packed
    text = json.dumps(payload, separators=(",", ":"), default=_json_default)
    return text.encode() if codec == "json-binary" else text
