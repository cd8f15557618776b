"""Benchmark: the manager over alpaca-py against bare alpaca-py, on the project's simulator.

In one run, against one in-process :class:`~streamwarden.simulator.Simulator` on 127.0.0.1:

(a) throughput: the same quote burst (``--quotes`` quotes, ``--batch-size`` per frame) through
    1, 4 and 16 manager leases on one symbol (one connection each, sync ``ConnectionManager``,
    ``on_quote`` callbacks), through one ``AsyncConnectionManager`` lease read with ``async
    for quote in feed.quotes()`` on the caller's event loop, and through a bare
    ``StockDataStream`` quote handler in raw mode and in parsed mode (the floors). After the
    burst the simulator sends one sentinel quote; a consumer is done when it has seen it (the
    newest quote is never conflated away, and each lease sees its quotes in order). Timed from
    the start of the publish until the last consumer of the configuration saw the sentinel;
    ``--repeat`` runs each, interleaved, after a warm-up burst. Every consumer stays connected
    on its own symbol for the whole phase. Reported: quotes per second of the burst,
    deliveries per second, the quotes each lease received and the quotes it dropped
    (conflated per symbol when its consumer falls behind; from ``health()``), medians and
    ratios (of the burst rate, and of the delivered rate per lease), next to the goals
    (>= 1.0x parsed with 16 leases, >= 0.8x raw with one lease, async/sync >= 0.9x).
(b) stop latency on an idle stream (``--idle`` seconds after the subscription ack): the
    manager's, from ``release()`` of the last lease until ``health().lifecycles`` is empty
    (socket closed), against the SDK's ``stop()``, from the call until the thread running
    ``run()`` ended.
(c) start latency on an idle key: the manager's ``market_data(..., wait=True)`` call (it
    returns once the lease's subscriptions are acknowledged on the wire), against the bare
    SDK's time from building the stream and starting ``run()`` in a thread until the
    subscription ack reached the client (the SDK's own "subscribed to" log record) and until
    the simulator saw the subscription.

Progress goes to stderr, one JSON document to stdout.

    python bench/stream_throughput.py [--quotes N] [--repeat R] [--batch-size B] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib.metadata
import json
import logging
import os
import platform
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from _stats import percentile
from alpaca.data.live.stock import StockDataStream

import streamwarden as sw
from streamwarden.simulator import Simulator, SimulatorStats
from streamwarden.testing import InMemoryAuditSink

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
    "manager_1_lease": "AAPL", "manager_4_leases": "MSFT", "manager_16_leases": "NVDA",
    "async_1_lease": "AMZN", "bare_raw": "SPY", "bare_parsed": "QQQ",
}
MANAGER_LEASES = {"manager_1_lease": 1, "manager_4_leases": 4, "manager_16_leases": 16}
LATENCY_SYMBOL = "IBM"
SENTINEL_BID = 9999.0
"""The bid price of the quote sent after each burst: a consumer that saw it has seen (or
dropped) every quote of the burst."""
GOALS = {
    "manager_16_leases/bare_parsed": 1.0,
    "manager_1_lease/bare_raw": 0.8,
    "async_1_lease/manager_1_lease": 0.9,
}


def progress(message: str) -> None:
    sys.stderr.write(f"[stream bench] {message}\n")
    sys.stderr.flush()


def key_id(name: str) -> str:
    """A distinct, recognisable key id per consumer (one manager connection per key)."""
    return "PKBENCH" + name.upper().replace("_", "")


def credentials(name: str) -> sw.Credentials:
    return sw.Credentials(key_id(name), SECRET)


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


def is_sentinel(message: object) -> bool:
    """Whether ``message`` (a streamwarden or alpaca-py Quote, or a raw dict) is the sentinel."""
    if isinstance(message, dict):
        return float(message.get("bp", 0)) == SENTINEL_BID
    return float(getattr(message, "bid_price", 0)) == SENTINEL_BID


class Tally:
    """Counts the quotes one consumer receives; notes the moment it saw the burst's sentinel."""

    def __init__(self) -> None:
        self.count = 0
        self.done_at = 0.0
        self.done = threading.Event()

    def arm(self) -> None:
        self.count, self.done_at = 0, 0.0
        self.done.clear()

    def __call__(self, message: object) -> None:
        if is_sentinel(message):
            self.done_at = time.perf_counter()
            self.done.set()
        else:
            self.count += 1

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


def bench_settings(sim: Simulator) -> sw.Settings:
    return sw.Settings(market_data_url=sim.market_data_url,
                       trade_updates_url=sim.trade_updates_url, start_timeout=WAIT_SECONDS,
                       stop_timeout=5.0)


def make_manager(sim: Simulator, sink: InMemoryAuditSink | None = None) -> sw.ConnectionManager:
    return sw.ConnectionManager(audit=sink or InMemoryAuditSink(capacity=10_000),
                                settings=bench_settings(sim))


def lease_dropped(report: sw.HealthReport, lease_id: str) -> int:
    for lifecycle in report.lifecycles:
        for lease in lifecycle.leases:
            if lease.lease_id == lease_id:
                return lease.dropped
    return 0


class AsyncConsumer:
    """An ``AsyncConnectionManager`` lease read with ``async for`` on an event loop of its own
    thread (the caller's loop, as an asyncio application would have it)."""

    def __init__(self, sim: Simulator, name: str, symbol: str) -> None:
        self.tally = Tally()
        self.lease_id = ""
        self._sim = sim
        self._name = name
        self._symbol = symbol
        self._ending = False
        self._ready = threading.Event()
        self._manager: sw.AsyncConnectionManager | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()),
                                        name="bench-async-consumer", daemon=True)

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(WAIT_SECONDS):
            raise RuntimeError("the async consumer did not start")

    async def _main(self) -> None:
        async with sw.AsyncConnectionManager(audit=InMemoryAuditSink(capacity=10_000),
                                             settings=bench_settings(self._sim)) as manager:
            self._manager = manager
            async with manager.market_data(credentials(self._name),
                                           symbols=[self._symbol]) as feed:
                self.lease_id = feed.lease_id
                self._loop = asyncio.get_running_loop()
                self._ready.set()
                async for quote in feed.quotes():
                    self.tally(quote)
                    if self._ending and is_sentinel(quote):
                        break

    def dropped(self) -> int:
        """The lease's dropped count, from the async manager's health (from another thread)."""
        assert self._manager is not None and self._loop is not None
        report = asyncio.run_coroutine_threadsafe(self._manager.health(), self._loop)
        return lease_dropped(report.result(WAIT_SECONDS), self.lease_id)

    def stop(self) -> None:
        self._ending = True
        self._sim.publish_quote(self._symbol, bid_price=SENTINEL_BID,
                                ask_price=SENTINEL_BID + 0.01)
        self._thread.join(WAIT_SECONDS)


# (a) Throughput.


def burst(sim: Simulator, symbol: str, tallies: Sequence[Tally], quotes: int,
          batch_size: int, *, dropped: Callable[[], list[int]]) -> dict[str, Any]:
    """One timed burst of ``quotes`` quotes of ``symbol``, then the sentinel; ``tallies``
    count them; ``dropped`` reads each lease's drop counter (outside the timed window)."""
    for tally in tallies:
        tally.arm()
    dropped_before = dropped()
    gc.collect()
    time.sleep(SETTLE_SECONDS)
    timeout = max(60.0, quotes / 500)
    started = time.perf_counter()
    sim.publish_quotes(symbol, quotes, batch_size=batch_size, timeout=timeout)
    sim.publish_quote(symbol, bid_price=SENTINEL_BID, ask_price=SENTINEL_BID + 0.01)
    published = time.perf_counter()
    complete = all(tally.done.wait(timeout) for tally in tallies)
    finished = max(tally.done_at for tally in tallies) if complete else time.perf_counter()
    elapsed = finished - started
    drops = [after - before for before, after in zip(dropped_before, dropped(), strict=True)]
    received = [tally.count for tally in tallies]
    return {
        "complete": complete,
        "elapsed_s": round(elapsed, 4),
        "quotes_per_s": round(quotes / elapsed),
        "deliveries_per_s": round(sum(received) / elapsed),
        "delivered_fraction": round(sum(received) / (quotes * len(tallies)), 4),
        "publish_s": round(published - started, 4),
        "received_per_lease": received,
        "dropped_per_lease": drops,
    }


def summarise_runs(runs: list[dict[str, Any]], consumers: int) -> dict[str, Any]:
    return {
        "consumers": consumers,
        "median_quotes_per_s": round(statistics.median(r["quotes_per_s"] for r in runs)),
        "median_deliveries_per_s": round(statistics.median(r["deliveries_per_s"]
                                                           for r in runs)),
        "median_delivered_per_lease_per_s": round(statistics.median(
            r["deliveries_per_s"] / consumers for r in runs)),
        "dropped_total": sum(sum(r["dropped_per_lease"]) for r in runs),
        "runs": runs,
    }


class Consumers:
    """Every throughput consumer, connected for the whole phase."""

    def __init__(self, sim: Simulator) -> None:
        self.manager = make_manager(sim)
        self.tallies: dict[str, list[Tally]] = {name: [] for name in THROUGHPUT_SYMBOLS}
        self.leases: dict[str, list[sw.MarketDataLease]] = {}
        for name, count in MANAGER_LEASES.items():
            self.leases[name] = []
            for index in range(count):
                tally = Tally()
                self.tallies[name].append(tally)
                self.leases[name].append(self.manager.market_data(
                    credentials(name), symbols=[THROUGHPUT_SYMBOLS[name]], on_quote=tally,
                    owner=f"{name}-{index}"))
        self.async_consumer = AsyncConsumer(sim, "async_1_lease",
                                            THROUGHPUT_SYMBOLS["async_1_lease"])
        self.async_consumer.start()
        self.tallies["async_1_lease"].append(self.async_consumer.tally)
        self.streams = [BareStream(sim, name, THROUGHPUT_SYMBOLS[name], raw=name == "bare_raw")
                        for name in ("bare_raw", "bare_parsed")]
        for name, stream in zip(("bare_raw", "bare_parsed"), self.streams, strict=True):
            self.tallies[name].append(stream.tally)
            stream.start()
        for symbol in THROUGHPUT_SYMBOLS.values():
            sim.wait_for(subscribed(symbol), WAIT_SECONDS)

    def dropped(self, name: str) -> Callable[[], list[int]]:
        """Reads the drop counters of configuration ``name``'s leases."""
        if name in self.leases:
            ids = [lease.lease_id for lease in self.leases[name]]
            return lambda: [lease_dropped(self.manager.health(), lease_id) for lease_id in ids]
        if name == "async_1_lease":
            return lambda: [self.async_consumer.dropped()]
        return lambda: [0]  # the bare SDK drops nothing: it queues without a bound

    def close(self, sim: Simulator) -> int:
        lifecycles = len(self.manager.health().lifecycles)
        for leases in self.leases.values():
            for lease in leases:
                lease.release()
        self.manager.close()
        self.async_consumer.stop()
        for stream in self.streams:
            stream.stop_quickly(sim)
        sim.wait_for(no_connection, WAIT_SECONDS)
        return lifecycles


def _ratio(top: float, bottom: float) -> float | None:
    """``top / bottom`` to three places; None when nothing came through below (a quick run's
    conflated burst can leave a lease's delivered rate at zero)."""
    return round(top / bottom, 3) if bottom else None


def ratios(configs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Quotes per second, one configuration over another: of the medians, per repetition
    (paired), and of the delivered rate per lease (drops excluded); with the goal if any."""
    pairs = [(managed, bare) for managed in MANAGER_LEASES for bare in ("bare_raw", "bare_parsed")]
    pairs.append(("async_1_lease", "manager_1_lease"))
    result = {}
    for top, bottom in pairs:
        paired = [t["quotes_per_s"] / b["quotes_per_s"] for t, b in
                  zip(configs[top]["runs"], configs[bottom]["runs"], strict=True)]
        name = f"{top}/{bottom}"
        entry: dict[str, Any] = {
            "of_medians": _ratio(configs[top]["median_quotes_per_s"],
                                 configs[bottom]["median_quotes_per_s"]),
            "median_paired": round(statistics.median(paired), 3),
            "paired": [round(r, 3) for r in paired],
            "delivered_per_lease_of_medians": _ratio(
                configs[top]["median_delivered_per_lease_per_s"],
                configs[bottom]["median_delivered_per_lease_per_s"]),
        }
        if name in GOALS:
            entry["goal"] = GOALS[name]
            entry["meets_goal"] = entry["median_paired"] >= GOALS[name]
        result[name] = entry
    return result


def bench_throughput(sim: Simulator, quotes: int, repeat: int,
                     batch_size: int) -> dict[str, Any]:
    consumers = Consumers(sim)
    tallies = consumers.tallies
    warmup = min(quotes, 2000)
    for name, symbol in THROUGHPUT_SYMBOLS.items():
        burst(sim, symbol, tallies[name], warmup, batch_size, dropped=consumers.dropped(name))
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in THROUGHPUT_SYMBOLS}
    for rep in range(repeat):
        for name, symbol in THROUGHPUT_SYMBOLS.items():
            runs[name].append(burst(sim, symbol, tallies[name], quotes, batch_size,
                                    dropped=consumers.dropped(name)))
            progress(f"throughput rep {rep + 1}/{repeat} {name}: "
                     f"{runs[name][-1]['quotes_per_s']} quotes/s, dropped "
                     f"{sum(runs[name][-1]['dropped_per_lease'])}")
    lifecycles = consumers.close(sim)
    configs = {name: summarise_runs(runs[name], len(tallies[name])) for name in runs}
    return {
        "burst": {"quotes": quotes, "batch_size": batch_size, "warmup_quotes": warmup,
                  "symbols": THROUGHPUT_SYMBOLS},
        "configs": configs,
        "ratios_quotes_per_s": ratios(configs),
        "goals": GOALS,
        "manager_lifecycles": lifecycles,
        "note": "quotes_per_s = burst size / (sentinel seen by the last consumer - publish "
                "start); deliveries_per_s counts the quotes the leases received (the ones "
                "conflated away are in dropped_per_lease, read from health()). The simulator "
                "shares the process (and the GIL); publish_s is its own sending time, and "
                "publish_s close to elapsed_s means the consumer kept up with it (the figure "
                "is then a lower bound of what the consumer can take). Runs are interleaved; "
                "'paired' ratios compare runs of the same repetition and are judged against "
                "the goals. async_1_lease: AsyncConnectionManager, async for over "
                "feed.quotes() on its own thread's loop; manager_*: sync ConnectionManager, "
                "on_quote callbacks on the callback workers.",
    }


# (b) Stop latency.


def manager_stop_once(sim: Simulator, manager: sw.ConnectionManager, idle: float) -> dict[str, Any]:
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
    sink = InMemoryAuditSink(capacity=10_000)
    manager = make_manager(sim, sink)
    manager_runs = [manager_stop_once(sim, manager, idle) for _ in range(manager_reps)]
    clean = sum(1 for r in sink.records()
                if r.event == "closed" and (r.details or {}).get("stop_clean"))
    manager.close()
    progress("stop: manager " + ", ".join(f"{r['until_stopped_ms']:.1f}" for r in manager_runs)
             + " ms")
    sdk_runs: list[dict[str, Any]] = []
    with watching_acks() as watch:
        for rep in range(sdk_reps):
            sdk_runs.append(sdk_stop_once(sim, watch, idle))
            progress(f"stop: sdk rep {rep + 1}/{sdk_reps}: "
                     f"{sdk_runs[-1]['until_thread_ended_s']:.3f} s")
    manager_median = statistics.median(r["until_stopped_ms"] for r in manager_runs)
    sdk_median = (statistics.median(r["until_thread_ended_s"] for r in sdk_runs)
                  if sdk_runs else None)
    return {
        "idle_before_stop_s": idle,
        "manager": {"median_ms": round(manager_median, 3),
                    "max_ms": max(r["until_stopped_ms"] for r in manager_runs),
                    "clean_stops_audited": clean, "runs": manager_runs},
        "sdk_stop": {"median_s": None if sdk_median is None else round(sdk_median, 4),
                     "runs": sdk_runs},
        "ratio_sdk/manager": (None if sdk_median is None
                              else round(sdk_median * 1000 / max(manager_median, 1e-3), 1)),
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
        "streamwarden": sw.__version__,
        "loadavg_1min_at_start": round(os.getloadavg()[0], 2),
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quotes", type=int, default=20_000, help="quotes per burst")
    parser.add_argument("--repeat", type=int, default=3, help="timed bursts per consumer")
    parser.add_argument("--batch-size", type=int, default=100,
                        help="quotes per WebSocket frame in the burst (default 100)")
    parser.add_argument("--stop-reps", type=int, default=10, help="manager stops")
    parser.add_argument("--sdk-stop-reps", type=int, default=3,
                        help="SDK stops (~5 s each; 0 skips them)")
    parser.add_argument("--idle", type=float, default=0.5,
                        help="seconds a stream idles after its ack before the stop")
    parser.add_argument("--cycles", type=int, default=50, help="start cycles per side")
    parser.add_argument("--seed", type=int, default=0, help="seed of the quote values")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 300-quote bursts, one of each, no SDK stop")
    args = parser.parse_args()
    if args.quick:
        args.quotes, args.repeat, args.stop_reps, args.sdk_stop_reps = 300, 1, 1, 0
        args.idle, args.cycles = 0.0, 2
    if args.sdk_stop_reps < 0:
        parser.error("--sdk-stop-reps must not be negative")
    for name in ("quotes", "repeat", "batch_size", "stop_reps", "cycles"):
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
                             "printed). Manager stops per phase: throughput 4, stop_latency "
                             f"{args.stop_reps}, start_latency {args.cycles}.",
        "total_seconds": round(time.perf_counter() - began, 1),
    }, indent=2))


if __name__ == "__main__":
    main()
