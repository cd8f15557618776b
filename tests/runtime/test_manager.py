"""The connection manager over the in-memory transport: sharing, release, faults, shutdown."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from streamwarden import (
    AuditLog,
    AuthenticationError,
    ConnectionManager,
    Credentials,
    InMemoryAuditSink,
    InvalidInputError,
    LeaseError,
    LeaseRevokedError,
    LeaseStatus,
    ManagerClosedError,
    Settings,
    StartTimeoutError,
    StopTimeoutError,
    StreamMessage,
)
from streamwarden.logging import LOGGER_NAME
from streamwarden.testing import TransportOptions
from tests.waiting import wait_until


def events_of(sink: InMemoryAuditSink, lifecycle_id: str | None = None) -> list[str]:
    return [r.event for r in sink.records() if lifecycle_id in (None, r.lifecycle_id)]


def transitions_of(sink: InMemoryAuditSink, lifecycle_id: str) -> list[tuple[str, str | None]]:
    return [(r.from_state or "", r.to_state) for r in sink.records()
            if r.lifecycle_id == lifecycle_id and r.event != "lease_revoked"]


def test_two_leases_share_one_connection(manager, factory, creds):
    with manager.market_data(creds, symbols=["AAPL"]) as first, \
            manager.market_data(creds, symbols=["msft", "AAPL"]) as second:
        assert first.lifecycle_id == second.lifecycle_id
        assert len(factory.created) == 1
        (lifecycle,) = manager.health().lifecycles
        assert (lifecycle.state, lifecycle.refs) == ("running", 2)
        both = {(channel, symbol) for symbol in ("AAPL", "MSFT")
                for channel in ("quotes", "trades")}
        assert factory.latest().subscriptions == both
        first.release()
        assert factory.latest().subscriptions == both
    assert wait_until(lambda: not manager.health().lifecycles)
    assert factory.latest().subscriptions == frozenset()


def test_kinds_and_accounts_get_separate_connections(manager, factory, creds):
    other = Credentials("PKOTHERACCOUNT000002", "another-secret-value")
    with manager.market_data(creds, symbols=["AAPL"]), \
            manager.market_data(other, symbols=["AAPL"]), \
            manager.trade_updates(creds, on_update=lambda message: None):
        lifecycles = manager.health().lifecycles
        assert len({lc.lifecycle_id for lc in lifecycles}) == 3
        assert {lc.kind for lc in lifecycles} == {"market_data", "trade_updates"}
        assert len({lc.fingerprint for lc in lifecycles}) == 2


def test_last_release_stops_and_a_new_acquire_starts_a_new_lifecycle(manager, sink, creds):
    lease = manager.market_data(creds, symbols=["AAPL"])
    first_id = lease.lifecycle_id
    lease.release()
    assert wait_until(lambda: "closed" in events_of(sink, first_id))
    assert transitions_of(sink, first_id) == [
        ("idle", "starting"), ("starting", "running"), ("running", "draining"),
        ("draining", "stopped"),
    ]
    with manager.market_data(creds, symbols=["AAPL"]) as again:
        assert again.lifecycle_id != first_id


def test_double_release_is_a_noop(manager, sink, creds):
    lease = manager.market_data(creds, symbols=["AAPL"])
    lease.release()
    before = len(sink.records())
    lease.release()
    assert lease.status is LeaseStatus.RELEASED
    assert len([r for r in sink.records()[:before] if r.event == "release"]) == 1
    assert [r.event for r in sink.records()[before:]] in ([], ["closed"])


def test_leases_of_two_managers_are_independent(manager, factory, creds, fast_settings):
    other_manager = ConnectionManager(transport_factory=factory, settings=fast_settings)
    try:
        foreign = other_manager.market_data(creds, symbols=["AAPL"])
        with manager.market_data(creds, symbols=["AAPL"]) as mine:
            assert mine.issued_by(manager) and not mine.issued_by(other_manager)
            assert foreign.issued_by(other_manager) and not foreign.issued_by(manager)
            assert manager.health().lifecycles[0].refs == 1
        assert foreign.is_live and not mine.is_live
        assert other_manager.health().lifecycles[0].refs == 1
    finally:
        other_manager.close()


def test_audit_records_carry_correlation_and_causation(manager, sink, creds):
    lease = manager.market_data(creds, symbols=["AAPL"], correlation_id="run-42", owner="momentum")
    lease.release(correlation_id="run-42-end")
    assert wait_until(lambda: "closed" in events_of(sink))
    records = {r.event: r for r in sink.records()}
    assert records["acquire"].correlation_id == "run-42"
    assert records["acquire"].lease_id == lease.lease_id
    assert records["acquire"].owner == "momentum"
    assert records["connected"].causation_id == records["acquire"].event_id
    assert records["release"].correlation_id == "run-42-end"
    assert records["closed"].causation_id == records["release"].event_id
    assert [r.seq for r in sink.records()] == list(range(1, len(sink.records()) + 1))


def test_generated_correlation_id_is_exposed_on_the_lease(manager, creds):
    with manager.market_data(creds, symbols=["AAPL"]) as lease:
        assert len(lease.correlation_id) == 26


def test_fatal_error_revokes_leases_and_raises_the_typed_error(factory, sink, creds,
                                                                fast_settings):
    factory.options = TransportOptions(fatal_error=AuthenticationError("auth failed (402)"))
    with ConnectionManager(transport_factory=factory, audit=sink, settings=fast_settings) as mgr:
        with pytest.raises(AuthenticationError, match="auth failed") as caught:
            mgr.market_data(creds, symbols=["AAPL"], correlation_id="c-1")
        assert caught.value.correlation_id == "c-1"
        assert mgr.health().lifecycles == ()
        failed = [r for r in sink.records() if r.event == "start_failed"]
        assert failed[0].outcome == "failed"
        assert failed[0].error_type == "AuthenticationError"
        assert "lease_revoked" in events_of(sink)


def test_fatal_error_while_running_revokes_the_lease(manager, factory, sink, creds):
    lease = manager.trade_updates(creds, on_update=lambda message: None)
    factory.latest().emit_fatal_error(AuthenticationError("unauthorized"))
    assert wait_until(lambda: lease.status is LeaseStatus.REVOKED)
    with pytest.raises(LeaseRevokedError) as caught:
        lease.ensure_live()
    assert isinstance(caught.value.__cause__, AuthenticationError)
    assert transitions_of(sink, lease.lifecycle_id)[-2:] == [
        ("running", "starting"), ("starting", "stopped")]


def test_start_timeout_releases_the_waiter_and_fails_the_lifecycle(factory, sink, creds):
    factory.options = TransportOptions(auto_connect=False)
    settings = Settings(start_timeout=0.2, stop_timeout=0.5, debug=True)
    with ConnectionManager(transport_factory=factory, audit=sink, settings=settings) as mgr:
        started = time.monotonic()
        with pytest.raises(StartTimeoutError):
            mgr.market_data(creds, symbols=["AAPL"])
        assert time.monotonic() - started < 1.5
        assert wait_until(lambda: not mgr.health().lifecycles)
        assert mgr.check_invariants() == []


def test_unattended_start_timeout_revokes_a_nowait_lease(factory, sink, creds):
    factory.options = TransportOptions(auto_connect=False)
    settings = Settings(start_timeout=0.1, stop_timeout=0.5, debug=True)
    with ConnectionManager(transport_factory=factory, audit=sink, settings=settings) as mgr:
        lease = mgr.market_data(creds, symbols=["AAPL"], wait=False)
        assert wait_until(lambda: lease.status is LeaseStatus.REVOKED)
        with pytest.raises(StartTimeoutError):
            lease.wait_ready(timeout=0)
        failed = [r for r in sink.records() if r.event == "start_failed"]
        assert failed[0].error_type == "StartTimeoutError"


def test_wait_false_then_wait_ready(factory, creds, fast_settings):
    factory.options = TransportOptions(auto_connect=False)
    with ConnectionManager(transport_factory=factory, settings=fast_settings) as mgr:
        lease = mgr.market_data(creds, symbols=["AAPL"], wait=False)
        assert mgr.health().lifecycles[0].state == "starting"
        with pytest.raises(StartTimeoutError):
            lease.wait_ready(timeout=0.05)
        assert lease.is_live
        assert wait_until(lambda: factory.latest().started)
        factory.latest().emit_connected()
        lease.wait_ready(timeout=1.0)
        assert mgr.health().lifecycles[0].state == "running"
        with pytest.raises(InvalidInputError):
            lease.wait_ready(timeout=-1)


def test_connection_lost_and_reconnect(manager, factory, sink, creds):
    with manager.market_data(creds, symbols=["AAPL"]) as lease:
        transport = factory.latest()
        transport.emit_connection_lost("socket reset")
        assert manager.health().lifecycles[0].state == "starting"
        transport.emit_connected()
        (lifecycle,) = manager.health().lifecycles
        assert (lifecycle.state, lifecycle.reconnects) == ("running", 1)
        assert transitions_of(sink, lease.lifecycle_id)[1:4] == [
            ("starting", "running"), ("running", "starting"), ("starting", "running")]


def test_stray_event_is_rejected_and_recorded(manager, factory, sink, creds):
    with manager.market_data(creds, symbols=["AAPL"]):
        factory.latest().emit_connected()  # already running: the spec has no such transition
        assert wait_until(lambda: any(r.outcome == "rejected" for r in sink.records()))
        rejected = [r for r in sink.records() if r.outcome == "rejected"]
        assert [(r.event, r.from_state, r.error_type) for r in rejected] == [
            ("connected", "running", "InvalidTransitionError")]
        assert manager.health().lifecycles[0].state == "running"


def test_hung_stop_is_forced_and_counted(factory, sink, creds):
    factory.options = TransportOptions(hang_on_stop=True)
    settings = Settings(start_timeout=1.0, stop_timeout=0.1, debug=True)
    with ConnectionManager(transport_factory=factory, audit=sink, settings=settings) as mgr:
        mgr.market_data(creds, symbols=["AAPL"]).release()
        assert wait_until(lambda: "close_timeout" in events_of(sink))
        (record,) = [r for r in sink.records() if r.event == "close_timeout"]
        assert (record.outcome, record.error_type) == ("forced", "StopTimeoutError")
        assert mgr.health().abandoned_transports == 1
        assert mgr.check_invariants() == []


def test_drain_grace_reuses_the_open_connection(factory, sink, creds):
    settings = Settings(start_timeout=1.0, stop_timeout=0.5, drain_grace=5.0, debug=True)
    with ConnectionManager(transport_factory=factory, audit=sink, settings=settings) as mgr:
        first = mgr.market_data(creds, symbols=["AAPL"])
        first.release()
        assert mgr.health().lifecycles[0].state == "draining"
        second = mgr.market_data(creds, symbols=["AAPL"])
        assert second.lifecycle_id == first.lifecycle_id
        assert len(factory.created) == 1
        assert transitions_of(sink, first.lifecycle_id)[-1] == ("draining", "running")


def test_drain_grace_ends_on_time_while_the_watchdog_waits_longer(factory, sink, creds):
    # The supervisor sleeps until the watchdog's next check (a minute away); the last release
    # runs in place and must move that wake-up to the end of the drain grace. The transport
    # acknowledges nothing by itself, so that no acknowledgement of the emptied wire wakes it.
    factory.options = TransportOptions(auto_ack=False)
    settings = Settings(start_timeout=1.0, stop_timeout=0.5, drain_grace=0.3, stale_after=60.0,
                        debug=True)
    with ConnectionManager(transport_factory=factory, audit=sink, settings=settings) as mgr:
        lease = mgr.market_data(creds, symbols=["AAPL"], wait=False)
        assert wait_until(lambda: factory.latest().emit_subscribed())
        lease.wait_ready()
        released = time.monotonic()
        lease.release()
        assert wait_until(lambda: "closed" in events_of(sink, lease.lifecycle_id), timeout=3.0)
        assert time.monotonic() - released >= settings.drain_grace
        assert mgr.check_invariants() == []


def test_acquire_waits_for_a_closing_predecessor(factory, sink, creds):
    factory.options = TransportOptions(hang_on_stop=True)
    settings = Settings(start_timeout=1.0, stop_timeout=0.2, debug=True)
    with ConnectionManager(transport_factory=factory, audit=sink, settings=settings) as mgr:
        first = mgr.market_data(creds, symbols=["AAPL"])
        first.release()
        factory.options = TransportOptions()
        second = mgr.market_data(creds, symbols=["AAPL"])
        assert second.lifecycle_id != first.lifecycle_id
        stopped_at = next(r.seq for r in sink.records() if r.event == "close_timeout")
        acquired_at = next(r.seq for r in sink.records()
                           if r.event == "acquire" and r.lease_id == second.lease_id)
        assert stopped_at < acquired_at
        second.release()


def test_close_revokes_every_lease_and_refuses_new_ones(factory, sink, creds, fast_settings):
    mgr = ConnectionManager(transport_factory=factory, audit=sink, settings=fast_settings)
    leases = [mgr.market_data(creds, symbols=["AAPL"]), mgr.trade_updates(creds, on_update=print)]
    started = time.monotonic()
    mgr.close(correlation_id="shutdown-1")
    assert time.monotonic() - started < 1.0
    assert all(lease.status is LeaseStatus.REVOKED for lease in leases)
    assert mgr.health().lifecycles == () and mgr.health().closed
    with pytest.raises(ManagerClosedError):
        mgr.market_data(creds, symbols=["AAPL"])
    with pytest.raises(LeaseRevokedError):
        leases[0].ensure_live()
    shutdowns = [r for r in sink.records() if r.event == "shutdown"]
    assert {r.correlation_id for r in shutdowns} == {"shutdown-1"}
    mgr.close()  # idempotent


def test_close_reports_lifecycles_that_do_not_stop_in_time(factory, creds):
    factory.options = TransportOptions(hang_on_stop=True)
    settings = Settings(start_timeout=1.0, stop_timeout=0.5)
    mgr = ConnectionManager(transport_factory=factory, settings=settings)
    mgr.market_data(creds, symbols=["AAPL"])
    with pytest.raises(StopTimeoutError, match="not stopped within"):
        mgr.close(timeout=0.05)
    mgr.close()
    assert mgr.health().lifecycles == ()


def test_trade_updates_reach_every_lease_and_a_failing_callback_is_isolated(
    manager, factory, creds
):
    received: list[tuple[str, object]] = []

    def broken(update: object) -> None:
        raise RuntimeError("strategy bug")

    first = manager.trade_updates(creds, on_update=lambda u: received.append(("a", u)))
    manager.trade_updates(creds, on_update=broken)
    manager.trade_updates(creds, on_update=lambda u: received.append(("c", u)))
    factory.latest().emit_message(StreamMessage("trade_updates", "AAPL", {"event": "fill"}))
    assert wait_until(lambda: len(received) == 2)
    assert sorted(received) == [("a", {"event": "fill"}), ("c", {"event": "fill"})]
    assert wait_until(lambda: manager.health().lifecycles[0].callback_errors == 1)
    (lifecycle,) = manager.health().lifecycles
    assert (lifecycle.messages, lifecycle.callback_errors, lifecycle.state) == (1, 1, "running")
    first.release()


def test_callback_may_release_its_own_lease(manager, factory, creds):
    holder: dict[str, object] = {}
    done = threading.Event()

    def on_update(update: object) -> None:
        holder["lease"].release()  # type: ignore[attr-defined]
        done.set()

    holder["lease"] = manager.trade_updates(creds, on_update=on_update)
    factory.latest().emit_message(StreamMessage("trade_updates", None, {}))
    assert done.wait(1.0)
    assert holder["lease"].status is LeaseStatus.RELEASED  # type: ignore[attr-defined]


def test_released_lease_refuses_use(manager, creds):
    lease = manager.market_data(creds, symbols=["AAPL"])
    lease.release()
    with pytest.raises(LeaseError, match="released"):
        lease.ensure_live()
    with pytest.raises(LeaseError):
        lease.wait_ready()


def test_leaving_the_with_block_records_shutdown_under_the_managers_id(factory, sink, creds,
                                                                       fast_settings):
    with ConnectionManager(transport_factory=factory, audit=sink, settings=fast_settings,
                           correlation_id="run-7") as manager:
        assert manager.correlation_id == "run-7"
        lease = manager.market_data(creds, symbols=["AAPL"], correlation_id="strategy-1")
    assert lease.status is LeaseStatus.REVOKED
    why = [(r.event, r.outcome) for r in sink.records() if r.correlation_id == "run-7"]
    assert ("shutdown", "ok") in why
    revoked = [r for r in sink.records() if r.event == "lease_revoked"]
    assert [r.correlation_id for r in revoked] == ["strategy-1"]
    shutdown = next(r for r in sink.records() if r.event == "shutdown")
    assert revoked[0].causation_id == shutdown.event_id


def test_close_takes_an_explicit_correlation_id(factory, sink, creds, fast_settings):
    manager = ConnectionManager(transport_factory=factory, audit=sink, settings=fast_settings)
    manager.market_data(creds, symbols=["AAPL"])
    manager.close(correlation_id="eod-close")
    assert [r.correlation_id for r in sink.records() if r.event == "shutdown"] == ["eod-close"]
    manager.close()  # idempotent
    with pytest.raises(ManagerClosedError):
        manager.market_data(creds, symbols=["AAPL"])


def test_without_a_sink_the_manager_keeps_a_bounded_ring_and_says_so_once(
        factory, creds, fast_settings, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER_NAME)
    with ConnectionManager(transport_factory=factory, settings=fast_settings) as manager:
        ring = manager.audit
        assert isinstance(ring, InMemoryAuditSink) and ring.capacity == 1000
        assert manager.health().durable_audit is False
        for _ in range(600):  # 1,200+ records
            manager.market_data(creds, symbols=["AAPL"]).release()
        assert len(ring.records()) == 1000 and ring.appended > 1000
        assert ring.records()[-1].seq == ring.appended
    warnings = [r for r in caplog.records if "audit.not_durable" in r.getMessage()]
    assert len(warnings) == 1


def test_an_audit_log_is_reported_durable(factory, creds, fast_settings, tmp_path):
    audit = AuditLog.open(f"sqlite:///{tmp_path / 'audit.db'}")
    try:
        with ConnectionManager(transport_factory=factory, audit=audit,
                               settings=fast_settings) as manager:
            assert manager.health().durable_audit is True
    finally:
        audit.close()


def test_threads_stay_constant_and_end_with_the_manager(factory, creds, fast_settings):
    before = set(threading.enumerate())
    manager = ConnectionManager(transport_factory=factory, settings=fast_settings,
                                audit=InMemoryAuditSink())
    got: list[object] = []
    accounts = [Credentials(f"PKTHREADS{n:011d}", f"thread-secret-{n}") for n in range(8)]
    leases = [manager.market_data(account, symbols=["AAPL"], on_quote=got.append)
              for account in accounts]
    report = manager.health()
    assert len(report.lifecycles) == 8
    assert report.threads == 1  # the engine; callback workers start with the first callback
    for lease in leases:
        lease.release()
    manager.close()
    assert wait_until(lambda: set(threading.enumerate()) <= before)
