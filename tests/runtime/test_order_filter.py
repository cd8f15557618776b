"""A trade-updates lease limited to its own orders by a ``client_order_id`` prefix.

The end-to-end tests run the real alpaca-py SDK against the simulator, one fill per order id,
with a SQLite audit log; the in-memory ones pin the routing rules (no order id, no filter).
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

import streamwarden as sw
from streamwarden.marketdata import TRADE_UPDATES_CHANNEL
from streamwarden.simulator import Simulator
from tests.runtime.conftest import BOUND, sim_settings

ORDERS = ["momentum-1", "pairs-1", "momentum-2", "manual-7"]
"""The client_order_ids of the fills each test publishes, in order."""


def _publish(sim: Simulator) -> None:
    for order_id in ORDERS:
        sim.publish_trade_update("fill", symbol="AAPL", price="100.25", client_order_id=order_id)


def _take(lease: sw.TradeUpdatesLease, count: int) -> list[str]:
    updates = lease.updates(timeout=BOUND)
    return [next(updates).order.client_order_id for _ in range(count)]


def _leases(health: sw.HealthReport) -> dict[str | None, sw.LeaseHealth]:
    (lifecycle,) = health.lifecycles
    return {lease.owner: lease for lease in lifecycle.leases}


def test_each_filtered_lease_receives_exactly_its_own_orders(sim, creds, sqlite_url):
    with sw.AuditLog.open(sqlite_url) as audit, \
            sw.ConnectionManager(audit=audit, settings=sim_settings(sim)) as manager:
        momentum = manager.trade_updates(creds, client_order_id_prefix="momentum-",
                                         owner="momentum", correlation_id="run-f")
        pairs = manager.trade_updates(creds, client_order_id_prefix="pairs-", owner="pairs",
                                      correlation_id="run-f")
        everything = manager.trade_updates(creds, owner="desk", correlation_id="run-f")
        assert (momentum.client_order_id_prefix, everything.client_order_id_prefix) == (
            "momentum-", None)
        _publish(sim)
        # The router puts each update into every mailbox it goes to at once, so once the
        # unfiltered lease has the last one, the filtered ones hold all they will get.
        assert _take(everything, 4) == ORDERS
        assert _take(momentum, 2) == ["momentum-1", "momentum-2"]
        assert _take(pairs, 1) == ["pairs-1"]
        leases = _leases(manager.health())
        assert {owner: lease.client_order_id_prefix for owner, lease in leases.items()} == {
            "momentum": "momentum-", "pairs": "pairs-", "desk": None}
        assert [(lease.queue_depth, lease.dropped) for lease in leases.values()] == [(0, 0)] * 3
        assert {owner: lease.delivered for owner, lease in leases.items()} == {
            "momentum": 2, "pairs": 1, "desk": 4}
        for lease in (momentum, pairs, everything):
            lease.release()
    with sw.AuditLog.open(sqlite_url, read_only=True) as audit:
        acquires = {record.owner: record.details
                    for record in audit.query(correlation_id="run-f", event="acquire")}
    assert acquires == {"momentum": {"filter": {"client_order_id_prefix": "momentum-"}},
                        "pairs": {"filter": {"client_order_id_prefix": "pairs-"}},
                        "desk": {}}


def test_the_async_twin_filters_the_same_way(sim, creds, sink):
    async def scenario() -> tuple[list[str], list[str]]:
        async with sw.AsyncConnectionManager(audit=sink, settings=sim_settings(sim)) as manager, \
                manager.trade_updates(creds, client_order_id_prefix="pairs-",
                                      owner="pairs") as pairs, \
                manager.trade_updates(creds, owner="desk") as everything:
            assert isinstance(pairs, sw.AsyncTradeUpdatesLease)
            assert pairs.client_order_id_prefix == "pairs-"
            await asyncio.to_thread(_publish, sim)
            async with asyncio.timeout(BOUND):
                seen = [update.order.client_order_id
                        async for update in _first(everything.updates(), 4)]
                own = [update.order.client_order_id async for update in _first(pairs.updates(), 1)]
            (lifecycle,) = (await manager.health()).lifecycles
            assert sorted(lease.queue_depth for lease in lifecycle.leases) == [0, 0]
            return seen, own

    assert asyncio.run(scenario()) == (ORDERS, ["pairs-1"])
    (acquire,) = [r for r in sink.records() if r.event == "acquire" and r.owner == "pairs"]
    assert acquire.details == {"filter": {"client_order_id_prefix": "pairs-"}}


async def _first(updates: Any, count: int) -> Any:
    for _ in range(count):
        yield await anext(updates)


@pytest.mark.parametrize(("prefix", "match"), [
    ("", "1..128 printable characters"),
    ("x" * 129, "1..128 printable characters"),
    ("tab\there", "1..128 printable characters"),
    (42, "must be a string, got int"),
])
def test_a_bad_prefix_is_refused_by_both_managers_and_records_nothing(manager, factory, creds,
                                                                      prefix, match):
    sink = manager.audit
    held = manager.trade_updates(creds, client_order_id_prefix="momentum-")
    before = (sink.records(), manager.health().lifecycles[0].refs, len(factory.created))
    with pytest.raises(sw.InvalidInputError, match=match):
        manager.trade_updates(creds, client_order_id_prefix=prefix)

    async def scenario() -> None:
        async with sw.AsyncConnectionManager(transport_factory=factory, audit=sink) as twin:
            with pytest.raises(sw.InvalidInputError, match=match):
                twin.trade_updates(creds, client_order_id_prefix=prefix)  # before any await

    asyncio.run(scenario())
    assert (sink.records(), manager.health().lifecycles[0].refs, len(factory.created)) == before
    assert held.is_live


def _update(client_order_id: object) -> SimpleNamespace:
    return SimpleNamespace(order=SimpleNamespace(client_order_id=client_order_id))


def test_in_memory_updates_without_an_order_id_reach_only_unfiltered_leases(manager, factory,
                                                                           creds):
    own = manager.trade_updates(creds, client_order_id_prefix="momentum-", owner="own")
    shorter = manager.trade_updates(creds, client_order_id_prefix="mom", owner="shorter")
    everything = manager.trade_updates(creds, owner="desk")
    sent = [_update("momentum-9"), _update(None), {"event": "fill"}, _update("pairs-1"),
            _update("Momentum-1")]
    for payload in sent:  # each returns once the engine loop has routed it
        assert factory.latest().emit_message(sw.StreamMessage(TRADE_UPDATES_CHANNEL, "AAPL",
                                                              payload))
    assert list(_drain(everything)) == sent
    assert list(_drain(own)) == [sent[0]]  # prefixes are case-sensitive, like the ids
    assert list(_drain(shorter)) == [sent[0]]
    leases = _leases(manager.health())
    assert {owner: (lease.delivered, lease.dropped) for owner, lease in leases.items()} == {
        "own": (1, 0), "shorter": (1, 0), "desk": (5, 0)}


def _drain(lease: sw.TradeUpdatesLease) -> Any:
    """The updates queued for ``lease`` now (the in-memory transport routes synchronously)."""
    updates = lease.updates(timeout=0.05)
    while True:
        try:
            yield next(updates)
        except sw.WaitTimeoutError:
            return
