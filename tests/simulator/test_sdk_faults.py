"""Each scripted fault as the real alpaca-py SDK experiences it."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest

from streamwarden.simulator import MARKET_DATA, TRADE_UPDATES, Faults, Simulator
from tests.simulator.conftest import (
    BOUND,
    KEY_ID,
    SECRET,
    LogWatch,
    Received,
    SdkRunner,
    wait_connected,
)


def _run_quotes(sdk: SdkRunner, *symbols: str) -> Received:
    stream, received = sdk.market_data(), Received()
    stream.subscribe_quotes(received.handle, *symbols)
    sdk.run(stream)
    return received


def test_auth_failure_market_data_sdk_logs_and_retries(
    sim: Simulator, sdk: SdkRunner, sdk_log: LogWatch
) -> None:
    sim.set_faults(Faults(auth_failure=True))
    _run_quotes(sdk, "AAPL")

    stats = sim.wait_for(lambda s: s.kind(MARKET_DATA).auth_attempts >= 2, BOUND)

    assert {a.outcome for a in stats.auth_attempts} == {"auth_failed"}
    assert {a.key_id for a in stats.auth_attempts} == {KEY_ID}
    assert stats.kind(MARKET_DATA).authorized == 0
    assert stats.kind(MARKET_DATA).opened >= 2  # the SDK closed and reconnected
    assert 402 in stats.error_codes()
    sdk_log.wait("auth failed")
    assert not [line for line in sdk_log.lines if SECRET in line]


def test_auth_failure_trading_sdk_sees_unauthorized_and_retries(
    sim: Simulator, sdk: SdkRunner, sdk_log: LogWatch
) -> None:
    sim.set_faults(Faults(auth_failure=True))
    stream = sdk.trading()
    stream.subscribe_trade_updates(Received().handle)
    sdk.run(stream)

    stats = sim.wait_for(lambda s: s.kind(TRADE_UPDATES).auth_attempts >= 2, BOUND)

    assert stats.kind(TRADE_UPDATES).authorized == 0
    sdk_log.wait("failed to authenticate")


def test_connection_limit_is_refused_after_auth_and_closed(
    sim: Simulator, sdk: SdkRunner, sdk_log: LogWatch
) -> None:
    sim.set_faults(Faults(connection_limit=True))
    _run_quotes(sdk, "AAPL")

    stats = sim.wait_for(
        lambda s: s.kind(MARKET_DATA).auth_attempts >= 1 and s.kind(MARKET_DATA).open == 0,
        BOUND,
    )

    assert stats.auth_attempts[0].outcome == "connection_limit"
    assert stats.error_codes() == (406,)
    sdk_log.wait("connection limit exceeded")


@pytest.mark.parametrize("case", [
    ("symbol_limit", 405, "symbol limit exceeded"),
    ("insufficient_subscription", 409, "insufficient subscription"),
])
def test_subscription_errors_reach_the_sdk(
    sim: Simulator, sdk: SdkRunner, sdk_log: LogWatch, case: tuple[str, int, str]
) -> None:
    fault, code, text = case
    sim.update_faults(**{fault: True})
    _run_quotes(sdk, "AAPL", "MSFT")

    stats = sim.wait_for(lambda s: code in s.error_codes(), BOUND)
    sdk_log.wait(f"error: {text} ({code})")

    assert stats.wire_subscription("quotes") == frozenset()
    assert stats.open_connections(MARKET_DATA)[0].authenticated


def test_drop_once_makes_the_sdk_reconnect_once(sim: Simulator, sdk: SdkRunner) -> None:
    sim.set_faults(Faults(drop_after=3, drop_once=True))
    received = _run_quotes(sdk, "AAPL")
    wait_connected(sim, MARKET_DATA, channel="quotes")

    for price in range(1, 6):
        sim.publish_quote("AAPL", bid_price=price, ask_price=price + 1)
    assert len(received.wait(3)) == 3
    stats = sim.wait_for(lambda s: s.kind(MARKET_DATA).opened == 2 and
                         s.kind(MARKET_DATA).open == 1 and
                         s.open_connections(MARKET_DATA)[0].symbols("quotes"), BOUND)
    assert stats.kind(MARKET_DATA).drops == 1
    first = stats.connections[0]
    assert (first.dropped, first.is_open, first.data_messages) == (True, False, 3)

    for price in range(10, 15):  # the reconnection is not dropped: drop_once is spent
        sim.publish_quote("AAPL", bid_price=price, ask_price=price + 1)
    assert [q.bid_price for q in received.wait(8)][3:] == [10, 11, 12, 13, 14]
    assert sim.stats().kind(MARKET_DATA).opened == 2


def test_drop_connections_makes_the_sdk_reconnect(sim: Simulator, sdk: SdkRunner) -> None:
    stream = sdk.trading()
    stream.subscribe_trade_updates(Received().handle)
    sdk.run(stream)
    wait_connected(sim, TRADE_UPDATES, channel="streams")

    assert sim.drop_connections(TRADE_UPDATES) == 1
    stats = sim.wait_for(lambda s: s.kind(TRADE_UPDATES).opened == 2 and
                         len(s.open_connections(TRADE_UPDATES)) == 1, BOUND)
    assert stats.kind(TRADE_UPDATES).drops == 1


def test_hang_on_close_leaves_the_sdk_close_unanswered_until_stop() -> None:
    sim = Simulator(faults=Faults(hang_on_close=True)).start()
    try:
        runner, received = SdkRunner(sim), Received()
        stream = runner.market_data()
        stream.subscribe_quotes(received.handle, "AAPL")
        thread = runner.run(stream)
        wait_connected(sim, MARKET_DATA, channel="quotes")

        stream.stop()  # queues the stop; the SDK acts on it when its receive loop wakes
        sim.publish_quote("AAPL", bid_price=1, ask_price=2)  # wakes it: it sends a close frame
        sim.wait_for(lambda s: s.connections[0].hung, BOUND)
        thread.join(0.5)
        assert thread.is_alive(), "the SDK's close completed although the server never answered"
        assert sim.stats().kind(MARKET_DATA).open == 1
    finally:
        begin = time.monotonic()
        sim.stop()
        stopped_in = time.monotonic() - begin
    thread.join(BOUND)
    assert not thread.is_alive()
    assert stopped_in < 1.0


def test_slow_start_delays_the_greeting() -> None:
    with Simulator(faults=Faults(slow_start=0.4)) as sim:
        runner = SdkRunner(sim)
        stream = runner.market_data()
        stream.subscribe_quotes(Received().handle, "AAPL")
        begin = time.monotonic()
        runner.run(stream)
        opened = sim.wait_for(lambda s: s.kind(MARKET_DATA).opened == 1, BOUND)
        assert opened.kind(MARKET_DATA).auth_attempts == 0
        sim.wait_for(lambda s: s.kind(MARKET_DATA).authorized == 1, BOUND)
        assert time.monotonic() - begin >= 0.4
        runner.stop(stream)


def test_sdk_logs_never_show_the_secret(
    sim: Simulator, sdk: SdkRunner, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sim.set_faults(Faults(auth_failure=True))
    _run_quotes(sdk, "AAPL")
    sim.wait_for(lambda s: s.kind(MARKET_DATA).auth_attempts >= 1, BOUND)
    sim.set_faults(Faults())

    assert SECRET not in caplog.text
    assert SECRET not in repr(sim.stats()) and SECRET not in repr(sim)


def test_a_stalled_sdk_consumer_is_cut_off_as_a_slow_client_and_reconnects() -> None:
    stalled = threading.Event()

    async def stall_once(quote: object) -> None:
        if stalled.is_set():
            return
        stalled.set()
        # The SDK reads nothing meanwhile: the server's queue fills until it cuts the client.
        deadline = time.monotonic() + 20 * BOUND
        while not sim.stats().error_codes() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    # No reaper window: the cut is an abort, whose slot would refuse the reconnect with 406.
    with Simulator(slow_client_timeout=0.2, reaper_window=0) as sim:
        sdk = SdkRunner(sim)
        stream = sdk.market_data(raw_data=True)
        stream.subscribe_quotes(stall_once, "AAPL")
        sdk.run(stream)
        try:
            wait_connected(sim, MARKET_DATA, channel="quotes")
            # Small frames: the SDK's websocket queues up to 1024 frames before it stops reading.
            sent = sim.publish_quotes("AAPL", 400_000, batch_size=100, timeout=30.0)
            assert 0 < sent < 400_000
            stats = sim.wait_for(lambda s: s.kind(MARKET_DATA).opened == 2 and
                                 s.kind(MARKET_DATA).open == 1, timeout=BOUND)
            assert stats.error_codes() == (407,)  # then the SDK reconnected by itself
        finally:
            sdk.stop_all()
