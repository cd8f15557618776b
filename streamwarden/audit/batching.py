"""Group commit: a writer thread that commits queued audit records in batches.

Used by :class:`~streamwarden.audit.log.AuditLog` in ``batched`` durability. Records are
committed in the order they were submitted. At most ``queue_size`` records are ever accepted
but not yet committed (queued or in the batch being written): that is the loss window if the
process dies. While the database is unreachable the writer keeps the batch and retries it every
``retry_interval`` seconds (the commit callable decides whether to spool instead), so the
window fills up and :meth:`BatchWriter.submit` then fails after ``put_timeout`` seconds. A
batch that fails otherwise (the database refuses it, the chain's tail fails its check) is
handed to ``rescue`` (the spool, under the ``spool`` policy), and the failure is raised by
the next :meth:`BatchWriter.submit` or :meth:`BatchWriter.flush`: appends are not silently
accepted while records are being lost.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from streamwarden._redaction import SecretRedactor
from streamwarden.errors import AuditError, AuditUnavailableError, StreamwardenError
from streamwarden.logging import AUDIT_WRITE_FAILED, make_logger

_log = make_logger(SecretRedactor())


class Queued(Protocol):
    """What a :class:`BatchWriter` queues: anything with the ``event_id`` of a record (an
    :class:`~streamwarden.audit.records.Item`, or one prepared for the database)."""

    @property
    def event_id(self) -> str: ...


Item = TypeVar("Item", bound=Queued)


class BatchWriter(Generic[Item]):
    """A bounded queue of records and the named thread that commits them in groups.

    Args:
        commit: stores a batch in order, or raises (``AuditUnavailableError``: retried later;
            anything else: the batch goes to ``rescue``, or without one is retried one record
            at a time and the records it refuses are dropped; either way the failure is
            raised by the next :meth:`submit` or :meth:`flush`).
        rescue: keeps a failed batch somewhere safe (the spool), or raises.
        batch_size: at most this many records per commit.
        queue_size: at most this many records accepted and not yet committed.
        put_timeout: seconds :meth:`submit` waits for room in a full queue.
        retry_interval: seconds between attempts while the database is unreachable.

    Thread-safety: :meth:`submit`, :meth:`flush` and :meth:`close` may be called from any
    thread; records are committed in the order :meth:`submit` was called.
    """

    def __init__(
        self,
        commit: Callable[[list[Item]], object],
        *,
        rescue: Callable[[list[Item]], object] | None = None,
        batch_size: int = 500,
        queue_size: int = 10_000,
        put_timeout: float = 5.0,
        retry_interval: float = 0.5,
        name: str = "streamwarden-audit-writer",
    ) -> None:
        self._commit = commit
        self._rescue = rescue
        self._batch_size = batch_size
        self._queue_size = queue_size
        self._put_timeout = put_timeout
        self._retry_interval = retry_interval
        # One lock guards the queue and the counters: submitters wait on ``_done`` (room,
        # commits), the writer thread on ``_arrived`` (records, stop).
        lock = threading.Lock()
        self._queue: deque[Item] = deque()
        self._done = threading.Condition(lock)
        self._arrived = threading.Condition(lock)
        self._writer_waiting = False
        self._submitted = 0
        self._processed = 0
        self._refused: list[AuditError] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, record: Item) -> None:
        """Queue ``record`` for the next group commit.

        Raises:
            AuditError: if a batch failed since the last :meth:`submit` or :meth:`flush` (the
                message names how many records and why); the record was not queued.
            AuditUnavailableError: if ``queue_size`` records stayed uncommitted for
                ``put_timeout`` seconds (the database is slow or unreachable); the record was
                not queued.
        """
        deadline = time.monotonic() + self._put_timeout
        with self._done:
            self._raise_failures("audit.append")
            while self._submitted - self._processed >= self._queue_size:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AuditUnavailableError(
                        f"audit queue full ({self._queue_size} records not committed) for "
                        f"{self._put_timeout} s: the audit database is too slow or unreachable",
                        operation="audit.append",
                    )
                self._done.wait(remaining)
                self._raise_failures("audit.append")
            self._submitted += 1
            self._queue.append(record)
            if self._writer_waiting:
                self._arrived.notify()

    def _raise_failures(self, operation: str) -> None:
        """Raise (once) the failures reported since the last call. Caller holds ``_done``."""
        refused, self._refused = self._refused, []
        if refused:
            raise AuditError(
                f"{len(refused)} queued audit records failed; the last: {refused[-1].message}",
                operation=operation,
            )

    def flush(self, timeout: float) -> None:
        """Wait until every record submitted before this call is committed (or spooled).

        Raises:
            AuditUnavailableError: if that did not happen within ``timeout`` seconds.
            AuditError: if the database refused some queued records since the last flush
                (they are not stored; the error names how many and why).
        """
        deadline = time.monotonic() + timeout
        with self._done:
            target = self._submitted
            while self._processed < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AuditUnavailableError(
                        f"{target - self._processed} audit records not committed within "
                        f"{timeout} s", operation="audit.flush",
                    )
                self._done.wait(remaining)
            self._raise_failures("audit.flush")

    def close(self, timeout: float) -> None:
        """Flush, then stop the writer thread. Idempotent.

        Raises:
            AuditUnavailableError, AuditError: as :meth:`flush`; the thread is stopped anyway
                and records still queued are lost (the documented loss window).
        """
        try:
            if self._thread.is_alive():
                self.flush(timeout)
        finally:
            with self._arrived:
                self._stopping.set()
                self._arrived.notify()
            self._thread.join(timeout)

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            self._store(batch)

    def _take(self) -> list[Item] | None:
        """The next batch (up to ``batch_size`` records, oldest first), waiting for one; None
        once the writer is stopping (records still queued are then left)."""
        with self._arrived:
            while not self._queue and not self._stopping.is_set():
                self._writer_waiting = True
                self._arrived.wait()
                self._writer_waiting = False
            if self._stopping.is_set():
                return None
            take = self._queue.popleft
            return [take() for _ in range(min(len(self._queue), self._batch_size))]

    def _store(self, batch: list[Item]) -> None:
        while True:
            try:
                self._commit(batch)
            except AuditUnavailableError as exc:
                _log.warning(AUDIT_WRITE_FAILED, pending=len(batch), error=exc.message)
                if self._stopping.wait(self._retry_interval):
                    return
                continue
            except Exception as exc:  # whatever it is, the writer thread must go on
                self._failed(batch, _as_audit_error(exc))
                return
            self._mark_processed(len(batch), [])
            return

    def _failed(self, batch: list[Item], error: AuditError) -> None:
        if self._rescue is not None:
            try:
                self._rescue(batch)
            except Exception as exc:  # the rescue failed too: the records are lost
                error = _as_audit_error(exc)
            else:
                error = AuditError(f"{len(batch)} records spooled, not committed: "
                                   f"{error.message}", operation="audit.append")
            _log.error(AUDIT_WRITE_FAILED, pending=len(batch), error=error.message)
            self._mark_processed(len(batch), [error] * len(batch))
            return
        if len(batch) > 1:  # find the refused record(s); store the others in order
            for record in batch:
                self._store([record])
            return
        _log.error(AUDIT_WRITE_FAILED, event_id=batch[0].event_id, error=error.message)
        self._mark_processed(1, [error])

    def _mark_processed(self, count: int, refused: list[AuditError]) -> None:
        with self._done:
            self._processed += count
            self._refused.extend(refused)
            self._done.notify_all()


def _as_audit_error(exc: Exception) -> AuditError:
    if isinstance(exc, AuditError):
        return exc
    if isinstance(exc, StreamwardenError):
        return AuditError(exc.message, operation="audit.append")
    return AuditError(f"{type(exc).__name__}: {exc}", operation="audit.append")
