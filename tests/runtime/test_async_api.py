"""The asyncio API inside a running event loop, over the real alpaca-py SDK and the simulator.

Each test runs its scenario with ``asyncio.run``: the caller's loop is the test's own. Calls into
the simulator (which block until its thread has sent the message) go through
``asyncio.to_thread`` so that the test itself never blocks the loop it measures.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
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
    with Simulator(port=0, reaper_window=0) as simulator:
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


def test_the_callers_loop_is_never_blocked_while_leases_come_and_go(record_property, capsys):
    # Run in a process of its own: see tests/runtime/lateness_probe.py for why.
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("COV_CORE_", "COVERAGE_"))}
    done = subprocess.run([sys.executable, "-m", "tests.runtime.lateness_probe"],
                          capture_output=True, text=True, timeout=120, env=env,
                          cwd=Path(__file__).resolve().parents[2], check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    for name, value in figures.items():
        record_property(name, value)
    with capsys.disabled():
        print(f"\ncaller's loop lateness over a 10 ms ticker: {figures}")
    assert figures["consumed"] >= 50 * figures["rounds"] and figures["ticks"] >= 50
    # One socket per round of the workload, shared by its two market-data leases.
    assert figures["market_data_sockets"] == 5 * figures["rounds"]
    assert figures["max_ms"] < MAX_LATENESS * 1000, figures
