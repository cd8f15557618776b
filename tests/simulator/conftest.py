"""Fixtures for the simulator tests: a running simulator, and alpaca-py streams run in threads.

The SDK's own ``stop()`` only takes effect when its receive loop wakes (every 5 s on an idle
socket); :class:`SdkRunner` stops it promptly by dropping its connection server-side right after.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from alpaca.data.live.stock import StockDataStream
from alpaca.trading.stream import TradingStream

from streamwarden.simulator import MARKET_DATA, TRADE_UPDATES, Simulator, StreamKind
from streamwarden.simulator._control import is_loopback

KEY_ID = "PKSIMCANARYKEY000001"
SECRET = "sk-SIMULATOR-CANARY-5e4d3c2b1a09-SECRET"
BOUND = 5.0
"""Generous bound for behaviour that normally takes milliseconds."""


def simulator_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("streamwarden-simulator")]


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(reaper_window=0) as simulator:
        yield simulator
    assert simulator_threads() == []


class Received:
    """What an SDK handler received, with a wait that wakes on every message."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._changed = threading.Condition()

    async def handle(self, item: Any) -> None:
        with self._changed:
            self.items.append(item)
            self._changed.notify_all()

    def wait(self, count: int, timeout: float = BOUND) -> list[Any]:
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.items) >= count, timeout):
                raise AssertionError(f"received {len(self.items)} of {count} within {timeout} s")
            return list(self.items)

    def first(self, predicate: Callable[[Any], bool], timeout: float = BOUND) -> Any:
        """The first item received for which ``predicate`` holds, waiting for it."""
        with self._changed:
            found = self._changed.wait_for(
                lambda: next((item for item in self.items if predicate(item)), None), timeout)
        if found is None:
            raise AssertionError(f"nothing matching among {len(self.items)} received within "
                                 f"{timeout} s")
        return found


class LogWatch(logging.Handler):
    """Collects alpaca-py's log lines and waits for one containing a text."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self._changed = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        with self._changed:
            self.lines.append(record.getMessage())
            self._changed.notify_all()

    def wait(self, text: str, timeout: float = BOUND) -> str:
        with self._changed:
            found = self._changed.wait_for(
                lambda: next((line for line in self.lines if text in line), None), timeout)
        if found is None:
            raise AssertionError(f"no SDK log line with {text!r} within {timeout} s")
        return found


@pytest.fixture
def sdk_log() -> Iterator[LogWatch]:
    watch, logger = LogWatch(), logging.getLogger("alpaca")
    previous = logger.level
    logger.addHandler(watch)
    logger.setLevel(logging.DEBUG)
    yield watch
    logger.removeHandler(watch)
    logger.setLevel(previous)


class SdkRunner:
    """Runs alpaca-py streams in named threads and stops them within a bound."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self._running: list[tuple[Any, StreamKind, threading.Thread]] = []

    def market_data(self, *, raw_data: bool = False, feed: str = "iex",
                    key_id: str = KEY_ID) -> StockDataStream:
        """A market-data stream; one per ``key_id`` at a time (the simulator refuses a second
        socket of one account on one endpoint with 406, as Alpaca does)."""
        return StockDataStream(key_id, SECRET, raw_data=raw_data,
                               url_override=self.sim.feed_url(feed))

    def trading(self, *, raw_data: bool = False) -> TradingStream:
        return TradingStream(KEY_ID, SECRET, paper=True, raw_data=raw_data,
                             url_override=self.sim.trade_updates_url)

    def run(self, stream: Any) -> threading.Thread:
        kind = TRADE_UPDATES if isinstance(stream, TradingStream) else MARKET_DATA
        thread = threading.Thread(target=stream.run, name=f"test-sdk-{kind}", daemon=True)
        thread.start()
        self._running.append((stream, kind, thread))
        return thread

    def stop(self, stream: Any, timeout: float = BOUND) -> None:
        """Stop ``stream`` and join its thread (the SDK's loop must have started)."""
        entry = next(e for e in self._running if e[0] is stream)
        self._running.remove(entry)
        _, kind, thread = entry
        if stream._loop is not None and thread.is_alive():
            stopper = threading.Thread(target=stream.stop, name="test-sdk-stopper", daemon=True)
            stopper.start()
            stopper.join(timeout)
            if self.sim.stats().open_connections(kind):
                self.sim.drop_connections(kind)
        thread.join(timeout)
        assert not thread.is_alive(), f"SDK {kind} thread still running after {timeout} s"

    def stop_all(self) -> None:
        for stream, _, _ in list(self._running):
            self.stop(stream)


@pytest.fixture
def sdk(sim: Simulator) -> Iterator[SdkRunner]:
    runner = SdkRunner(sim)
    yield runner
    runner.stop_all()


def wait_connected(sim: Simulator, kind: StreamKind, count: int = 1,
                   channel: str | None = None) -> None:
    """Wait until ``count`` connections of ``kind`` are authenticated (and subscribed)."""

    def ready(stats: Any) -> bool:
        connections = [c for c in stats.open_connections(kind) if c.authenticated]
        if channel is not None:
            connections = [c for c in connections if c.symbols(channel)]
        return len(connections) >= count

    sim.wait_for(ready, BOUND)


def non_loopback_address() -> str | None:
    """An IPv4 address of this machine that is not loopback, or None (no such interface)."""
    for probe in ("192.0.2.1", "10.255.255.255", "198.51.100.1"):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            try:
                udp.connect((probe, 9))  # sends nothing: it only picks the route's address
            except OSError:
                continue
            address = str(udp.getsockname()[0])
        if not is_loopback((address, 0)):
            return address
    return None
