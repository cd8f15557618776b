"""The sans-I/O lifecycle core on its own: pending changes, commit, rollback, effects.

Record before effect: an operation changes nothing a consumer or the wire can see until its
record is committed, and a rollback leaves the lifecycle as it was.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from streamwarden._keys import StreamKey
from streamwarden.audit.records import AuditRecord
from streamwarden.errors import InvalidTransitionError, LeaseError
from streamwarden.machine.spec import default_spec
from streamwarden.runtime._lifecycle import LeaseInfo, Lifecycle, Pending, Timing
from streamwarden.transports import StreamMessage

KEY = StreamKey("f" * 24, "market_data", True, "iex")
AAPL = frozenset({("quotes", "AAPL"), ("trades", "AAPL")})


class Box:
    """A delivery queue that keeps what it is given."""

    def __init__(self) -> None:
        self.got: list[StreamMessage] = []

    def put(self, message: StreamMessage, now: float | None = None) -> None:
        self.got.append(message)


def lifecycle(drain_grace: float = 0.0) -> Lifecycle:
    return Lifecycle(lifecycle_id="L1", key=KEY, spec=default_spec(),
                     timing=Timing(start_timeout=10.0, drain_grace=drain_grace,
                                   reconnect_grace=60.0, connection_limit_grace=30.0),
                     origin_correlation_id="run-1")


def info(lease_id: str) -> LeaseInfo:
    return LeaseInfo(lease_id, "L1", KEY, "owner", "run-1")


def record_of(pending: Pending, event_id: str = "E1") -> AuditRecord:
    draft = pending.draft
    return AuditRecord(event_id=event_id, occurred_at=datetime.now(UTC), lifecycle_id="L1",
                       fingerprint=KEY.fingerprint, kind=KEY.kind, event=draft.event,
                       from_state=draft.from_state, to_state=draft.to_state,
                       refs_before=draft.refs_before, refs_after=draft.refs_after,
                       correlation_id=draft.correlation_id, host="h", pid=1)


def granted(core: Lifecycle, lease_id: str, box: Box, now: float = 0.0) -> None:
    pending = core.acquire(info(lease_id), AAPL, box, now)
    core.commit(pending, record_of(pending), now)


def test_an_acquire_takes_effect_only_at_commit():
    core, box = lifecycle(), Box()
    pending = core.acquire(info("A"), AAPL, box, now=0.0)
    draft = pending.draft
    assert (draft.event, draft.from_state, draft.to_state, draft.refs_after) == (
        "acquire", "idle", "starting", 1)
    assert draft.details["subscriptions"] == {"quotes": ["AAPL"], "trades": ["AAPL"]}
    assert core.leases == {} and core.wire == frozenset()  # nothing visible yet
    assert core.routes.targets(StreamMessage("quotes", "AAPL", None)) == ()
    effects = core.commit(pending, record_of(pending), now=0.0)
    assert effects.start_transport and effects.wire == AAPL and effects.revoked == ()
    assert set(core.leases) == {"A"} and core.wire == AAPL
    assert core.routes.targets(StreamMessage("quotes", "AAPL", None)) == (box,)
    assert core.cause_id == "E1"


def test_a_rolled_back_acquire_leaves_no_trace():
    core = lifecycle()
    pending = core.acquire(info("A"), AAPL, Box(), now=0.0)
    core.rollback(pending)
    assert (core.state, core.refs, dict(core.leases), core.wire) == ("idle", 0, {}, frozenset())
    granted(core, "B", Box())  # and the next operation works
    assert core.refs == 1


def test_one_change_at_a_time():
    core = lifecycle()
    core.acquire(info("A"), AAPL, Box(), now=0.0)
    with pytest.raises(AssertionError, match="already pending"):
        core.acquire(info("B"), AAPL, Box(), now=0.0)


def test_release_keeps_the_wire_until_committed_and_ends_the_lease_then():
    core = lifecycle()
    granted(core, "A", Box())
    connected = core.signal("connected")
    core.commit(connected, record_of(connected, "E2"), now=0.0)
    assert core.release("nobody", "run-1") is None  # not live: nothing to record
    pending = core.release("A", "run-1")
    assert pending is not None and core.wire == AAPL
    effects = core.commit(pending, record_of(pending, "E3"), now=1.0)
    assert effects.ended is not None and effects.ended.info.lease_id == "A"
    assert effects.wire == frozenset() and core.state == "draining"
    assert core.due(now=1.0)  # drain grace 0: stop now


def test_a_rolled_back_release_keeps_the_lease():
    core = lifecycle()
    granted(core, "A", Box())
    pending = core.release("A", "run-1")
    assert pending is not None
    core.rollback(pending)
    assert (core.state, core.refs, set(core.leases)) == ("starting", 1, {"A"})


def test_subscription_changes_are_recorded_before_the_wire_changes():
    core = lifecycle()
    granted(core, "A", Box())
    pending = core.change_subscriptions("A", {("bars", "SPY")}, subscribe=True,
                                        correlation_id="run-1")
    assert pending is not None and pending.draft.event == "lease_subscribed"
    assert ("bars", "SPY") not in core.wire
    effects = core.commit(pending, record_of(pending, "E2"), now=0.0)
    assert effects.wire == AAPL | {("bars", "SPY")}
    assert core.change_subscriptions("A", {("bars", "SPY")}, subscribe=True,
                                     correlation_id="run-1") is None  # nothing changes
    with pytest.raises(LeaseError, match="not live"):
        core.change_subscriptions("B", {("bars", "SPY")}, subscribe=True, correlation_id="x")


def test_shutdown_revokes_every_lease_at_commit():
    core = lifecycle()
    granted(core, "A", Box())
    granted(core, "B", Box())
    pending = core.signal("shutdown", correlation_id="close-1")
    assert len(core.leases) == 2
    effects = core.commit(pending, record_of(pending, "E3"), now=0.0)
    assert sorted(e.info.lease_id for e in effects.revoked) == ["A", "B"]
    assert core.leases == {} and core.refs == 0 and core.wire == frozenset()


def test_invariants_see_the_committed_configuration_while_a_change_is_in_flight():
    # A start timeout's start_failed may be pending (its record being written) when a health
    # or invariant check runs: the machine has moved to refs 0, the leases are not yet revoked.
    core = lifecycle()
    granted(core, "A", Box())
    granted(core, "B", Box())

    def env() -> dict[str, object]:
        return core.invariant_env(socket_open=False, transport_done=True, wire=core.wire)

    pending = core.signal("start_failed")
    assert core.refs == 0 and len(core.leases) == 2  # in flight
    assert (env()["state"], env()["refs"], env()["live_leases"]) == ("starting", 2, 2)
    core.commit(pending, record_of(pending, "E3"), now=0.0)
    assert (env()["state"], env()["refs"], env()["live_leases"]) == ("stopped", 0, 0)


def test_readiness_needs_running_and_the_acknowledged_pairs():
    core = lifecycle()
    granted(core, "A", Box())
    assert not core.ready("A")
    connected = core.signal("connected")
    core.commit(connected, record_of(connected, "E2"), now=0.0)
    assert not core.ready("A")  # running, but the wire has not acknowledged AAPL yet
    core.acknowledge(AAPL)
    assert core.ready("A")
    core.disconnected()
    assert not core.ready("A") and not core.reusable(now=0.0)


def test_a_draining_lifecycle_is_reused_only_within_its_grace():
    core = lifecycle(drain_grace=30.0)
    granted(core, "A", Box())
    connected = core.signal("connected")
    core.commit(connected, record_of(connected, "E2"), now=0.0)
    release = core.release("A", "run-1")
    assert release is not None
    core.commit(release, record_of(release, "E3"), now=0.0)
    assert core.reusable(now=10.0) and not core.due(now=10.0)
    reuse = core.acquire(info("B"), AAPL, Box(), now=10.0)
    assert reuse.draft.details["inputs"] == {"reusable": True}
    core.rollback(reuse)
    with pytest.raises(InvalidTransitionError):
        core.acquire(info("C"), AAPL, Box(), now=31.0)  # past the grace: the spec says no
    assert core.due(now=31.0)



def test_trade_updates_route_unfiltered_leases_as_before_and_record_a_filter():
    key = StreamKey("f" * 24, "trade_updates", True, None)
    core = Lifecycle(lifecycle_id="L2", key=key, spec=default_spec(),
                     timing=Timing(start_timeout=10.0, drain_grace=0.0, reconnect_grace=60.0,
                                   connection_limit_grace=30.0),
                     origin_correlation_id="run-1")
    update = StreamMessage("trade_updates", "AAPL", None)
    plain, own = Box(), Box()
    pending = core.acquire(LeaseInfo("A", "L2", key, None, "run-1"), frozenset(), plain, 0.0)
    assert pending.draft.details == {}
    core.commit(pending, record_of(pending), 0.0)
    routes = core.routes
    assert routes.targets(update) is routes.everyone == (plain,)  # nothing built per update
    pending = core.acquire(LeaseInfo("B", "L2", key, None, "run-1", "momentum-"), frozenset(),
                           own, 0.0)
    assert pending.draft.details == {"filter": {"client_order_id_prefix": "momentum-"}}
    core.commit(pending, record_of(pending), 0.0)
    assert core.routes.targets(update) == (plain,)  # no order id: not the filtered lease's


def _commit(core: Lifecycle, pending: Pending, now: float, event_id: str = "E") -> None:
    core.commit(pending, record_of(pending, event_id), now)


def test_a_reconnect_is_bounded_by_the_reconnect_grace_and_a_first_start_by_start_timeout():
    core, box = lifecycle(), Box()
    granted(core, "lease-1", box, now=0.0)
    assert core.next_deadline() == 10.0 and not core.reconnecting  # start_timeout
    with pytest.raises(InvalidTransitionError):  # a first start records no reconnect_failed
        core.reconnect_failed(1, 0.5, "refused", "port shut")
    _commit(core, core.signal("connected"), 1.0)
    _commit(core, core.signal("connection_lost"), 100.0)
    assert core.reconnecting and core.next_deadline() == 160.0  # reconnect_grace=60
    assert not core.due(159.9) and core.due(160.0)


def test_406s_arm_the_connection_limit_grace_from_the_drop_and_other_causes_disarm_it():
    core, box = lifecycle(), Box()
    granted(core, "lease-1", box, now=0.0)
    _commit(core, core.signal("connected"), 1.0)
    _commit(core, core.signal("connection_lost"), 100.0)
    pending = core.reconnect_failed(1, 0.7, "connection_limit", "Alpaca error 406")
    assert pending.draft.details == {"attempt": 1, "delay": 0.7, "cause": "connection_limit",
                                     "cause_detail": "Alpaca error 406",
                                     "inputs": {"reconnecting": True}}
    assert (pending.draft.from_state, pending.draft.to_state) == ("starting", "starting")
    assert not core.connection_limited  # not before the commit
    _commit(core, pending, 105.0)
    assert core.connection_limited and core.next_deadline() == 130.0  # 100 + 30, from the drop
    assert core.due(130.0) and core.leases  # due, and the lease is still live until the stop
    _commit(core, core.reconnect_failed(2, 1.4, "refused", "port shut"), 131.0)
    assert not core.connection_limited and core.next_deadline() == 160.0
    _commit(core, core.reconnect_failed(3, 2.8, "connection_limit", "406"), 132.0)
    _commit(core, core.signal("connected"), 133.0)
    assert not core.reconnecting and not core.connection_limited and core.next_deadline() is None


MSFT = frozenset({("quotes", "MSFT"), ("trades", "MSFT")})


def test_a_quiet_change_only_counts_a_lease_in_or_out():
    """What a lease operation on its caller's thread relies on: ``carries`` (the wire has the
    pairs, acknowledged), ``shared`` (another lease wants every pair) and ``quiet`` (the spec
    keeps the state with no effect, and the wire keeps its pairs)."""
    core = lifecycle()
    granted(core, "A", Box())
    assert not core.carries(AAPL)  # starting: nothing acknowledged
    _commit(core, core.signal("connected"), 0.0)
    assert not core.carries(AAPL)  # running, not yet acknowledged
    core.acknowledge(AAPL)
    assert core.carries(AAPL) and core.carries(frozenset()) and not core.carries(MSFT)

    again = core.acquire(info("B"), AAPL, Box(), now=0.0)
    assert core.quiet(again)
    _commit(core, again, 0.0)
    other = core.acquire(info("C"), MSFT, Box(), now=0.0)
    assert not core.quiet(other)  # MSFT joins the wire
    _commit(core, other, 0.0)
    assert core.shared("A") and core.shared("B") and not core.shared("C")
    assert not core.shared("nobody")

    release = core.release("B", "run-1")
    assert release is not None and core.quiet(release)
    core.rollback(release)
    leaving = core.release("C", "run-1")
    assert leaving is not None and not core.quiet(leaving)  # MSFT leaves the wire
    _commit(core, leaving, 0.0)
    _commit(core, core.release("B", "run-1"), 0.0)  # type: ignore[arg-type]
    last = core.release("A", "run-1")
    assert last is not None and not core.quiet(last)  # running -> draining
    core.rollback(last)
    lost = core.signal("connection_lost")
    assert not core.quiet(lost)  # a state change, and about no lease
    _commit(core, lost, 0.0)
    resubscribe = core.change_subscriptions("A", MSFT, subscribe=True, correlation_id="run-1")
    assert resubscribe is not None and not core.quiet(resubscribe)  # no transition at all
