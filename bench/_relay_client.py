"""One alpaca-py quote consumer for bench/relay_throughput.py, in its own process.

    python bench/_relay_client.py URL KEY SECRET SYMBOL [raw]

It subscribes quotes of SYMBOL, prints ``ready`` once alpaca-py logs the subscription ack,
counts quotes and notes the arrival (``time.monotonic()``, one clock for every process on the
machine) of each quote whose bid is at least LATENCY_BASE; on the sentinel (bid SENTINEL) it
prints ``{"count": n, "done": t, "arrivals": {bid: t}}`` and starts counting afresh.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from alpaca.data.live.stock import StockDataStream

SENTINEL = 9999.0
LATENCY_BASE = 1000.0


class _Ready(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("subscribed to"):
            sys.stdout.write("ready\n")
            sys.stdout.flush()


def main() -> None:
    url, key, secret, symbol = sys.argv[1:5]
    raw = sys.argv[5:] == ["raw"]  # the SDK's raw mode: dicts instead of its models
    logger = logging.getLogger("alpaca.data.live.websocket")
    logger.addHandler(_Ready())
    logger.setLevel(logging.INFO)
    state: dict[str, Any] = {"count": 0, "arrivals": {}}

    async def on_quote(quote: Any) -> None:
        now = time.monotonic()
        bid = float(quote["bp"] if raw else quote.bid_price)
        if bid == SENTINEL:
            sys.stdout.write(json.dumps({"count": state["count"], "done": now,
                                         "arrivals": state["arrivals"]}) + "\n")
            sys.stdout.flush()
            state["count"], state["arrivals"] = 0, {}
            return
        state["count"] += 1
        if bid >= LATENCY_BASE:
            state["arrivals"][repr(bid)] = now

    stream = StockDataStream(key, secret, raw_data=raw, url_override=url)
    stream.subscribe_quotes(on_quote, symbol)
    stream.run()


if __name__ == "__main__":
    main()
