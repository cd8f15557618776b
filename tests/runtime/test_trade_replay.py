"""After a trading-stream reconnect, the fills sent during the gap are fetched from the trade
events API and delivered in order, once, marked as replayed, and audited.

End to end: the real alpaca-py SDK against the simulator, which keeps every trade update it
publishes and serves them at ``/v2/events/trades``. The gap is made for real: the trading socket
is dropped and the simulator holds its reconnect's auth reply back (``slow_start``) while fills
are published to nobody.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import pytest

import streamwarden as sw
from streamwarden.audit.records import TRADE_UPDATES_REPLAYED
from streamwarden.simulator import TRADE_UPDATES, Simulator, SimulatorStats
from streamwarden.tradeupdates import ReplayedTradeUpdate
from tests.runtime.conftest import BOUND, sim_settings


def _listening(stats: SimulatorStats) -> int:
    return sum(1 for c in stats.open_connections(TRADE_UPDATES) if c.subscription)


def _fill(sim: Simulator, order_id: str) -> int:
    return sim.publish_trade_update("fill", symbol="AAPL", price="100.25",
                                    client_order_id=order_id)


def _order_ids(updates: Iterator[Any], count: int) -> list[tuple[str, bool]]:
    taken = [next(updates) for _ in range(count)]
    return [(u.order.client_order_id, isinstance(u, ReplayedTradeUpdate)) for u in taken]


def _gap(sim: Simulator, order_ids: list[str]) -> None:
    """Drop the trading socket and publish ``order_ids`` while its reconnect is held back."""
    sim.update_faults(slow_start=1.0)
    assert sim.drop_connections(TRADE_UPDATES) == 1
    sim.wait_for(lambda stats: _listening(stats) == 0, timeout=BOUND)
    for order_id in order_ids:
        assert _fill(sim, order_id) == 0  # nobody listens: the live stream misses it
    sim.update_faults(slow_start=0.0)


def test_fills_missed_during_a_reconnect_are_replayed_in_order_once(sim, creds, sqlite_url,
                                                                   caplog):
    caplog.set_level(logging.DEBUG)  # every logger: the replay's request must not leak a key
    with sw.AuditLog.open(sqlite_url) as audit, \
            sw.ConnectionManager(audit=audit, settings=sim_settings(sim)) as manager:
        lease = manager.trade_updates(creds, owner="desk", correlation_id="run-r")
        updates = lease.updates(timeout=BOUND)
        assert _fill(sim, "live-1") == 1
        assert _order_ids(updates, 1) == [("live-1", False)]
        _gap(sim, ["gap-1", "gap-2", "gap-3"])
        # live-1 is in the replayed window too, and skipped as already delivered.
        assert _order_ids(updates, 3) == [("gap-1", True), ("gap-2", True), ("gap-3", True)]
        assert _fill(sim, "live-2") == 1
        assert _order_ids(updates, 1) == [("live-2", False)]
        with pytest.raises(sw.WaitTimeoutError):
            next(lease.updates(timeout=0.5))  # nothing twice
        (lifecycle,) = manager.health().lifecycles
        assert lifecycle.reconnects == 1 and lifecycle.leases[0].delivered == 5
        lease.release()
    with sw.AuditLog.open(sqlite_url, read_only=True) as audit:
        (record,) = audit.query(event=TRADE_UPDATES_REPLAYED)
        assert audit.verify().ok
    assert (record.outcome, record.correlation_id) == ("ok", "run-r")
    assert record.details["replayed"] == 3 and record.details["duplicates"] == 1
    assert record.details["first_event_id"] < record.details["last_event_id"]
    assert record.causation_id is not None  # the reconnect's transition
    logged = "\n".join(f"{r.name} {r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "/v2/events/trades" in logged  # the request was logged at DEBUG ...
    assert creds.api_key_id not in logged  # ... without the key id or the secret
    assert creds.sensitive_values()[1] not in logged


def test_the_async_twin_replays_too(sim, creds, sink):
    async def scenario() -> list[tuple[str, bool]]:
        async with sw.AsyncConnectionManager(audit=sink, settings=sim_settings(sim)) as manager, \
                manager.trade_updates(creds, owner="desk") as lease:
            await asyncio.to_thread(_gap, sim, ["gap-1"])
            async with asyncio.timeout(BOUND):
                update = await anext(lease.updates())
            return [(update.order.client_order_id, isinstance(update, ReplayedTradeUpdate))]

    assert asyncio.run(scenario()) == [("gap-1", True)]
    (record,) = [r for r in sink.records() if r.event == TRADE_UPDATES_REPLAYED]
    assert record.details["replayed"] == 1


def test_a_failed_replay_is_audited_and_live_updates_go_on(sim, creds, sink):
    # Port 9 on loopback (discard) is closed: the trade events API cannot be reached.
    settings = sim_settings(sim, trading_api_url="http://127.0.0.1:9")
    with sw.ConnectionManager(audit=sink, settings=settings) as manager, \
            manager.trade_updates(creds, owner="desk") as lease:
        updates = lease.updates(timeout=BOUND)
        _gap(sim, ["gap-1"])
        sim.wait_for(lambda stats: _listening(stats) == 1, timeout=BOUND)
        assert _fill(sim, "live-2") == 1
        assert _order_ids(updates, 1) == [("live-2", False)]
    (record,) = [r for r in sink.records() if r.event == TRADE_UPDATES_REPLAYED]
    assert record.outcome == "failed" and record.error_type == "ReplayError"
    assert "unreachable" in (record.error_message or "")
    assert record.details["replayed"] == 0
