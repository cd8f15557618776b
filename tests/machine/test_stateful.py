"""Property-based test of the manager: random interleavings of every operation and fault.

A hypothesis RuleBasedStateMachine drives a real ConnectionManager (its supervisor threads
included) over in-memory transports: acquire, release, double release, connected, connection
lost, fatal error, hung stop (stop timeout), messages and close. After every step every spec
invariant (INV1..INV7) must hold and the audit trail, replayed on the spec, must conform.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, rule

from streamwarden import (
    AuthenticationError,
    ConnectionManager,
    ConnectionStartError,
    Credentials,
    InMemoryAuditSink,
    LeaseStatus,
    ManagerClosedError,
    Settings,
    StreamMessage,
)
from streamwarden.audit.chain import GENESIS_HASH, link
from streamwarden.machine.conformance import replay
from streamwarden.machine.memory_transport import InMemoryTransportFactory, TransportOptions
from streamwarden.machine.spec import default_spec

ACCOUNTS = [Credentials("PKSTATEFULACCOUNT001", "stateful-secret-one"),
            Credentials("PKSTATEFULACCOUNT002", "stateful-secret-two", paper=False)]
SYMBOLS = st.lists(st.sampled_from(["AAPL", "MSFT", "SPY", "BRK.B"]), max_size=3)
EXAMPLES = int(os.environ.get("STREAMWARDEN_STATEFUL_EXAMPLES", "500" if os.environ.get("CI")
                                                                       else "100"))


class ManagerMachine(RuleBasedStateMachine):
    leases = Bundle("leases")

    def __init__(self) -> None:
        super().__init__()
        self.factory = InMemoryTransportFactory()
        self.sink = InMemoryAuditSink()
        self.closed = False
        self.acquires = 0

    @initialize(drain_grace=st.sampled_from([0.0, 0.0, 30.0]))
    def start_manager(self, drain_grace):
        # A long drain grace makes draining -> running reuse reachable between steps.
        settings = Settings(start_timeout=1.0, stop_timeout=0.02, drain_grace=drain_grace,
                            debug=True)
        self.manager = ConnectionManager(transport_factory=self.factory, audit=self.sink,
                                         settings=settings)

    def transport(self, index: int):
        return self.factory.created[index % len(self.factory.created)][1]

    @rule(target=leases, account=st.sampled_from(ACCOUNTS), market=st.booleans(),
          symbols=SYMBOLS, auto_connect=st.booleans(), hang=st.booleans())
    def acquire(self, account, market, symbols, auto_connect, hang):
        self.factory.options = TransportOptions(auto_connect=auto_connect, hang_on_stop=hang)
        try:
            if market:
                lease = self.manager.market_data(account, symbols=symbols, wait=False)
            else:
                lease = self.manager.trade_updates(account, on_update=lambda m: None,
                                                   wait=False)
        except ManagerClosedError:
            assert self.closed
            return None
        except ConnectionStartError:  # a closing predecessor hung past the bound
            return None
        assert not self.closed
        self.acquires += 1
        return lease

    @rule(lease=leases)
    def release(self, lease):
        if lease is None:
            return
        was_live = lease.is_live
        lease.release()
        assert lease.status is (LeaseStatus.RELEASED if was_live else lease.status)
        assert not lease.is_live

    @rule(index=st.integers(0, 20))
    def connected(self, index):
        if self.factory.created:
            self.transport(index).emit_connected()

    @rule(index=st.integers(0, 20))
    def connection_lost(self, index):
        if self.factory.created:
            self.transport(index).emit_connection_lost("peer reset")

    @rule(index=st.integers(0, 20))
    def fatal_error(self, index):
        if self.factory.created:
            self.transport(index).emit_fatal_error(AuthenticationError("unauthorized"))

    @rule(index=st.integers(0, 20))
    def message(self, index):
        if self.factory.created:
            self.transport(index).emit_message(StreamMessage("quotes", "AAPL", {"bp": "1.0"}))

    @rule()
    def close(self):
        self.manager.close(timeout=2.0)
        self.closed = True
        assert self.manager.health().lifecycles == ()

    @invariant()
    def spec_invariants_hold(self):
        if not hasattr(self, "manager"):
            return
        assert self.manager.check_invariants() == []

    @invariant()
    def audit_trail_conforms_to_the_spec(self):
        records = self.sink.records()
        assert replay(default_spec(), records) == []
        previous = GENESIS_HASH
        for record in records:
            assert record.prev_hash == previous
            assert record.row_hash == link(record, previous)
            previous = record.row_hash

    def teardown(self):
        if not hasattr(self, "manager"):
            return
        self.manager.close(timeout=2.0)
        assert self.manager.check_invariants() == []
        acquires = [r for r in self.sink.records() if r.event == "acquire"]
        assert len(acquires) == self.acquires


TestManagerMachine = ManagerMachine.TestCase
TestManagerMachine.settings = settings(
    max_examples=EXAMPLES, stateful_step_count=25, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@pytest.mark.parametrize("examples", [EXAMPLES])
def test_example_budget_is_at_least_500_in_ci(examples):
    if os.environ.get("CI"):
        assert examples >= 500
