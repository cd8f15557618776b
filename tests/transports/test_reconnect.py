"""Reconnects with our own backoff, over the real alpaca-py SDK against a simulator as strict as
Alpaca about connections: a dropped socket holds the account's slot for a reaper window (406
meanwhile), a second socket is refused with 406, rapid upgrades get HTTP 429.

No mock: the SDK's ``StockDataStream`` speaks to :class:`streamwarden.simulator.Simulator` on
127.0.0.1. Windows and graces are short so that each test takes a few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import random
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import msgpack
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect
from websockets.sync.server import ServerConnection, serve

import streamwarden as sw
from streamwarden.machine.conformance import replay
from streamwarden.machine.spec import default_spec
from streamwarden.simulator import Simulator
from streamwarden.transports import AlpacaTransportFactory
from streamwarden.transports import _sdk_adapter as sdk_adapter
from streamwarden.transports._backoff import Backoff
from tests.waiting import wait_until

BOUND = 10.0
"""Generous bound for behaviour that takes a few backoff delays."""

pytestmark = pytest.mark.timeout(60)


def settings_for(sim: Simulator, **changes: Any) -> sw.Settings:
    base = {"market_data_url": sim.market_data_url, "trade_updates_url": sim.trade_updates_url,
            "start_timeout": 5.0, "stop_timeout": 1.0, "debug": True,
            "reconnect_backoff_initial": 0.2, "reconnect_backoff_max": 0.4,
            "reconnect_grace": 20.0, "connection_limit_grace": 15.0}
    return sw.Settings(**{**base, **changes})


def records(sink: sw.InMemoryAuditSink, event: str) -> list[sw.AuditRecord]:
    return [r for r in sink.records() if r.event == event]


def quote_arrives(sim: Simulator, lease: sw.MarketDataLease, price: str) -> bool:
    """Publish a quote until the lease sees it (the wire may still be resubscribing)."""
    def seen() -> bool:
        sim.publish_quote("AAPL", bid_price=price, ask_price="999")
        quote = lease.latest_quote("AAPL")
        return quote is not None and quote.bid_price == Decimal(price)
    return wait_until(seen, timeout=BOUND)


@pytest.fixture
def reaping_sim() -> Iterator[Simulator]:
    with Simulator(port=0, reaper_window=1.5) as simulator:
        yield simulator


def test_406s_after_a_drop_within_the_grace_keep_the_lease_and_quotes_resume(
        reaping_sim, creds, sink, caplog):
    sim = reaping_sim
    caplog.set_level(logging.WARNING, logger="streamwarden")
    with sw.ConnectionManager(audit=sink, settings=settings_for(sim)) as manager:
        lease = manager.market_data(creds, symbols=["AAPL"])
        assert quote_arrives(sim, lease, "1.5")
        assert sim.drop_connections() == 1
        assert wait_until(lambda: len(records(sink, "connected")) == 2, timeout=BOUND)
        assert lease.is_live and lease.status is sw.LeaseStatus.LIVE
        assert quote_arrives(sim, lease, "2.5")
        assert manager.check_invariants() == []

    refused = records(sink, "reconnect_failed")
    assert refused, "the reaper window should have refused at least one reconnect"
    assert [r.details["attempt"] for r in refused] == list(range(1, len(refused) + 1))
    for record in refused:
        assert (record.from_state, record.to_state, record.outcome) == (
            "starting", "starting", "failed")
        assert record.details["cause"] == "connection_limit"
        assert "Alpaca error 406: connection limit exceeded" in record.details["cause_detail"]
        assert 0.1 <= record.details["delay"] <= 0.4  # within the backoff's bounds
        assert record.details["inputs"] == {"reconnecting": True}
    assert not records(sink, "start_failed")  # (the leases were revoked only by the close)
    assert [r.error_type for r in records(sink, "lease_revoked")] == ["LeaseRevokedError"]
    outcomes = [a.outcome for a in sim.stats().auth_attempts]
    assert outcomes[0] == "authorized" and outcomes[-1] == "authorized"
    assert outcomes.count("connection_limit") == len(refused)
    assert replay(default_spec(), sink.records()) == []
    logged = [r.getMessage() for r in caplog.records if "transport.connect_failed" in
              r.getMessage()]
    assert len(logged) == len(refused) and "cause='connection_limit'" in logged[0]
    assert "attempt=1" in logged[0]


def test_406s_past_the_grace_revoke_the_leases_with_connection_limit_error(creds, sink):
    with Simulator(port=0, reaper_window=30.0) as sim:
        settings = settings_for(sim, connection_limit_grace=1.0)
        with sw.ConnectionManager(audit=sink, settings=settings) as manager:
            lease = manager.market_data(creds, symbols=["AAPL"])
            dropped_at = time.monotonic()
            assert sim.drop_connections() == 1
            assert wait_until(lambda: lease.status is sw.LeaseStatus.REVOKED, timeout=BOUND)
            took = time.monotonic() - dropped_at
            with pytest.raises(sw.ConnectionLimitError) as caught:
                lease.wait_ready()
    assert 1.0 <= took < 1.0 + BOUND
    assert caught.value.cause == "connection_limit"
    assert "connection_limit_grace=1.0s after the drop" in caught.value.message
    (failed,) = records(sink, "start_failed")
    assert failed.error_type == "ConnectionLimitError"
    assert failed.details["cause"] == "connection_limit"
    assert records(sink, "reconnect_failed")
    assert [r.error_type for r in records(sink, "lease_revoked")] == ["ConnectionLimitError"]
    assert replay(default_spec(), sink.records()) == []


def test_a_406_at_the_first_start_fails_at_once_naming_the_other_holder(creds, sink):
    key_id, secret = creds.sensitive_values()
    with Simulator(port=0, reaper_window=0) as sim, \
            connect(sim.market_data_url, open_timeout=BOUND) as holder:
        # Another process of the same account holds the market-data endpoint.
        assert json.loads(holder.recv(timeout=BOUND))[0]["msg"] == "connected"
        holder.send(json.dumps({"action": "auth", "key": key_id, "secret": secret}))
        assert json.loads(holder.recv(timeout=BOUND))[0]["msg"] == "authenticated"
        settings = settings_for(sim, start_timeout=30.0)
        with sw.ConnectionManager(audit=sink, settings=settings) as manager:
            started = time.monotonic()
            with pytest.raises(sw.ConnectionLimitError) as caught:
                manager.market_data(creds, symbols=["AAPL"])
            took = time.monotonic() - started
    assert took < 10.0  # at once, not after start_timeout=30s
    assert "another process (or connection) holds this account's connection" in \
        caught.value.message
    assert "/v2/iex" in caught.value.message
    assert key_id not in caught.value.message and secret not in caught.value.message
    assert not records(sink, "reconnect_failed")
    (failed,) = records(sink, "start_failed")
    assert failed.details["cause"] == "connection_limit"


def test_a_429_on_the_upgrade_waits_the_retry_after(creds, sink):
    with (Simulator(port=0, reaper_window=0, connect_rate_limit=1) as sim,
          sw.ConnectionManager(audit=sink, settings=settings_for(sim)) as manager):
        lease = manager.market_data(creds, symbols=["AAPL"])
        assert sim.drop_connections() == 1  # the reconnect comes within the same second
        assert wait_until(lambda: len(records(sink, "connected")) == 2, timeout=BOUND)
        assert quote_arrives(sim, lease, "3.5")
    limited = [r for r in records(sink, "reconnect_failed")
               if r.details["cause"] == "rate_limit"]
    assert limited, "the reconnect within a second of the first upgrade should be refused"
    for record in limited:
        assert "HTTP 429" in record.details["cause_detail"]
        assert record.details["delay"] == 1.0  # the simulator's Retry-After, not the 0.4 s max
    assert replay(default_spec(), sink.records()) == []


def test_backoff_delays_grow_and_are_jittered_reproducibly():
    def sequence(seed: int) -> list[float]:
        backoff = Backoff(1.0, 30.0, random.Random(seed))
        return [backoff.delay(n) for n in range(1, 9)]

    delays, again, other = sequence(42), sequence(42), sequence(43)
    assert delays == again and delays != other  # seeded: reproducible; jittered: seed-dependent
    ceilings = [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    for delay, ceiling in zip(delays, ceilings, strict=True):
        assert ceiling / 2 <= delay <= ceiling
    # The ceilings double up to the maximum, so the lower bound of attempt n+1 is the upper
    # bound of attempt n until the cap: the delays never shrink by more than the jitter.
    assert all(later >= earlier / 2 for earlier, later in itertools.pairwise(delays))
    assert delays[4] > delays[0]
    # Jittered: the fraction of the ceiling differs from one attempt to the next.
    fractions = [delay / ceiling for delay, ceiling in zip(delays, ceilings, strict=True)]
    assert len({round(f, 6) for f in fractions}) == len(fractions)
    backoff = Backoff(1.0, 30.0, random.Random(0))
    assert backoff.rate_limited(None) == 30.0 and backoff.rate_limited(2.0) == 2.0


def test_a_bad_backoff_is_a_typed_error():
    with pytest.raises(sw.InvalidInputError, match="0 < initial <= maximum"):
        Backoff(0.0, 1.0, random.Random())
    with pytest.raises(sw.InvalidInputError, match="0 < initial <= maximum"):
        Backoff(2.0, 1.0, random.Random())


def test_the_seeded_delays_are_the_audited_ones(reaping_sim, creds, sink):
    sim, seed = reaping_sim, 7
    slept: list[float] = []

    async def recording_sleep(seconds: float) -> None:
        slept.append(seconds)
        await asyncio.sleep(seconds)

    factory = AlpacaTransportFactory(rng=random.Random(seed), sleep=recording_sleep)
    settings = settings_for(sim, reconnect_backoff_initial=0.3, reconnect_backoff_max=0.6)
    with sw.ConnectionManager(audit=sink, settings=settings, transport_factory=factory) as manager:
        lease = manager.market_data(creds, symbols=["AAPL"])
        assert sim.drop_connections() == 1
        assert wait_until(lambda: len(records(sink, "connected")) == 2, timeout=BOUND)
        assert lease.is_live
    expected = Backoff(0.3, 0.6, random.Random(seed))
    # The wait before attempt 1 follows the drop; attempt n's failure then waits attempt n+1's.
    assert slept == [expected.delay(n) for n in range(1, len(slept) + 1)]
    audited = [r.details["delay"] for r in records(sink, "reconnect_failed")]
    assert audited == [round(delay, 3) for delay in slept[1:]]
    assert len(audited) >= 1


def test_closing_the_socket_under_a_running_transport_reconnects_through_the_backoff(
        creds, sink):
    with Simulator(port=0) as sim:  # the default 90 s reaper window: a clean close is exempt
        slept: list[float] = []

        async def recording_sleep(seconds: float) -> None:
            slept.append(seconds)
            await asyncio.sleep(seconds)

        factory = AlpacaTransportFactory(rng=random.Random(1), sleep=recording_sleep)
        with sw.ConnectionManager(audit=sink, settings=settings_for(sim),
                                  transport_factory=factory) as manager:
            lease = manager.market_data(creds, symbols=["AAPL"])
            (connection,) = [c for c in sim.stats().connections if c.is_open]
            # What a staleness watchdog does: close our side cleanly with the adapter's
            # close_socket; the loop reconnects. (Private access: no public call closes a
            # healthy socket yet.)
            (supervisor,) = manager._engine._active.values()
            stream = supervisor.transport._stream
            manager._engine.run_sync(sdk_adapter.close_socket(stream), BOUND)
            assert wait_until(lambda: len(records(sink, "connected")) == 2, timeout=BOUND)
            assert quote_arrives(sim, lease, "4.5")
    assert len(slept) == 1 and 0.1 <= slept[0] <= 0.2  # attempt 1's delay, from initial=0.2
    # A clean close frees the slot at once: no 406 although the reaper window is 90 s.
    assert not records(sink, "reconnect_failed")
    assert connection.id < max(c.id for c in sim.stats().connections)


def test_a_lease_with_nothing_subscribed_reconnects_with_an_empty_wire(creds, sink):
    with (Simulator(port=0, reaper_window=0) as sim,
          sw.ConnectionManager(audit=sink, settings=settings_for(sim)) as manager):
        lease = manager.market_data(creds, symbols=["AAPL"])
        for channel, symbol in sorted(lease.subscriptions):
            lease.unsubscribe(channel, symbol)
        assert sim.drop_connections() == 1
        assert wait_until(lambda: len(records(sink, "connected")) == 2, timeout=BOUND)
        (connection,) = [c for c in sim.stats().connections if c.is_open]
        assert not any(connection.subscription.values())  # nothing asked for, nothing sent
        lease.subscribe_quotes("AAPL")  # and the wire follows again
        assert quote_arrives(sim, lease, "5.5")


def test_a_frame_the_sdk_cannot_read_is_a_lost_connection_not_a_fatal_one(creds, sink):
    connections: list[int] = []

    def peer(connection: ServerConnection) -> None:
        """Alpaca's market-data handshake; the first connection then sends a frame that is not
        MessagePack, the next ones stay up."""
        connections.append(1)
        connection.send(msgpack.packb([{"T": "success", "msg": "connected"}]))
        connection.recv(timeout=BOUND)
        connection.send(msgpack.packb([{"T": "success", "msg": "authenticated"}]))
        asked = msgpack.unpackb(connection.recv(timeout=BOUND))
        del asked["action"]
        connection.send(msgpack.packb([{"T": "subscription", **asked}]))
        if len(connections) == 1:
            connection.send(b"\xc1")  # never valid MessagePack
        with contextlib.suppress(ConnectionClosed, TimeoutError):
            connection.recv(timeout=BOUND)

    with serve(peer, "127.0.0.1", 0) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"ws://127.0.0.1:{server.socket.getsockname()[1]}/v2/iex"
        settings = sw.Settings(market_data_url=url, start_timeout=5.0, stop_timeout=0.5,
                               reconnect_backoff_initial=0.05, reconnect_backoff_max=0.1)
        with sw.ConnectionManager(audit=sink, settings=settings) as manager:
            lease = manager.market_data(creds, symbols=["AAPL"])
            assert wait_until(lambda: len(records(sink, "connected")) == 2, timeout=BOUND)
            assert lease.is_live
        server.shutdown()
    (lost,) = records(sink, "connection_lost")
    assert lost.details["reason"].startswith("FormatError: ")
    assert not records(sink, "start_failed")
