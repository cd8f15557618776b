"""Benchmark: reconnect-to-resume time after a drop, with and without a reaper window.

Over the real alpaca-py SDK and the project's simulator (in process, on 127.0.0.1). A lease on
one symbol receives quotes published every ``--tick`` seconds, each stamped with its sequence
number in its bid price. The simulator then aborts the socket (no close handshake); the time
to resume is from the drop to the arrival of the first quote published after it. Measured:

* streamwarden: a ``ConnectionManager`` lease, with the default reconnect settings (jittered
  exponential backoff from 1 s to 30 s);
* the floor: a bare alpaca-py ``StockDataStream`` reconnecting by itself (its own
  ``_run_forever`` loop and backoff), same simulator, same run;

each without a reaper window (the slot is free at once) and with one of ``--reaper`` seconds
(the dropped socket holds the account's slot; reconnects meanwhile get 406, which streamwarden
records as ``reconnect_failed`` and retries within ``connection_limit_grace``). Progress goes to
stderr, one JSON document to stdout.

    python bench/reconnect_resume.py [--repeat R] [--reaper SECONDS] [--quick]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from alpaca.data.live.stock import StockDataStream

import streamwarden as sw
from streamwarden.simulator import Simulator
from streamwarden.testing import InMemoryAuditSink

SYMBOL = "AAPL"
CREDS = sw.Credentials("PKBENCHRECONNECT0001", "bench-secret-value")
BASE_PRICE = 100.0
"""Quote ``n`` is published with bid ``BASE_PRICE + n / 100``."""
RESUME_TIMEOUT = 60.0


def progress(message: str) -> None:
    sys.stderr.write(f"[reconnect bench] {message}\n")
    sys.stderr.flush()


class Arrivals:
    """The highest sequence number received so far (thread-safe enough: one writer)."""

    def __init__(self) -> None:
        self.highest = -1

    def note(self, bid_price: float) -> None:
        self.highest = max(self.highest, round((bid_price - BASE_PRICE) * 100))


def resume_time(sim: Simulator, arrivals: Arrivals, tick: float, first: int) -> float:
    """Drop the socket, then publish every ``tick`` seconds until a quote sent after the drop
    arrives; returns the seconds from the drop to that arrival.

    Raises:
        TimeoutError: nothing arrived within RESUME_TIMEOUT.
    """
    sequence = first
    if sim.drop_connections() != 1:
        raise RuntimeError("expected exactly one market-data socket to drop")
    dropped = time.perf_counter()
    deadline = dropped + RESUME_TIMEOUT
    while time.perf_counter() < deadline:
        sim.publish_quote(SYMBOL, bid_price=f"{BASE_PRICE + sequence / 100:.2f}",
                          ask_price="999")
        sequence += 1
        if arrivals.highest >= first:
            return time.perf_counter() - dropped
        time.sleep(tick)
    raise TimeoutError(f"no quote within {RESUME_TIMEOUT} s of the drop")


def wait_streaming(sim: Simulator, arrivals: Arrivals, tick: float, first: int) -> None:
    """Publish until the stream delivers (it is connected and subscribed)."""
    deadline = time.perf_counter() + RESUME_TIMEOUT
    sequence = first
    while arrivals.highest < first:
        if time.perf_counter() > deadline:
            raise TimeoutError("the stream never delivered")
        sim.publish_quote(SYMBOL, bid_price=f"{BASE_PRICE + sequence / 100:.2f}",
                          ask_price="999")
        sequence += 1
        time.sleep(tick)


def measure(sim: Simulator, arrivals: Arrivals, repeat: int, tick: float,
            reaper: float) -> list[float]:
    times = []
    first = 0
    for rep in range(repeat):
        wait_streaming(sim, arrivals, tick, first)
        first += 10_000
        if reaper:
            time.sleep(0.05)  # the reaper window runs from each drop
        took = resume_time(sim, arrivals, tick, first)
        first += 10_000
        times.append(took)
        progress(f"  rep {rep + 1}/{repeat}: resumed after {took:.3f} s")
    return times


def with_streamwarden(reaper: float, repeat: int, tick: float) -> dict[str, Any]:
    arrivals = Arrivals()
    with Simulator(reaper_window=reaper) as sim:
        settings = sw.Settings(market_data_url=sim.market_data_url, start_timeout=10.0,
                               stop_timeout=2.0)
        sink = InMemoryAuditSink(capacity=10_000)
        with sw.ConnectionManager(audit=sink, settings=settings) as manager:
            lease = manager.market_data(CREDS, symbols=[SYMBOL],
                                        on_quote=lambda q: arrivals.note(float(q.bid_price)))
            times = measure(sim, arrivals, repeat, tick, reaper)
            lease.release()
        refused = [r for r in sink.records() if r.event == "reconnect_failed"]
    return {"resume_s": summary(times),
            "reconnect_failed_records": len(refused),
            "causes": sorted({r.details["cause"] for r in refused})}


def with_bare_sdk(reaper: float, repeat: int, tick: float) -> dict[str, Any]:
    arrivals = Arrivals()
    with Simulator(reaper_window=reaper) as sim:
        key_id, secret = CREDS.sensitive_values()
        stream = StockDataStream(key_id, secret, raw_data=True, url_override=sim.market_data_url)

        async def on_quote(quote: dict[str, Any]) -> None:
            arrivals.note(float(quote["bp"]))

        stream.subscribe_quotes(on_quote, SYMBOL)
        runner = threading.Thread(target=stream.run, name="bench-bare-sdk", daemon=True)
        runner.start()
        try:
            times = measure(sim, arrivals, repeat, tick, reaper)
        finally:
            stream.stop()  # the simulator's stop then closes the socket under the SDK's poll
        refused = sum(1 for a in sim.stats().auth_attempts if a.outcome == "connection_limit")
    runner.join(timeout=10.0)
    return {"resume_s": summary(times), "refused_406": refused}


def summary(times: list[float]) -> dict[str, Any]:
    return {"median": round(statistics.median(times), 3), "min": round(min(times), 3),
            "max": round(max(times), 3), "runs": [round(t, 3) for t in times]}


def run(repeat: int, reaper: float, tick: float) -> dict[str, Any]:
    phases: dict[str, Callable[[float, int, float], dict[str, Any]]] = {
        "bare_alpaca_py": with_bare_sdk, "streamwarden": with_streamwarden}
    results: dict[str, Any] = {}
    for window in (0.0, reaper):
        label = "no_reaper" if window == 0 else f"reaper_{window:g}s"
        for name, phase in phases.items():
            progress(f"{name}, {label}")
            results.setdefault(label, {})[name] = phase(window, repeat, tick)
    for entry in results.values():
        floor = entry["bare_alpaca_py"]["resume_s"]["median"]
        entry["ratio_median"] = round(entry["streamwarden"]["resume_s"]["median"]
                                      / max(floor, 1e-3), 2)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="drops per phase")
    parser.add_argument("--reaper", type=float, default=3.0,
                        help="the simulator's reaper window in the second half (seconds)")
    parser.add_argument("--tick", type=float, default=0.01, help="seconds between quotes")
    parser.add_argument("--quick", action="store_true", help="a smoke run (1 drop, 0.5 s)")
    args = parser.parse_args()
    if args.quick:
        args.repeat, args.reaper = 1, 0.5
    if args.repeat < 1 or args.reaper <= 0 or args.tick <= 0:
        parser.error("--repeat must be at least 1, --reaper and --tick positive")
    began = time.perf_counter()
    results = run(args.repeat, args.reaper, args.tick)
    print(json.dumps({
        "benchmark": "reconnect_resume",
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpu_count": os.cpu_count(), "loadavg_1min": round(os.getloadavg()[0], 2),
                    "alpaca_py": importlib.metadata.version("alpaca-py"),
                    "streamwarden": sw.__version__},
        "parameters": {"repeat": args.repeat, "reaper_s": args.reaper, "tick_s": args.tick,
                       "backoff": "defaults (1 s to 30 s, jittered)"},
        "results": results,
        "elapsed_s": round(time.perf_counter() - began, 1),
    }, indent=2))


if __name__ == "__main__":
    main()
