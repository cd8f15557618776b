"""Stream keys: which connections may be shared."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

StreamKind = Literal["market_data", "trade_updates", "crypto_data", "option_data", "news"]
MARKET_DATA: StreamKind = "market_data"
TRADE_UPDATES: StreamKind = "trade_updates"
CRYPTO_DATA: StreamKind = "crypto_data"
OPTION_DATA: StreamKind = "option_data"
NEWS: StreamKind = "news"
#: Every stream kind, in the order they are documented.
STREAM_KINDS: tuple[StreamKind, ...] = (MARKET_DATA, TRADE_UPDATES, CRYPTO_DATA, OPTION_DATA,
                                        NEWS)
#: The kinds whose wire carries (channel, symbol) subscriptions (all but trade updates).
DATA_KINDS: frozenset[StreamKind] = frozenset({MARKET_DATA, CRYPTO_DATA, OPTION_DATA, NEWS})
#: Crypto's location (the one alpaca-py's ``CryptoFeed`` offers: v1beta3 ``us``).
CRYPTO_LOCATION = "us"
#: The option feeds Alpaca serves (MessagePack only).
OPTION_FEEDS: tuple[str, ...] = ("indicative", "opra")


@dataclass(frozen=True)
class StreamKey:
    """(account fingerprint, kind, paper/live, feed): at most one live connection per key.

    ``feed`` is the stock feed (market data), the crypto location (``us``), the option feed
    (``indicative`` or ``opra``), and ``None`` for trade updates and news. Immutable and
    hashable.
    """

    fingerprint: str
    kind: StreamKind
    paper: bool
    feed: str | None
