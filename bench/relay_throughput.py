"""Benchmark: alpaca-py clients through ``streamwarden relay`` against the same clients
connected directly to the simulator, in one run.

One in-process :class:`~streamwarden.simulator.Simulator` on 127.0.0.1; one relay process
(``python -m streamwarden relay``, upstream: the simulator); unmodified alpaca-py
``StockDataStream`` clients, each its own process (``bench/_relay_client.py``). For each of
``--clients`` (1, 4, 16): that many clients through the relay (all with the account's
credentials, on one upstream socket) and that many connected directly (each with its own
account: the simulator, as Alpaca, allows one socket per account and endpoint), on two
symbols, so that a publish reaches one group only.

(a) throughput: a burst of ``--quotes`` generated quotes (``--batch-size`` per frame), then a
    sentinel quote; a group is done when its last client saw the sentinel. Reported: quotes
    per second of the burst (the slowest client's), deliveries per second, and the ratio
    relay/direct; ``--repeat`` interleaved runs, medians.
(b) latency: ``--rate`` quotes per second for ``--seconds``, each stamped in its bid; latency =
    a client's arrival minus the moment just before the simulator was asked to publish it
    (``time.monotonic()``, one clock for every process). Reported: p50/p99 per group, and the
    relay's added p99 (relay p99 - direct p99).

(c) CPU, per phase: the relay process's CPU time per relayed quote and the busy fraction of
    the whole machine (Linux ``/proc``): the relay's added latency is its extra hop, which
    waits for a CPU when the clients keep every CPU busy.

The relay runs with queues sized to the burst (``--queue-size``, ``STREAMWARDEN_LEASE_QUEUE_SIZE``)
so that the throughput phase measures forwarding, not the slow-client cut. Goals: >= 0.8x
direct with 16 clients; <= 2 ms added p99. Progress to stderr, one JSON document to stdout.

``--client-mode raw`` runs every client in alpaca-py's raw mode (dicts, not its models): the
same relay work, less client CPU.

    python bench/relay_throughput.py [--clients 1 4 16] [--quotes N] [--repeat R]
        [--client-mode parsed|raw] [--quick]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _stats import percentile

from streamwarden.simulator import Simulator

ROOT = Path(__file__).resolve().parent.parent
CLIENT = Path(__file__).resolve().parent / "_relay_client.py"
UPSTREAM_KEY = "PKBENCHRELAYUPSTREAM"
SECRET = "bench-secret-value"
SENTINEL = 9999.0
LATENCY_BASE = 1000.0
WAIT = 120.0
GOAL_RATIO_16 = 0.8
GOAL_ADDED_P99_MS = 2.0


def progress(message: str) -> None:
    sys.stderr.write(f"[relay bench] {message}\n")
    sys.stderr.flush()


class Process:
    """A child process whose stdout lines are read by a thread into a queue."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.popen = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.put(line.strip())

    def line(self, predicate: Any = lambda line: True) -> str:
        deadline = time.monotonic() + WAIT
        while True:
            line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            if predicate(line):
                return line

    def report(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.line(lambda line: line.startswith("{")))
        return result

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


class CpuMeter:
    """CPU time of the relay process and busy fraction of the whole machine between
    :meth:`start` and :meth:`stop` (Linux ``/proc``; None elsewhere)."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._began: tuple[float, float, float] | None = None

    def _read(self) -> tuple[float, float, float] | None:
        try:
            fields = Path(f"/proc/{self._pid}/stat").read_text().rsplit(")", 1)[1].split()
            machine = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        except (OSError, IndexError, ValueError):
            return None
        tick = os.sysconf("SC_CLK_TCK")
        idle = machine[3] + machine[4]  # idle + iowait
        return (int(fields[11]) + int(fields[12])) / tick, sum(machine) / tick, idle / tick

    def start(self) -> None:
        self._began = self._read()

    def stop(self, relayed_quotes: int) -> dict[str, Any] | None:
        """The relay's CPU microseconds per relayed quote, and the machine's busy fraction."""
        ended = self._read()
        if self._began is None or ended is None or relayed_quotes <= 0:
            return None
        relay, total, idle = (after - before for after, before in zip(ended, self._began,
                                                                         strict=True))
        return {"relay_cpu_us_per_relayed_quote": round(relay / relayed_quotes * 1e6, 1),
                "machine_cpu_busy_fraction": round(1 - idle / total, 3) if total else None}


def start_relay(sim: Simulator, queue_size: int, directory: str) -> tuple[Process, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "APCA_API_KEY_ID": UPSTREAM_KEY,
           "APCA_API_SECRET_KEY": SECRET, "STREAMWARDEN_MARKET_DATA_URL": sim.market_data_url,
           "STREAMWARDEN_LEASE_QUEUE_SIZE": str(queue_size), "STREAMWARDEN_STOP_TIMEOUT": "2"}
    db = f"sqlite:///{Path(directory) / 'relay-audit.db'}"
    relay = Process([sys.executable, "-m", "streamwarden", "relay", "--listen", "127.0.0.1:0",
                     "--db", db, "--queue-size", str(queue_size)], env)
    url = relay.line(lambda line: "listening on" in line).split()[-1]
    return relay, url + "/v2/iex"


def start_clients(url: str, keys: list[str], symbol: str, mode: str) -> list[Process]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    clients = [Process([sys.executable, str(CLIENT), url, key, SECRET, symbol, mode], env)
               for key in keys]
    for client in clients:
        client.line(lambda line: line == "ready")
    return clients


def burst(sim: Simulator, clients: list[Process], symbol: str, quotes: int,
          batch_size: int) -> dict[str, Any]:
    started = time.monotonic()
    sim.publish_quotes(symbol, quotes, batch_size=batch_size, timeout=WAIT)
    sim.publish_quote(symbol, bid_price=SENTINEL, ask_price=SENTINEL + 1, timeout=WAIT)
    reports = [client.report() for client in clients]
    seconds = max(report["done"] for report in reports) - started
    received = [report["count"] for report in reports]
    return {"seconds": round(seconds, 4), "quotes_per_s": round(quotes / seconds),
            "deliveries_per_s": round(sum(received) / seconds), "received": received}


def steady(sim: Simulator, groups: dict[str, tuple[list[Process], str]], rate: float,
           seconds: float) -> dict[str, Any]:
    """Quotes at ``rate`` per second, alternating between the groups' symbols."""
    count = int(rate * seconds)
    published: dict[str, dict[str, float]] = {name: {} for name in groups}
    names = list(groups)
    start = time.monotonic()
    for index in range(count):
        name = names[index % len(names)]
        bid = LATENCY_BASE + index / 100
        due = start + index / rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        published[name][repr(bid)] = time.monotonic()
        sim.publish_quote(groups[name][1], bid_price=bid, ask_price=bid + 1)
    result: dict[str, Any] = {}
    for name, (clients, symbol) in groups.items():
        sim.publish_quote(symbol, bid_price=SENTINEL, ask_price=SENTINEL + 1)
        latencies = []
        for client in clients:
            arrivals = client.report()["arrivals"]
            latencies += [(arrivals[bid] - at) * 1000 for bid, at in published[name].items()
                          if bid in arrivals]
        expected = len(published[name]) * len(clients)
        result[name] = {"p50_ms": round(statistics.median(latencies), 3),
                        "p99_ms": round(percentile(latencies, 0.99), 3),
                        "max_ms": round(max(latencies), 3), "received": len(latencies),
                        "expected": expected}
    return result


def measure(sim: Simulator, relay: Process, relay_url: str, size: int,
            args: argparse.Namespace) -> dict[str, Any]:
    direct_symbol, relay_symbol = f"D{size}X", f"R{size}X"
    progress(f"{size} client(s): starting {2 * size} alpaca-py processes")
    direct = start_clients(sim.market_data_url,
                           [f"PKBENCHDIRECT{size:02d}{i:03d}" for i in range(size)],
                           direct_symbol, args.client_mode)
    relayed = start_clients(relay_url, [UPSTREAM_KEY] * size, relay_symbol, args.client_mode)
    try:
        runs: dict[str, list[dict[str, Any]]] = {"direct": [], "relay": []}
        burst(sim, direct, direct_symbol, max(100, args.quotes // 10), args.batch_size)  # warm
        burst(sim, relayed, relay_symbol, max(100, args.quotes // 10), args.batch_size)
        meter = CpuMeter(relay.popen.pid)
        meter.start()
        for _ in range(args.repeat):
            runs["direct"].append(burst(sim, direct, direct_symbol, args.quotes,
                                        args.batch_size))
            runs["relay"].append(burst(sim, relayed, relay_symbol, args.quotes,
                                       args.batch_size))
        cpu = {"bursts": meter.stop(args.quotes * args.repeat)}
        medians = {name: statistics.median(run["quotes_per_s"] for run in group)
                   for name, group in runs.items()}
        meter.start()
        latency = steady(sim, {"direct": (direct, direct_symbol),
                               "relay": (relayed, relay_symbol)}, args.rate, args.seconds)
        cpu["steady"] = meter.stop(int(args.rate * args.seconds) // 2)
    finally:
        for client in direct + relayed:
            client.stop()
    ratio = medians["relay"] / medians["direct"]
    progress(f"{size} client(s): relay/direct {ratio:.2f}, added p99 "
             f"{latency['relay']['p99_ms'] - latency['direct']['p99_ms']:.2f} ms")
    return {"clients": size, "runs": runs, "median_quotes_per_s": medians, "cpu": cpu,
            "ratio_relay_direct": round(ratio, 3), "latency": latency,
            "added_p99_ms": round(latency["relay"]["p99_ms"] - latency["direct"]["p99_ms"], 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--quotes", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--client-mode", choices=("parsed", "raw"), default="parsed",
                        help="the clients' alpaca-py mode: its models (default) or raw dicts, "
                             "which leaves the CPUs more room")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes (a smoke test of the script, not a measurement)")
    args = parser.parse_args()
    if args.quick:
        args.clients, args.quotes, args.repeat, args.seconds = [1, 2], 500, 1, 0.5
    with Simulator(reaper_window=0, quote_rate=0) as sim, \
            tempfile.TemporaryDirectory() as directory:
        relay, relay_url = start_relay(sim, args.quotes * 2 + 1000, directory)
        try:
            results = [measure(sim, relay, relay_url, size, args) for size in args.clients]
            upstream = sim.stats().kind("market_data")
        finally:
            relay.stop()
    by_size = {result["clients"]: result for result in results}
    biggest = by_size[max(by_size)]
    document = {
        "benchmark": "relay_throughput",
        "quick": args.quick,
        "settings": {"quotes": args.quotes, "batch_size": args.batch_size,
                     "client_mode": args.client_mode,
                     "repeat": args.repeat, "rate": args.rate, "seconds": args.seconds},
        "results": results,
        "relay_upstream_sockets_opened": upstream.opened - sum(args.clients),  # one per size
        "goals": {
            f"ratio_relay_direct_{max(by_size)}_clients": {
                "goal": f">= {GOAL_RATIO_16}", "measured": biggest["ratio_relay_direct"],
                "met": biggest["ratio_relay_direct"] >= GOAL_RATIO_16},
            "added_p99_ms_max": {
                "goal": f"<= {GOAL_ADDED_P99_MS}",
                "measured": max(result["added_p99_ms"] for result in results),
                "met": max(result["added_p99_ms"] for result in results) <= GOAL_ADDED_P99_MS},
        },
        "environment": {"python": platform.python_version(), "cpus": os.cpu_count(),
                        "alpaca-py": importlib.metadata.version("alpaca-py")},
    }
    print(json.dumps(document, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
