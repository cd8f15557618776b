"""The property-based evidence run: hypothesis drives a real manager through random histories.

A ``RuleBasedStateMachine`` drives a :class:`~streamwarden.ConnectionManager` (its supervisor
threads included) over in-memory transports with acquire, release, double release, connected,
connection lost, failed (re)connect attempts (406 within or past connection_limit_grace, other
causes), fatal error, hung stop (stop timeout), messages, subscription changes, silence (the
clock jumps past ``stale_after``: running market-data connections go stale and reconnect,
starting ones time out, draining ones close) and close, in random interleavings. After every
step every invariant of the spec (INV1..INV7) must hold and the audit trail, replayed on the
spec, must conform and chain.

Needs hypothesis: ``pip install 'streamwarden[check]'``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.reporting import with_reporter
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from streamwarden.audit.chain import GENESIS_HASH, link
from streamwarden.audit.memory import InMemoryAuditSink
from streamwarden.config import Settings
from streamwarden.credentials import Credentials
from streamwarden.errors import (
    AuthenticationError,
    ConnectionStartError,
    InvalidInputError,
    LeaseError,
    ManagerClosedError,
)
from streamwarden.machine.conformance import replay
from streamwarden.machine.spec import LifecycleSpec
from streamwarden.marketdata import CHANNELS, Quote
from streamwarden.runtime import (
    AsyncConnectionManager,
    AsyncMarketDataLease,
    ConnectionManager,
    LeaseStatus,
    MarketDataLease,
)
from streamwarden.testing._clock import ShiftedClock
from streamwarden.testing._transport import (
    InMemoryTransport,
    InMemoryTransportFactory,
    TransportOptions,
)
from streamwarden.transports import ConnectFailure, StreamMessage

T = TypeVar("T")

ACCOUNTS = (Credentials("PKPROPERTYACCOUNT001", "property-secret-one"),
            Credentials("PKPROPERTYACCOUNT002", "property-secret-two", paper=False))
SYMBOLS = st.lists(st.sampled_from(["AAPL", "MSFT", "SPY", "BRK.B"]), min_size=1, max_size=3)
STEPS_PER_EXAMPLE = 25
SETTLE_SECONDS = 10.0
#: The managers' ``stale_after``: far longer than any step takes, so that only the silence
#: rule (a jump of the clock) makes a connection stale.
STALE_AFTER_SECONDS = 600.0
#: The managers' wall clock starts in the US equities session (a Wednesday, 10:00 in New York).
SESSION_OPEN = datetime(2026, 11, 25, 15, tzinfo=UTC)
_QUOTE = Quote("AAPL", Decimal("187.10"), Decimal(3), Decimal("187.12"), Decimal(1),
               datetime(2026, 11, 23, 15, tzinfo=UTC))


class _SyncDriver:
    """Drives a :class:`ConnectionManager` from the test's thread."""

    def __init__(self, manager_kwargs: dict[str, Any]) -> None:
        self.manager = ConnectionManager(**manager_kwargs)
        self.engine = self.manager._engine

    def acquire(self, account: Credentials, market: bool, symbols: list[str]) -> Any:
        if market:
            return self.manager.market_data(account, symbols=symbols, wait=False)
        return self.manager.trade_updates(account, on_update=_ignore, wait=False)

    def release(self, lease: Any) -> None:
        lease.release()

    def change(self, lease: Any, channel: str, symbols: list[str], add: bool) -> None:
        if add:
            getattr(lease, f"subscribe_{channel}")(*symbols)
        else:
            lease.unsubscribe(channel, *symbols)

    def close(self, timeout: float) -> None:
        self.manager.close(timeout=timeout)

    def lifecycles(self) -> int:
        return len(self.manager.health().lifecycles)

    def violations(self) -> list[str]:
        return self.manager.check_invariants()

    def end(self) -> None:
        """Nothing to release beyond the manager."""


class _AsyncDriver:
    """Drives an :class:`AsyncConnectionManager` from an event loop of the test's own."""

    def __init__(self, manager_kwargs: dict[str, Any]) -> None:
        self._loop = asyncio.new_event_loop()
        self.manager = AsyncConnectionManager(**manager_kwargs)
        self.engine = self.manager._engine

    def _run(self, awaitable: Awaitable[T]) -> T:
        return self._loop.run_until_complete(awaitable)

    def acquire(self, account: Credentials, market: bool, symbols: list[str]) -> Any:
        if market:
            return self._run(self.manager.market_data(account, symbols=symbols, wait=False))
        return self._run(self.manager.trade_updates(account, on_update=_ignore, wait=False))

    def release(self, lease: Any) -> None:
        self._run(lease.release())

    def change(self, lease: Any, channel: str, symbols: list[str], add: bool) -> None:
        if add:
            self._run(getattr(lease, f"subscribe_{channel}")(*symbols))
        else:
            self._run(lease.unsubscribe(channel, *symbols))

    def close(self, timeout: float) -> None:
        self._run(self.manager.close(timeout=timeout))

    def lifecycles(self) -> int:
        return len(self._run(self.manager.health()).lifecycles)

    def violations(self) -> list[str]:
        return self._run(self.manager.check_invariants())

    def end(self) -> None:
        self._loop.close()


class ManagerMachine(RuleBasedStateMachine):
    """Drives one manager per example; subclass it with ``spec`` (and ``facade``: ``sync`` or
    ``async``) set, see :func:`manager_machine`."""

    spec: LifecycleSpec
    facade = "sync"
    examples = 0
    leases = Bundle("leases")

    def __init__(self) -> None:
        super().__init__()
        type(self).examples += 1
        self.factory = InMemoryTransportFactory()
        self.sink = InMemoryAuditSink()
        self.driver: _SyncDriver | _AsyncDriver | None = None
        self.closed = False
        self.acquires = 0
        self.clock = ShiftedClock(SESSION_OPEN)

    @initialize(drain_grace=st.sampled_from([0.0, 0.0, 30.0]),
                limit_grace=st.sampled_from([0.01, 30.0]))
    def start_manager(self, drain_grace: float, limit_grace: float) -> None:
        # A long drain grace makes draining -> running reuse reachable between steps; a tiny
        # connection-limit grace makes a reconnect refused with 406 fail at once.
        settings_ = Settings(start_timeout=1.0, stop_timeout=0.02, drain_grace=drain_grace,
                             reconnect_grace=1.0, connection_limit_grace=limit_grace,
                             debug=True, stale_after=STALE_AFTER_SECONDS)
        kwargs = {"transport_factory": self.factory, "audit": self.sink,
                  "settings": settings_, "spec": self.spec, "clock": self.clock}
        self.driver = _AsyncDriver(kwargs) if self.facade == "async" else _SyncDriver(kwargs)

    def _driver(self) -> _SyncDriver | _AsyncDriver:
        assert self.driver is not None
        return self.driver

    def _settle(self) -> None:
        """Wait until the lifecycles have handled the event just emitted, so that each step
        sees the effect of the one before (the engine handles transport events in order, on
        its own loop)."""
        engine = self._driver().engine
        if not engine.stopped:
            engine.run_sync(engine.settle(), SETTLE_SECONDS)

    def _transport(self, index: int) -> InMemoryTransport | None:
        created = self.factory.created
        return created[index % len(created)][1] if created else None

    @rule(target=leases, account=st.sampled_from(ACCOUNTS), market=st.booleans(),
          symbols=SYMBOLS, auto_connect=st.booleans(), hang=st.booleans())
    def acquire(self, account: Credentials, market: bool, symbols: list[str],
                auto_connect: bool, hang: bool) -> Any:
        self.factory.options = TransportOptions(auto_connect=auto_connect, hang_on_stop=hang)
        try:
            lease = self._driver().acquire(account, market, symbols)
        except ManagerClosedError:
            assert self.closed
            return None
        except ConnectionStartError:  # a closing predecessor hung past the bound
            return None
        assert not self.closed
        self.acquires += 1
        return lease

    @rule(lease=leases)
    def release(self, lease: Any) -> None:
        if lease is None:
            return
        self._driver().release(lease)  # a second release of the same lease is a no-op
        # A supervisor may revoke the lease concurrently (start timeout, fatal error), so the
        # lease ends released or revoked, never live.
        assert lease.status in (LeaseStatus.RELEASED, LeaseStatus.REVOKED)

    @rule(index=st.integers(0, 20))
    def connected(self, index: int) -> None:
        transport = self._transport(index)
        if transport is not None:
            transport.emit_connected()
            self._settle()

    @rule(index=st.integers(0, 20))
    def connection_lost(self, index: int) -> None:
        transport = self._transport(index)
        if transport is not None:
            transport.emit_connection_lost("peer reset")
            self._settle()

    @rule(index=st.integers(0, 20), cause=st.sampled_from(["connection_limit", "rate_limit",
                                                          "refused"]),
          attempt=st.integers(1, 5))
    def connect_failed(self, index: int, cause: str, attempt: int) -> None:
        transport = self._transport(index)
        if transport is not None:
            transport.emit_connect_failed(ConnectFailure(cause, f"refused: {cause}"), attempt,
                                          0.5 * attempt)
            self._settle()

    @rule(index=st.integers(0, 20))
    def fatal_error(self, index: int) -> None:
        transport = self._transport(index)
        if transport is not None:
            transport.emit_fatal_error(AuthenticationError("unauthorized"))
            self._settle()

    @rule(index=st.integers(0, 20))
    def message(self, index: int) -> None:
        transport = self._transport(index)
        if transport is not None:
            transport.emit_message(StreamMessage("quotes", "AAPL", _QUOTE))
            self._settle()

    @rule()
    def silence(self) -> None:
        self.clock.advance(STALE_AFTER_SECONDS)
        self._settle()  # wakes the lifecycles: the deadlines passed are now due
        self._settle()  # and what they did on waking (went_stale, start_failed) is handled

    @rule(lease=leases, channel=st.sampled_from(CHANNELS), symbols=SYMBOLS, add=st.booleans())
    def change_subscriptions(self, lease: Any, channel: str, symbols: list[str],
                             add: bool) -> None:
        if not isinstance(lease, MarketDataLease | AsyncMarketDataLease):
            return
        try:
            self._driver().change(lease, channel, symbols, add)
        except LeaseError:  # released, or revoked by a concurrent supervisor
            assert not lease.is_live
            return
        wanted = {(channel, symbol) for symbol in symbols}
        assert wanted <= lease.subscriptions if add else not wanted & lease.subscriptions

    @rule()
    def close(self) -> None:
        self._driver().close(timeout=2.0)
        self.closed = True
        assert self._driver().lifecycles() == 0

    @invariant()
    def spec_invariants_hold(self) -> None:
        if self.driver is not None:
            violations = self.driver.violations()
            assert violations == [], violations

    @invariant()
    def audit_trail_conforms_to_the_spec(self) -> None:
        records = self.sink.records()
        assert replay(self.spec, records) == []
        previous = GENESIS_HASH
        for record in records:
            assert record.prev_hash == previous
            assert record.row_hash == link(record, previous)
            previous = record.row_hash

    def teardown(self) -> None:
        if self.driver is None:
            return
        try:
            self.driver.close(timeout=2.0)
            violations = self.driver.violations()
            assert violations == [], violations
        finally:
            self.driver.engine.stop()  # even when close failed: no engine outlives its example
            self.driver.end()
        acquires = [r for r in self.sink.records() if r.event == "acquire"]
        assert len(acquires) == self.acquires


def manager_machine(spec: LifecycleSpec, facade: str = "sync") -> type[ManagerMachine]:
    """A :class:`ManagerMachine` class whose managers run ``spec`` through the ``sync``
    (:class:`ConnectionManager`) or ``async`` (:class:`AsyncConnectionManager`) facade.

    Raises:
        InvalidInputError: an unknown facade.
    """
    if facade not in ("sync", "async"):
        raise InvalidInputError(f"facade must be sync or async; got {facade!r}")
    return type("ManagerMachine", (ManagerMachine,),
                {"spec": spec, "facade": facade, "examples": 0})


def _ignore(update: object) -> None:
    """A consumer that ignores order updates."""


def evidence_settings(examples: int, *, derandomize: bool = False) -> settings:
    """The hypothesis settings of a run of ``examples`` examples.

    ``derandomize`` makes the run reproducible: the same examples every time.
    """
    return settings(
        max_examples=examples, stateful_step_count=STEPS_PER_EXAMPLE, deadline=None,
        database=None, print_blob=True, derandomize=derandomize,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


@dataclass(frozen=True)
class PropertyResult:
    """The evidence of one property-based run."""

    examples: int
    steps_per_example: int
    ok: bool
    failure: str | None


def run_properties(spec: LifecycleSpec, examples: int) -> PropertyResult:
    """Run ``examples`` random histories against a manager running ``spec``.

    The run is derandomized, so it is reproducible: the same examples every time.

    Returns:
        The result; on a failure, ``failure`` holds hypothesis's shrunk (shortest) step
        sequence and the error.

    Thread-safety: runs managers with their own threads; do not run two at once in one process
    if you read the log output.
    """
    machine = manager_machine(spec)
    report: list[object] = []
    try:
        with with_reporter(report.append):
            run_state_machine_as_test(
                machine, settings=evidence_settings(examples, derandomize=True))
    except Exception as exc:  # hypothesis re-raises the shrunk failure
        # The shrunk steps arrive as the exception's notes (or, in older versions, reports).
        notes = [str(note) for note in getattr(exc, "__notes__", [])]
        steps = "\n".join(str(line) for line in [*report, *notes] if str(line).strip())
        failure = f"{steps}\n{type(exc).__name__}: {exc}".strip()
        return PropertyResult(machine.examples, STEPS_PER_EXAMPLE, ok=False, failure=failure)
    return PropertyResult(machine.examples, STEPS_PER_EXAMPLE, ok=True, failure=None)
