"""Holdings: leases paired from their acquire and ending records, and who held what when."""

from __future__ import annotations

import tracemalloc
from datetime import datetime, timedelta

import pytest

from streamwarden import InMemoryAuditSink, InvalidInputError
from streamwarden.audit.holdings import holders_at, holdings
from tests.audit.histories import T0, record, run_history

LC_A, LC_B = "01JLIFECYCLEAAAAAAAAAAAAAA", "01JLIFECYCLEBBBBBBBBBBBBBB"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def step(seconds: float, event: str, from_state: str, to_state: str | None, **changes):
    return record(occurred_at=at(seconds), event=event, from_state=from_state,
                  to_state=to_state, **changes)


#: Connection A: momentum holds 0..60, pairs 10..30, a refused acquire at 20, a revoked lease
#: (meanrev 40..50, the lifecycle failed under it), a lease never ended (executor on B from 5).
HISTORY = [
    step(0, "acquire", "idle", "starting", lifecycle_id=LC_A, lease_id="L-mom",
         owner="momentum", details={"symbols": ["AAPL"]}),
    step(1, "connected", "starting", "running", lifecycle_id=LC_A),
    step(5, "acquire", "idle", "starting", lifecycle_id=LC_B, lease_id="L-exe",
         owner="executor", kind="trade_updates"),
    step(10, "acquire", "running", "running", lifecycle_id=LC_A, lease_id="L-pairs",
         owner="pairs"),
    step(20, "acquire", "running", None, lifecycle_id=LC_A, lease_id="L-refused",
         owner="late", outcome="rejected", error_type="InvalidTransitionError"),
    step(25, "release", "running", None, lifecycle_id=LC_A, lease_id="L-mom",
         outcome="rejected", error_type="InvalidTransitionError"),
    step(30, "release", "running", "running", lifecycle_id=LC_A, lease_id="L-pairs"),
    step(40, "acquire", "running", "running", lifecycle_id=LC_A, lease_id="L-mean",
         owner="meanrev"),
    step(50, "lease_revoked", "running", "running", lifecycle_id=LC_A, lease_id="L-mean",
         owner="meanrev", outcome="failed", error_type="ConnectionLostError",
         error_message="socket closed"),
    step(60, "release", "running", "draining", lifecycle_id=LC_A, lease_id="L-mom"),
    step(61, "closed", "draining", "stopped", lifecycle_id=LC_A),
]


def test_leases_pair_with_what_ended_them():
    found = {holding.lease_id: holding for holding in holdings(HISTORY)}
    assert list(found) == ["L-mom", "L-exe", "L-pairs", "L-mean"]  # the refused one held nothing
    mom = found["L-mom"]
    assert (mom.acquired_at, mom.released_at, mom.ended_by, mom.end_reason) == (
        at(0), at(60), "release", None)  # the rejected release at 25 ended nothing
    assert mom.details == {"symbols": ["AAPL"]} and mom.owner == "momentum"
    assert found["L-mean"].ended_by == "lease_revoked"
    assert found["L-mean"].end_reason == "ConnectionLostError: socket closed"
    assert found["L-exe"].released_at is None and found["L-exe"].kind == "trade_updates"


@pytest.mark.parametrize(("seconds", "owners"), [
    (-1, []),
    (0, ["momentum"]),
    (9.999, ["momentum", "executor"]),
    (10, ["momentum", "executor", "pairs"]),
    (30, ["momentum", "executor"]),  # half-open: released at 30 is not held at 30
    (45, ["momentum", "executor", "meanrev"]),
    (55, ["momentum", "executor"]),
    (3600, ["executor"]),  # never ended: still held as far as the trail knows
])
def test_holders_at_a_time(seconds, owners):
    assert [holding.owner for holding in holders_at(HISTORY, at(seconds))] == owners


def test_a_lease_left_open_ends_with_its_lifecycle():
    history = [*HISTORY[:2],
               step(70, "start_failed", "starting", "stopped", lifecycle_id=LC_A,
                    outcome="failed", error_type="StartTimeoutError", error_message="dns")]
    (mom,) = holdings(history)
    assert (mom.released_at, mom.ended_by, mom.end_outcome) == (at(70), "start_failed", "failed")
    assert mom.end_reason == "StartTimeoutError: dns"


def test_a_release_revoked_by_overflow_says_why():
    history = [HISTORY[0], step(3, "release", "running", "draining", lifecycle_id=LC_A,
                                lease_id="L-mom", outcome="failed",
                                details={"reason": "delivery_overflow"})]
    (mom,) = holdings(history)
    assert (mom.ended_by, mom.end_outcome, mom.end_reason) == (
        "release", "failed", "delivery_overflow")


def test_a_naive_time_is_refused():
    with pytest.raises(InvalidInputError, match="timezone-aware"):
        holders_at(HISTORY, datetime(2026, 1, 2, 9, 30))
    with pytest.raises(InvalidInputError, match="timezone-aware"):
        holdings(HISTORY)[0].held_at(datetime(2026, 1, 2))


def test_the_records_a_real_manager_writes_pair_up(creds, fast_settings):
    sink = InMemoryAuditSink()
    history = run_history(sink, creds, fast_settings)
    found = holdings(sink.records())
    assert [holding.owner for holding in found] == [
        "momentum", "[bold]mean-reversion[/bold]", "executor"]
    assert all(holding.ended_by == "release" and holding.end_outcome == "ok"
               for holding in found)
    assert found[2].lifecycle_id == history.trade_updates_lifecycle
    middle = found[1].acquired_at + (found[1].released_at - found[1].acquired_at) / 2
    assert found[1] in holders_at(sink.records(), middle)


def test_holders_at_keeps_only_the_open_leases():
    """Memory grows with the leases open at once, not with all of them: over 3,000 leases
    held one after the other, holders_at peaks far below holdings."""
    def trail():
        for index in range(3_000):
            lease = f"L-{index}"
            yield step(index, "acquire", "running", "running", lease_id=lease, owner="o")
            yield step(index + 0.5, "release", "running", "running", lease_id=lease)

    def peak(function) -> int:
        tracemalloc.start()
        try:
            function(trail())
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    held = peak(lambda records: holders_at(records, at(100.25)))
    assert peak(holdings) > 10 * held
    assert [h.lease_id for h in holders_at(trail(), at(100.25))] == ["L-100"]


def test_what_a_lease_receives_comes_from_its_acquire_record():
    found = {holding.lease_id: holding for holding in holdings(HISTORY)}
    market = holdings([record(lease_id="L-1", details={
        "subscriptions": {"quotes": ["AAPL", "MSFT"], "trades": ["AAPL"]}})])[0]
    assert market.receives == "quotes AAPL MSFT; trades AAPL"
    filtered = holdings([record(lease_id="L-2", kind="trade_updates", details={
        "filter": {"client_order_id_prefix": "momentum-"}})])[0]
    assert filtered.receives == "orders with client_order_id momentum-*"
    everything = holdings([record(lease_id="L-3", kind="trade_updates")])[0]
    assert everything.receives == "every order"
    assert found["L-mom"].receives == ""  # no subscriptions map in its record: nothing to say
