"""The background checkpoint writer of an :class:`~streamwarden.audit.log.AuditLog`.

The thread ``streamwarden-audit-checkpoint`` writes a signed checkpoint when ``every`` records
were committed since the last one, and every ``interval`` seconds in any case: a heartbeat
when nothing happened, so that the newest checkpoint is never older than ``interval`` while
the log is open (deleting the newest rows can then go unseen for at most that long). It waits
on an event with a timeout, so it sleeps between checkpoints and wakes at once when due.

Appends only count what they committed; all file and table I/O runs on this thread, outside
the log's locks. A checkpoint that cannot be written is logged (``audit.checkpoint_failed``)
and counted, and retried at the next interval; no record is lost by it.
"""

from __future__ import annotations

import threading
import time

from streamwarden._redaction import SecretRedactor
from streamwarden.audit.checkpoints import CheckpointWriter, SignedCheckpoint, TableReader
from streamwarden.errors import StreamwardenError
from streamwarden.logging import (
    AUDIT_CHECKPOINT_FAILED,
    AUDIT_CHECKPOINT_WRITTEN,
    make_logger,
)

THREAD_NAME = "streamwarden-audit-checkpoint"
_log = make_logger(SecretRedactor())


class Checkpointer:
    """Writes checkpoints every ``every`` committed records and every ``interval`` seconds.

    Thread-safety: :meth:`committed`, :meth:`write_now` and :meth:`close` may be called from
    any thread. Checkpoints are written one at a time.
    """

    def __init__(self, writer: CheckpointWriter, rows: TableReader, *, every: int,
                 interval: float) -> None:
        """Start the thread. ``every`` >= 1 and ``interval`` > 0 are checked by the caller."""
        self._writer = writer
        self._rows = rows
        self._every = every
        self._interval = interval
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._wake = threading.Event()
        self._pending = 0
        self._last: tuple[int, str] | None = None
        self._stopping = False
        self._failures = 0
        self._written = 0
        self._written_at: float | None = None
        self._thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
        self._thread.start()

    @property
    def failures(self) -> int:
        """How many checkpoints could not be written."""
        with self._lock:
            return self._failures

    @property
    def written(self) -> int:
        """How many checkpoints were written."""
        with self._lock:
            return self._written

    @property
    def written_at(self) -> float | None:
        """When the newest checkpoint was written, in seconds since the epoch (None: none yet)."""
        with self._lock:
            return self._written_at

    def committed(self, count: int, seq: int, row_hash: str) -> None:
        """Count ``count`` records just committed, which left the row ``seq`` with
        ``row_hash`` as the chain's last; wake the thread when ``every`` are due.

        Never blocks on I/O (it takes a lock held only for counter updates).
        """
        with self._lock:
            before = self._pending
            self._pending += count
            self._last = (seq, row_hash)
            due = before < self._every <= self._pending
        if due:
            self._wake.set()

    def write_now(self) -> SignedCheckpoint:
        """Write a checkpoint of the table's current head now.

        Raises:
            CheckpointError, AuditUnavailableError, AuditError: as
                :meth:`CheckpointWriter.write`; nothing was written.
        """
        with self._write_lock:
            with self._lock:
                covered, expect = self._pending, self._last
            signed = self._writer.write(self._rows, expect=expect)
            with self._lock:
                self._pending -= covered
                self._written += 1
                self._written_at = time.time()
        _log.info(AUDIT_CHECKPOINT_WRITTEN, size=signed.checkpoint.size,
                  directory=str(self._writer.directory), file=signed.checkpoint.file_name)
        return signed

    def close(self, timeout: float) -> None:
        """Write a last checkpoint if records were committed since the newest one, stop the
        thread and wait for it (at most ``timeout`` seconds). Idempotent."""
        with self._lock:
            self._stopping = True
        self._wake.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            _log.warning(AUDIT_CHECKPOINT_FAILED, error="checkpoint thread still busy at close",
                         directory=str(self._writer.directory))

    def _run(self) -> None:
        while True:
            self._wake.wait(self._interval)
            self._wake.clear()
            with self._lock:
                stopping, pending = self._stopping, self._pending
            if stopping and pending == 0:
                return
            succeeded = self._attempt()
            if stopping:
                return
            with self._lock:
                again = succeeded and self._pending >= self._every
            if again:  # records committed while writing made another one due
                self._wake.set()

    def _attempt(self) -> bool:
        try:
            self.write_now()
        except Exception as exc:  # the thread must outlive any failure; it is logged
            with self._lock:
                self._failures += 1
                failures = self._failures
            message = exc.message if isinstance(exc, StreamwardenError) else str(exc)
            _log.error(AUDIT_CHECKPOINT_FAILED, error=message, error_type=type(exc).__name__,
                       reason=getattr(exc, "reason", None), failures=failures,
                       directory=str(self._writer.directory))
            return False
        return True
