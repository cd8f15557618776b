"""Benchmark: crypto, option and news streams through one manager lease against bare alpaca-py.

In one run, against one in-process :class:`~streamwarden.simulator.Simulator` on 127.0.0.1,
for each kind:

* crypto and options: the same quote burst (``--quotes`` quotes, ``--batch-size`` per frame,
  ``Simulator.publish_quotes(kind=...)``) through one ``ConnectionManager`` lease
  (``crypto_data`` / ``option_data``, an ``on_quote`` callback) and through a bare
  ``CryptoDataStream`` / ``OptionDataStream`` quote handler in raw mode (the floor). After the
  burst one sentinel quote follows; a consumer is done when it has seen it. Timed from the
  start of the publish until the consumer saw the sentinel; ``--repeat`` runs, interleaved,
  after a warm-up burst. Reported: quotes per second of the burst, quotes received (a lease
  conflates quotes per symbol when its consumer falls behind), medians and the ratio
  lease / bare.
* news: ``--articles`` articles published one by one (each a call into the simulator's thread,
  so the figure is bound by publishing, alike for both), through one ``news`` lease
  (``on_news``) and a bare ``NewsDataStream`` handler in raw mode; articles per second.

Progress goes to stderr, one JSON document to stdout.

    python bench/kinds_throughput.py [--quotes N] [--articles A] [--repeat R] [--quick]
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

from alpaca.data.enums import CryptoFeed, OptionsFeed
from alpaca.data.live.crypto import CryptoDataStream
from alpaca.data.live.news import NewsDataStream
from alpaca.data.live.option import OptionDataStream

import streamwarden as sw
from streamwarden.simulator import CRYPTO_DATA, NEWS, OPTION_DATA, Simulator
from streamwarden.testing import InMemoryAuditSink

SECRET = "bench-secret-value"
WAIT_SECONDS = 20.0
SENTINEL_BID = 9999.0
SYMBOLS = {CRYPTO_DATA: ("BTC/USD", "ETH/USD"),
           OPTION_DATA: ("AAPL241220C00150000", "SPY241220P00500000")}
"""Per kind: the lease's symbol and the bare stream's (each burst reaches one consumer)."""
LAST_HEADLINE = "last"


def progress(message: str) -> None:
    sys.stderr.write(f"[kinds bench] {message}\n")
    sys.stderr.flush()


class Tally:
    """Counts what one consumer receives; notes when it saw the end marker."""

    def __init__(self, is_last: Callable[[Any], bool]) -> None:
        self._is_last = is_last
        self.count = 0
        self.done_at = 0.0
        self.done = threading.Event()

    def arm(self) -> None:
        self.count, self.done_at = 0, 0.0
        self.done.clear()

    def __call__(self, message: Any) -> None:
        if self._is_last(message):
            self.done_at = time.perf_counter()
            self.done.set()
        else:
            self.count += 1

    async def handle(self, message: Any) -> None:
        """The bare SDK's handler (a coroutine function)."""
        self(message)


def is_sentinel(message: Any) -> bool:
    if isinstance(message, dict):
        return float(message.get("bp", 0)) == SENTINEL_BID
    return float(message.bid_price) == SENTINEL_BID


def is_last_article(message: Any) -> bool:
    headline = message.get("headline") if isinstance(message, dict) else message.headline
    return bool(headline == LAST_HEADLINE)


def bare_stream(sim: Simulator, kind: str, name: str) -> Any:
    if kind == CRYPTO_DATA:
        return CryptoDataStream(name, SECRET, raw_data=True, feed=CryptoFeed.US,
                                url_override=sim.crypto_data_url)
    if kind == OPTION_DATA:
        return OptionDataStream(name, SECRET, raw_data=True, feed=OptionsFeed.INDICATIVE,
                                url_override=sim.option_data_url())
    return NewsDataStream(name, SECRET, raw_data=True, url_override=sim.news_url)


def send_sentinel(sim: Simulator, kind: str, symbol: str) -> None:
    if kind == CRYPTO_DATA:
        sim.publish_crypto_quote(symbol, bid_price=SENTINEL_BID, ask_price=SENTINEL_BID + 1)
    else:
        sim.publish_option_quote(symbol, bid_price=SENTINEL_BID, ask_price=SENTINEL_BID + 1)


def quote_burst(sim: Simulator, kind: str, symbol: str, tally: Tally, *, quotes: int,
                batch_size: int) -> dict[str, float]:
    tally.arm()
    start = time.perf_counter()
    sim.publish_quotes(symbol, quotes, batch_size=batch_size, kind=kind, timeout=60.0)
    send_sentinel(sim, kind, symbol)
    if not tally.done.wait(WAIT_SECONDS):
        raise RuntimeError(f"{kind} {symbol}: no sentinel within {WAIT_SECONDS}s")
    elapsed = tally.done_at - start
    return {"quotes_per_s": round(quotes / elapsed), "received": tally.count}


def article_run(sim: Simulator, tally: Tally, articles: int, symbol: str) -> dict[str, float]:
    tally.arm()
    start = time.perf_counter()
    for number in range(articles):
        sim.publish_news(f"article {number}", symbols=[symbol])
    sim.publish_news(LAST_HEADLINE, symbols=[symbol])
    if not tally.done.wait(WAIT_SECONDS):
        raise RuntimeError(f"news {symbol}: the last article did not arrive")
    elapsed = tally.done_at - start
    return {"articles_per_s": round(articles / elapsed), "received": tally.count}


def summarise(runs: list[dict[str, float]], rate: str) -> dict[str, Any]:
    return {"runs": runs, f"median_{rate}": statistics.median(r[rate] for r in runs)}


def ratio(lease: float, bare: float) -> float | None:
    return round(lease / bare, 3) if bare else None


def bench_kind(sim: Simulator, manager: sw.ConnectionManager, kind: str,
               args: argparse.Namespace) -> dict[str, Any]:
    """One lease against one bare stream of ``kind``, bursts interleaved."""
    news = kind == NEWS
    lease_symbol, bare_symbol = ("AAPL", "MSFT") if news else SYMBOLS[kind]
    lease_tally = Tally(is_last_article if news else is_sentinel)
    bare_tally = Tally(is_last_article if news else is_sentinel)
    creds = sw.Credentials(f"PKBENCH{kind.upper().replace('_', '')}", SECRET)
    if kind == CRYPTO_DATA:
        lease = manager.crypto_data(creds, symbols=[lease_symbol], on_quote=lease_tally)
    elif kind == OPTION_DATA:
        lease = manager.option_data(creds, symbols=[lease_symbol], on_quote=lease_tally)
    else:
        lease = manager.news(creds, symbols=[lease_symbol], on_news=lease_tally)
    stream = bare_stream(sim, kind, f"PKBENCHBARE{kind.upper().replace('_', '')}")
    if news:
        stream.subscribe_news(bare_tally.handle, bare_symbol)
    else:
        stream.subscribe_quotes(bare_tally.handle, bare_symbol)
    thread = threading.Thread(target=stream.run, name=f"bench-bare-{kind}", daemon=True)
    thread.start()
    channel = "news" if news else "quotes"
    sim.wait_for(lambda s: bare_symbol in s.wire_subscription(channel, kind), WAIT_SECONDS)

    def run(symbol: str, tally: Tally) -> dict[str, float]:
        if news:
            return article_run(sim, tally, args.articles, symbol)
        return quote_burst(sim, kind, symbol, tally, quotes=args.quotes,
                           batch_size=args.batch_size)

    run(lease_symbol, lease_tally)  # warm-up
    run(bare_symbol, bare_tally)
    lease_runs, bare_runs = [], []
    for _ in range(args.repeat):
        lease_runs.append(run(lease_symbol, lease_tally))
        bare_runs.append(run(bare_symbol, bare_tally))
    lease.release()
    stream.stop()
    sim.drop_connections(kind)  # wakes the SDK's 5-second receive poll
    thread.join(WAIT_SECONDS)
    rate = "articles_per_s" if news else "quotes_per_s"
    result = {"lease": summarise(lease_runs, rate), "bare_raw": summarise(bare_runs, rate)}
    result["ratio_lease_over_bare"] = ratio(result["lease"][f"median_{rate}"],
                                            result["bare_raw"][f"median_{rate}"])
    progress(f"{kind}: lease {result['lease'][f'median_{rate}']:,} {rate}, bare "
             f"{result['bare_raw'][f'median_{rate}']:,} ({result['ratio_lease_over_bare']}x)")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quotes", type=int, default=20_000)
    parser.add_argument("--articles", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true",
                        help="a short run (for tests): 2,000 quotes, 20 articles, 1 repeat")
    args = parser.parse_args()
    if args.quick:
        args.quotes, args.articles, args.repeat = 2_000, 20, 1
    results: dict[str, Any] = {}
    with Simulator() as sim, sw.ConnectionManager(
            audit=InMemoryAuditSink(capacity=10_000),
            settings=sw.Settings(crypto_data_url=sim.crypto_data_url,
                                 option_data_url=sim.option_data_url(), news_url=sim.news_url,
                                 start_timeout=WAIT_SECONDS, stop_timeout=5.0)) as manager:
        for kind in (CRYPTO_DATA, OPTION_DATA, NEWS):
            results[kind] = bench_kind(sim, manager, kind, args)
    print(json.dumps({
        "benchmark": "kinds_throughput",
        "parameters": {"quotes": args.quotes, "articles": args.articles,
                       "batch_size": args.batch_size, "repeat": args.repeat},
        "environment": {"python": platform.python_version(), "cpus": os.cpu_count(),
                        "alpaca_py": importlib.metadata.version("alpaca-py")},
        "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
