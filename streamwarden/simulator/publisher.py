"""What the simulator does on its loop for callers: market data and trade updates on their way
to subscribers (single messages, bursts, the quote generator) and dropping connections.

The generator sends, ``rate`` times a second, one quote for every symbol some connection
subscribes quotes for by name (a ``*`` subscriber receives those quotes too, but ``*`` alone does
not make the generator invent symbols). Values come from :class:`QuoteSource`, so a seed
reproduces them.
"""

from __future__ import annotations

import asyncio

from streamwarden.clock import Clock
from streamwarden.simulator.delivery import Batch, Outbox, abort
from streamwarden.simulator.messages import Message, quote
from streamwarden.simulator.orders import TRADE_UPDATES
from streamwarden.simulator.prices import QuoteSource
from streamwarden.simulator.registry import Registry, Session
from streamwarden.simulator.stats import MARKET_DATA, NEWS, StreamKind
from streamwarden.simulator.trading import STREAMS_CHANNEL

CHANNELS = {
    "q": "quotes", "t": "trades", "b": "bars", "u": "updatedBars", "d": "dailyBars",
    "s": "statuses", "l": "lulds",
    "c": "trades", "x": "trades",  # corrections and cancel errors go with a symbol's trades
    "i": "statuses",  # order imbalances: to status subscribers (no channel of their own here)
}
"""Market-data message type to the channel its subscribers are on."""

_BEHIND_LIMIT = 1.0
"""Seconds the generator may fall behind its schedule before it restarts the schedule."""


class Publisher:
    """Sends data messages to the connections that want them, and drops connections.

    Thread-safety: used on the simulator's loop only (the simulator schedules its coroutines
    there from other threads).
    """

    def __init__(self, registry: Registry, outbox: Outbox, seed: int, clock: Clock) -> None:
        self._registry = registry
        self._outbox = outbox
        self._source = QuoteSource(seed)
        self._clock = clock
        self._wake: asyncio.Event | None = None

    def generated_quote(self, symbol: str) -> Message:
        """The next generated quote of ``symbol``, stamped now."""
        values = self._source.next(symbol)
        return quote(
            symbol, bid_price=values.bid_price, ask_price=values.ask_price,
            bid_size=values.bid_size, ask_size=values.ask_size, timestamp=self._clock.now(),
        )

    async def market_data(self, message: Message) -> int:
        """Send one stock quote, trade or bar to its subscribers; returns how many received it."""
        sessions = self._registry.data_subscribers(MARKET_DATA, CHANNELS[message["T"]],
                                                   [message["S"]])
        counts = await self._outbox.publish(sessions, Batch([message]))
        return sum(1 for count in counts if count)

    async def kind_data(self, kind: StreamKind, message: Message) -> int:
        """Send one data message to the ``kind`` connections that want it (a news article to
        those wanting any of its symbols, or ``*``); returns how many received it."""
        if kind == NEWS:
            sessions = self._registry.data_subscribers(NEWS, "news",
                                                       [*message["symbols"], "*"])
        else:
            sessions = self._registry.data_subscribers(kind, CHANNELS[message["T"]],
                                                       [message["S"]])
        counts = await self._outbox.publish(sessions, Batch([message]))
        return sum(1 for count in counts if count)

    async def raw(self, batch: list[Message]) -> int:
        """Send ``batch`` as it is, in one frame, to every connection that subscribes the
        channel and symbol (``T`` and ``S``) of any of its messages; returns how many."""
        sessions: dict[int, Session] = {}
        for message in batch:
            channel, symbol = CHANNELS.get(str(message.get("T"))), message.get("S")
            if channel is not None and isinstance(symbol, str):
                for session in self._registry.subscribers(channel, symbol):
                    sessions.setdefault(id(session), session)
        counts = await self._outbox.publish(list(sessions.values()), Batch(batch))
        return sum(1 for count in counts if count)

    async def trade_update(self, message: Message) -> int:
        """Send one trade update to every listening connection; returns how many received it."""
        sessions = self._registry.subscribers(STREAMS_CHANNEL, TRADE_UPDATES)
        counts = await self._outbox.publish(sessions, Batch([message]))
        return sum(1 for count in counts if count)

    async def quote_burst(self, symbol: str, count: int, batch_size: int,
                          kind: StreamKind = MARKET_DATA) -> int:
        """Send ``count`` generated quotes of ``symbol``, ``batch_size`` per frame, as fast as
        the connections take them; returns the total of messages sent over all connections.

        The quotes are generated frame by frame, and the loop is yielded between frames, so
        that a long burst can be cancelled and does not hold up a stop. A connection that
        takes nothing (closed, dropped, hung) leaves the burst, which ends early when none is
        left; nothing is generated when no connection subscribes ``symbol``'s quotes. Only
        connections of ``kind`` (stock market data by default) receive them.
        """
        sessions = self._registry.data_subscribers(kind, "quotes", [symbol])
        total = 0
        for start in range(0, count, batch_size):
            if not sessions:
                break
            size = min(batch_size, count - start)
            batch = Batch([self.generated_quote(symbol) for _ in range(size)])
            counts = await self._outbox.publish(sessions, batch)
            total += sum(counts)
            sessions = [s for s, sent in zip(sessions, counts, strict=True) if sent]
            await asyncio.sleep(0)
        return total

    async def drop_connections(self, kind: StreamKind) -> int:
        """Abort every open connection of ``kind`` (no close frame); returns how many."""
        dropped = [s for s in self._registry.sessions(kind) if self._registry.mark_dropped(s)]
        for session in dropped:
            abort(session)
        return len(dropped)

    def wake(self) -> None:
        """Make the generator re-read the rate now (call on the loop)."""
        if self._wake is not None:
            self._wake.set()

    async def run_generator(self) -> None:
        """Generate quotes at the registry's rate until cancelled."""
        self._wake = wake = asyncio.Event()
        while True:
            wake.clear()
            rate = self._registry.quote_rate
            if rate <= 0:
                await wake.wait()
            else:
                await self._generate(rate, wake)

    async def _generate(self, rate: float, wake: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        start, ticks = loop.time(), 0
        while not wake.is_set():
            ticks += 1
            delay = start + ticks / rate - loop.time()
            if delay < -_BEHIND_LIMIT:
                start, ticks, delay = loop.time(), 0, 0.0
            try:
                await asyncio.wait_for(wake.wait(), max(0.0, delay))
            except TimeoutError:
                await self._tick()

    async def _tick(self) -> None:
        """Send one generated quote per subscribed symbol."""
        for symbol in self._registry.quote_symbols():
            await self.market_data(self.generated_quote(symbol))
