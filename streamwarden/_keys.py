"""Stream keys: which connections may be shared."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

StreamKind = Literal["market_data", "trade_updates"]
MARKET_DATA: StreamKind = "market_data"
TRADE_UPDATES: StreamKind = "trade_updates"


@dataclass(frozen=True)
class StreamKey:
    """(account fingerprint, kind, paper/live, feed): at most one live connection per key.

    ``feed`` is the market-data feed, and ``None`` for trade updates. Immutable and hashable.
    """

    fingerprint: str
    kind: StreamKind
    paper: bool
    feed: str | None
