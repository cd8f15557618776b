"""An unmodified alpaca-py stream client pointed at a relay, for the relay tests (run as its own
process: ``python -m tests.relay.sdk_client KIND URL KEY SECRET [SYMBOL ...]``).

KIND is ``stocks``, ``crypto``, ``options``, ``news`` or ``trading``. It subscribes quotes of
the SYMBOLs (news: articles; trading: trade updates) and prints one JSON line per message
received (``{"S": symbol, "bp": bid}``, ``{"news": headline}``, ``{"update": event, "order":
client_order_id}``) and one per SDK log line (``{"log": text}``). Lines on its standard input
change the subscription: ``subscribe SYMBOL`` / ``unsubscribe SYMBOL``.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from typing import Any

from alpaca.data.live.crypto import CryptoDataStream
from alpaca.data.live.news import NewsDataStream
from alpaca.data.live.option import OptionDataStream
from alpaca.data.live.stock import StockDataStream
from alpaca.trading.stream import TradingStream

_print_lock = threading.Lock()


def emit(item: dict[str, Any]) -> None:
    with _print_lock:
        sys.stdout.write(json.dumps(item) + "\n")
        sys.stdout.flush()


class _Echo(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        emit({"log": record.getMessage()})


async def on_quote(quote: Any) -> None:
    emit({"S": quote.symbol, "bp": float(quote.bid_price)})


async def on_news(article: Any) -> None:
    emit({"news": article.headline})


async def on_update(update: Any) -> None:
    emit({"update": str(update.event), "order": update.order.client_order_id})


def build(kind: str, url: str, key: str, secret: str, symbols: list[str]) -> Any:
    if kind == "trading":
        stream: Any = TradingStream(key, secret, paper=True, url_override=url)
        stream.subscribe_trade_updates(on_update)
        return stream
    if kind == "news":
        stream = NewsDataStream(key, secret, url_override=url)
        stream.subscribe_news(on_news, *symbols)
        return stream
    classes = {"stocks": StockDataStream, "crypto": CryptoDataStream,
               "options": OptionDataStream}
    stream = classes[kind](key, secret, url_override=url)
    stream.subscribe_quotes(on_quote, *symbols)
    return stream


def main() -> None:
    kind, url, key, secret, *symbols = sys.argv[1:]
    logger = logging.getLogger("alpaca")
    logger.addHandler(_Echo())
    logger.setLevel(logging.INFO)
    stream = build(kind, url, key, secret, symbols)
    threading.Thread(target=stream.run, daemon=True).start()
    for line in sys.stdin:
        action, symbol = line.split()
        if action == "subscribe":
            stream.subscribe_quotes(on_quote, symbol)
        else:
            stream.unsubscribe_quotes(symbol)


if __name__ == "__main__":
    main()
