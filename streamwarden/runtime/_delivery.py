"""Per-lease delivery: a bounded queue per lease, and the worker pool that runs callbacks.

The engine loop puts each group of messages (:class:`~._arrivals.Arrivals`: one channel and
symbol) into the mailbox of every lease that wants it and never waits: a mailbox is bounded,
and its overflow policy decides what a slow consumer loses

* quotes conflate per symbol: a newer quote replaces the queued one (the newest wins), and the
  replaced one is counted as dropped (unless ``conflate_quotes`` is off: then quotes queue
  like trades);
* trades, bars and the other market-data channels keep the newest ``capacity`` messages;
  older ones are dropped and counted;
* trade updates are never dropped: an overflow calls ``on_overflow`` (the lease is revoked).

Consumers take messages either through callbacks, run on a small :class:`CallbackPool` with at
most one call in flight per lease (so each lease sees its messages in order), or by iterating
(:meth:`Mailbox.get` from a thread, :meth:`Mailbox.aget` from any event loop). Callbacks never
run on the engine loop, so a slow or stuck callback delays only its own lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from streamwarden import logging as events
from streamwarden.errors import LeaseRevokedError, StreamwardenError, WaitTimeoutError
from streamwarden.marketdata import TRADE_UPDATES_CHANNEL, Subscription
from streamwarden.runtime._arrivals import Arrivals, Entry
from streamwarden.runtime._stats import CallbackStats, StreamCounters

Waiters = list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]
"""Async readers waiting for a message: each its loop and the future it awaits."""
Callback = Callable[[Any], object]
"""Receives each parsed message of a channel: a Quote, Trade, Bar or alpaca-py's TradeUpdate."""

_BATCH = 64  # callbacks run per turn on a worker before the lease yields to the others


class MailboxClosedError(Exception):
    """The mailbox was closed by a release: iteration ends (internal; never escapes a lease)."""


@dataclass(frozen=True, slots=True)
class MailboxStats:
    """A mailbox at one instant, for health."""

    depth: int
    oldest_age: float | None
    delivered: int
    dropped: int
    callback_errors: int
    callback_running_for: float | None


class Mailbox:
    """One lease's bounded delivery queue.

    Thread-safety: :meth:`put` is called on the engine loop and :meth:`close` by the lease's
    supervisor (on the engine loop, or on a caller's thread); every other method may be called
    from any thread. The internal lock is held only for queue operations,
    never while a callback runs or while waiting.

    Memory: slotted, and the condition variable that blocking readers wait on is made on the
    first such wait, so an idle lease costs little (benchmarks: bench/memory.py).
    """

    __slots__ = ("_async_waiters", "_callback_quotes", "_callbacks", "_capacity", "_closed",
                 "_cond", "_conflate", "_counters", "_error", "_lanes", "_latest_quotes",
                 "_latest_trades", "_lock", "_log", "_on_overflow", "_overflowed", "_pool",
                 "_queues_quotes", "_quotes", "_running_since", "_scheduled",
                 "_sync_waiters", "callback_errors", "delivered", "dropped", "lease_id", "owner")

    def __init__(
        self,
        *,
        lease_id: str,
        owner: str | None,
        capacity: int,
        callbacks: Mapping[str, Callback],
        pool: CallbackPool | None,
        on_overflow: Callable[[Mailbox], None],
        log: structlog.stdlib.BoundLogger,
        counters: StreamCounters,
        conflate_quotes: bool = True,
    ) -> None:
        self.lease_id = lease_id
        self._counters = counters  # its stream key's: drops are counted there too
        self._conflate = conflate_quotes
        self.owner = owner
        self._capacity = capacity
        self._callbacks = dict(callbacks)
        self._pool = pool
        self._on_overflow = on_overflow
        self._log = log
        self._lock = threading.Lock()
        self._cond: threading.Condition | None = None  # over _lock, made by the first waiter
        # Per-put flags, fixed at construction: whether quotes are queued at all, and whether
        # a queued quote is for a callback (so the mailbox must be scheduled on the pool).
        self._queues_quotes = not self._callbacks or "quotes" in self._callbacks
        self._callback_quotes = "quotes" in self._callbacks
        # Queued quotes, one per symbol: [sequence, enqueued at, payload]; a newer quote
        # replaces the payload in place (the entry keeps its place and its age).
        self._quotes: OrderedDict[str, list[Any]] = OrderedDict()
        self._lanes: dict[str, deque[Entry]] = {}
        # The latest payload per symbol, of quotes and of trades (the trades' made on first use).
        self._latest_quotes: dict[str, Any] = {}
        self._latest_trades: dict[str, Any] | None = None
        self._sync_waiters = 0
        self._async_waiters: Waiters = []
        self._scheduled = False
        self._running_since: float | None = None
        self._closed = False
        self._error: StreamwardenError | None = None
        self._overflowed = False
        self.delivered = 0
        self.dropped = 0
        self.callback_errors = 0

    @property
    def uses_callbacks(self) -> bool:
        """Whether messages go to callbacks (else they wait for the iterators)."""
        return bool(self._callbacks)

    # Producer side (engine loop).

    def put(self, arrivals: Arrivals) -> Waiters | None:
        """Queue a group of messages (or keep only the newest quote of its symbol); never
        blocks. Health ages count from the entries' arrival times.

        Returns:
            The async readers to wake, for the caller to pass to :func:`wake` once it has put
            every group of its turn (one wake-up per reader's loop, however many mailboxes),
            or None.
        """
        if arrivals.channel != "quotes" or not self._conflate:
            return self._put_lane(arrivals)
        symbol = arrivals.symbol or ""
        entries = arrivals.entries
        newest = entries[-1][2]
        schedule = False
        waiters = None
        with self._lock:
            if self._closed:
                return None
            self._latest_quotes[symbol] = newest
            if self._queues_quotes:
                queued = self._quotes.get(symbol)
                if queued is not None:  # conflate: the newest wins, and keeps the queued place
                    queued[2] = newest
                    replaced = len(entries)
                else:
                    self._quotes[symbol] = [entries[0][0], entries[0][1], newest]
                    replaced = len(entries) - 1
                if replaced:
                    self.dropped += replaced
                    self._counters.dropped += replaced
                if self._callback_quotes and not self._scheduled:
                    self._scheduled = schedule = True
            if self._sync_waiters or self._async_waiters:
                waiters = self._wake()
        if schedule and self._pool is not None:
            self._pool.submit(self)
        return waiters

    def _put_lane(self, arrivals: Arrivals) -> Waiters | None:
        """:meth:`put` for every channel but conflated quotes: each message is queued."""
        channel = arrivals.channel
        schedule = overflow = False
        with self._lock:
            if self._closed:
                return None
            if channel == "quotes":  # not conflated: queued below, like trades
                self._latest_quotes[arrivals.symbol or ""] = arrivals.newest
            elif arrivals.newest_trade is not None:
                if self._latest_trades is None:
                    self._latest_trades = {}
                self._latest_trades[arrivals.symbol or ""] = arrivals.newest_trade
            if not self._callbacks or channel in self._callbacks:
                overflow = not self._enqueue(channel, arrivals.entries)
                schedule = bool(self._callbacks) and not self._scheduled
                if schedule:
                    self._scheduled = True
            waiters = self._wake()
        if schedule and self._pool is not None:
            self._pool.submit(self)
        if overflow:
            self._on_overflow(self)
        return waiters

    def _enqueue(self, channel: str, entries: tuple[Entry, ...]) -> bool:
        """Append ``entries`` to their lane, the oldest dropped past the capacity; False on a
        trade-update overflow (what fits is queued). Lock held."""
        lane = self._lanes.get(channel)
        if lane is None:
            lane = self._lanes[channel] = deque(
                maxlen=None if channel == TRADE_UPDATES_CHANNEL else self._capacity)
        if lane.maxlen is None:  # trade updates: never dropped
            room = self._capacity - len(lane)
            lane.extend(entries[:max(room, 0)])
            if len(entries) > room:
                self._overflowed = True
                return False
            return True
        before = len(lane)
        lane.extend(entries)
        dropped = before + len(entries) - len(lane)
        if dropped:
            self.dropped += dropped
            self._counters.dropped += dropped
        return True

    def _wake(self) -> Waiters | None:
        """Wake the blocked readers; return the async ones, to :func:`wake` once the lock is
        released (so that a woken reader does not wait for it). Call with the lock held."""
        if self._sync_waiters and self._cond is not None:
            self._cond.notify_all()
        if not self._async_waiters:
            return None
        waiters, self._async_waiters = self._async_waiters, []
        return waiters

    def close(self, error: StreamwardenError | None) -> None:
        """End delivery: released (``error`` None) or revoked (iterators raise ``error``)."""
        with self._lock:
            self._closed = True
            self._error = error
            self._quotes.clear()
            self._lanes.clear()
            waiters = self._wake()
        if waiters:
            wake(waiters)

    def forget(self, pairs: frozenset[Subscription]) -> None:
        """Drop the latest values of ``pairs`` (the lease unsubscribed them)."""
        with self._lock:
            for channel, symbol in pairs:
                latest = self._latest_of(channel)
                if latest is not None:
                    latest.pop(symbol, None)

    # Consumer side.

    def latest(self, pair: Subscription) -> Any:
        """The latest quote or trade of ``pair`` this lease received, or None."""
        latest = self._latest_of(pair[0])
        return None if latest is None else latest.get(pair[1])

    def _latest_of(self, channel: str) -> dict[str, Any] | None:
        """The latest values of ``channel`` by symbol (None: not kept, or none yet)."""
        if channel == "quotes":
            return self._latest_quotes
        return self._latest_trades if channel == "trades" else None

    def get(self, channel: str, timeout: float | None) -> Any:
        """The next message of ``channel``, waiting up to ``timeout`` seconds (None: no bound).

        Raises:
            MailboxClosedError: the lease was released.
            StreamwardenError: the revocation error, if the lease was revoked.
            WaitTimeoutError: nothing arrived in time.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while True:
                found, payload = self._take(channel)
                if found:
                    return payload
                remaining = self._remaining(deadline, channel, timeout)
                self._sync_waiters += 1
                try:
                    self._condition().wait(remaining)
                finally:
                    self._sync_waiters -= 1

    def wait_latest(self, pair: Subscription, timeout: float) -> Any:
        """The latest value of ``pair``, waiting up to ``timeout`` seconds for the first one.

        Raises:
            MailboxClosedError / StreamwardenError / WaitTimeoutError: as :meth:`get`.
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                latest = self.latest(pair)
                if latest is not None:
                    return latest
                remaining = self._remaining(deadline, pair[0], timeout, symbol=pair[1])
                self._sync_waiters += 1
                try:
                    self._condition().wait(remaining)
                finally:
                    self._sync_waiters -= 1

    def poll(self, channel: str) -> tuple[bool, Any]:
        """The next queued message of ``channel`` without waiting: (True, message), or
        (False, None) when none is queued (or the mailbox is closed)."""
        with self._lock:
            return self._take(channel)

    async def aget(self, channel: str, timeout: float | None) -> Any:
        """:meth:`get` for a coroutine on any event loop; never blocks that loop."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            future = self._register(loop, lambda: self._take(channel), deadline, channel,
                                    timeout=timeout)
            if not isinstance(future, asyncio.Future):
                return future[1]
            await self._await(future, deadline, channel, timeout)

    async def await_latest(self, pair: Subscription, timeout: float) -> Any:
        """:meth:`wait_latest` for a coroutine on any event loop."""
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + timeout

        def latest() -> tuple[bool, Any]:
            value = self.latest(pair)
            return value is not None, value

        while True:
            future = self._register(loop, latest, deadline, pair[0], timeout=timeout,
                                    symbol=pair[1])
            if not isinstance(future, asyncio.Future):
                return future[1]
            await self._await(future, deadline, pair[0], timeout, symbol=pair[1])

    def _register(self, loop: asyncio.AbstractEventLoop, probe: Callable[[], tuple[bool, Any]],
                  deadline: float | None, channel: str, *, timeout: float | None,
                  symbol: str | None = None) -> asyncio.Future[None] | tuple[bool, Any]:
        with self._lock:
            found = probe()
            if found[0]:
                return found
            self._remaining(deadline, channel, timeout, symbol=symbol)
            future: asyncio.Future[None] = loop.create_future()
            self._async_waiters.append((loop, future))
            return future

    async def _await(self, future: asyncio.Future[None], deadline: float | None, channel: str,
                     timeout: float | None, symbol: str | None = None) -> None:
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            await asyncio.wait_for(future, remaining)
        except TimeoutError:
            with self._lock:
                self._async_waiters = [w for w in self._async_waiters if w[1] is not future]
            raise _timeout(channel, timeout, symbol) from None

    def _condition(self) -> threading.Condition:
        """The condition blocking readers wait on (made on first use). Call with the lock held."""
        if self._cond is None:
            self._cond = threading.Condition(self._lock)
        return self._cond

    def _remaining(self, deadline: float | None, channel: str, timeout: float | None,
                   symbol: str | None = None) -> float | None:
        """Seconds left to wait; raises when closed or out of time. Call with the lock held."""
        if self._closed:
            error = self._error
            if isinstance(error, LeaseRevokedError):
                raise error.derive()
            if error is not None:
                raise LeaseRevokedError(f"lease {self.lease_id} was revoked: {error.message}",
                                        operation=channel) from error
            raise MailboxClosedError
        if deadline is None:
            return None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _timeout(channel, timeout, symbol)
        return remaining

    def _take(self, channel: str) -> tuple[bool, Any]:
        if channel == "quotes" and self._quotes:
            self.delivered += 1
            return True, self._quotes.popitem(last=False)[1][2]
        lane = self._lanes.get(channel)
        if lane:
            self.delivered += 1
            return True, lane.popleft()[2]
        return False, None

    def _take_oldest(self) -> tuple[str, Any] | None:
        best: str | None = None
        best_seq = -1
        if self._quotes:
            best, best_seq = "quotes", next(iter(self._quotes.values()))[0]
        for channel, lane in self._lanes.items():
            if lane and (best is None or lane[0][0] < best_seq):
                best, best_seq = channel, lane[0][0]
        if best is None:
            return None
        return best, self._take(best)[1]

    # Callbacks (worker threads).

    def run_callbacks(self, stats: CallbackStats) -> bool:
        """Deliver queued messages to the callbacks, one at a time, in order, counting their
        durations and failures in the calling worker's ``stats``.

        Returns:
            True if messages are left (the pool schedules this mailbox again).
        """
        lock, callbacks, clock = self._lock, self._callbacks, time.monotonic
        for _ in range(_BATCH):
            with lock:
                item = None if self._closed else self._take_oldest()
                if item is None:
                    self._scheduled = False
                    return False
                started = self._running_since = clock()
            channel, payload = item
            try:
                callbacks[channel](payload)
            except Exception:
                self._failed(channel, payload, stats)
            finally:
                self._running_since = None
                stats.durations.observe(clock() - started)
        return True

    def _failed(self, channel: str, payload: Any, stats: CallbackStats) -> None:
        stats.errors += 1
        with self._lock:
            self.callback_errors += 1
        self._log.exception(events.CALLBACK_FAILED, lease_id=self.lease_id, owner=self.owner,
                            channel=channel, symbol=getattr(payload, "symbol", None))

    def stats(self) -> MailboxStats:
        """Queue depth, oldest undelivered age, counters."""
        now = time.monotonic()
        with self._lock:
            heads = [lane[0][1] for lane in self._lanes.values() if lane]
            heads += [entry[1] for entry in self._quotes.values()]
            depth = len(self._quotes) + sum(len(lane) for lane in self._lanes.values())
            running = self._running_since
        return MailboxStats(
            depth=depth,
            oldest_age=now - min(heads) if heads else None,
            delivered=self.delivered,
            dropped=self.dropped,
            callback_errors=self.callback_errors,
            callback_running_for=now - running if running is not None else None,
        )


def wake(waiters: Waiters) -> None:
    """Resolve the futures of woken async readers: one call into each reader's loop.

    Thread-safety: any thread.
    """
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for loop, future in waiters:
        by_loop.setdefault(loop, []).append(future)
    for loop, futures in by_loop.items():
        with contextlib.suppress(RuntimeError):  # that loop is closed
            loop.call_soon_threadsafe(_resolve, futures)


def _resolve(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        if not future.done():
            future.set_result(None)


def _timeout(channel: str, timeout: float | None, symbol: str | None) -> WaitTimeoutError:
    what = f"{channel} of {symbol}" if symbol else channel
    return WaitTimeoutError(f"no {what} within {timeout}s", operation="wait")


class CallbackPool:
    """A fixed number of named daemon threads that run lease callbacks.

    Threads start on first use and never grow with leases or connections. A callback that never
    returns holds one worker; the others carry on.

    Thread-safety: every method may be called from any thread.
    """

    def __init__(self, workers: int, name: str) -> None:
        self._size = workers
        self._name = name
        self._queue: queue.SimpleQueue[Mailbox | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._stats: list[CallbackStats] = []
        self._closed = False

    def submit(self, mailbox: Mailbox) -> None:
        """Run ``mailbox``'s callbacks on a worker."""
        if not self._threads:
            self._start()
        self._queue.put(mailbox)

    def _start(self) -> None:
        with self._lock:
            if self._threads or self._closed:
                return
            for index in range(self._size):
                stats = CallbackStats()
                self._stats.append(stats)
                thread = threading.Thread(target=self._work, args=(stats,), daemon=True,
                                          name=f"{self._name}-callback-{index}")
                thread.start()
                self._threads.append(thread)

    def _work(self, stats: CallbackStats) -> None:
        while True:
            mailbox = self._queue.get()
            if mailbox is None:
                return
            if mailbox.run_callbacks(stats):
                self._queue.put(mailbox)

    @property
    def threads(self) -> tuple[threading.Thread, ...]:
        """The worker threads started so far."""
        return tuple(self._threads)

    @property
    def stats(self) -> tuple[CallbackStats, ...]:
        """The figures of each worker started so far (each written by its own worker)."""
        return tuple(self._stats)

    def shutdown(self, timeout: float) -> int:
        """Stop the workers, waiting up to ``timeout`` seconds in all.

        Returns:
            How many workers were still busy (stuck in a callback) and were left behind.
        """
        with self._lock:
            self._closed = True
            threads = list(self._threads)
        for _ in threads:
            self._queue.put(None)
        deadline = time.monotonic() + timeout
        current = threading.current_thread()
        for thread in threads:
            if thread is not current:
                thread.join(max(0.0, deadline - time.monotonic()))
        return sum(1 for thread in threads if thread.is_alive() and thread is not current)
