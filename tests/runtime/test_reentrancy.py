"""Calling the API from inside a callback (issue 9, point 7), over alpaca-py and the simulator.

Each call either works or raises a ``StreamwardenError`` subclass at once; none may wait on
itself until a timeout. The timeouts involved (``stop_timeout``, the wait's own timeout) are
4 s, so a self-deadlock shows as a call that takes about 4 s instead of returning within 2 s.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

import streamwarden as sw
from streamwarden.simulator import Simulator
from tests.runtime.conftest import BOUND, account, open_market_data, sim_settings
from tests.waiting import wait_until

PROMPT = 2.0
"""Seconds a call made from a callback may take: generous, and well below the timeouts."""
TIMEOUT = 4.0


class InCallback:
    """A quote callback that makes one call with its lease (on its first quote) and records
    how it went. Set ``lease`` once acquired."""

    def __init__(self, call: Callable[[sw.MarketDataLease], object]) -> None:
        self._call = call
        self.lease: sw.MarketDataLease | None = None
        self._claimed = threading.Lock()
        self.done = threading.Event()
        self.result: object = None
        self.error: BaseException | None = None
        self.took = 0.0

    def __call__(self, quote: sw.Quote) -> None:
        if self.lease is None or not self._claimed.acquire(blocking=False):
            return
        started = time.perf_counter()
        try:
            self.result = self._call(self.lease)
        except BaseException as exc:
            self.error = exc
        finally:
            self.took = time.perf_counter() - started
            self.done.set()

    def check(self) -> None:
        """Assert that the call returned, or raised a StreamwardenError, within PROMPT."""
        assert self.done.wait(TIMEOUT + BOUND), "the call from the callback never returned"
        outcome = repr(self.error) if self.error is not None else f"returned {self.result!r}"
        assert self.took <= PROMPT, f"the call took {self.took:.2f} s and {outcome}"
        assert self.error is None or isinstance(self.error, sw.StreamwardenError), outcome


def publish(sim: Simulator, symbol: str = "AAPL") -> None:
    sim.publish_quote(symbol, bid_price="100.00", ask_price="100.02")


@pytest.fixture
def settings(sim: Simulator) -> sw.Settings:
    return sim_settings(sim, stop_timeout=TIMEOUT)


@pytest.mark.timeout(60)
def test_release_from_a_callback(sim: Simulator, settings: sw.Settings) -> None:
    creds = account(1)
    with sw.ConnectionManager(settings=settings) as manager:
        callback = InCallback(sw.MarketDataLease.release)
        callback.lease = lease = manager.market_data(creds, symbols=["AAPL"], on_quote=callback)
        publish(sim)
        callback.check()
        if callback.error is None:  # it worked: the last lease is gone, and so is the socket
            assert not lease.is_live
            assert wait_until(lambda: not manager.health().lifecycles, BOUND)
            assert wait_until(lambda: open_market_data(sim.stats(), creds) == 0, BOUND)


@pytest.mark.timeout(60)
def test_close_from_a_callback(sim: Simulator, settings: sw.Settings) -> None:
    creds = account(1)
    manager = sw.ConnectionManager(settings=settings)
    callback = InCallback(lambda lease: manager.close())
    try:
        callback.lease = manager.market_data(creds, symbols=["AAPL"], on_quote=callback)
        publish(sim)
        callback.check()
        if callback.error is None:  # it worked: the manager is closed and the socket too
            assert manager.health().closed
            assert wait_until(lambda: open_market_data(sim.stats(), creds) == 0, BOUND)
    finally:
        callback.done.wait(TIMEOUT + BOUND)
        manager.close()


@pytest.mark.timeout(60)
def test_wait_for_quote_from_a_callback(sim: Simulator, settings: sw.Settings) -> None:
    creds = account(1)
    with sw.ConnectionManager(settings=settings) as manager:
        callback = InCallback(lambda lease: lease.wait_for_quote("MSFT", timeout=TIMEOUT))
        callback.lease = manager.market_data(creds, symbols=["AAPL", "MSFT"],
                                             on_quote=callback)
        publish(sim, "AAPL")  # the callback now waits for MSFT's first quote...
        time.sleep(0.1)
        publish(sim, "MSFT")  # ...which is on its way
        callback.check()
        if callback.error is None:
            assert isinstance(callback.result, sw.Quote)
            assert callback.result.symbol == "MSFT"


@pytest.mark.timeout(60)
def test_subscribe_from_a_callback(sim: Simulator, settings: sw.Settings) -> None:
    creds = account(1)
    msft = threading.Event()
    with sw.ConnectionManager(settings=settings) as manager:
        callback = InCallback(lambda lease: lease.subscribe_quotes("MSFT"))

        def on_quote(quote: sw.Quote) -> None:
            if quote.symbol == "MSFT":
                msft.set()
            else:
                callback(quote)

        callback.lease = manager.market_data(creds, symbols=["AAPL"], on_quote=on_quote)
        publish(sim, "AAPL")
        callback.check()
        if callback.error is None:  # it worked: MSFT's quotes come to the lease
            sim.wait_for(lambda stats: "MSFT" in stats.wire_subscription("quotes"), BOUND)
            publish(sim, "MSFT")
            assert msft.wait(BOUND)
