"""The caller's-loop lateness scenario of tests/runtime/test_async_api.py, in a process of its
own, so that what it measures is the runtime and not the test process around it: no coverage
tracer on every line, and a small heap (a full collection of a pytest process's heap stops every
thread for 70-270 ms on the reference machine, whoever allocates: that is CPython's, not the
runtime's; the heap is also frozen before the run, so the collector scans only what it
allocates). Prints the figures as one JSON object.

    python -m tests.runtime.lateness_probe
"""

from __future__ import annotations

import asyncio
import gc
import json
import statistics
import time
from decimal import Decimal

import streamwarden as sw
from streamwarden.simulator import Simulator

BOUND = 5.0
TICK = 0.010
"""The ticker's period: a task on the caller's loop that should wake every 10 ms."""
ROUNDS = 5
"""Workload rounds under the ticker (each: connect, two market-data leases and a trade-updates
lease, 20 quotes, a fill, releases, disconnect)."""


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


async def scenario(sim: Simulator, settings: sw.Settings,
                   creds: sw.Credentials) -> tuple[list[float], list[float], int]:
    """The ticker alone (the machine's own noise), then the ticker under the workload."""
    idle: list[float] = []
    busy: list[float] = []
    async with sw.AsyncConnectionManager(audit=sw.InMemoryAuditSink(),
                                         settings=settings) as manager:
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


def main() -> None:
    with Simulator(port=0, reaper_window=0) as sim:
        settings = sw.Settings(market_data_url=sim.market_data_url,
                               trade_updates_url=sim.trade_updates_url,
                               start_timeout=3.0, stop_timeout=1.0, debug=True)
        creds = sw.Credentials("PKLATENESSPROBE00001", "lateness-probe-secret")
        gc.collect()
        gc.freeze()
        idle, lateness, consumed = asyncio.run(scenario(sim, settings, creds))
        opened = sim.stats().kinds["market_data"].opened
    print(json.dumps({
        "ticks": len(lateness), "consumed": consumed, "market_data_sockets": opened,
        "rounds": ROUNDS, "max_ms": _ms(max(lateness)),
        "p99_ms": _ms(statistics.quantiles(lateness, n=100)[98]),
        "median_ms": _ms(statistics.median(lateness)),
        "idle_max_ms": _ms(max(idle)),
        "idle_p99_ms": _ms(statistics.quantiles(idle, n=100)[98]),
    }))


if __name__ == "__main__":
    main()
