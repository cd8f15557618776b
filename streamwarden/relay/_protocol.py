"""The relay's side of Alpaca's stream protocols: paths, codecs, and the wire form of messages.

A client asks for MessagePack with ``Content-Type: application/msgpack`` (alpaca-py's data
streams do); otherwise frames are JSON text. The option stream speaks MessagePack only; the
trading stream (``/stream``) JSON only. Data frames are arrays of messages; each message is
encoded once per codec (:class:`Encoder`) and the arrays are assembled from the encoded
elements, so a message forwarded to many clients costs one encoding per codec, not per client.

The typed messages leases receive carry what streamwarden parses (symbol, prices, sizes,
timestamp, ids, status codes); the relay sends those fields back in Alpaca's keys. Exchange
codes, conditions, tape and a bar's trade count and VWAP are not forwarded.

Pure functions; :class:`Encoder` is for one event loop (not thread-safe).
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

import msgpack  # type: ignore[import-untyped]  # no stubs; alpaca-py's codec

from streamwarden._keys import (
    CRYPTO_DATA,
    CRYPTO_LOCATION,
    MARKET_DATA,
    NEWS,
    OPTION_DATA,
    OPTION_FEEDS,
    TRADE_UPDATES,
    StreamKind,
)
from streamwarden.marketdata import (
    Bar,
    News,
    Quote,
    Trade,
    TradeCancel,
    TradeCorrection,
    TradingStatus,
)

Codec = Literal["msgpack", "json"]
Frame = bytes | str
Message = dict[str, Any]

ERRORS: Mapping[int, str] = {
    400: "invalid syntax", 401: "not authenticated", 402: "auth failed",
    403: "already authenticated", 404: "auth timeout", 407: "slow client",
    410: "invalid subscribe action for this feed",
    412: "option messages are only available in MsgPack format",
}
"""Alpaca's market-data error codes the relay answers with, and their messages."""

STOCK_FEEDS = ("iex", "sip", "delayed_sip")
TRADING_PATH = "/stream"
NEWS_PATH = "/v1beta1/news"
CRYPTO_PATH = f"/v1beta3/crypto/{CRYPTO_LOCATION}"
_STOCK_PATH = re.compile(r"/v2/([a-z_]+)")
_OPTION_PATH = re.compile(r"/v1beta1/([a-z]+)")

#: A market-data kind's channels, as clients name them, and the lease channel of each.
CHANNELS: Mapping[StreamKind, Mapping[str, str]] = {
    MARKET_DATA: {"trades": "trades", "quotes": "quotes", "bars": "bars",
                  "updatedBars": "updated_bars", "dailyBars": "daily_bars",
                  "statuses": "statuses"},
    CRYPTO_DATA: {"trades": "trades", "quotes": "quotes", "bars": "bars"},
    OPTION_DATA: {"trades": "trades", "quotes": "quotes"},
    NEWS: {"news": "news"},
}
#: Every channel Alpaca's data streams know: one the kind (or the relay) does not carry gets
#: error 410, any other unknown key 400.
KNOWN_CHANNELS = frozenset({"trades", "quotes", "bars", "updatedBars", "dailyBars",
                            "statuses", "lulds", "orderbooks", "news"})

_BAR_TYPES = {"bars": "b", "updated_bars": "u", "daily_bars": "d"}


def route(path: str, stock_feed: str) -> tuple[StreamKind, str | None] | None:
    """The stream kind (and feed) served at ``path``, or None (HTTP 404). Stocks are served on
    the relay's configured feed only."""
    stock = _STOCK_PATH.fullmatch(path)
    if stock is not None:
        return (MARKET_DATA, stock_feed) if stock.group(1) == stock_feed else None
    option = _OPTION_PATH.fullmatch(path)
    if option is not None and option.group(1) in OPTION_FEEDS:
        return OPTION_DATA, option.group(1)
    return {CRYPTO_PATH: (CRYPTO_DATA, None), NEWS_PATH: (NEWS, None),
            TRADING_PATH: (TRADE_UPDATES, None)}.get(path)


def error(code: int) -> Message:
    """Alpaca's error message for ``code`` (one of :data:`ERRORS`)."""
    return {"T": "error", "code": code, "msg": ERRORS[code]}


def subscription_ack(kind: StreamKind, wanted: Mapping[str, frozenset[str]]) -> Message:
    """The ``subscription`` message: each of the kind's channels (client names), sorted; stock
    trades also list ``corrections`` and ``cancelErrors``, as Alpaca's do."""
    ack: Message = {"T": "subscription"}
    for wire, channel in CHANNELS[kind].items():
        ack[wire] = sorted(wanted.get(channel, ()))
    if kind == MARKET_DATA:
        ack["corrections"] = ack["cancelErrors"] = list(ack["trades"])
    return ack


def encode(payload: list[Message] | Message, codec: Codec) -> Frame:
    """One whole frame carrying ``payload``."""
    if codec == "msgpack":
        packed: bytes = msgpack.packb(payload, default=_msgpack_default)
        return packed
    return json.dumps(payload, separators=(",", ":"), default=_json_default)


def array(elements: list[bytes], codec: Codec) -> Frame:
    """A data frame: the array of already encoded ``elements`` (see :meth:`Encoder.element`)."""
    if codec == "msgpack":
        count = len(elements)
        head = (bytes([0x90 | count]) if count < 16
                else b"\xdc" + count.to_bytes(2, "big") if count < 0x10000
                else b"\xdd" + count.to_bytes(4, "big"))
        return head + b"".join(elements)
    return "[" + ",".join(element.decode() for element in elements) + "]"


def _number(value: Decimal) -> int | float:
    return int(value) if value == value.to_integral_value() else float(value)


def _stamp(moment: datetime) -> msgpack.Timestamp:
    return msgpack.Timestamp.from_datetime(moment if moment.tzinfo else
                                           moment.replace(tzinfo=UTC))


def _msgpack_default(value: object) -> object:
    if isinstance(value, datetime):
        return _stamp(value)
    raise TypeError(f"cannot encode {type(value).__name__}")


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    raise TypeError(f"cannot encode {type(value).__name__}")


def wire_message(payload: object, channel: str) -> Message:
    """The Alpaca message of a typed market-data message or news article on ``channel``.

    Raises:
        TypeError: ``payload`` is not a message the relay forwards.
    """
    if isinstance(payload, Quote):
        return {"T": "q", "S": payload.symbol, "bp": float(payload.bid_price),
                "bs": _number(payload.bid_size), "ap": float(payload.ask_price),
                "as": _number(payload.ask_size), "t": payload.timestamp}
    if isinstance(payload, Trade):
        trade: Message = {"T": "t", "S": payload.symbol, "p": float(payload.price),
                          "s": _number(payload.size), "t": payload.timestamp}
        if payload.trade_id is not None:
            trade["i"] = payload.trade_id
        return trade
    if isinstance(payload, Bar):
        return {"T": _BAR_TYPES[channel], "S": payload.symbol, "o": float(payload.open),
                "h": float(payload.high), "l": float(payload.low), "c": float(payload.close),
                "v": _number(payload.volume), "t": payload.timestamp}
    return _other_message(payload)


def _other_message(payload: object) -> Message:
    if isinstance(payload, TradingStatus):
        return {"T": "s", "S": payload.symbol, "sc": payload.status_code,
                "sm": payload.status_message, "rc": payload.reason_code,
                "rm": payload.reason_message, "t": payload.timestamp}
    if isinstance(payload, TradeCorrection):
        return {"T": "c", "S": payload.symbol, "oi": payload.original_id,
                "op": float(payload.original_price), "os": _number(payload.original_size),
                "ci": payload.corrected_id, "cp": float(payload.corrected_price),
                "cs": _number(payload.corrected_size), "t": payload.timestamp}
    if isinstance(payload, TradeCancel):
        return {"T": "x", "S": payload.symbol, "i": payload.trade_id, "p": float(payload.price),
                "s": _number(payload.size), "a": payload.action, "t": payload.timestamp}
    if isinstance(payload, News):
        return {"T": "n", "id": payload.id, "headline": payload.headline,
                "summary": payload.summary, "author": payload.author,
                "created_at": payload.created_at, "updated_at": payload.updated_at,
                "url": payload.url or "", "content": payload.content,
                "symbols": list(payload.symbols), "source": payload.source}
    raise TypeError(f"not a message the relay forwards: {type(payload).__name__}")


def trade_update_frame(update: Any) -> str:
    """The trading stream's frame of one alpaca-py ``TradeUpdate``."""
    return json.dumps({"stream": "trade_updates", "data": update.model_dump(mode="json")},
                      separators=(",", ":"), default=str)


class Encoder:
    """Encodes each forwarded message once per codec and remembers the last ``capacity``
    encodings, so the clients that receive the same message share one encoding.

    Thread-safety: use from one event loop.
    """

    def __init__(self, capacity: int = 4096) -> None:
        self._capacity = capacity
        # id(payload) -> (payload, channel, {codec: element}); holding the payload keeps its id
        # from being reused while the entry lives.
        self._cache: OrderedDict[tuple[int, str], tuple[object, dict[str, bytes]]] = (
            OrderedDict())

    def element(self, payload: object, channel: str, codec: Codec) -> bytes:
        """``payload`` encoded as one array element in ``codec``.

        Raises:
            TypeError: ``payload`` is not a message the relay forwards.
        """
        key = (id(payload), channel)
        entry = self._cache.get(key)
        if entry is None:
            entry = (payload, {})
            self._cache[key] = entry
            if len(self._cache) > self._capacity:
                self._cache.popitem(last=False)
        encoded = entry[1].get(codec)
        if encoded is None:
            frame = encode(wire_message(payload, channel), codec)
            encoded = entry[1][codec] = frame if isinstance(frame, bytes) else frame.encode()
        return encoded
