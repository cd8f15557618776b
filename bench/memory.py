"""Benchmark: memory of a long-running manager with the default audit sink, and per idle lease.

(a) Growth: a sync ``ConnectionManager`` built without an ``audit`` argument (so with the
    default bounded in-memory ring) and a transport that publishes quotes on the engine loop.
    One lease with an ``on_quote`` callback holds the connection; then ``--cycles``
    acquire/release cycles and ``--quotes`` quotes delivered to that lease, interleaved in
    ``--rounds`` rounds. RSS (VmRSS of /proc/self/status, after a garbage collection) after the
    first ``--baseline-cycles`` (1,000) cycles and 1,000 quotes is the floor; reported: RSS
    after everything and its growth over the floor, next to the goal (under 5 MiB). Quotes go
    out in chunks over distinct symbols and each chunk is waited for, so none is conflated
    away (drops are counted and reported anyway).
(b) Per idle lease: ``--leases`` leases held on one running connection (one symbol each,
    no callback): the RSS delta per lease; then ``--traced-leases`` leases again under
    tracemalloc: the Python allocations still held per lease (the goal, under 4 KiB, is
    judged on it) and the top allocation sites. Acquiring gets slower as leases pile up on
    one connection (each commit rebuilds its routing), hence the smaller traced count.

Progress goes to stderr, one JSON document to stdout.

    python bench/memory.py [--cycles N] [--quotes N] [--leases N] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import sys
import threading
import time
import tracemalloc
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import streamwarden as sw
from streamwarden.testing import InMemoryTransportFactory

MIB = 1024 * 1024
GOAL_GROWTH_MIB = 5.0
GOAL_PER_LEASE_KIB = 4.0
BASELINE_QUOTES = 1000
CHUNK = 1000
"""Quotes per published chunk, one per distinct symbol (so none conflates)."""
WAIT_SECONDS = 60.0
CREDS = sw.Credentials("PKBENCHMEMORY0000001", "bench-secret-value")
QUOTE_CREDS = sw.Credentials("PKBENCHMEMQUOTES0001", "bench-secret-value")
"""The quote consumer's account: its own connection, so that the 2,000 pairs of its lease do
not weigh on the acquire/release cycles (which rebuild their connection's routing)."""


def progress(message: str) -> None:
    sys.stderr.write(f"[memory bench] {message}\n")
    sys.stderr.flush()


def rss_bytes() -> int:
    """VmRSS of this process."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def settled_rss() -> int:
    gc.collect()
    time.sleep(0.05)
    gc.collect()
    return rss_bytes()


class BurstTransport:
    """A transport on the public contract: connects at once, acknowledges every subscription,
    and publishes batches of messages on the engine loop when a bench thread asks."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._events: sw.TransportEvents | None = None
        self._stopping = asyncio.Event()
        self._wire: frozenset[tuple[str, str]] = frozenset()
        self._connected = False

    async def run(self, events: sw.TransportEvents) -> None:
        self._loop = asyncio.get_running_loop()
        self._events = events
        self._connected = True
        events.on_connected()
        events.on_subscribed(self._wire)
        try:
            await self._stopping.wait()
        finally:
            self._connected = False

    async def stop(self) -> None:
        self._connected = False
        self._stopping.set()

    def set_subscriptions(self, pairs: frozenset[tuple[str, str]]) -> None:
        self._wire = pairs
        if self._connected and self._events is not None:
            self._events.on_subscribed(pairs)

    @property
    def subscriptions(self) -> frozenset[tuple[str, str]]:
        return self._wire

    @property
    def socket_open(self) -> bool:
        return self._connected

    def publish(self, messages: list[sw.StreamMessage]) -> None:
        """Hand ``messages`` to the engine from this thread; returns once they are routed."""
        loop, events = self._loop, self._events
        assert loop is not None and events is not None, "not running"
        done = threading.Event()

        def route() -> None:
            for message in messages:
                events.on_message(message)
            done.set()

        loop.call_soon_threadsafe(route)
        if not done.wait(WAIT_SECONDS):
            raise RuntimeError("the engine did not take the quotes in time")


class BurstFactory:
    def __init__(self) -> None:
        self.latest: BurstTransport | None = None

    def __call__(self, key: sw.StreamKey, credentials: sw.Credentials,
                 settings: sw.Settings) -> BurstTransport:
        self.latest = BurstTransport()
        return self.latest


class Counter:
    """The lease's ``on_quote``: counts, and wakes the bench when a target is reached."""

    def __init__(self) -> None:
        self.count = 0
        self.target = 0
        self.reached = threading.Event()

    def expect(self, more: int) -> None:
        self.target = self.count + more
        self.reached.clear()
        if self.count >= self.target:
            self.reached.set()

    def __call__(self, _quote: object) -> None:
        self.count += 1
        if self.count >= self.target:
            self.reached.set()


def chunk_messages() -> list[sw.StreamMessage]:
    """One quote per symbol S0000..S0999 (built once; the runtime routes the same objects)."""
    stamp = datetime(2026, 1, 2, 14, 30, tzinfo=UTC)
    messages = []
    for index in range(CHUNK):
        symbol = f"S{index:04d}"
        quote = sw.Quote(symbol=symbol, bid_price=Decimal("100.00"), bid_size=Decimal(1),
                         ask_price=Decimal("100.01"), ask_size=Decimal(1), timestamp=stamp)
        messages.append(sw.StreamMessage("quotes", symbol, quote))
    return messages


def deliver(transport: BurstTransport, counter: Counter, messages: list[sw.StreamMessage],
            quotes: int) -> None:
    sent = 0
    while sent < quotes:
        batch = messages[:min(CHUNK, quotes - sent)]
        counter.expect(len(batch))
        transport.publish(batch)
        if not counter.reached.wait(WAIT_SECONDS):
            raise RuntimeError("the quotes were not delivered in time")
        sent += len(batch)


def cycles(manager: sw.ConnectionManager, count: int) -> None:
    for _ in range(count):
        manager.market_data(CREDS, symbols=["AAPL"]).release()


def bench_growth(total_cycles: int, total_quotes: int, rounds: int,
                 baseline_cycles: int) -> dict[str, Any]:
    factory = BurstFactory()
    manager = sw.ConnectionManager(transport_factory=factory, settings=sw.Settings())
    counter = Counter()
    messages = chunk_messages()
    consumer = manager.market_data(QUOTE_CREDS, symbols=[m.symbol for m in messages],
                                   on_quote=counter)
    transport = factory.latest
    assert transport is not None
    anchor = manager.market_data(CREDS, symbols=["AAPL"])  # keeps the cycles' connection up
    started = time.perf_counter()
    cycles(manager, baseline_cycles)
    deliver(transport, counter, messages, BASELINE_QUOTES)
    baseline = settled_rss()
    progress(f"floor after {baseline_cycles} cycles and {BASELINE_QUOTES} quotes: "
             f"{baseline / MIB:.1f} MiB")
    left_cycles = max(0, total_cycles - baseline_cycles)
    left_quotes = max(0, total_quotes - BASELINE_QUOTES)
    curve = []
    for index in range(rounds):
        cycles(manager, left_cycles * (index + 1) // rounds - left_cycles * index // rounds)
        deliver(transport, counter, messages,
                left_quotes * (index + 1) // rounds - left_quotes * index // rounds)
        if (index + 1) % max(1, rounds // 10) == 0 or index + 1 == rounds:
            rss = settled_rss()
            curve.append(round((rss - baseline) / MIB, 2))
            progress(f"round {index + 1}/{rounds}: +{(rss - baseline) / MIB:.2f} MiB "
                     f"({time.perf_counter() - started:.0f} s)")
    final = settled_rss()
    (lease,) = [entry for lifecycle in manager.health().lifecycles
                for entry in lifecycle.leases if entry.lease_id == consumer.lease_id]
    sink = manager.audit
    kept = len(sink.records()) if hasattr(sink, "records") else None
    anchor.release()
    consumer.release()
    manager.close()
    growth = (final - baseline) / MIB
    return {
        "cycles": max(total_cycles, baseline_cycles),
        "quotes_published": counter.count,
        "quotes_delivered": lease.delivered,
        "quotes_dropped": lease.dropped,
        "audit_records_appended": getattr(sink, "appended", None),
        "audit_records_kept": kept,
        "floor_rss_mib": round(baseline / MIB, 2),
        "final_rss_mib": round(final / MIB, 2),
        "growth_mib": round(growth, 2),
        "growth_curve_mib": curve,
        "goal_growth_mib": GOAL_GROWTH_MIB,
        "meets_goal": growth < GOAL_GROWTH_MIB,
        "seconds": round(time.perf_counter() - started, 1),
    }


def top_sites(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot,
              leases: int) -> list[dict[str, Any]]:
    stats = after.compare_to(before, "lineno")
    return [{"site": f"{stat.traceback[0].filename.split('site-packages/')[-1]}"
                     f":{stat.traceback[0].lineno}",
             "bytes_per_lease": round(stat.size_diff / leases),
             "blocks_per_lease": round(stat.count_diff / leases, 2)}
            for stat in stats[:12] if stat.size_diff > 0]


def hold_leases(manager: sw.ConnectionManager, count: int) -> list[Any]:
    return [manager.market_data(CREDS, symbols=["AAPL"], owner=f"idle-{index}")
            for index in range(count)]


def bench_per_lease(leases: int, traced_leases: int) -> dict[str, Any]:
    manager = sw.ConnectionManager(transport_factory=InMemoryTransportFactory(),
                                   settings=sw.Settings())
    anchor = manager.market_data(CREDS, symbols=["AAPL"])
    # Warm-up: caches and the ring sink filled to its bound.
    for lease in hold_leases(manager, min(leases, 600)):
        lease.release()
    started = time.perf_counter()
    rss_before = settled_rss()
    held = hold_leases(manager, leases)
    rss_after = settled_rss()
    rss_seconds = time.perf_counter() - started
    progress(f"{leases} idle leases: RSS +{(rss_after - rss_before) / 1024 / leases:.2f} KiB "
             f"per lease ({rss_seconds:.0f} s)")
    for lease in held:
        lease.release()
    del held
    gc.collect()
    tracemalloc.start(1)
    before = tracemalloc.take_snapshot()
    traced_before = tracemalloc.get_traced_memory()[0]
    held = hold_leases(manager, traced_leases)
    gc.collect()
    traced_after = tracemalloc.get_traced_memory()[0]
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    lifecycles = manager.health().lifecycles
    for lease in held:
        lease.release()
    anchor.release()
    manager.close()
    rss_per = (rss_after - rss_before) / 1024 / leases
    traced_per = (traced_after - traced_before) / 1024 / traced_leases
    return {
        "leases": leases,
        "traced_leases": traced_leases,
        "live_leases_seen_by_health": lifecycles[0].refs if lifecycles else None,
        "rss_per_lease_kib": round(rss_per, 3),
        "traced_per_lease_kib": round(traced_per, 3),
        "goal_per_lease_kib": GOAL_PER_LEASE_KIB,
        "meets_goal": traced_per < GOAL_PER_LEASE_KIB,
        "acquire_seconds": round(rss_seconds, 1),
        "top_allocation_sites": top_sites(before, after, traced_leases),
        "note": "traced = Python allocations held (tracemalloc, after gc) per lease; the "
                "goal is judged on it. RSS delta is a cross-check (pymalloc reuses freed "
                "arenas, so it can read low).",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--cycles", type=int, default=100_000, help="acquire/release cycles")
    parser.add_argument("--quotes", type=int, default=1_000_000, help="quotes delivered")
    parser.add_argument("--rounds", type=int, default=100, help="interleaving rounds")
    parser.add_argument("--baseline-cycles", type=int, default=1000,
                        help="cycles before the floor's RSS is read")
    parser.add_argument("--leases", type=int, default=10_000, help="idle leases held (RSS)")
    parser.add_argument("--traced-leases", type=int, default=2000,
                        help="idle leases held under tracemalloc")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run (600 cycles, 5,000 quotes, 200 leases)")
    args = parser.parse_args()
    if args.quick:
        args.cycles, args.quotes, args.rounds, args.leases = 600, 5000, 2, 200
        args.traced_leases = 200
        args.baseline_cycles = 200
    for name in ("cycles", "quotes", "rounds", "leases", "traced_leases", "baseline_cycles"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    began = time.perf_counter()
    growth = bench_growth(args.cycles, args.quotes, args.rounds, args.baseline_cycles)
    per_lease = bench_per_lease(args.leases, args.traced_leases)
    print(json.dumps({
        "benchmark": "memory",
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpu_count": os.cpu_count(), "loadavg_1min": round(os.getloadavg()[0], 2),
                    "streamwarden": sw.__version__},
        "parameters": vars(args),
        "growth": growth,
        "per_idle_lease": per_lease,
        "total_seconds": round(time.perf_counter() - began, 1),
    }, indent=2))


if __name__ == "__main__":
    main()
