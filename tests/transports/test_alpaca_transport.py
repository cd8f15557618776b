"""The manager over the real alpaca-py SDK, against the project's simulator on 127.0.0.1.

No mock anywhere: the SDK's own ``StockDataStream`` / ``TradingStream`` speak to
:class:`streamwarden.simulator.Simulator`, which counts connections, subscriptions and auth
attempts, and injects the faults.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from decimal import Decimal

import pytest

from streamwarden import (
    AuthenticationError,
    ConnectionLimitError,
    ConnectionManager,
    InMemoryAuditSink,
    LeaseRevokedError,
    Settings,
    StartTimeoutError,
    SubscriptionError,
)
from streamwarden.machine.alpaca_transport import AlpacaTransport
from streamwarden.machine.keys import StreamKey
from streamwarden.simulator import Faults, Simulator
from tests.conftest import CANARY_KEY_ID, CANARY_SECRET
from tests.test_secret_canary import assert_no_canary, canary_outputs
from tests.waiting import wait_until

BOUND = 5.0
"""Generous bound for behaviour that normally takes milliseconds."""


def alpaca_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate()
            if t.name.startswith(("streamwarden-alpaca", "streamwarden-supervisor"))]




@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator() as simulator:
        yield simulator


@pytest.fixture
def sim_settings(sim: Simulator) -> Settings:
    return Settings(market_data_url=sim.market_data_url, trade_updates_url=sim.trade_updates_url,
                    start_timeout=3.0, stop_timeout=1.0, debug=True)


@pytest.fixture
def live(sim_settings: Settings, sink: InMemoryAuditSink) -> Iterator[ConnectionManager]:
    manager = ConnectionManager(audit=sink, settings=sim_settings)
    yield manager
    manager.close()
    assert manager.check_invariants() == []
    assert wait_until(lambda: not alpaca_threads())


def events(sink: InMemoryAuditSink, kind: str = "market_data") -> list[tuple[str, str | None]]:
    return [(r.event, r.to_state) for r in sink.records()
            if r.kind == kind and not r.event.startswith("lease_")]


def test_two_leases_share_one_socket_and_the_wire_carries_the_union(live, sim, creds):
    first = live.market_data(creds, symbols=["AAPL"], owner="momentum")
    second = live.market_data(creds, symbols=["MSFT", "AAPL"], owner="pairs")
    second.subscribe_bars("SPY")

    def wire() -> dict[str, frozenset[str]]:
        (connection,) = [c for c in sim.stats().connections if c.is_open]
        return {k: v for k, v in connection.subscription.items() if v}

    assert wait_until(lambda: wire() == {"quotes": {"AAPL", "MSFT"},
                                         "trades": {"AAPL", "MSFT"}, "bars": {"SPY"}})
    assert sim.stats().kinds["market_data"].opened == 1
    second.release()  # MSFT and the bars go; AAPL stays for the first lease
    assert wait_until(lambda: wire() == {"quotes": {"AAPL"}, "trades": {"AAPL"}})
    assert live.check_invariants() == []
    first.release()
    assert sim.stats().kinds["market_data"].opened == 1


def test_quotes_fan_out_parsed_once_with_decimal_prices(live, sim, creds):
    got: dict[str, list[object]] = {"a": [], "b": []}
    a = live.market_data(creds, symbols=["AAPL"], on_quote=got["a"].append)
    live.market_data(creds, symbols=["AAPL"], on_quote=got["b"].append)
    sim.publish_quote("AAPL", bid_price="187.10", ask_price="187.12")
    quote = a.wait_for_quote("AAPL", timeout=BOUND)
    assert (quote.bid_price, quote.ask_price) == (Decimal("187.10"), Decimal("187.12"))
    assert wait_until(lambda: len(got["a"]) == len(got["b"]) == 1)
    assert got["a"][0] is got["b"][0]
    sim.publish_trade("AAPL", price="187.11", size=5)
    assert wait_until(lambda: a.latest_trade("AAPL") is not None)
    assert a.latest_trade("AAPL").price == Decimal("187.11")  # type: ignore[union-attr]


def test_trade_updates_reach_every_lease_and_a_raising_callback_is_isolated(live, sim, creds):
    received: list[object] = []

    def broken(update: object) -> None:
        raise RuntimeError("strategy bug")

    live.trade_updates(creds, on_update=received.append, owner="a")
    live.trade_updates(creds, on_update=broken, owner="b")
    live.trade_updates(creds, on_update=received.append, owner="c")
    for _ in range(2):
        sim.publish_trade_update("fill", symbol="AAPL", price="187.1")
    assert wait_until(lambda: len(received) == 4)
    assert type(received[0]).__name__ == "TradeUpdate"
    assert received[0].order.symbol == "AAPL"  # type: ignore[attr-defined]
    (lifecycle,) = live.health().lifecycles
    assert (lifecycle.state, lifecycle.callback_errors, lifecycle.messages) == ("running", 2, 2)
    assert sim.stats().kinds["trade_updates"].opened == 1


def test_a_drop_is_lost_then_reconnected_in_the_audit_trail(live, sim, creds, sink):
    lease = live.market_data(creds, symbols=["AAPL"])
    assert sim.drop_connections() == 1
    assert wait_until(lambda: events(sink).count(("connected", "running")) == 2)
    assert events(sink) == [("acquire", "starting"), ("connected", "running"),
                            ("connection_lost", "starting"), ("connected", "running")]
    assert sim.stats().kinds["market_data"].opened == 2
    assert lease.is_live and live.health().lifecycles[0].reconnects == 1
    sim.publish_quote("AAPL", bid_price="1.5", ask_price="1.6")  # the subscription came back
    assert lease.wait_for_quote("AAPL", timeout=BOUND).bid_price == Decimal("1.5")


def test_drop_after_n_messages_reconnects(live, sim, creds, sink):
    sim.set_faults(Faults(drop_after=3, drop_once=True))
    lease = live.market_data(creds, symbols=["AAPL"])
    sim.publish_quotes("AAPL", 5)
    assert wait_until(lambda: events(sink).count(("connected", "running")) == 2)
    assert ("connection_lost", "starting") in events(sink)
    assert lease.is_live


@pytest.mark.parametrize(("faults", "error", "kind"), [
    (Faults(auth_failure=True), AuthenticationError, "market_data"),
    (Faults(auth_failure=True), AuthenticationError, "trade_updates"),
    (Faults(connection_limit=True), ConnectionLimitError, "market_data"),
    (Faults(symbol_limit=True), SubscriptionError, "market_data"),
    (Faults(insufficient_subscription=True), SubscriptionError, "market_data"),
], ids=["auth-402", "auth-unauthorized", "limit-406", "symbols-405", "subscription-409"])
def test_a_refusal_ends_the_lifecycle_with_its_typed_error(  # noqa: PLR0917
        live, sim, creds, sink, faults, error, kind):
    sim.set_faults(faults)
    started = time.monotonic()
    with pytest.raises(error):
        if kind == "market_data":
            live.market_data(creds, symbols=["AAPL"])
        else:
            live.trade_updates(creds, on_update=print)
    assert time.monotonic() - started < BOUND
    assert events(sink, kind)[-1] == ("start_failed", "stopped")
    assert wait_until(lambda: not alpaca_threads())
    attempts = sim.stats().kinds[kind].auth_attempts
    time.sleep(1.5)  # longer than the SDK's first reconnect delay: it must not retry
    assert sim.stats().kinds[kind].auth_attempts == attempts
    assert sim.stats().kinds[kind].open == 0


def test_no_connected_within_start_timeout_is_a_start_timeout(sim, creds, sink):
    sim.set_faults(Faults(slow_start=2.0))
    settings = Settings(market_data_url=sim.market_data_url, start_timeout=0.3,
                        stop_timeout=0.5)
    with ConnectionManager(audit=sink, settings=settings) as manager:
        started = time.monotonic()
        with pytest.raises(StartTimeoutError):
            manager.market_data(creds, symbols=["AAPL"])
        assert time.monotonic() - started < 0.3 + 1.0
    # The acquirer gives its lease back at the deadline (starting -> draining -> closed) unless
    # the supervisor's own start timeout fires first (start_failed): either way, stopped.
    assert events(sink)[-1] in {("start_failed", "stopped"), ("closed", "stopped")}


def test_a_normal_stop_takes_well_under_100_ms(live, creds, sink, caplog):
    caplog.set_level(logging.WARNING, logger="alpaca")
    for _ in range(20):
        live.market_data(creds, symbols=["AAPL"]).release()
        started = time.monotonic()
        assert wait_until(lambda: not live.health().lifecycles)
        assert time.monotonic() - started < 0.1
    closes = [r for r in sink.records() if r.event == "closed"]
    assert len(closes) == 20 and all(r.details["stop_clean"] for r in closes)
    # The SDK is stopped the way its own stop() does: no "restarting connection" warning.
    assert [r.getMessage() for r in caplog.records if r.name.startswith("alpaca")] == []


def test_a_hung_peer_is_forced_stopped_and_counted(live, sim, creds, sink, sim_settings):
    sim.set_faults(Faults(hang_on_close=True))
    lease = live.market_data(creds, symbols=["AAPL"])
    started = time.monotonic()
    lease.release()
    assert wait_until(lambda: not live.health().lifecycles)
    assert time.monotonic() - started < sim_settings.stop_timeout + 1.0
    (final,) = [r for r in sink.records() if r.event == "close_timeout"]
    assert (final.to_state, final.outcome, final.error_type) == (
        "stopped", "forced", "StopTimeoutError")
    assert live.health().abandoned_threads == 1


def test_close_revokes_the_leases_of_live_connections(sim_settings, creds):
    manager = ConnectionManager(settings=sim_settings)
    lease = manager.market_data(creds, symbols=["AAPL"])
    manager.close()
    with pytest.raises(LeaseRevokedError):
        lease.ensure_live()


def _open_client_sockets(port: int) -> int:
    """Established TCP connections from this process to the simulator's port."""
    with open("/proc/net/tcp") as table:
        rows = table.read().splitlines()[1:]
    return sum(1 for row in rows
               if int(row.split()[2].split(":")[1], 16) == port and row.split()[3] == "01")


def test_no_thread_or_socket_left_after_200_acquire_stop_cycles(live, sim, creds):
    for _ in range(200):
        live.market_data(creds, symbols=["AAPL"]).release()
        assert wait_until(lambda: not live.health().lifecycles)
    assert wait_until(lambda: not alpaca_threads())
    assert wait_until(lambda: _open_client_sockets(sim.port) == 0)
    assert sim.stats().kinds["market_data"].opened == 200
    assert wait_until(lambda: sim.stats().kinds["market_data"].open == 0)
    assert socket.gethostname()  # the process still works normally


def test_secret_canary_across_the_sdk_path(caplog, sim, sim_settings, creds, sink):
    """The canary credentials go through alpaca-py and the simulator: connect, stream, a callback
    raising with them in its text, a drop, a refusal; nothing shows them."""
    caplog.set_level(logging.DEBUG)  # the SDK's loggers and websockets' too
    leaky = f"strategy saw key={CANARY_KEY_ID} secret={CANARY_SECRET}"
    raised: list[BaseException] = []

    def leaky_callback(quote: object) -> None:
        raise RuntimeError(leaky)

    manager = ConnectionManager(audit=sink, settings=sim_settings, log_format="json")
    lease = manager.market_data(creds, symbols=["AAPL"], on_quote=leaky_callback)
    sim.publish_quote("AAPL", bid_price="1.0", ask_price="1.1")
    sim.drop_connections()
    assert wait_until(lambda: manager.health().lifecycles[0].reconnects == 1
                      and manager.health().lifecycles[0].state == "running")
    lease.release()
    sim.set_faults(Faults(auth_failure=True))
    for acquire in (lambda: manager.market_data(creds, symbols=["MSFT"]),
                    lambda: manager.trade_updates(creds, on_update=print)):
        try:
            acquire()
        except AuthenticationError as exc:
            raised.append(exc)
    health = manager.health().to_json()
    manager.close()
    outputs = canary_outputs(caplog, sink, health, raised)
    assert "lease.callback_failed" in outputs["logs"] and "alpaca" in outputs["logs"]
    assert len(raised) == 2 and "connection_lost" in outputs["audit"]
    assert_no_canary(outputs)


def test_drain_grace_keeps_the_socket_for_a_quick_reacquire(sim, creds, sink):
    settings = Settings(market_data_url=sim.market_data_url, drain_grace=1.0, stop_timeout=1.0)
    with ConnectionManager(audit=sink, settings=settings) as manager:
        first = manager.market_data(creds, symbols=["AAPL"])
        first.release()
        again = manager.market_data(creds, symbols=["MSFT"])  # within the grace: reused
        assert again.lifecycle_id == first.lifecycle_id
        assert events(sink)[-1] == ("acquire", "running")
        again.release()
        assert wait_until(lambda: not manager.health().lifecycles, timeout=1.0 + BOUND)
    assert sim.stats().kinds["market_data"].opened == 1


def test_an_acquire_waits_for_a_closing_predecessor_so_sockets_never_overlap(sim, creds, sink):
    sim.set_faults(Faults(hang_on_close=True))  # the old socket takes stop_timeout to go
    settings = Settings(market_data_url=sim.market_data_url, stop_timeout=0.5)
    with ConnectionManager(audit=sink, settings=settings) as manager:
        old = manager.market_data(creds, symbols=["AAPL"])
        old.release()
        new = manager.market_data(creds, symbols=["AAPL"])
        assert new.lifecycle_id != old.lifecycle_id
        trail = [(r.lifecycle_id, r.event) for r in sink.records()]
        # The predecessor reached stopped (forced) before the successor's first acquire.
        assert trail.index((old.lifecycle_id, "close_timeout")) < \
            trail.index((new.lifecycle_id, "acquire"))
        new.release()


class _Listener:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def on_connected(self) -> None:
        self.calls.append("connected")

    def on_connection_lost(self, reason: str) -> None:
        self.calls.append("lost")

    def on_fatal_error(self, error: object) -> None:
        self.calls.append("fatal")

    def on_message(self, message: object) -> None:
        self.calls.append("message")


def test_a_transport_stopped_before_it_started_never_starts(sim, sim_settings, creds):
    key = StreamKey("0" * 24, "market_data", True, "iex")
    transport = AlpacaTransport(key, creds, sim_settings)
    transport.subscribe([("quotes", "AAPL")])
    assert transport.stop(0.1) is True
    listener = _Listener()
    transport.start(listener)
    assert not transport.thread_alive and not transport.socket_open
    assert transport.subscriptions == {("quotes", "AAPL")}
    assert sim.stats().kinds["market_data"].opened == 0 and listener.calls == []


def test_a_transport_stops_twice_and_its_thread_is_named(sim, sim_settings, creds):
    key = StreamKey("1" * 24, "trade_updates", True, None)
    transport = AlpacaTransport(key, creds, sim_settings)
    listener = _Listener()
    transport.start(listener)
    assert wait_until(lambda: listener.calls == ["connected"])
    assert transport.socket_open
    assert "streamwarden-alpaca-trade_updates-11111111" in [t.name for t in alpaca_threads()]
    assert transport.stop(BOUND) is True
    assert transport.stop(BOUND) is True and not transport.thread_alive
    assert listener.calls == ["connected"]  # a deliberate stop is not a lost connection
