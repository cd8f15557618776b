"""Benchmark: a fast lease's latency beside a slow neighbour, against the same lease alone.

Over the real alpaca-py SDK and the project's simulator (in process, on 127.0.0.1), one sync
``ConnectionManager``. The fast lease's ``on_quote`` notes when each quote arrived; quotes of
one symbol are published at ``--rate`` per second for ``--seconds``, each stamped with its
sequence number in its bid price, and the latency of a quote is its arrival minus the moment
just before the simulator was asked to publish it. Phases, interleaved ``--repeat`` times:

* alone (the floor): only the fast lease on the connection;
* beside: the fast lease and a second lease on the same connection and the same symbol whose
  callback sleeps ``--slow-ms`` (200 ms) per quote.

Reported: p50, p99 and max latency per phase, quotes received, and what the slow lease got
and dropped (its quotes conflate: the newest wins); the ratio of the p99s next to the goal
(<= 2x). Progress goes to stderr, one JSON document to stdout.

    python bench/isolation_latency.py [--rate HZ] [--seconds S] [--repeat R] [--quick]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import time
from typing import Any

from _stats import percentile

import streamwarden as sw
from streamwarden.simulator import Simulator
from streamwarden.testing import InMemoryAuditSink

GOAL_RATIO_P99 = 2.0
SYMBOL = "AAPL"
CREDS = sw.Credentials("PKBENCHISOLATION0001", "bench-secret-value")
BASE_PRICE = 100.0
"""Quote ``n`` is published with bid ``BASE_PRICE + n / 100``."""
DRAIN_SECONDS = 2.0


def progress(message: str) -> None:
    sys.stderr.write(f"[isolation bench] {message}\n")
    sys.stderr.flush()


class Arrivals:
    """The fast lease's callback: arrival time per sequence number."""

    def __init__(self) -> None:
        self.at: dict[int, float] = {}

    def __call__(self, quote: sw.Quote) -> None:
        now = time.perf_counter()
        self.at[round((float(quote.bid_price) - BASE_PRICE) * 100)] = now


class Slow:
    """The neighbour's callback: takes ``seconds`` per quote."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.calls = 0

    def __call__(self, _quote: sw.Quote) -> None:
        self.calls += 1
        time.sleep(self.seconds)


def publish_paced(sim: Simulator, rate: float, seconds: float, first: int) -> dict[int, float]:
    """Publish ``rate * seconds`` quotes, evenly spaced; returns their send times."""
    sent: dict[int, float] = {}
    interval = 1.0 / rate
    start = time.perf_counter()
    for index in range(round(rate * seconds)):
        target = start + index * interval
        delay = target - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        seq = first + index
        price = BASE_PRICE + seq / 100
        sent[seq] = time.perf_counter()
        sim.publish_quote(SYMBOL, bid_price=f"{price:.2f}", ask_price=f"{price + 0.01:.2f}")
    return sent


def phase(sim: Simulator, manager: sw.ConnectionManager, *, slow_seconds: float | None,
          rate: float, seconds: float, first: int) -> dict[str, Any]:
    arrivals = Arrivals()
    fast = manager.market_data(CREDS, symbols=[SYMBOL], on_quote=arrivals, owner="fast")
    slow_lease = None
    slow = Slow(slow_seconds or 0.0)
    if slow_seconds is not None:
        slow_lease = manager.market_data(CREDS, symbols=[SYMBOL], on_quote=slow, owner="slow")
    sent = publish_paced(sim, rate, seconds, first)
    deadline = time.perf_counter() + DRAIN_SECONDS
    while len(arrivals.at) < len(sent) and time.perf_counter() < deadline:
        time.sleep(0.01)
    slow_stats = None
    if slow_lease is not None:
        (lifecycle,) = manager.health().lifecycles
        (entry,) = [lease for lease in lifecycle.leases if lease.lease_id == slow_lease.lease_id]
        slow_stats = {"callbacks_run": slow.calls, "delivered": entry.delivered,
                      "dropped": entry.dropped, "queue_depth": entry.queue_depth}
    release_started = time.perf_counter()
    if slow_lease is not None:
        slow_lease.release()
    fast.release()
    release_s = time.perf_counter() - release_started
    latencies = [(arrivals.at[seq] - at) * 1000 for seq, at in sent.items()
                 if seq in arrivals.at]
    return {
        "published": len(sent),
        "received": len(latencies),
        "p50_ms": round(statistics.median(latencies), 3) if latencies else None,
        "p99_ms": round(percentile(latencies, 0.99), 3) if latencies else None,
        "max_ms": round(max(latencies), 3) if latencies else None,
        "latencies_ms": latencies,
        "slow_lease": slow_stats,
        "release_both_s": round(release_s, 3),
    }


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    latencies = [value for run in runs for value in run.pop("latencies_ms")]
    return {
        "published": sum(run["published"] for run in runs),
        "received": sum(run["received"] for run in runs),
        "p50_ms": round(statistics.median(latencies), 3),
        "p99_ms": round(percentile(latencies, 0.99), 3),
        "max_ms": round(max(latencies), 3),
        "runs": runs,
    }


def run(rate: float, seconds: float, repeat: int, slow_ms: float) -> dict[str, Any]:
    with Simulator() as sim:
        settings = sw.Settings(market_data_url=sim.market_data_url,
                               trade_updates_url=sim.trade_updates_url, start_timeout=10.0,
                               stop_timeout=2.0, drain_grace=5.0)
        with sw.ConnectionManager(audit=InMemoryAuditSink(capacity=10_000),
                                  settings=settings) as manager:
            # An anchor keeps the connection up between phases (drain_grace covers the rest).
            anchor = manager.market_data(CREDS, symbols=["IBM"], owner="anchor")
            phase(sim, manager, slow_seconds=None, rate=rate, seconds=min(seconds, 1.0),
                  first=0)  # warm-up
            alone: list[dict[str, Any]] = []
            beside: list[dict[str, Any]] = []
            first = 10_000
            for rep in range(repeat):
                for name, slow in (("alone", None), ("beside", slow_ms / 1000)):
                    result = phase(sim, manager, slow_seconds=slow, rate=rate,
                                   seconds=seconds, first=first)
                    first += 10_000
                    (alone if name == "alone" else beside).append(result)
                    progress(f"rep {rep + 1}/{repeat} {name}: p99 {result['p99_ms']} ms, "
                             f"{result['received']}/{result['published']} received")
            anchor.release()
    alone_summary, beside_summary = summarise(alone), summarise(beside)
    ratio = beside_summary["p99_ms"] / max(alone_summary["p99_ms"], 1e-3)
    return {
        "alone_floor": alone_summary,
        "beside_slow_neighbour": beside_summary,
        "ratio_p99": round(ratio, 2),
        "goal_ratio_p99": GOAL_RATIO_P99,
        "meets_goal": ratio <= GOAL_RATIO_P99,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rate", type=float, default=50.0, help="quotes per second")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per phase")
    parser.add_argument("--repeat", type=int, default=2, help="alone/beside alternations")
    parser.add_argument("--slow-ms", type=float, default=200.0,
                        help="the neighbour's callback time per quote")
    parser.add_argument("--quick", action="store_true", help="a smoke run (0.6 s phases)")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.repeat = 0.6, 1
    if args.rate <= 0 or args.seconds <= 0 or args.repeat < 1 or args.slow_ms < 0:
        parser.error("--rate and --seconds must be positive, --repeat at least 1")
    began = time.perf_counter()
    result = run(args.rate, args.seconds, args.repeat, args.slow_ms)
    print(json.dumps({
        "benchmark": "isolation_latency",
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpu_count": os.cpu_count(), "loadavg_1min": round(os.getloadavg()[0], 2),
                    "alpaca_py": importlib.metadata.version("alpaca-py"),
                    "streamwarden": sw.__version__},
        "parameters": vars(args),
        **result,
        "note": "latency = the fast lease's on_quote call - the moment before "
                "Simulator.publish_quote was called (both in this process). Both leases are "
                "on one connection (same account) and the same symbol; the slow one's "
                "callback sleeps --slow-ms per quote on a callback worker.",
        "total_seconds": round(time.perf_counter() - began, 1),
    }, indent=2))


if __name__ == "__main__":
    main()
