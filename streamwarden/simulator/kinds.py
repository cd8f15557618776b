"""Alpaca's crypto, option and news streams: where they are served, what they subscribe, and
their data messages.

The three speak the market-data v2 protocol of :mod:`streamwarden.simulator.market_data`
(greeting, auth, subscribe, acknowledgement, data arrays) at their own paths and with their
own channels:

* crypto, ``/v1beta3/crypto/<location>`` (alpaca-py's ``us``): ``trades``, ``quotes``, ``bars``,
  ``updatedBars``, ``dailyBars``, ``orderbooks``; sizes are fractional;
* options, ``/v1beta1/indicative`` and ``/v1beta1/opra``: ``trades`` and ``quotes`` of OCC
  contract symbols, MessagePack only: a client without ``Content-Type: application/msgpack``
  gets error 412 in place of the greeting, and the connection is closed;
* news, ``/v1beta1/news``: ``news``, by symbol or ``*``; an article goes to a connection once
  if it wants any of the article's symbols (or ``*``).

All functions are pure and thread-safe.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from streamwarden.simulator.messages import (
    SUBSCRIBABLE_CHANNELS,
    Message,
    subscription_ack,
    wire_time,
)
from streamwarden.simulator.stats import CRYPTO_DATA, MARKET_DATA, NEWS, OPTION_DATA, StreamKind

CRYPTO_PATH_PREFIX = "/v1beta3/crypto/"
NEWS_PATH = "/v1beta1/news"
OPTION_FEEDS = ("indicative", "opra")
_CRYPTO_PATH = re.compile(r"/v1beta3/crypto/[a-z0-9-]+")
_OPTION_PATH = re.compile(r"/v1beta1/(indicative|opra)")

MSGPACK_ONLY_ERROR = 412
MSGPACK_ONLY_TEXT = "option messages are only available in MsgPack format"
"""What Alpaca's option stream answers a client that does not ask for MessagePack."""

CHANNELS: Mapping[StreamKind, tuple[str, ...]] = {
    MARKET_DATA: SUBSCRIBABLE_CHANNELS,
    CRYPTO_DATA: ("trades", "quotes", "bars", "updatedBars", "dailyBars", "orderbooks"),
    OPTION_DATA: ("trades", "quotes"),
    NEWS: ("news",),
}
"""The channels a client of each data kind may name in subscribe and unsubscribe."""
KNOWN_CHANNELS = frozenset(channel for channels in CHANNELS.values() for channel in channels)
"""Every data stream's channels: one a stream does not carry gets error 410 there (news on
stocks), any other unknown key error 400."""

OPTION_EXCHANGE = "C"


def route(path: str) -> StreamKind | None:
    """The kind served at ``path`` (crypto, option or news), or None."""
    if _CRYPTO_PATH.fullmatch(path):
        return CRYPTO_DATA
    if _OPTION_PATH.fullmatch(path):
        return OPTION_DATA
    return NEWS if path == NEWS_PATH else None


def ack(kind: StreamKind, subscription: Mapping[str, Iterable[str]]) -> Message:
    """The ``subscription`` message of a ``kind`` connection: each of its channels with the
    sorted symbols subscribed (stock market data: as :func:`messages.subscription_ack`)."""
    if kind == MARKET_DATA:
        return subscription_ack(subscription)
    message: Message = {"T": "subscription"}
    for channel in CHANNELS[kind]:
        message[channel] = sorted(subscription.get(channel, ()))
    return message


def crypto_quote(symbol: str, *, bid_price: float, ask_price: float, bid_size: float,
                 ask_size: float, timestamp: datetime) -> Message:
    """A crypto quote (``T`` = ``q``); sizes fractional."""
    return {"T": "q", "S": symbol, "bp": bid_price, "bs": bid_size, "ap": ask_price,
            "as": ask_size, "t": wire_time(timestamp)}


def crypto_trade(symbol: str, *, price: float, size: float, trade_id: int,
                 timestamp: datetime, taker_side: str = "B") -> Message:
    """A crypto trade (``T`` = ``t``) with its id and taker side (``B`` buy, ``S`` sell)."""
    return {"T": "t", "S": symbol, "p": price, "s": size, "i": trade_id, "tks": taker_side,
            "t": wire_time(timestamp)}


def option_quote(symbol: str, *, bid_price: float, ask_price: float, bid_size: int,
                 ask_size: int, timestamp: datetime) -> Message:
    """An option quote (``T`` = ``q``) of an OCC contract symbol."""
    return {"T": "q", "S": symbol, "bx": OPTION_EXCHANGE, "bp": bid_price, "bs": bid_size,
            "ax": OPTION_EXCHANGE, "ap": ask_price, "as": ask_size, "c": "A",
            "t": wire_time(timestamp)}


def option_trade(symbol: str, *, price: float, size: int, timestamp: datetime) -> Message:
    """An option trade (``T`` = ``t``) of an OCC contract symbol."""
    return {"T": "t", "S": symbol, "p": price, "s": size, "x": OPTION_EXCHANGE, "c": "I",
            "t": wire_time(timestamp)}


def news(article_id: int, *, headline: str, symbols: Sequence[str], created_at: datetime,
         summary: str = "", author: str = "", source: str = "benzinga", url: str = "",
         content: str = "") -> Message:
    """A news article (``T`` = ``n``), created and updated at ``created_at``."""
    stamp = wire_time(created_at)
    return {"T": "n", "id": article_id, "headline": headline, "summary": summary,
            "author": author, "created_at": stamp, "updated_at": stamp, "url": url,
            "content": content, "symbols": list(symbols), "source": source}
