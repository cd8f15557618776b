"""An Alpaca protocol simulator on loopback, for tests, the demo and users' integration tests.

One asyncio WebSocket server (websockets' asyncio API), run on its own event loop in a thread
named ``streamwarden-simulator``, speaks Alpaca's stream protocols on one port:

* market data v2 at ``/v2/<feed>`` (``/v2/iex``, ``/v2/sip``, ...): ``connected`` greeting,
  ``auth``, ``subscribe``/``unsubscribe`` answered with the connection's whole subscription,
  quotes (``T`` = ``q``), trades (``t``) and bars (``b``), and Alpaca's error codes 400-409.
  MessagePack frames (with ``t`` as a MessagePack Timestamp) when the client sends
  ``Content-Type: application/msgpack``, as alpaca-py does; JSON text otherwise.
  See :mod:`streamwarden.simulator.market_data`.
* crypto at ``/v1beta3/crypto/us``, options at ``/v1beta1/indicative`` and ``/v1beta1/opra``
  (MessagePack only: a JSON client gets error 412), news at ``/v1beta1/news``: the same
  protocol with each kind's channels. See :mod:`streamwarden.simulator.kinds`.
* the trading stream at ``/stream``: ``authenticate``, ``listen`` and ``trade_updates`` events
  whose order parses into alpaca-py's ``TradeUpdate``. See :mod:`streamwarden.simulator.trading`.

As strict as Alpaca about connections, with no fault switched on: one authenticated market-data
socket per account and endpoint (a second gets error 406 and is closed); a socket that ended
without a close handshake holds its account's slot for ``reaper_window`` seconds (default 90,
as Alpaca's reaper), a clean close frees it at once; with ``connect_rate_limit``, upgrades
beyond that many per endpoint per second get HTTP 429 with ``Retry-After``; a market-data
client that does not authenticate within ``auth_timeout`` (10 s) gets error 404 and is closed.
Tests that reconnect right after a drop pass ``reaper_window=0``.

Quick use::

    from streamwarden.simulator import Faults, Simulator

    with Simulator(faults=Faults(drop_once=True, drop_after=3)) as sim:
        stream = StockDataStream(key, secret, url_override=sim.market_data_url)
        ...
        sim.publish_quote("AAPL", bid_price="187.20", ask_price="187.22")
        sim.wait_for(lambda s: s.kind("market_data").opened == 2, timeout=5)

Public API (every method thread-safe):

``Simulator(*, host="127.0.0.1", port=0, faults=None, quote_rate=0.0, seed=0, credentials=None,
auth_timeout=10.0, reaper_window=90.0, connect_rate_limit=None, trading_frames="text",
clock=None, history=1000, slow_client_timeout=10.0)``
    ``start(timeout=5.0) -> Simulator`` (returns once listening), ``stop(timeout=5.0)``
    (closes every connection, hung ones included, and joins the thread), context manager;
    ``host``, ``port``, ``market_data_url`` (IEX), ``feed_url(feed)``, ``trade_updates_url``,
    ``control_url`` (``http://HOST:PORT``, see below), ``crypto_data_url``,
    ``option_data_url(feed="indicative")``, ``news_url``;
    ``faults``, ``set_faults(faults) -> Faults`` (previous), ``update_faults(**changes)``,
    ``quote_rate``, ``set_quote_rate(rate)``;
    ``publish_quote(symbol, *, bid_price, ask_price, bid_size=1, ask_size=1, timestamp=None)``,
    ``publish_trade(symbol, *, price, size=1, trade_id=None, timestamp=None)``,
    ``publish_bar(symbol, *, open_price, high_price, low_price, close_price, volume,
    trade_count=1, vwap=None, timestamp=None)``,
    ``publish_quotes(symbol, count, *, batch_size=1, timeout=30.0, kind="market_data")`` (a
    burst, for benchmarks; on stock, crypto or option connections),
    ``publish_crypto_quote``, ``publish_crypto_trade``, ``publish_crypto_bar``,
    ``publish_option_quote``, ``publish_option_trade``, ``publish_news(headline, *, symbols=(),
    ...)`` (see :mod:`._kind_publishing`),
    ``publish_raw(batch)`` (market-data messages as given, unchecked, in one frame: malformed
    data for tests),
    ``publish_trade_update(event="fill", *, symbol="AAPL", side="buy", qty=1, price=None,
    order_id=None, position_qty=None, client_order_id=None)`` -- each returns how many
    connections (for the burst: messages) it reached and takes ``timeout``;
    ``drop_connections(kind="market_data") -> int`` (server-side abort now; any kind; the
    market-data slots of the dropped sockets are then held for the reaper window);
    ``stats() -> SimulatorStats``, ``wait_for(predicate, timeout=5.0) -> SimulatorStats``.
``Faults`` (frozen): ``auth_failure``, ``connection_limit``, ``symbol_limit``,
    ``insufficient_subscription``, ``drop_after``, ``drop_once``, ``hang_on_close``,
    ``slow_start``; ``Faults.parse(["drop_after=3", ...])``. See :mod:`.faults`.
``SimulatorStats``, ``ConnectionStats``, ``KindStats``, ``AuthAttempt``, ``ErrorSent``:
    immutable snapshots. Key ids are recorded; secrets are never kept (accepted secrets only
    as salted digests), logged, or shown in a repr.
``SimulatorError``: could not start, stop or carry out a request in time.

Control from another process: plain HTTP ``GET /control/<action>`` on the simulator's port
(``quote``, ``trade``, ``bar``, ``trade_update``, ``crypto_quote``, ``crypto_trade``,
``option_quote``, ``option_trade``, ``news``, ``drop``, ``stats``; the query parameters are
the keyword arguments of the methods above; answered from loopback only, and only with the
header ``X-Streamwarden-Control``). See :mod:`._control`.

Command line: ``streamwarden simulator --port P [--fault ...]``, and ``streamwarden simulator
publish quote|trade|bar|fill|crypto-quote|crypto-trade|option-quote|option-trade|news``,
``drop``, ``stats`` with ``--url http://HOST:PORT`` to control
a running one (:mod:`.command`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from streamwarden.simulator._errors import SimulatorError
from streamwarden.simulator.faults import Faults
from streamwarden.simulator.stats import (
    CRYPTO_DATA,
    MARKET_DATA,
    NEWS,
    OPTION_DATA,
    TRADE_UPDATES,
    AuthAttempt,
    ConnectionStats,
    ErrorSent,
    KindStats,
    SimulatorStats,
    StreamKind,
)

__all__ = [
    "CRYPTO_DATA",
    "MARKET_DATA",
    "NEWS",
    "OPTION_DATA",
    "TRADE_UPDATES",
    "AuthAttempt",
    "ConnectionStats",
    "ErrorSent",
    "Faults",
    "KindStats",
    "Simulator",
    "SimulatorError",
    "SimulatorStats",
    "StreamKind",
]


def __getattr__(name: str) -> Any:
    # The server (websockets, structlog) loads on first use, so that the control commands,
    # which only send HTTP requests, start fast.
    if name != "Simulator":
        raise AttributeError(f"module 'streamwarden.simulator' has no attribute {name!r}")
    from streamwarden.simulator.simulator import Simulator  # noqa: PLC0415

    globals()[name] = Simulator
    return Simulator


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:
    from streamwarden.simulator.simulator import Simulator
