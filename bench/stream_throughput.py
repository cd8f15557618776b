"""Benchmark: the manager over alpaca-py against bare alpaca-py, on the project's simulator.

In one run, against one in-process :class:`~streamwarden.simulator.Simulator` on 127.0.0.1:

(a) throughput: the same quote burst (``--quotes`` quotes, ``--batch-size`` per frame) through
    one manager lease, through four manager leases on one symbol (one connection), through a
    bare ``StockDataStream`` quote handler in raw mode and in parsed mode. Timed from the start
    of the publish until the consumer (the last of them, for four leases) counted its last
    quote; ``--repeat`` runs each, interleaved, after a warm-up burst. Every consumer stays
    connected on its own symbol for the whole phase, so the bursts are identical but for the
    symbol. Reported: quotes per second of the burst, deliveries per second (quotes x leases),
    the simulator's own publish time, the deliveries each lease counted; medians and ratios
    manager/bare.
(b) stop latency on an idle stream (``--idle`` seconds after the subscription ack): the
    manager's, from ``release()`` of the last lease until ``health().lifecycles`` is empty
    (socket closed, thread joined), against the SDK's ``stop()``, from the call until the
    thread running ``run()`` ended.
(c) start latency on an idle key: the manager's ``market_data(..., wait=True)`` call, against
    the bare SDK's time from building the stream and starting ``run()`` in a thread until the
    subscription ack reached the client (the SDK's own "subscribed to" log record) and until
    the simulator saw the subscription.

Progress goes to stderr, one JSON document to stdout.

    python bench/stream_throughput.py [--quotes N] [--repeat R] [--batch-size B]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.metadata
import json
import logging
import math
import os
import platform
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from alpaca.data.live.stock import StockDataStream

from streamwarden import ConnectionManager, Credentials, InMemoryAuditSink, Lease, Settings
from streamwarden import __version__ as streamwarden_version
from streamwarden.simulator import Simulator, SimulatorStats

SECRET = "bench-secret-value"
SDK_LOGGER = "alpaca.data.live.websocket"
SDK_ACK_PREFIX = "subscribed to"
SDK_POLL_SECONDS = 5.0
"""alpaca-py's receive loop wakes every 5 s to look for a stop request."""
WAIT_SECONDS = 10.0
POLL_SECONDS = 0.0002
SETTLE_SECONDS = 0.1
"""Pause before each burst, after a collection, so that bursts start from the same state."""
# One symbol per throughput consumer: all stay connected, each burst reaches one of them.
THROUGHPUT_SYMBOLS = {
    "manager_1_lease": "AAPL", "manager_4_leases": "MSFT", "bare_raw": "SPY",
    "bare_parsed": "QQQ",
}
LATENCY_SYMBOL = "IBM"


def progress(message: str) -> None:
    sys.stderr.write(f"[stream bench] {message}\n")
    sys.stderr.flush()


def key_id(name: str) -> str:
    """A distinct, recognisable key id per consumer (one manager connection per key)."""
    return "PKBENCH" + name.upper().replace("_", "")


def credentials(name: str) -> Credentials:
    return Credentials(key_id(name), SECRET)


def percentile(samples: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(samples)
    return ordered[min(max(math.ceil(fraction * len(ordered)), 1), len(ordered)) - 1]


def summary_ms(samples_s: Sequence[float]) -> dict[str, Any]:
    ms = [s * 1000 for s in samples_s]
    return {
        "n": len(ms), "median_ms": round(statistics.median(ms), 2),
        "p90_ms": round(percentile(ms, 0.9), 2), "mean_ms": round(statistics.fmean(ms), 2),
        "min_ms": round(min(ms), 2), "max_ms": round(max(ms), 2),
    }


def wait_until(condition: Callable[[], bool], timeout: float = WAIT_SECONDS) -> bool:
    deadline = time.perf_counter() + timeout
    while not condition():
        if time.perf_counter() > deadline:
            return False
        time.sleep(POLL_SECONDS)
    return True


def subscribed(symbol: str) -> Callable[[SimulatorStats], bool]:
    return lambda stats: symbol in stats.wire_subscription("quotes")


def no_connection(stats: SimulatorStats) -> bool:
    return stats.kind("market_data").open == 0


# Consumers.


class Tally:
    """Counts the quotes one consumer receives; notes the moment it reached its target."""

    def __init__(self) -> None:
        self.count = 0
        self.target = 0
        self.done_at = 0.0
        self.done = threading.Event()

    def arm(self, target: int) -> None:
        self.count, self.target, self.done_at = 0, target, 0.0
        self.done.clear()

    def __call__(self, _message: object) -> None:
        self.count += 1
        if self.count == self.target:
            self.done_at = time.perf_counter()
            self.done.set()

    async def handle(self, message: object) -> None:
        """The bare SDK's handler (it must be a coroutine function)."""
        self(message)


class AckWatch(logging.Handler):
    """Notes when alpaca-py logs a subscription ack (it does so on receiving it)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.at = 0.0
        self.seen = threading.Event()

    def reset(self) -> None:
        self.at = 0.0
        self.seen.clear()

    def emit(self, record: logging.LogRecord) -> None:
        if str(record.msg).startswith(SDK_ACK_PREFIX) and not self.seen.is_set():
            self.at = time.perf_counter()
            self.seen.set()


@contextlib.contextmanager
def watching_acks() -> Iterator[AckWatch]:
    """Lowers alpaca-py's websocket logger to INFO meanwhile (bare phases only)."""
    logger = logging.getLogger(SDK_LOGGER)
    watch = AckWatch()
    level = logger.level
    logger.addHandler(watch)
    logger.setLevel(logging.INFO)
    try:
        yield watch
    finally:
        logger.removeHandler(watch)
        logger.setLevel(level)


class WarningTally(logging.Handler):
    """Counts what alpaca-py logs at WARNING and above (instead of printing it)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        self.messages[f"{record.levelname} {record.name}: {record.getMessage()}"] += 1

    def take(self) -> dict[str, int]:
        """The counts so far, then start again from zero."""
        taken = dict(self.messages)
        self.messages.clear()
        return taken


@contextlib.contextmanager
def counting_sdk_warnings() -> Iterator[WarningTally]:
    logger = logging.getLogger("alpaca")
    tally = WarningTally()
    logger.addHandler(tally)
    try:
        yield tally
    finally:
        logger.removeHandler(tally)


class BareStream:
    """A bare alpaca-py ``StockDataStream`` with one quote handler, ``run()`` in a thread."""

    def __init__(self, sim: Simulator, name: str, symbol: str, *, raw: bool,
                 tally: Tally | None = None) -> None:
        self.symbol = symbol
        self.tally = tally or Tally()
        self.stream = StockDataStream(key_id(name), SECRET, raw_data=raw,
                                      url_override=sim.market_data_url)
        self.stream.subscribe_quotes(self.tally.handle, symbol)
        self.thread = threading.Thread(target=self.stream.run, name=f"bench-bare-{name}",
                                       daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop_quickly(self, sim: Simulator) -> None:
        """``stop()``, then one quote to wake the SDK's receive poll, and join."""
        self.stream.stop()
        sim.publish_quote(self.symbol, bid_price="1.00", ask_price="1.01")
        self.thread.join(WAIT_SECONDS)


def make_manager(sim: Simulator, sink: InMemoryAuditSink | None = None) -> ConnectionManager:
    return ConnectionManager(audit=sink or InMemoryAuditSink(), settings=Settings(
        market_data_url=sim.market_data_url, trade_updates_url=sim.trade_updates_url,
        start_timeout=WAIT_SECONDS, stop_timeout=5.0))


# (a) Throughput.


def burst(sim: Simulator, symbol: str, tallies: Sequence[Tally], quotes: int,
          batch_size: int) -> dict[str, Any]:
    """One timed burst of ``quotes`` quotes of ``symbol``; ``tallies`` count them."""
    for tally in tallies:
        tally.arm(quotes)
    gc.collect()
    time.sleep(SETTLE_SECONDS)
    timeout = max(60.0, quotes / 500)
    started = time.perf_counter()
    sim.publish_quotes(symbol, quotes, batch_size=batch_size, timeout=timeout)
    published = time.perf_counter()
    complete = all(tally.done.wait(timeout) for tally in tallies)
    finished = max(tally.done_at for tally in tallies) if complete else time.perf_counter()
    elapsed = finished - started
    return {
        "complete": complete,
        "elapsed_s": round(elapsed, 4),
        "quotes_per_s": round(quotes / elapsed),
        "deliveries_per_s": round(quotes * len(tallies) / elapsed),
        "publish_s": round(published - started, 4),
        "deliveries_per_lease": [tally.count for tally in tallies],
    }


def summarise_runs(runs: list[dict[str, Any]], consumers: int) -> dict[str, Any]:
    return {
        "consumers": consumers,
        "median_quotes_per_s": round(statistics.median(r["quotes_per_s"] for r in runs)),
        "median_deliveries_per_s": round(statistics.median(r["deliveries_per_s"]
                                                           for r in runs)),
        "runs": runs,
    }


def start_throughput_consumers(
    sim: Simulator, manager: ConnectionManager
) -> tuple[dict[str, list[Tally]], list[Lease], list[BareStream]]:
    tallies: dict[str, list[Tally]] = {name: [] for name in THROUGHPUT_SYMBOLS}
    leases: list[Lease] = []
    for name, count in (("manager_1_lease", 1), ("manager_4_leases", 4)):
        for index in range(count):
            tally = Tally()
            tallies[name].append(tally)
            leases.append(manager.market_data(
                credentials(name), symbols=[THROUGHPUT_SYMBOLS[name]], on_quote=tally,
                owner=f"{name}-{index}"))
    streams = [BareStream(sim, name, THROUGHPUT_SYMBOLS[name], raw=name == "bare_raw")
               for name in ("bare_raw", "bare_parsed")]
    for name, stream in zip(("bare_raw", "bare_parsed"), streams, strict=True):
        tallies[name].append(stream.tally)
        stream.start()
    for symbol in THROUGHPUT_SYMBOLS.values():
        sim.wait_for(subscribed(symbol), WAIT_SECONDS)
    return tallies, leases, streams


def ratios(configs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Manager over bare quotes per second: of the medians, and per repetition (paired)."""
    result = {}
    for managed in ("manager_1_lease", "manager_4_leases"):
        for bare in ("bare_raw", "bare_parsed"):
            paired = [m["quotes_per_s"] / b["quotes_per_s"] for m, b in
                      zip(configs[managed]["runs"], configs[bare]["runs"], strict=True)]
            result[f"{managed}/{bare}"] = {
                "of_medians": round(configs[managed]["median_quotes_per_s"]
                                    / configs[bare]["median_quotes_per_s"], 3),
                "median_paired": round(statistics.median(paired), 3),
                "paired": [round(r, 3) for r in paired],
            }
    return result


def bench_throughput(sim: Simulator, quotes: int, repeat: int,
                     batch_size: int) -> dict[str, Any]:
    manager = make_manager(sim)
    tallies, leases, streams = start_throughput_consumers(sim, manager)
    warmup = min(quotes, 2000)
    for name, symbol in THROUGHPUT_SYMBOLS.items():
        burst(sim, symbol, tallies[name], warmup, batch_size)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in THROUGHPUT_SYMBOLS}
    for rep in range(repeat):
        for name, symbol in THROUGHPUT_SYMBOLS.items():
            runs[name].append(burst(sim, symbol, tallies[name], quotes, batch_size))
            progress(f"throughput rep {rep + 1}/{repeat} {name}: "
                     f"{runs[name][-1]['quotes_per_s']} quotes/s")
    lifecycles = len(manager.health().lifecycles)
    for lease in leases:
        lease.release()
    manager.close()
    for stream in streams:
        stream.stop_quickly(sim)
    sim.wait_for(no_connection, WAIT_SECONDS)
    configs = {name: summarise_runs(runs[name], len(tallies[name])) for name in runs}
    return {
        "burst": {"quotes": quotes, "batch_size": batch_size, "warmup_quotes": warmup,
                  "symbols": THROUGHPUT_SYMBOLS},
        "configs": configs,
        "ratios_quotes_per_s": ratios(configs),
        "manager_lifecycles": lifecycles,
        "note": "quotes_per_s = burst size / (last quote counted by the last consumer - "
                "publish start); deliveries_per_s multiplies by the leases. The simulator "
                "shares the process (and the GIL); publish_s is its own sending time, and "
                "publish_s close to elapsed_s means the consumer kept up with it (the figure "
                "is then a lower bound of what the consumer can take). Runs are interleaved; "
                "'paired' ratios compare runs of the same repetition. With --batch-size 1 "
                "the simulator's per-frame cost dominates every consumer alike.",
    }


# (b) Stop latency.


def manager_stop_once(sim: Simulator, manager: ConnectionManager, idle: float) -> dict[str, Any]:
    lease = manager.market_data(credentials("stop"), symbols=[LATENCY_SYMBOL])
    time.sleep(idle)
    started = time.perf_counter()
    lease.release()
    released = time.perf_counter()
    stopped = wait_until(lambda: not manager.health().lifecycles)
    ended = time.perf_counter()
    sim.wait_for(no_connection, WAIT_SECONDS)
    return {"stopped": stopped, "release_call_ms": round((released - started) * 1000, 3),
            "until_stopped_ms": round((ended - started) * 1000, 3)}


def sdk_stop_once(sim: Simulator, watch: AckWatch, idle: float) -> dict[str, Any]:
    watch.reset()
    bare = BareStream(sim, "sdkstop", LATENCY_SYMBOL, raw=True)
    bare.start()
    watch.seen.wait(WAIT_SECONDS)
    sim.wait_for(subscribed(LATENCY_SYMBOL), WAIT_SECONDS)
    time.sleep(idle)
    started = time.perf_counter()
    bare.stream.stop()
    returned = time.perf_counter()
    bare.thread.join(3 * SDK_POLL_SECONDS)
    ended = time.perf_counter()
    sim.wait_for(no_connection, WAIT_SECONDS)
    return {"thread_ended": not bare.thread.is_alive(),
            "idle_since_ack_s": round(started - watch.at, 3) if watch.seen.is_set() else None,
            "stop_call_ms": round((returned - started) * 1000, 3),
            "until_thread_ended_s": round(ended - started, 4)}


def bench_stop(sim: Simulator, manager_reps: int, sdk_reps: int, idle: float) -> dict[str, Any]:
    sink = InMemoryAuditSink()
    manager = make_manager(sim, sink)
    manager_runs = [manager_stop_once(sim, manager, idle) for _ in range(manager_reps)]
    clean = sum(1 for r in sink.records()
                if r.event == "closed" and (r.details or {}).get("stop_clean"))
    manager.close()
    progress("stop: manager " + ", ".join(f"{r['until_stopped_ms']:.1f}" for r in manager_runs)
             + " ms")
    sdk_runs = []
    with watching_acks() as watch:
        for rep in range(sdk_reps):
            sdk_runs.append(sdk_stop_once(sim, watch, idle))
            progress(f"stop: sdk rep {rep + 1}/{sdk_reps}: "
                     f"{sdk_runs[-1]['until_thread_ended_s']:.3f} s")
    manager_median = statistics.median(r["until_stopped_ms"] for r in manager_runs)
    sdk_median = statistics.median(r["until_thread_ended_s"] for r in sdk_runs)
    return {
        "idle_before_stop_s": idle,
        "manager": {"median_ms": round(manager_median, 3),
                    "max_ms": max(r["until_stopped_ms"] for r in manager_runs),
                    "clean_stops_audited": clean, "runs": manager_runs},
        "sdk_stop": {"median_s": round(sdk_median, 4), "runs": sdk_runs},
        "ratio_sdk/manager": round(sdk_median * 1000 / max(manager_median, 1e-3), 1),
        "note": "manager: release() of the last lease until health().lifecycles is empty. "
                "sdk: StockDataStream.stop() until the run() thread ended; its receive loop "
                f"polls for a stop every {SDK_POLL_SECONDS:g} s, so on an idle stream it "
                "takes about 5 s minus the time since the last frame.",
    }


# (c) Start latency.


def manager_start_samples(sim: Simulator, cycles: int) -> list[float]:
    manager = make_manager(sim)
    creds = credentials("start")
    samples = []
    for _ in range(cycles):
        started = time.perf_counter()
        lease = manager.market_data(creds, symbols=[LATENCY_SYMBOL], wait=True)
        samples.append(time.perf_counter() - started)
        lease.release()
        wait_until(lambda: not manager.health().lifecycles)
    manager.close()
    sim.wait_for(no_connection, WAIT_SECONDS)
    return samples


def bare_start_samples(sim: Simulator, cycles: int) -> tuple[list[float], list[float]]:
    client_ack, server_seen = [], []
    with watching_acks() as watch:
        for _ in range(cycles):
            watch.reset()
            started = time.perf_counter()
            bare = BareStream(sim, "barestart", LATENCY_SYMBOL, raw=True)
            bare.start()
            sim.wait_for(subscribed(LATENCY_SYMBOL), WAIT_SECONDS)
            server_seen.append(time.perf_counter() - started)
            if watch.seen.wait(WAIT_SECONDS):
                client_ack.append(watch.at - started)
            bare.stop_quickly(sim)
            sim.wait_for(no_connection, WAIT_SECONDS)
    return client_ack, server_seen


def bench_start(sim: Simulator, cycles: int) -> dict[str, Any]:
    manager = manager_start_samples(sim, cycles)
    progress(f"start: manager median {statistics.median(manager) * 1000:.1f} ms")
    client_ack, server_seen = bare_start_samples(sim, cycles)
    bare = client_ack or server_seen
    progress(f"start: bare median {statistics.median(bare) * 1000:.1f} ms")
    return {
        "cycles": cycles,
        "manager_acquire_to_running": summary_ms(manager),
        "bare_sdk_to_subscription_ack": summary_ms(client_ack) if client_ack else None,
        "bare_sdk_to_simulator_subscribed": summary_ms(server_seen),
        "ratio_median_manager/bare": round(statistics.median(manager)
                                           / statistics.median(bare), 2),
        "note": "manager: market_data(wait=True) on a key with no connection, until it "
                "returns (thread start, connect, auth, subscribe quotes+trades, ack, "
                "starting -> running, audit). bare: from building the StockDataStream and "
                "starting run() in a thread until the client received the subscription ack "
                "(the SDK's own 'subscribed to' log record, emitted on receipt; null if that "
                "log line changed) and until the simulator recorded the subscription (that "
                "second figure includes waking the waiting thread). Comparable in scope; the "
                "bare side subscribes quotes only.",
    }


def machine_info() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "alpaca_py": importlib.metadata.version("alpaca-py"),
        "websockets": importlib.metadata.version("websockets"),
        "streamwarden": streamwarden_version,
        "loadavg_1min_at_start": round(os.getloadavg()[0], 2),
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quotes", type=int, default=20_000, help="quotes per burst")
    parser.add_argument("--repeat", type=int, default=3, help="timed bursts per consumer")
    parser.add_argument("--batch-size", type=int, default=100,
                        help="quotes per WebSocket frame in the burst (default 100)")
    parser.add_argument("--stop-reps", type=int, default=10, help="manager stops")
    parser.add_argument("--sdk-stop-reps", type=int, default=3, help="SDK stops (~5 s each)")
    parser.add_argument("--idle", type=float, default=0.5,
                        help="seconds a stream idles after its ack before the stop")
    parser.add_argument("--cycles", type=int, default=50, help="start cycles per side")
    parser.add_argument("--seed", type=int, default=0, help="seed of the quote values")
    args = parser.parse_args()
    for name in ("quotes", "repeat", "batch_size", "stop_reps", "sdk_stop_reps", "cycles"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.idle < 0:
        parser.error("--idle must not be negative")
    return args


def main() -> None:
    args = parse_args()
    began = time.perf_counter()
    machine = machine_info()
    with Simulator(seed=args.seed) as sim, counting_sdk_warnings() as warnings:
        progress(f"simulator at {sim.market_data_url}")
        throughput = bench_throughput(sim, args.quotes, args.repeat, args.batch_size)
        logged = {"throughput": warnings.take()}
        stop = bench_stop(sim, args.stop_reps, args.sdk_stop_reps, args.idle)
        logged["stop_latency"] = warnings.take()
        start = bench_start(sim, args.cycles)
        logged["start_latency"] = warnings.take()
        opened = sim.stats().kind("market_data").opened
    print(json.dumps({
        "benchmark": "stream_throughput",
        "machine": machine | {"loadavg_1min_at_end": round(os.getloadavg()[0], 2)},
        "parameters": vars(args),
        "throughput": throughput,
        "stop_latency": stop,
        "start_latency": start,
        "simulator_connections_opened": opened,
        "sdk_warnings_logged": logged,
        "sdk_warnings_note": "alpaca-py records at WARNING or above per phase (counted, not "
                             "printed). Manager stops per phase: throughput 2, stop_latency "
                             f"{args.stop_reps}, start_latency {args.cycles}.",
        "total_seconds": round(time.perf_counter() - began, 1),
    }, indent=2))


if __name__ == "__main__":
    main()
