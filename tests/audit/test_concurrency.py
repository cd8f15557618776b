"""Concurrent appends keep the chain linear: threads in a process, and several processes."""

from __future__ import annotations

import multiprocessing
from collections import defaultdict

from streamwarden.audit import migrate
from streamwarden.audit.log import AuditLog
from tests.audit.chain_data import stored
from tests.audit.workers import append_from_threads


def check_complete(url: str, processes: int, threads: int, per_thread: int) -> None:
    """Every record is there once, seq is 1..n, each thread's records are in its order, and
    the chain verifies."""
    records = stored(url)
    assert [record.seq for record in records] == list(range(1, len(records) + 1))
    assert len(records) == processes * threads * per_thread
    assert len({record.event_id for record in records}) == len(records)
    order: dict[tuple[int, int], list[int]] = defaultdict(list)
    for record in records:
        order[record.details["pid"], record.details["thread"]].append(record.details["index"])
    assert len(order) == processes * threads
    assert all(indexes == list(range(per_thread)) for indexes in order.values())
    with AuditLog.open(url) as log:
        report = log.verify()
    assert report.ok and report.rows == len(records), report


def test_threads_in_one_process(db_url):
    migrate.upgrade(db_url)
    append_from_threads(db_url, threads=8, per_thread=25)
    check_complete(db_url, processes=1, threads=8, per_thread=25)


def test_eight_threads_in_each_of_two_processes(db_url):
    migrate.upgrade(db_url)
    # forkserver: like spawn, each child starts from a fresh single-threaded process (no
    # state inherited from this one); the server imports streamwarden once for both children.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["tests.audit.workers"])
    children = [context.Process(target=append_from_threads, args=(db_url, 8, 20),
                                name=f"appender-process-{n}") for n in range(2)]
    for child in children:
        child.start()
    for child in children:
        child.join(120)
    assert [child.exitcode for child in children] == [0, 0]
    check_complete(db_url, processes=2, threads=8, per_thread=20)
