"""Turning a lifecycle's drafts into audit records, and writing them off the engine loop.

The engine loop never waits for audit I/O by blocking: a sink that may block (a database) is
appended to on one dedicated writer thread, in the order the records were made, while the loop
goes on routing market data. A sink that declares ``nonblocking = True`` (the in-memory one) is
appended to directly, on the engine loop or, for a lease operation that needs nothing else
from the loop, on its caller's thread.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from streamwarden._keys import StreamKey
from streamwarden._redaction import SecretRedactor
from streamwarden.audit.records import AuditRecord, AuditSink
from streamwarden.clock import Clock
from streamwarden.errors import AuditError, AuditUnavailableError, StreamwardenError
from streamwarden.ids import new_id
from streamwarden.runtime._lifecycle import Draft
from streamwarden.runtime._stats import Histogram


class AuditWriter:
    """Builds records (event id, time, host, pid, redacted error) and appends them to a sink.

    ``key_details``, if given, adds details to every record of a key (a fleet's epoch).

    Thread-safety: :meth:`build` and :meth:`append` may be called from any thread; :meth:`write`
    on the engine loop. ``append_durations`` and ``append_failed`` are written under the
    writer's lock by whichever thread appends (the writer thread, or for a sink that never
    blocks the engine loop and callers' threads) and may be read from any.
    """

    def __init__(self, sink: AuditSink, clock: Clock, redactor: SecretRedactor, *,
                 thread_name: str,
                 key_details: Callable[[StreamKey], Mapping[str, Any]] | None = None) -> None:
        self.sink = sink
        self._key_details = key_details
        self._clock = clock
        self._redactor = redactor
        self._host = socket.gethostname()
        self._pid = os.getpid()
        #: How long each append to the sink took, in seconds (failed ones included).
        self.append_durations = Histogram()
        #: Whether the latest append failed for want of the sink (an AuditError; False before
        #: the first append).
        self.append_failed = False
        self._bookkeeping = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        if not getattr(sink, "nonblocking", False):
            self._executor = ThreadPoolExecutor(1, thread_name_prefix=thread_name)

    @property
    def inline(self) -> bool:
        """Whether :meth:`write` completes without suspending (a sink that never blocks)."""
        return self._executor is None

    def build(self, lifecycle_id: str, key: StreamKey, draft: Draft) -> AuditRecord:
        """The record of ``draft``, with a new event id and the current time."""
        error = draft.error
        details = dict(draft.details)
        if self._key_details is not None:
            details.update(self._key_details(key))
        return AuditRecord(
            event_id=new_id(),
            occurred_at=self._clock.now(),
            lifecycle_id=lifecycle_id,
            fingerprint=key.fingerprint,
            kind=key.kind,
            event=draft.event,
            from_state=draft.from_state,
            to_state=draft.to_state,
            refs_before=draft.refs_before,
            refs_after=draft.refs_after,
            correlation_id=draft.correlation_id,
            causation_id=draft.causation_id,
            lease_id=draft.lease_id,
            owner=draft.owner,
            host=self._host,
            pid=self._pid,
            outcome=draft.outcome,
            error_type=type(error).__name__ if error is not None else None,
            error_message=self._error_text(error),
            details=details,
        )

    async def write(self, record: AuditRecord) -> AuditRecord:
        """Append ``record``; returns it as stored (with seq and hashes when the sink sets them).

        Raises:
            AuditError: the sink could not store it; nothing was stored.
            InvalidInputError: its details are not JSON-serialisable.
        """
        if self._executor is None:
            return self.append(record)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.append, record)

    def append(self, record: AuditRecord) -> AuditRecord:
        """Append ``record`` on the calling thread (for a sink that never blocks: :attr:`inline`;
        otherwise it is the writer thread's job, through :meth:`write`).

        Raises:
            AuditError / InvalidInputError: as :meth:`write`.
        """
        started = time.monotonic()
        failed: bool | None = None  # None: the sink's state is unknown (the record was refused)
        try:
            stored = self.sink.append(record)
            failed = False
        except AuditError:
            failed = True
            raise
        except StreamwardenError:  # the record, not the sink (InvalidInputError)
            raise
        except Exception as exc:
            failed = True
            message = self._redactor.redact_text(f"{type(exc).__name__}: {exc}")
            raise AuditUnavailableError(
                f"audit sink failed: {message}", operation=record.event,
                fingerprint=record.fingerprint, correlation_id=record.correlation_id,
            ) from None
        finally:
            with self._bookkeeping:
                self.append_durations.observe(time.monotonic() - started)
                if failed is not None:
                    self.append_failed = failed
        return stored

    def redact(self, text: str) -> str:
        """``text`` with every known sensitive string removed."""
        return self._redactor.redact_text(text)

    def _error_text(self, error: BaseException | None) -> str | None:
        if error is None:
            return None
        text = error.message if isinstance(error, StreamwardenError) else str(error)
        return self._redactor.redact_text(text)

    def shutdown(self) -> None:
        """Stop the writer thread once the records already handed to it are written."""
        if self._executor is not None:
            self._executor.shutdown(wait=False)

    @property
    def thread_count(self) -> int:
        """The writer threads this writer uses (0 or 1)."""
        return 0 if self._executor is None else 1
