"""Fan-out: one connection's wire subscription and the routing of its messages to leases.

The wire carries the union of the live leases' subscriptions, counted per (channel, symbol): a
pair is subscribed when the first lease wants it and unsubscribed when the last one lets go
(invariant INV6). Each message, parsed once by the transport, is routed to the leases that
subscribed its (channel, symbol); trade updates go to every lease of the connection. The latest
quote and trade of each subscribed symbol are kept for :meth:`Lease.latest_quote`.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Collection

from streamwarden.machine.leases import Lease
from streamwarden.machine.market_data import TRADE_UPDATES_CHANNEL, MarketData, Subscription
from streamwarden.machine.transport import StreamMessage, Transport

_KEPT_CHANNELS = frozenset({"quotes", "trades"})


class FanOut:
    """Subscription counts, subscribers and latest values of one connection.

    Not thread-safe: every method must be called with the manager's lock held.
    """

    def __init__(self, transport: Transport) -> None:
        self._transport = transport
        self._counts: Counter[Subscription] = Counter()
        self._subscribers: defaultdict[Subscription, dict[str, Lease]] = defaultdict(dict)
        self._leases: dict[str, Lease] = {}
        self._latest: dict[Subscription, MarketData] = {}

    def add(self, lease: Lease, subscriptions: Collection[Subscription]) -> None:
        """Route ``subscriptions`` to ``lease``; subscribe the pairs nobody wanted yet."""
        self._leases[lease.lease_id] = lease
        first = []
        for pair in sorted(subscriptions):
            self._subscribers[pair][lease.lease_id] = lease
            self._counts[pair] += 1
            if self._counts[pair] == 1:
                first.append(pair)
        if first:
            self._transport.subscribe(first)

    def remove(self, lease: Lease, subscriptions: Collection[Subscription]) -> None:
        """Stop routing ``subscriptions`` to ``lease``; unsubscribe the pairs nobody wants now."""
        last = []
        for pair in sorted(subscriptions):
            if self._subscribers[pair].pop(lease.lease_id, None) is None:
                continue
            self._counts[pair] -= 1
            if self._counts[pair] == 0:
                del self._counts[pair], self._subscribers[pair]
                self._latest.pop(pair, None)
                last.append(pair)
        if last:
            self._transport.unsubscribe(last)

    def drop(self, lease: Lease) -> None:
        """Forget ``lease`` entirely (released or revoked)."""
        self.remove(lease, lease.subscriptions)
        self._leases.pop(lease.lease_id, None)

    def route(self, message: StreamMessage) -> list[Lease]:
        """The leases ``message`` goes to; remembers it if it is the latest quote or trade."""
        if message.channel == TRADE_UPDATES_CHANNEL:
            return list(self._leases.values())
        pair = (message.channel, message.symbol or "")
        subscribers = self._subscribers.get(pair)
        if not subscribers:
            return []
        if message.channel in _KEPT_CHANNELS:
            self._latest[pair] = message.payload
        return list(subscribers.values())

    def latest(self, pair: Subscription) -> MarketData | None:
        """The latest message of ``pair`` (quotes and trades only), or None."""
        return self._latest.get(pair)
