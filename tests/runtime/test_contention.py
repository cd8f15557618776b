"""Concurrency: 32 threads x 2,000 random acquire/release on one stream key."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter

from streamwarden import ConnectionManager, Credentials, InMemoryAuditSink, Settings
from streamwarden.machine.conformance import replay
from streamwarden.machine.spec import default_spec
from streamwarden.testing import InMemoryTransportFactory

THREADS = 32
OPERATIONS = 2_000
BOUND_SECONDS = 240  # no deadlock: generous, the run takes a fraction of it


def test_32_threads_hammering_one_key():
    creds = Credentials("PKTHREADSACCOUNT0001", "threads-secret-value")
    sink = InMemoryAuditSink()
    factory = InMemoryTransportFactory()
    # Generous bounds: under 32 contending threads a lifecycle change may wait for the lock.
    settings = Settings(start_timeout=10.0, stop_timeout=5.0)
    manager = ConnectionManager(transport_factory=factory, audit=sink, settings=settings)
    counts: Counter[str] = Counter()
    counts_lock = threading.Lock()
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        held = []
        mine: Counter[str] = Counter()
        try:
            for _ in range(OPERATIONS):
                mine["operations"] += 1
                if held and (rng.random() < 0.5 or len(held) >= 4):
                    held.pop(rng.randrange(len(held))).release()
                    mine["release"] += 1
                else:
                    held.append(manager.market_data(creds, symbols=["AAPL"], owner=f"t{seed}"))
                    mine["acquire"] += 1
            for lease in held:
                lease.release()
                mine["release"] += 1
        except BaseException as exc:  # reported below; a thread must not die silently
            errors.append(exc)
        with counts_lock:
            counts.update(mine)

    threads = [threading.Thread(target=worker, args=(seed,), name=f"hammer-{seed}")
               for seed in range(THREADS)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(0.0, BOUND_SECONDS - (time.monotonic() - started)))
    assert not any(thread.is_alive() for thread in threads), "deadlock: workers still running"
    assert errors == []
    assert manager.check_invariants() == []

    end = time.monotonic() + 5
    while manager.health().lifecycles and time.monotonic() < end:
        time.sleep(0.01)
    assert manager.health().lifecycles == (), "refs returned to 0 but a lifecycle did not stop"
    manager.close()

    records = sink.records()
    by_event = Counter(record.event for record in records)
    assert by_event["acquire"] == counts["acquire"] == by_event["release"]
    assert counts["operations"] == THREADS * OPERATIONS
    lifecycles = {record.lifecycle_id for record in records}
    assert by_event["closed"] == len(lifecycles)
    assert by_event["connected"] == len(lifecycles)
    assert len(records) == (by_event["acquire"] + by_event["release"]
                            + by_event["connected"] + by_event["closed"])
    assert replay(default_spec(), records) == []
