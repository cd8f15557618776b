"""When the audit sink fails, the transition does not take effect (policy ``raise``).

The in-memory sink cannot fail by itself, so these tests wrap it in a sink that refuses on
demand: the fault (an unreachable database) is produced for real by the SQL sink's own tests.
"""

from __future__ import annotations

import threading
import time

import pytest

from streamwarden import (
    AuditRecord,
    AuditUnavailableError,
    ConnectionManager,
    InMemoryAuditSink,
    Settings,
)
from streamwarden.testing import InMemoryTransportFactory
from tests.conftest import CANARY_SECRET
from tests.waiting import wait_until


class FlakySink(InMemoryAuditSink):
    def __init__(self) -> None:
        super().__init__()
        self.failures: list[BaseException] = []
        self.fail_events: set[str] = set()

    def append(self, record: AuditRecord) -> AuditRecord:
        if self.failures and (not self.fail_events or record.event in self.fail_events):
            raise self.failures.pop(0)
        return super().append(record)


@pytest.fixture
def flaky() -> FlakySink:
    return FlakySink()


@pytest.fixture
def audited(flaky):
    manager = ConnectionManager(transport_factory=InMemoryTransportFactory(), audit=flaky,
                                settings=Settings(start_timeout=1.0, stop_timeout=0.5, debug=True))
    yield manager
    manager.close()


def test_failed_first_acquire_leaves_no_lifecycle(audited, flaky, creds):
    flaky.failures.append(AuditUnavailableError("database unreachable"))
    with pytest.raises(AuditUnavailableError):
        audited.market_data(creds, symbols=["AAPL"])
    assert audited.health().lifecycles == () and flaky.records() == ()
    with audited.market_data(creds, symbols=["AAPL"]) as lease:
        assert lease.is_live


def test_failed_release_keeps_the_lease_and_the_count(audited, flaky, creds):
    lease = audited.market_data(creds, symbols=["AAPL"])
    other = audited.market_data(creds, symbols=["MSFT"])
    flaky.failures.append(AuditUnavailableError("database unreachable"))
    with pytest.raises(AuditUnavailableError):
        lease.release()
    assert lease.is_live
    assert audited.health().lifecycles[0].refs == 2
    assert audited.check_invariants() == []
    lease.release()
    other.release()


def test_unexpected_sink_exception_is_wrapped_and_redacted(audited, flaky, creds):
    audited.market_data(creds, symbols=["AAPL"]).release()  # registers the credentials' strings
    flaky.fail_events = {"acquire"}
    flaky.failures.append(OSError(f"disk full near {CANARY_SECRET}"))
    with pytest.raises(AuditUnavailableError, match="audit sink failed: OSError") as caught:
        audited.market_data(creds, symbols=["AAPL"])
    assert CANARY_SECRET not in str(caught.value)


def test_final_transition_is_retried_until_recorded(audited, flaky, creds):
    lease = audited.market_data(creds, symbols=["AAPL"])
    flaky.fail_events = {"closed"}
    flaky.failures.append(AuditUnavailableError("database unreachable"))
    lease.release()
    done = threading.Event()

    def stopped() -> bool:
        return any(r.event == "closed" for r in flaky.records())

    for _ in range(100):
        if stopped():
            done.set()
            break
        done.wait(0.05)
    assert done.is_set() and audited.health().lifecycles == ()


def test_final_record_lost_to_an_outage_does_not_wedge_the_stream_key(audited, flaky, creds):
    """invariants.yaml, L2 with the sink down: the final record is retried for stop_timeout,
    then the lifecycle stops anyway; the loss is logged and counted, and the key is free."""
    lease = audited.market_data(creds, symbols=["AAPL"])
    first = lease.lifecycle_id
    flaky.fail_events = {"closed"}
    flaky.failures.extend(AuditUnavailableError("database unreachable") for _ in range(1000))
    started = time.monotonic()
    lease.release()
    assert wait_until(lambda: audited.health().lifecycles == (), timeout=5.0)
    bound = audited.settings.drain_grace + 2 * audited.settings.stop_timeout + 1.0
    assert time.monotonic() - started < bound
    assert audited.health().final_records_lost == 1
    assert not any(r.event == "closed" for r in flaky.records())
    flaky.failures.clear()  # the outage ends
    with audited.market_data(creds, symbols=["AAPL"]) as again:
        assert again.lifecycle_id != first and again.is_live
