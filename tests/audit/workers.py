"""Work done in child processes (multiprocessing spawn) by the concurrency tests."""

from __future__ import annotations

import os
import threading

from streamwarden.audit.log import AuditLog
from tests.audit.chain_data import make_record


def append_from_threads(url: str, threads: int, per_thread: int) -> None:
    """Open ``url`` and append ``threads * per_thread`` records from ``threads`` threads.

    Each record's details name its process, thread and index, so that the test can check that
    nothing was lost, duplicated or reordered within a thread.
    """
    errors: list[BaseException] = []
    with AuditLog.open(url) as log:

        def work(thread: int) -> None:
            try:
                for index in range(per_thread):
                    log.append(make_record(index, pid=os.getpid(), details={
                        "pid": os.getpid(), "thread": thread, "index": index}))
            except BaseException as exc:  # reported by the caller
                errors.append(exc)

        workers = [threading.Thread(target=work, args=(n,), name=f"appender-{n}")
                   for n in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(120)
    if errors:
        raise errors[0]
