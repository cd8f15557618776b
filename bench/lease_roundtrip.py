"""Benchmark: lease acquire + release on a running connection, against its floor.

The manager side: a sync ``ConnectionManager`` with the in-memory transport and the in-memory
audit sink; one lease keeps the connection running, then each sample is
``manager.market_data(creds, symbols=["AAPL"]).release()``: two audited transitions that only
count a lease in and out, which the manager records and commits on the caller's thread (no
hop to the engine thread). The same through an ``AsyncConnectionManager`` on a loop of the
caller's (``await manager.market_data(...)``, ``await lease.release()``). The floor, measured in
the same run and the same way: the two bare python-statemachine sends the design imposes
(``acquire``, ``release``) on an instance of the same loaded spec class, with the lifecycle's
model, sitting in ``running`` with one reference. A reference beside them: the two round trips
from the caller's thread to an event-loop thread and back (``run_coroutine_threadsafe`` of a
no-op coroutine, bare asyncio) that the same operations would cost on top if they went through
the engine loop, as an acquire that changes the wire does. Sides alternate in rounds so that
drift in machine load hits them alike. Prints JSON.

    python bench/lease_roundtrip.py [--iterations N] [--rounds R] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import statistics
import threading
import time
from typing import Any

import streamwarden as sw
from streamwarden.testing import InMemoryAuditSink, InMemoryTransportFactory

GOAL_RATIO_P50 = 1.5
CREDS = sw.Credentials("PKBENCHACCOUNT000001", "bench-secret-value")


def percentiles(samples_ns: list[int]) -> dict[str, float]:
    ordered = sorted(samples_ns)
    return {
        "n": len(ordered),
        "p50_us": round(ordered[len(ordered) // 2] / 1000, 2),
        "p90_us": round(ordered[int(len(ordered) * 0.9)] / 1000, 2),
        "p99_us": round(ordered[int(len(ordered) * 0.99)] / 1000, 2),
        "mean_us": round(statistics.fmean(ordered) / 1000, 2),
    }


def manager_samples(manager: sw.ConnectionManager, iterations: int) -> list[int]:
    samples = []
    clock = time.perf_counter_ns
    for _ in range(iterations):
        started = clock()
        manager.market_data(CREDS, symbols=["AAPL"]).release()
        samples.append(clock() - started)
    return samples


async def _async_samples(manager: sw.AsyncConnectionManager, iterations: int) -> list[int]:
    samples = []
    clock = time.perf_counter_ns
    for _ in range(iterations):
        started = clock()
        lease = await manager.market_data(CREDS, symbols=["AAPL"])
        await lease.release()
        samples.append(clock() - started)
    return samples


def make_machine() -> Any:
    """An instance of the loaded spec's class, with the lifecycle's model, running, refs=1."""
    # The floor uses the statemachine layer directly by nature: the same class and model the
    # lifecycle core uses.
    from streamwarden.machine.lifecycle import LifecycleModel  # noqa: PLC0415
    from streamwarden.machine.spec import default_spec  # noqa: PLC0415

    spec = default_spec()
    model = LifecycleModel(spec.datamodel)
    machine = spec.machine_class(model=model)
    machine.send("acquire")
    machine.send("connected")
    assert model.state == "running" and model.refs == 1, (model.state, model.refs)
    return machine


def floor_samples(machine: Any, iterations: int) -> list[int]:
    samples = []
    clock = time.perf_counter_ns
    send = machine.send
    for _ in range(iterations):
        started = clock()
        send("acquire")
        send("release")
        samples.append(clock() - started)
    return samples


class LoopThread:
    """A bare asyncio loop on a thread of its own: the reference for the two hops to the
    engine thread that a lease operation through the engine loop makes (acquire, release)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


async def _noop() -> None:
    return None


def hop_samples(thread: LoopThread, iterations: int) -> list[int]:
    """Two round trips of a no-op coroutine to the loop thread and back, as the sync facade
    makes them through the engine (``run_coroutine_threadsafe``, then wait for the result)."""
    samples = []
    clock = time.perf_counter_ns
    loop = thread.loop
    for _ in range(iterations):
        started = clock()
        asyncio.run_coroutine_threadsafe(_noop(), loop).result(5)
        asyncio.run_coroutine_threadsafe(_noop(), loop).result(5)
        samples.append(clock() - started)
    return samples


def run(iterations: int, rounds: int) -> dict[str, Any]:
    return asyncio.run(_run(iterations, rounds))


async def _run(iterations: int, rounds: int) -> dict[str, Any]:
    """Both managers and the references, in interleaved rounds (the sync sides block this
    loop while they run, which nothing else needs meanwhile)."""
    manager = sw.ConnectionManager(transport_factory=InMemoryTransportFactory(),
                                   audit=InMemoryAuditSink(capacity=10_000),
                                   settings=sw.Settings())
    async_manager = sw.AsyncConnectionManager(transport_factory=InMemoryTransportFactory(),
                                              audit=InMemoryAuditSink(capacity=10_000),
                                              settings=sw.Settings())
    anchor = manager.market_data(CREDS, symbols=["AAPL"])  # keeps the connection running
    async_anchor = await async_manager.market_data(CREDS, symbols=["AAPL"])
    machine = make_machine()
    hops_thread = LoopThread()
    # Warm-up: caches, the callback pool, the statemachine's dispatch tables.
    manager_samples(manager, min(iterations, 200))
    await _async_samples(async_manager, min(iterations, 200))
    floor_samples(machine, min(iterations, 200))
    hop_samples(hops_thread, min(iterations, 200))
    managed: list[int] = []
    async_managed: list[int] = []
    floor: list[int] = []
    hops: list[int] = []
    per_round = max(1, iterations // rounds)
    gc.collect()
    for _ in range(rounds):
        managed += manager_samples(manager, per_round)
        async_managed += await _async_samples(async_manager, per_round)
        floor += floor_samples(machine, per_round)
        hops += hop_samples(hops_thread, per_round)
    hops_thread.close()
    states = (machine.model.state, machine.model.refs)
    lifecycles = manager.health().lifecycles + (await async_manager.health()).lifecycles
    anchor.release()
    manager.close()
    await async_anchor.release()
    await async_manager.close()
    assert states == ("running", 1), states
    assert [lifecycle.refs for lifecycle in lifecycles] == [1, 1]
    manager_stats = percentiles(managed)
    async_stats = percentiles(async_managed)
    floor_stats = percentiles(floor)
    floor_p50 = max(floor_stats["p50_us"], 0.01)
    ratio = manager_stats["p50_us"] / floor_p50
    return {
        "manager": manager_stats,
        "async_manager": async_stats,
        "floor_two_statemachine_sends": floor_stats,
        "reference_two_thread_round_trips": percentiles(hops),
        "ratio_p50": round(ratio, 2),
        "async_ratio_p50": round(async_stats["p50_us"] / floor_p50, 2),
        "goal_ratio_p50": GOAL_RATIO_P50,
        "meets_goal": ratio <= GOAL_RATIO_P50,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--iterations", type=int, default=10_000, help="samples per side")
    parser.add_argument("--rounds", type=int, default=10,
                        help="alternations between the two sides")
    parser.add_argument("--quick", action="store_true", help="a smoke run (200 samples)")
    args = parser.parse_args()
    if args.quick:
        args.iterations, args.rounds = 200, 2
    if args.iterations < 1 or args.rounds < 1:
        parser.error("--iterations and --rounds must be at least 1")
    result = run(args.iterations, args.rounds)
    print(json.dumps({
        "benchmark": "lease_roundtrip",
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpu_count": os.cpu_count(), "loadavg_1min": round(os.getloadavg()[0], 2),
                    "streamwarden": sw.__version__},
        "parameters": vars(args),
        **result,
        "note": "manager: market_data(creds, symbols=['AAPL']).release() on a running "
                "connection (sync ConnectionManager, in-memory transport, in-memory sink); "
                "async_manager: the same awaited on an AsyncConnectionManager. "
                "floor: machine.send('acquire'); machine.send('release') on an instance of "
                "default_spec().machine_class with a LifecycleModel, in running with refs=1. "
                "Interleaved rounds; microseconds.",
    }, indent=2))


if __name__ == "__main__":
    main()
