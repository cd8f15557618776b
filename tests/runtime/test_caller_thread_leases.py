"""Lease operations that only count a lease in or out run on the caller's thread.

With an audit sink that never blocks (the in-memory one), an acquire whose pairs the running
wire already carries and acknowledged, and a release that leaves another lease and every pair
on the wire, need nothing from the engine loop: they are recorded and committed on the calling
thread under the lifecycle's lock. These tests show that they do not wait for the loop (it is
kept stuck in another account's audit append), that they keep record-then-effect when the sink
refuses, and that they mix safely with the changes the engine makes to the same lifecycle.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

import streamwarden as sw
from streamwarden.machine.conformance import replay
from streamwarden.machine.spec import LifecycleSpec, default_spec, load_spec
from streamwarden.testing import InMemoryTransportFactory
from streamwarden.transports import StreamMessage

BOUND = 5.0
DROPS = 12
A = sw.Credentials("PKCALLERTHREADS00001", "caller-threads-secret-a")
B = sw.Credentials("PKCALLERTHREADS00002", "caller-threads-secret-b")


class GatedSink(sw.InMemoryAuditSink):
    """The in-memory sink, except that appending a record owned by ``stuck`` waits for
    ``gate`` (with a sink that never blocks, whoever appends is the engine loop itself), and
    a record whose correlation id is ``refused`` is refused as by a sink that is down."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.stuck = threading.Event()

    def append(self, record: sw.AuditRecord) -> sw.AuditRecord:
        if record.owner == "stuck":
            self.stuck.set()
            self.gate.wait(4 * BOUND)
        if record.correlation_id == "refused":
            raise sw.AuditUnavailableError("the audit sink is down")
        return super().append(record)


@pytest.fixture
def sink() -> Iterator[GatedSink]:
    gated = GatedSink()
    yield gated
    gated.gate.set()


@pytest.fixture
def factory() -> InMemoryTransportFactory:
    return InMemoryTransportFactory()


@pytest.fixture
def manager(sink: GatedSink,
            factory: InMemoryTransportFactory) -> Iterator[sw.ConnectionManager]:
    with sw.ConnectionManager(transport_factory=factory, audit=sink,
                              settings=sw.Settings(start_timeout=BOUND)) as built:
        yield built


def _stick_the_engine(manager: sw.ConnectionManager, sink: GatedSink) -> threading.Thread:
    """Start account B's first acquire, whose record the engine loop appends and waits in."""
    thread = threading.Thread(target=lambda: manager.market_data(B, symbols=["MSFT"],
                                                                 owner="stuck").release(),
                              name="stuck-acquire")
    thread.start()
    assert sink.stuck.wait(BOUND)
    return thread


Step = tuple[str, str | None, int | None, int | None]


def _records_of(sink: sw.InMemoryAuditSink, lease_id: str) -> list[Step]:
    return [(r.event, r.to_state, r.refs_before, r.refs_after) for r in sink.records()
            if r.lease_id == lease_id]


def test_a_quiet_acquire_and_release_do_not_wait_for_the_engine_loop(
        manager: sw.ConnectionManager, sink: GatedSink) -> None:
    anchor = manager.market_data(A, symbols=["AAPL"])
    stuck = _stick_the_engine(manager, sink)
    started = time.monotonic()
    lease = manager.market_data(A, symbols=["AAPL"], owner="quiet")
    assert lease.is_live  # ready as it returned: its pairs were on the wire already
    lease.release()
    elapsed = time.monotonic() - started
    assert stuck.is_alive(), "the engine loop was not stuck throughout"
    assert elapsed < BOUND / 2
    sink.gate.set()
    stuck.join(BOUND)
    assert not stuck.is_alive()
    assert _records_of(sink, lease.lease_id) == [("acquire", "running", 1, 2),
                                                  ("release", "running", 2, 1)]
    assert manager.health().lifecycles[0].refs == 1
    anchor.release()


class GatedDurableSink(GatedSink):
    """:class:`GatedSink` as a sink that may block (a database): the manager appends to it on
    its audit writer thread, never on the engine loop or a caller's thread."""

    nonblocking = False


def test_with_a_sink_that_may_block_every_lease_operation_waits_for_the_writer() -> None:
    """A durable sink's append is I/O, which no lock may be held across: even a quiet acquire
    then goes through the engine loop and waits its turn behind the record the writer thread
    is appending."""
    sink = GatedDurableSink()
    with sw.ConnectionManager(transport_factory=InMemoryTransportFactory(), audit=sink,
                              settings=sw.Settings(start_timeout=BOUND)) as manager:
        anchor = manager.market_data(A, symbols=["AAPL"])
        stuck = threading.Thread(target=lambda: manager.market_data(B, symbols=["MSFT"],
                                                                    owner="stuck").release())
        stuck.start()
        assert sink.stuck.wait(BOUND)
        leases: list[sw.MarketDataLease] = []
        quiet = threading.Thread(target=lambda: leases.append(
            manager.market_data(A, symbols=["AAPL"], owner="behind")))
        quiet.start()
        quiet.join(0.3)
        assert quiet.is_alive(), "the acquire did not wait for the writer thread"
        sink.gate.set()
        quiet.join(BOUND)
        stuck.join(BOUND)
        assert not quiet.is_alive() and not stuck.is_alive()
        owners = [r.owner for r in sink.records() if r.event == "acquire"]
        assert owners == [None, "stuck", "behind"]
        leases[0].release()
        anchor.release()


def test_quotes_do_not_wait_for_a_lease_operation_on_a_callers_thread(
        manager: sw.ConnectionManager, sink: GatedSink,
        factory: InMemoryTransportFactory) -> None:
    """A quiet acquire holds its lifecycle's lock while its record is appended; this one's
    append is kept waiting, and the lifecycle's quotes still reach its other lease."""
    feed = manager.market_data(A, symbols=["AAPL"])
    waiting = threading.Thread(target=lambda: manager.market_data(A, symbols=["AAPL"],
                                                                  owner="stuck").release(),
                               name="stuck-quiet-acquire")
    waiting.start()
    assert sink.stuck.wait(BOUND)
    quote = sw.Quote("AAPL", Decimal("187.10"), Decimal(3), Decimal("187.12"), Decimal(1),
                     datetime(2026, 12, 1, 15, 30, tzinfo=UTC))
    assert factory.latest().emit_message(StreamMessage("quotes", "AAPL", quote))
    assert feed.wait_for_quote("AAPL", timeout=BOUND) == quote
    assert waiting.is_alive(), "the quiet acquire was not holding the lock throughout"
    sink.gate.set()
    waiting.join(BOUND)
    feed.release()


def test_an_async_quiet_acquire_and_release_do_not_wait_for_the_engine_loop(
        sink: GatedSink) -> None:
    async def run() -> list[Step]:
        async with sw.AsyncConnectionManager(transport_factory=InMemoryTransportFactory(),
                                             audit=sink) as manager:
            anchor = await manager.market_data(A, symbols=["AAPL"])
            helper = asyncio.create_task(asyncio.to_thread(
                lambda: sink.stuck.wait(BOUND)))
            stuck = asyncio.ensure_future(manager.market_data(B, symbols=["MSFT"],
                                                              owner="stuck"))
            assert await helper
            async with asyncio.timeout(BOUND / 2):
                lease = await manager.market_data(A, symbols=["AAPL"], owner="quiet")
                await lease.release()
            assert not stuck.done(), "the engine loop was not stuck throughout"
            sink.gate.set()
            await (await stuck).release()
            await anchor.release()
            return _records_of(sink, lease.lease_id)

    assert asyncio.run(run()) == [("acquire", "running", 1, 2), ("release", "running", 2, 1)]


def test_a_refused_record_changes_nothing(manager: sw.ConnectionManager,
                                          sink: GatedSink) -> None:
    anchor = manager.market_data(A, symbols=["AAPL"])
    with pytest.raises(sw.AuditError):
        manager.market_data(A, symbols=["AAPL"], correlation_id="refused")
    (lifecycle,) = manager.health().lifecycles
    assert lifecycle.refs == 1 and [lease.owner for lease in lifecycle.leases] == [None]
    assert [r.event for r in sink.records()] == ["acquire", "connected"]
    assert manager.check_invariants() == []
    anchor.release()


def test_a_refused_release_leaves_the_lease_live(manager: sw.ConnectionManager,
                                                 sink: GatedSink) -> None:
    anchor = manager.market_data(A, symbols=["AAPL"])
    lease = manager.market_data(A, symbols=["AAPL"])
    with pytest.raises(sw.AuditError):
        lease.release(correlation_id="refused")
    assert lease.is_live
    assert [r.event for r in sink.records()] == ["acquire", "connected", "acquire"]
    assert manager.health().lifecycles[0].refs == 2
    lease.release()
    anchor.release()


def test_caller_thread_operations_mix_with_the_engines_changes_of_the_same_lifecycle() -> None:
    """Eight threads acquire and release on one key while its connection drops and comes back
    again and again (the engine's own transitions, running -> starting -> running): a quiet
    operation runs on its thread whenever the lifecycle is running and idle, any other goes
    through the engine loop. Debug mode checks every invariant after every transition, and
    the audit trail must replay against the spec."""
    sink = sw.InMemoryAuditSink()
    factory = InMemoryTransportFactory()
    settings = sw.Settings(start_timeout=BOUND, debug=True)
    manager = sw.ConnectionManager(transport_factory=factory, audit=sink, settings=settings)
    anchor = manager.market_data(A, symbols=["AAPL"])
    transport = factory.latest()
    done = threading.Event()
    counts: Counter[str] = Counter()
    counts_lock = threading.Lock()
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        held: list[sw.MarketDataLease] = []
        mine: Counter[str] = Counter()
        try:
            while not done.is_set() or held:
                if held and (done.is_set() or rng.random() < 0.5 or len(held) >= 3):
                    held.pop(rng.randrange(len(held))).release()
                    mine["release"] += 1
                else:
                    held.append(manager.market_data(A, symbols=["AAPL"]))
                    mine["acquire"] += 1
        except BaseException as exc:  # reported below; a thread must not die silently
            errors.append(exc)
        with counts_lock:
            counts.update(mine)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    drops = 0
    deadline = time.monotonic() + 4 * BOUND
    while drops < DROPS and time.monotonic() < deadline and not errors:
        assert transport.emit_connection_lost("test drop")
        assert transport.emit_connected()
        drops += 1
        time.sleep(0.005)
    done.set()
    for thread in threads:
        thread.join(4 * BOUND)
    assert not any(thread.is_alive() for thread in threads), "deadlock: workers still running"
    assert errors == []
    assert manager.check_invariants() == []
    (lifecycle,) = manager.health().lifecycles
    assert lifecycle.state == "running" and lifecycle.refs == 1
    anchor.release()
    manager.close()

    records = sink.records()
    by_event = Counter(record.event for record in records)
    assert drops == DROPS == by_event["connection_lost"]
    assert by_event["acquire"] == counts["acquire"] + 1
    assert by_event["release"] == counts["release"] + 1 == by_event["acquire"]
    assert counts["acquire"] >= 100
    assert replay(default_spec(), records) == []


def _running_edited(directory: Path, edits: list[tuple[str, str]]) -> LifecycleSpec:
    """The packaged spec, with each ``(old, new)`` applied to the first ``old`` of the
    ``running`` state, written to ``directory`` and loaded."""
    packaged = Path(sw.__file__).parent / "spec"
    text = (packaged / "lifecycle.yaml").read_text()
    running = text.index("  running:")
    for old, new in edits:
        at = text.index(old, running)
        text = text[:at] + new + text[at + len(old):]
    (directory / "lifecycle.yaml").write_text(text)
    (directory / "invariants.yaml").write_text((packaged / "invariants.yaml").read_text())
    return load_spec(directory)


def test_a_spec_that_attaches_an_effect_sends_the_operation_through_the_engine_loop(
        tmp_path: Path) -> None:
    """The caller's thread only commits what the spec leaves quiet. Here a spec reconnects the
    transport on every acquire and release while running: such an operation is rolled back on
    the caller's thread (nothing recorded) and made on the engine loop, which carries the
    effect out."""
    quiet_ones = ('on: [{assign: {location: refs, expr: "refs + 1"}}]',
                  'on: [{assign: {location: refs, expr: "refs - 1"}}]')
    spec = _running_edited(tmp_path, [(line, line[:-1] + ", reconnect_transport]")
                                      for line in quiet_ones])
    factory, sink = InMemoryTransportFactory(), sw.InMemoryAuditSink()
    with sw.ConnectionManager(transport_factory=factory, audit=sink, spec=spec,
                              settings=sw.Settings(start_timeout=BOUND)) as manager:
        anchor = manager.market_data(A, symbols=["AAPL"])
        lease = manager.market_data(A, symbols=["AAPL"])
        lease.release()
        assert factory.latest().reconnect_reasons == ["acquire", "release"]
        assert _records_of(sink, lease.lease_id) == [("acquire", "running", 1, 2),
                                                     ("release", "running", 2, 1)]
        assert manager.check_invariants() == []
        anchor.release()


class ReenteringSink(sw.InMemoryAuditSink):
    """Appending the acquire of a lease owned by ``reenter`` (on the engine loop: this sink
    never blocks) calls the manager back, once: a quiet acquire and release of account A's
    AAPL."""

    def __init__(self) -> None:
        super().__init__()
        self.manager: sw.ConnectionManager | None = None
        self.lease: sw.MarketDataLease | None = None
        self.errors: list[BaseException] = []

    def append(self, record: sw.AuditRecord) -> sw.AuditRecord:
        manager, lease = self.manager, self.lease
        if record.owner == "reenter" and record.event == "acquire" and manager and lease:
            for call in (lambda: manager.market_data(A, symbols=["AAPL"]), lease.release):
                try:
                    call()
                except sw.StreamwardenError as exc:
                    self.errors.append(exc)
        return super().append(record)


def test_a_blocking_call_on_the_engine_thread_is_refused_even_when_it_could_run_there() -> None:
    sink = ReenteringSink()
    with sw.ConnectionManager(transport_factory=InMemoryTransportFactory(), audit=sink,
                              settings=sw.Settings(start_timeout=BOUND)) as manager:
        anchor = manager.market_data(A, symbols=["AAPL"])
        sink.manager, sink.lease = manager, manager.market_data(A, symbols=["AAPL"])
        manager.market_data(B, symbols=["MSFT"], owner="reenter").release()
        assert [type(error) for error in sink.errors] == [sw.ReentrancyError] * 2
        assert sink.lease.is_live and manager.health().lifecycles[0].refs == 2
        sink.lease.release()
        anchor.release()


def test_an_acquire_the_spec_refuses_while_running_is_left_to_the_engine_loop(
        tmp_path: Path) -> None:
    """A spec that allows one lease at a time while running: the second acquire is refused on
    the caller's thread (nothing recorded) and the engine loop answers it as it answers an
    acquire on a lifecycle that takes no more leases: the start of a successor times out."""
    acquire = "      - event: acquire\n"
    spec = _running_edited(tmp_path, [(acquire, acquire + '        cond: "refs < 1"\n')])
    sink = sw.InMemoryAuditSink()
    with sw.ConnectionManager(transport_factory=InMemoryTransportFactory(), audit=sink,
                              spec=spec,
                              settings=sw.Settings(start_timeout=BOUND, stop_timeout=0.2)
                              ) as manager:
        anchor = manager.market_data(A, symbols=["AAPL"])
        with pytest.raises(sw.StartTimeoutError, match="did not stop in time"):
            manager.market_data(A, symbols=["AAPL"])
        assert [r.event for r in sink.records()] == ["acquire", "connected"]
        anchor.release()
