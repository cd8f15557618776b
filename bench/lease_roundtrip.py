"""Benchmark: acquire + release round trip on a running connection.

The manager (in-memory transport, in-memory audit sink, spec machine) against the floor: the
same round trip done with a bare lock and a counter, measured in the same run. Prints JSON.

    python bench/lease_roundtrip.py [--iterations N]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import threading
import time

from streamwarden import ConnectionManager, Credentials, InMemoryAuditSink, Settings
from streamwarden.testing import InMemoryTransportFactory


def _percentiles(samples_ns: list[int]) -> dict[str, float]:
    ordered = sorted(samples_ns)
    return {
        "p50_us": round(ordered[len(ordered) // 2] / 1000, 2),
        "p99_us": round(ordered[int(len(ordered) * 0.99)] / 1000, 2),
        "mean_us": round(statistics.fmean(ordered) / 1000, 2),
    }


def bench_manager(iterations: int) -> dict[str, float]:
    creds = Credentials("PKBENCHACCOUNT000001", "bench-secret-value")
    manager = ConnectionManager(transport_factory=InMemoryTransportFactory(),
                                audit=InMemoryAuditSink(), settings=Settings())
    anchor = manager.market_data(creds, symbols=["AAPL"])  # keeps the connection running
    samples = []
    for _ in range(iterations):
        started = time.perf_counter_ns()
        manager.market_data(creds, symbols=["AAPL"]).release()
        samples.append(time.perf_counter_ns() - started)
    anchor.release()
    manager.close()
    return _percentiles(samples)


def bench_bare_lock(iterations: int) -> dict[str, float]:
    lock = threading.Lock()
    refs = 1
    samples = []
    for _ in range(iterations):
        started = time.perf_counter_ns()
        with lock:
            refs += 1
        with lock:
            refs -= 1
        samples.append(time.perf_counter_ns() - started)
    return _percentiles(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=5_000)
    args = parser.parse_args()
    manager = bench_manager(args.iterations)
    floor = bench_bare_lock(args.iterations)
    print(json.dumps({
        "benchmark": "lease_roundtrip",
        "iterations": args.iterations,
        "python": platform.python_version(),
        "manager": manager,
        "bare_lock_floor": floor,
        "ratio_p50": round(manager["p50_us"] / max(floor["p50_us"], 0.01), 1),
    }, indent=2))


if __name__ == "__main__":
    main()
