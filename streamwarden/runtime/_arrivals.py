"""Messages that arrived together, grouped for delivery.

A transport hands its supervisor one message at a time, on the engine loop. The supervisor
collects the messages of one turn of the loop (one WebSocket frame, as a rule) and routes them
in groups: :class:`Arrivals` holds the messages of one channel and symbol, in their order,
each stamped with its sequence number (the order across groups) and its arrival time. Routing
and queueing then cost once per group and lease rather than once per message and lease, and a
conflating queue keeps a group's newest quote without looking at the others.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from streamwarden.marketdata import (
    NEWS_CHANNEL,
    TRADE_UPDATES_CHANNEL,
    TradeCancel,
    TradeCorrection,
)
from streamwarden.transports._contract import StreamMessage

#: What the trades channel delivers beside trades: never a lease's latest trade.
_NOT_TRADES = frozenset({TradeCorrection, TradeCancel})
#: Channels whose routing depends on the message itself, not on its channel and symbol.
_ROUTED_ALONE = frozenset({TRADE_UPDATES_CHANNEL, NEWS_CHANNEL})

Entry = tuple[int, float, Any]
"""One message in a queue: (sequence number, arrival time, payload)."""


@dataclass(frozen=True, slots=True)
class Arrivals:
    """Messages of one channel and symbol that arrived together, oldest first.

    ``entries`` are shared by every lease the group goes to (they are immutable);
    ``newest_trade`` is, on the trades channel, the newest payload that is a trade (not a
    correction or a cancel), else None.
    """

    channel: str
    symbol: str | None
    entries: tuple[Entry, ...]
    newest_trade: Any = None

    @property
    def newest(self) -> Any:
        """The newest payload of the group."""
        return self.entries[-1][2]


def group(messages: Sequence[StreamMessage], sequence: Iterator[int],
          now: float) -> list[tuple[StreamMessage, Arrivals]]:
    """Group ``messages`` by channel and symbol (trade updates and news articles: each alone),
    in the order of each group's first message; each with that first message, which decides
    where the group goes. ``sequence`` numbers the messages in their order; ``now`` is their
    arrival time.

    >>> import itertools
    >>> messages = [StreamMessage("quotes", "A", 1), StreamMessage("trades", "A", 2),
    ...             StreamMessage("quotes", "A", 3)]
    >>> [(g.channel, g.entries) for _, g in group(messages, itertools.count(), 5.0)]
    [('quotes', ((0, 5.0, 1), (2, 5.0, 3))), ('trades', ((1, 5.0, 2),))]
    """
    groups: dict[object, tuple[StreamMessage, list[Entry]]] = {}
    for message in messages:
        channel = message.channel
        key: object = id(message) if channel in _ROUTED_ALONE else (channel, message.symbol)
        found = groups.get(key)
        if found is None:
            found = groups[key] = (message, [])
        found[1].append((next(sequence), now, message.payload))
    return [(first, Arrivals(first.channel, first.symbol, tuple(entries),
                             _newest_trade(entries) if first.channel == "trades" else None))
            for first, entries in groups.values()]


def _newest_trade(entries: list[Entry]) -> Any:
    for entry in reversed(entries):
        if type(entry[2]) not in _NOT_TRADES:
            return entry[2]
    return None
