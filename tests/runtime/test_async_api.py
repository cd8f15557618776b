"""The asyncio API inside a running event loop, over the real alpaca-py SDK and the simulator.

Each test runs its scenario with ``asyncio.run``: the caller's loop is the test's own. Calls into
the simulator (which block until its thread has sent the message) go through
``asyncio.to_thread`` so that the test itself never blocks the loop it measures.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import pytest

import streamwarden as sw
from streamwarden.simulator import Simulator

BOUND = 5.0
"""Generous bound for behaviour that normally takes milliseconds."""
TICK = 0.010
"""The ticker's period: a task on the caller's loop that should wake every 10 ms."""
MAX_LATENESS = 0.020
"""The issue's claim: the caller's loop is never blocked for more than 20 ms."""
ROUNDS = 3
"""Workload rounds under the ticker (each: connect, two market-data leases and a trade-updates
lease, 20 quotes, a fill, releases, disconnect)."""

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(port=0) as simulator:
        yield simulator


@pytest.fixture
def sim_settings(sim: Simulator) -> sw.Settings:
    return sw.Settings(market_data_url=sim.market_data_url,
                       trade_updates_url=sim.trade_updates_url,
                       start_timeout=3.0, stop_timeout=1.0, debug=True)


async def _next(iterator: AsyncIterator[Any]) -> Any:
    async with asyncio.timeout(BOUND):
        return await anext(iterator)


def test_two_leases_share_one_socket_and_async_for_delivers(sim, sim_settings, creds, sink):
    async def scenario() -> None:
        async with sw.AsyncConnectionManager(audit=sink, settings=sim_settings) as manager:
            async with manager.market_data(creds, symbols=["AAPL"], owner="a") as feed:
                assert isinstance(feed, sw.AsyncMarketDataLease)
                other = await manager.market_data(creds, symbols=["AAPL", "MSFT"], owner="b")
                assert isinstance(other, sw.AsyncMarketDataLease)
                assert other.lifecycle_id == feed.lifecycle_id
                stats = await asyncio.to_thread(sim.stats)
                assert (stats.kinds["market_data"].opened, stats.kinds["market_data"].open) == (
                    1, 1)
                # Acquire returned once the wire carried the lease's pairs: nothing is lost.
                assert stats.wire_subscription("quotes") == {"AAPL", "MSFT"}
                await asyncio.to_thread(sim.publish_quote, "AAPL", bid_price="187.10",
                                        ask_price="187.12")
                await asyncio.to_thread(sim.publish_quote, "MSFT", bid_price="410.07",
                                        ask_price="410.10")
                received: list[sw.Quote] = []
                async with asyncio.timeout(BOUND):
                    async for quote in feed.quotes():
                        received.append(quote)
                        break
                assert [(q.symbol, q.bid_price) for q in received] == [
                    ("AAPL", Decimal("187.10"))]
                theirs = other.quotes(timeout=BOUND)
                assert {(await _next(theirs)).symbol, (await _next(theirs)).symbol} == {
                    "AAPL", "MSFT"}
                quote = await feed.wait_for_quote("AAPL", timeout=BOUND)
                assert quote.ask_price == Decimal("187.12")
                assert (await other.wait_for_quote("MSFT")).bid_price == Decimal("410.07")
                health = await manager.health()
                (lifecycle,) = health.lifecycles
                assert (lifecycle.state, lifecycle.refs) == ("running", 2)
                assert {lease.owner for lease in lifecycle.leases} == {"a", "b"}
                assert all(lease.queue_depth == 0 for lease in lifecycle.leases)
                await other.release()
                assert other.status is sw.LeaseStatus.RELEASED
            assert feed.status is sw.LeaseStatus.RELEASED  # the async with block released it
            stats = await asyncio.to_thread(sim.stats)
            assert stats.kinds["market_data"].opened == 1

    asyncio.run(scenario())
    assert [r.event for r in sink.records() if r.event in ("acquire", "release")] == [
        "acquire", "acquire", "release", "release"]


def test_async_for_over_trade_updates_delivers_a_fill(sim, sim_settings, creds, sink):
    async def scenario() -> None:
        async with sw.AsyncConnectionManager(audit=sink, settings=sim_settings) as manager, \
                manager.trade_updates(creds, owner="executor") as orders:
            assert isinstance(orders, sw.AsyncTradeUpdatesLease)
            await asyncio.to_thread(sim.publish_trade_update, "fill", symbol="AAPL",
                                    price="187.1", qty=5)
            async with asyncio.timeout(BOUND):
                async for update in orders.updates():  # noqa: B007 (the first one)
                    break
            assert type(update).__name__ == "TradeUpdate"
            assert (str(update.event), update.order.symbol) in {("fill", "AAPL"),
                                                                ("TradeEvent.FILL", "AAPL")}
            assert Decimal(str(update.qty)) == 5
            (lifecycle,) = (await manager.health()).lifecycles
            assert (lifecycle.kind, lifecycle.messages) == ("trade_updates", 1)

    asyncio.run(scenario())


def test_a_wait_times_out_typed_and_iteration_ends_with_the_lease(sim, sim_settings, creds,
                                                                  sink):
    async def scenario() -> None:
        async with sw.AsyncConnectionManager(audit=sink, settings=sim_settings) as manager:
            feed = await manager.market_data(creds, symbols=["AAPL"])
            with pytest.raises(sw.WaitTimeoutError):
                await feed.wait_for_quote("AAPL", timeout=0.05)
            with pytest.raises(sw.WaitTimeoutError):
                await anext(feed.quotes(timeout=0.05))

            async def consume() -> list[sw.Quote]:
                return [quote async for quote in feed.quotes()]

            consumer = asyncio.create_task(consume())
            await asyncio.to_thread(sim.publish_quote, "AAPL", bid_price="1.5",
                                    ask_price="1.6")
            await feed.wait_for_quote("AAPL", timeout=BOUND)
            await feed.release()
            async with asyncio.timeout(BOUND):
                consumed = await consumer  # the iteration ended with the release
            assert [q.bid_price for q in consumed] in ([Decimal("1.5")], [])

    asyncio.run(scenario())


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


async def _ticker(stop: asyncio.Event, lateness: list[float]) -> None:
    """Wake every TICK seconds; record how late each wake-up was."""
    while not stop.is_set():
        due = time.perf_counter() + TICK
        await asyncio.sleep(TICK)
        lateness.append(time.perf_counter() - due)


def _publish_pair(sim: Simulator, price: str) -> None:
    for symbol in ("AAPL", "MSFT"):
        sim.publish_quote(symbol, bid_price=price, ask_price=price)


async def _workload(manager: sw.AsyncConnectionManager, sim: Simulator,
                    creds: sw.Credentials) -> int:
    """Acquire, stream and release, several times over; returns the quotes consumed."""
    consumed = 0
    for round_ in range(5):
        async with manager.market_data(creds, symbols=["AAPL"], owner="first") as feed:
            second = await manager.market_data(creds, symbols=["AAPL", "MSFT"], owner="second")
            orders = await manager.trade_updates(creds, owner="executor")
            for index in range(10):
                price = f"{100 + round_}.{index:02d}"
                await asyncio.to_thread(_publish_pair, sim, price)
                async with asyncio.timeout(BOUND):
                    async for quote in feed.quotes():
                        consumed += 1
                        if quote.bid_price == Decimal(price):
                            break
            assert (await second.wait_for_quote("MSFT", timeout=BOUND)).symbol == "MSFT"
            await asyncio.to_thread(sim.publish_trade_update, "fill", symbol="AAPL",
                                    price="100", qty=1)
            async with asyncio.timeout(BOUND):
                async for _update in orders.updates():
                    break
            await manager.health()
            await orders.release()
            await second.release()
        # The last release stops the sockets: wait for it, so every round connects afresh.
        async with asyncio.timeout(BOUND):
            while (await manager.health()).lifecycles:
                await asyncio.sleep(TICK)
    return consumed


def test_the_callers_loop_is_never_blocked_while_leases_come_and_go(  # noqa: PLR0917
        sim, sim_settings, creds, sink, record_property, capsys):
    async def scenario() -> tuple[list[float], list[float], int]:
        idle: list[float] = []
        busy: list[float] = []
        async with sw.AsyncConnectionManager(audit=sink, settings=sim_settings) as manager:
            # The machine's own noise, for the report: the same ticker with nothing to do.
            stop = asyncio.Event()
            ticker = asyncio.create_task(_ticker(stop, idle))
            await asyncio.sleep(100 * TICK)
            stop.set()
            await ticker
            stop = asyncio.Event()
            ticker = asyncio.create_task(_ticker(stop, busy))
            try:
                consumed = 0
                for _ in range(ROUNDS):
                    consumed += await _workload(manager, sim, creds)
            finally:
                stop.set()
                await ticker
        return idle, busy, consumed

    # A full collection of this test process's heap (pytest, alpaca-py, pydantic, the simulator)
    # stops every thread for 70-270 ms on the reference machine, whoever allocates: that is
    # CPython's, not the runtime's. Frozen, the collector scans only what the run allocates.
    gc.collect()
    gc.freeze()
    try:
        idle, lateness, consumed = asyncio.run(scenario())
    finally:
        gc.unfreeze()
    assert consumed >= 50 * ROUNDS and len(lateness) > 100
    worst = max(lateness)
    figures = {"ticks": len(lateness), "max_ms": _ms(worst),
               "p99_ms": _ms(statistics.quantiles(lateness, n=100)[98]),
               "median_ms": _ms(statistics.median(lateness)),
               "idle_max_ms": _ms(max(idle)),
               "idle_p99_ms": _ms(statistics.quantiles(idle, n=100)[98])}
    for name, value in figures.items():
        record_property(name, value)
    with capsys.disabled():
        print(f"\ncaller's loop lateness over a {TICK * 1000:.0f} ms ticker: {figures}")
    sim_stats = sim.stats()
    # One socket per round, shared by the round's two market-data leases.
    assert sim_stats.kinds["market_data"].opened == 5 * ROUNDS
    assert worst < MAX_LATENESS, figures
