"""The manager over the real alpaca-py SDK, against the project's simulator on 127.0.0.1.

No mock anywhere: the SDK's own ``StockDataStream`` / ``TradingStream`` speak to
:class:`streamwarden.simulator.Simulator`, which counts connections, subscriptions and auth
attempts, and injects the faults. The transports run as tasks on the manager's engine loop: no
thread of their own.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import threading
import time
from collections.abc import Iterator
from decimal import Decimal

import pytest

import streamwarden as sw
from streamwarden.simulator import Faults, Simulator
from streamwarden.transports import AlpacaTransport
from tests.conftest import CANARY_KEY_ID, CANARY_SECRET
from tests.test_secret_canary import assert_no_canary, canary_outputs
from tests.waiting import wait_until

BOUND = 5.0
"""Generous bound for behaviour that normally takes milliseconds."""

pytestmark = pytest.mark.timeout(60)


def streamwarden_threads() -> list[threading.Thread]:
    """Threads of any manager (engine, audit writer, callback workers); not the simulator's."""
    return [t for t in threading.enumerate()
            if t.name.startswith("streamwarden-") and not t.name.startswith(
                "streamwarden-simulator")]


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(port=0, reaper_window=0) as simulator:
        yield simulator


@pytest.fixture
def sim_settings(sim: Simulator) -> sw.Settings:
    return sw.Settings(market_data_url=sim.market_data_url,
                       trade_updates_url=sim.trade_updates_url,
                       start_timeout=3.0, stop_timeout=1.0, debug=True)


@pytest.fixture
def live(sim_settings: sw.Settings, sink: sw.InMemoryAuditSink) -> Iterator[sw.ConnectionManager]:
    manager = sw.ConnectionManager(audit=sink, settings=sim_settings)
    yield manager
    manager.close()
    assert manager.check_invariants() == []
    assert wait_until(lambda: not streamwarden_threads())


def events(sink: sw.InMemoryAuditSink, kind: str = "market_data") -> list[tuple[str, str | None]]:
    return [(r.event, r.to_state) for r in sink.records()
            if r.kind == kind and not r.event.startswith("lease_")]


def test_two_leases_share_one_socket_and_the_wire_carries_the_union(live, sim, creds):
    first = live.market_data(creds, symbols=["AAPL"], owner="momentum")
    second = live.market_data(creds, symbols=["MSFT", "AAPL"], owner="pairs")
    assert isinstance(first, sw.MarketDataLease) and second.lifecycle_id == first.lifecycle_id
    second.subscribe_bars("SPY")

    def wire() -> dict[str, frozenset[str]]:
        (connection,) = [c for c in sim.stats().connections if c.is_open]
        return {k: v for k, v in connection.subscription.items() if v}

    # Acquire and subscribe return once the wire acknowledged the lease's pairs: no waiting.
    assert wire() == {"quotes": {"AAPL", "MSFT"}, "trades": {"AAPL", "MSFT"}, "bars": {"SPY"}}
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


def test_a_lease_without_callbacks_iterates_and_a_wait_times_out_typed(live, sim, creds):
    lease = live.market_data(creds, symbols=["AAPL", "MSFT"])
    with pytest.raises(sw.WaitTimeoutError):
        lease.wait_for_quote("MSFT", timeout=0.05)
    sim.publish_quote("AAPL", bid_price="10.00", ask_price="10.01")
    sim.publish_trade("MSFT", price="20.5", size=1)
    assert next(iter(lease.quotes(timeout=BOUND))).bid_price == Decimal("10.00")
    assert next(iter(lease.trades(timeout=BOUND))).price == Decimal("20.5")
    with pytest.raises(sw.WaitTimeoutError):
        next(iter(lease.quotes(timeout=0.05)))


def test_trade_updates_reach_every_lease_and_a_raising_callback_is_isolated(live, sim, creds):
    received: list[object] = []

    def broken(update: object) -> None:
        raise RuntimeError("strategy bug")

    lease = live.trade_updates(creds, on_update=received.append, owner="a")
    assert isinstance(lease, sw.TradeUpdatesLease)
    live.trade_updates(creds, on_update=broken, owner="b")
    live.trade_updates(creds, on_update=received.append, owner="c")
    for _ in range(2):
        sim.publish_trade_update("fill", symbol="AAPL", price="187.1")
    assert wait_until(lambda: len(received) == 4)
    assert type(received[0]).__name__ == "TradeUpdate"
    assert received[0].order.symbol == "AAPL"  # type: ignore[attr-defined]
    assert wait_until(lambda: live.health().lifecycles[0].callback_errors == 2)
    (lifecycle,) = live.health().lifecycles
    assert (lifecycle.state, lifecycle.messages) == ("running", 2)
    by_owner = {lease.owner: lease for lease in lifecycle.leases}
    assert [by_owner[o].callback_errors for o in "abc"] == [0, 2, 0]
    assert [by_owner[o].delivered for o in "abc"] == [2, 2, 2]
    assert all(by_owner[o].queue_depth == 0 for o in "abc")
    assert sim.stats().kinds["trade_updates"].opened == 1


def test_a_drop_is_lost_then_reconnected_in_the_audit_trail(live, sim, creds, sink):
    lease = live.market_data(creds, symbols=["AAPL"])
    assert sim.drop_connections() == 1
    assert wait_until(lambda: events(sink).count(("connected", "running")) == 2)
    assert events(sink) == [("acquire", "starting"), ("connected", "running"),
                            ("connection_lost", "starting"), ("connected", "running")]
    assert sim.stats().kinds["market_data"].opened == 2
    assert lease.is_live and live.health().lifecycles[0].reconnects == 1
    # The subscription came back on the new socket.
    assert wait_until(lambda: sim.stats().wire_subscription("quotes") == {"AAPL"})
    sim.publish_quote("AAPL", bid_price="1.5", ask_price="1.6")
    assert wait_until(lambda: (q := lease.latest_quote("AAPL")) is not None
                      and q.bid_price == Decimal("1.5"))


def test_drop_after_n_messages_reconnects(live, sim, creds, sink):
    sim.set_faults(Faults(drop_after=3, drop_once=True))
    lease = live.market_data(creds, symbols=["AAPL"])
    sim.publish_quotes("AAPL", 5)
    assert wait_until(lambda: events(sink).count(("connected", "running")) == 2)
    assert ("connection_lost", "starting") in events(sink)
    assert lease.is_live


@pytest.mark.parametrize(("faults", "error", "kind"), [
    (Faults(auth_failure=True), sw.AuthenticationError, "market_data"),
    (Faults(auth_failure=True), sw.AuthenticationError, "trade_updates"),
    (Faults(connection_limit=True), sw.ConnectionLimitError, "market_data"),
    (Faults(symbol_limit=True), sw.SubscriptionError, "market_data"),
    (Faults(insufficient_subscription=True), sw.SubscriptionError, "market_data"),
    (Faults(insufficient_scope=True), sw.AuthenticationError, "market_data"),
], ids=["auth-402", "auth-unauthorized", "limit-406", "symbols-405", "subscription-409",
        "scope-411"])
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
    # The lifecycle and its transport task are gone (INV7), the socket closed.
    assert wait_until(lambda: not live.health().lifecycles)
    assert live.check_invariants() == []
    attempts = sim.stats().kinds[kind].auth_attempts
    time.sleep(1.5)  # longer than the SDK's first reconnect delay: it must not retry
    assert sim.stats().kinds[kind].auth_attempts == attempts
    assert sim.stats().kinds[kind].open == 0


def test_no_connected_within_start_timeout_is_a_start_timeout(sim, creds, sink):
    sim.set_faults(Faults(slow_start=2.0))
    settings = sw.Settings(market_data_url=sim.market_data_url, start_timeout=0.3,
                           stop_timeout=0.5)
    with sw.ConnectionManager(audit=sink, settings=settings) as manager:
        started = time.monotonic()
        with pytest.raises(sw.StartTimeoutError):
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


def test_a_hung_peer_is_forced_stopped_and_counted(  # noqa: PLR0917
        live, sim, creds, sink, sim_settings, caplog):
    sim.set_faults(Faults(hang_on_close=True))  # the simulator never answers the close frame
    lease = live.market_data(creds, symbols=["AAPL"])
    started = time.monotonic()
    lease.release()
    assert wait_until(lambda: not live.health().lifecycles)
    # stop_timeout, then the cancel grace (0.5 s): not the websocket's own close timeouts.
    assert time.monotonic() - started < sim_settings.stop_timeout + 1.0
    (final,) = [r for r in sink.records() if r.event == "close_timeout"]
    assert (final.to_state, final.outcome, final.error_type) == (
        "stopped", "forced", "StopTimeoutError")
    assert final.details["stop_clean"] is False
    assert live.health().abandoned_transports == 1
    (stop_log,) = [r.getMessage() for r in caplog.records
                   if "transport.stop_timeout" in r.getMessage()]
    assert re.search(r"abandoned['\"]?[=:] ?(True|true)", stop_log)  # stop_abandoned
    assert live.check_invariants() == []  # INV7: the abandoned transport counts as done
    # The client socket is gone soon after all (websockets aborts it past its close timeout).
    assert wait_until(lambda: _open_client_sockets(sim.port) == 0,
                      timeout=3 * (sim_settings.stop_timeout + 0.5))


def test_close_revokes_the_leases_of_live_connections(sim_settings, creds):
    manager = sw.ConnectionManager(settings=sim_settings)
    lease = manager.market_data(creds, symbols=["AAPL"])
    manager.close()
    assert lease.status is sw.LeaseStatus.REVOKED
    with pytest.raises(sw.LeaseRevokedError):
        lease.latest_quote("AAPL")
    lease.release()  # a logged no-op, even with the manager gone


def _open_client_sockets(port: int) -> int:
    """Established TCP connections from this process to the simulator's port."""
    with open("/proc/net/tcp") as table:
        rows = table.read().splitlines()[1:]
    return sum(1 for row in rows
               if int(row.split()[2].split(":")[1], 16) == port and row.split()[3] == "01")


@pytest.mark.timeout(120)
def test_no_thread_or_socket_left_after_200_acquire_stop_cycles(live, sim, creds):
    live.market_data(creds, symbols=["AAPL"]).release()
    threads = live.health().threads
    for _ in range(199):
        live.market_data(creds, symbols=["AAPL"]).release()
        assert wait_until(lambda: not live.health().lifecycles)
    assert live.health().threads == threads  # the engine's threads never grow
    assert wait_until(lambda: _open_client_sockets(sim.port) == 0)
    assert sim.stats().kinds["market_data"].opened == 200
    assert wait_until(lambda: sim.stats().kinds["market_data"].open == 0)
    live.close()
    assert wait_until(lambda: not streamwarden_threads())
    assert socket.gethostname()  # the process still works normally


def test_secret_canary_across_the_sdk_path(caplog, sim, sim_settings, creds, sink):
    """The canary credentials go through alpaca-py and the simulator: connect, stream, a callback
    raising with them in its text, a drop, a refusal; nothing shows them."""
    caplog.set_level(logging.DEBUG)  # the SDK's loggers and websockets' too
    leaky = f"strategy saw key={CANARY_KEY_ID} secret={CANARY_SECRET}"
    raised: list[BaseException] = []

    def leaky_callback(quote: object) -> None:
        raise RuntimeError(leaky)

    manager = sw.ConnectionManager(audit=sink, settings=sim_settings, log_format="json")
    lease = manager.market_data(creds, symbols=["AAPL"], on_quote=leaky_callback)
    sim.publish_quote("AAPL", bid_price="1.0", ask_price="1.1")
    assert wait_until(lambda: manager.health().lifecycles[0].callback_errors == 1)
    sim.drop_connections()
    assert wait_until(lambda: manager.health().lifecycles[0].reconnects == 1
                      and manager.health().lifecycles[0].state == "running")
    lease.release()
    sim.set_faults(Faults(auth_failure=True))
    for acquire in (lambda: manager.market_data(creds, symbols=["MSFT"]),
                    lambda: manager.trade_updates(creds, on_update=print)):
        try:
            acquire()
        except sw.AuthenticationError as exc:
            raised.append(exc)
    health = manager.health().to_json()
    manager.close()
    outputs = canary_outputs(caplog, sink, health, raised)
    assert "lease.callback_failed" in outputs["logs"] and "alpaca" in outputs["logs"]
    assert "websockets" in {r.name.split(".")[0] for r in caplog.records}
    assert len(raised) == 2 and "connection_lost" in outputs["audit"]
    assert_no_canary(outputs)


def test_drain_grace_keeps_the_socket_for_a_quick_reacquire(sim, creds, sink):
    settings = sw.Settings(market_data_url=sim.market_data_url, drain_grace=1.0,
                           stop_timeout=1.0)
    with sw.ConnectionManager(audit=sink, settings=settings) as manager:
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
    settings = sw.Settings(market_data_url=sim.market_data_url, stop_timeout=0.5)
    with sw.ConnectionManager(audit=sink, settings=settings) as manager:
        old = manager.market_data(creds, symbols=["AAPL"])
        old.release()
        new = manager.market_data(creds, symbols=["AAPL"])
        assert new.lifecycle_id != old.lifecycle_id
        trail = [(r.lifecycle_id, r.event) for r in sink.records()]
        # The predecessor reached stopped (forced) before the successor's first acquire.
        assert trail.index((old.lifecycle_id, "close_timeout")) < \
            trail.index((new.lifecycle_id, "acquire"))
        new.release()


# The transport alone, driven on a test's own event loop (the Transport contract).


class _Listener:
    """Records what a transport reports (sw.TransportEvents)."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.pairs: list[frozenset[tuple[str, str]]] = []
        self.messages: list[sw.StreamMessage] = []

    def on_connected(self) -> None:
        self.calls.append("connected")

    def on_connection_lost(self, reason: str) -> None:
        self.calls.append("lost")

    def on_fatal_error(self, error: object) -> None:
        self.calls.append("fatal")

    def on_subscribed(self, pairs: frozenset[tuple[str, str]]) -> None:
        self.calls.append("subscribed")
        self.pairs.append(pairs)

    def on_message(self, message: sw.StreamMessage) -> None:
        self.messages.append(message)


async def _until(predicate: object, timeout: float = BOUND) -> bool:
    assert callable(predicate)
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            return False
        await asyncio.sleep(0.005)
    return True


def test_a_transport_stopped_before_it_ran_never_connects(sim, sim_settings, creds):
    key = sw.StreamKey("0" * 24, "market_data", True, "iex")

    async def scenario() -> None:
        transport = AlpacaTransport(key, creds, sim_settings)
        transport.set_subscriptions(frozenset({("quotes", "AAPL")}))
        await transport.stop()
        listener = _Listener()
        async with asyncio.timeout(BOUND):
            await transport.run(listener)  # returns at once
        assert not transport.socket_open
        assert transport.subscriptions == {("quotes", "AAPL")}
        assert listener.calls == []

    asyncio.run(scenario())
    assert sim.stats().kinds["market_data"].opened == 0


def test_a_market_data_transport_runs_as_a_task_reports_acks_and_messages(
        sim, sim_settings, creds):
    key = sw.StreamKey("2" * 24, "market_data", True, "iex")
    threads_before = {t.ident for t in threading.enumerate()}

    async def scenario() -> None:
        transport = AlpacaTransport(key, creds, sim_settings)
        listener = _Listener()
        transport.set_subscriptions(frozenset({("quotes", "AAPL")}))
        task = asyncio.create_task(transport.run(listener))
        assert await _until(lambda: listener.calls == ["connected", "subscribed"])
        assert listener.pairs[-1] == {("quotes", "AAPL")} and transport.socket_open
        # No thread of its own: it is a task on this loop.
        assert {t.ident for t in threading.enumerate()} - threads_before == set()
        transport.set_subscriptions(frozenset({("quotes", "AAPL"), ("trades", "MSFT")}))
        assert await _until(lambda: listener.pairs[-1] == {("quotes", "AAPL"),
                                                          ("trades", "MSFT")})
        await asyncio.to_thread(sim.publish_quote, "AAPL", bid_price="3.10", ask_price="3.20")
        assert await _until(lambda: len(listener.messages) == 1)
        (message,) = listener.messages
        assert (message.channel, message.symbol) == ("quotes", "AAPL")
        assert isinstance(message.payload, sw.Quote)
        assert message.payload.ask_price == Decimal("3.20")
        started = time.monotonic()
        await transport.stop()
        async with asyncio.timeout(BOUND):
            await task
        assert time.monotonic() - started < 0.5
        assert not transport.socket_open and "lost" not in listener.calls

    asyncio.run(scenario())
    assert wait_until(lambda: sim.stats().kinds["market_data"].open == 0)


def test_a_trade_updates_transport_stops_twice_without_reporting_a_loss(sim, sim_settings, creds):
    key = sw.StreamKey("1" * 24, "trade_updates", True, None)

    async def scenario() -> None:
        transport = AlpacaTransport(key, creds, sim_settings)
        listener = _Listener()
        task = asyncio.create_task(transport.run(listener))
        assert await _until(lambda: listener.calls == ["connected", "subscribed"])
        assert transport.socket_open
        await transport.stop()
        await transport.stop()
        async with asyncio.timeout(BOUND):
            await task
        assert not transport.socket_open
        # A deliberate stop is not a lost connection.
        assert listener.calls == ["connected", "subscribed"]

    asyncio.run(scenario())
    assert wait_until(lambda: sim.stats().kinds["trade_updates"].open == 0)
