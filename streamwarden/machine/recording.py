"""Building audit records for a lifecycle's transitions and lease events."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from streamwarden.audit.records import AuditRecord, AuditSink, Outcome
from streamwarden.clock import Clock
from streamwarden.errors import AuditUnavailableError, StreamwardenError
from streamwarden.ids import new_id
from streamwarden.logging import SecretRedactor
from streamwarden.machine.keys import StreamKey


@dataclass(frozen=True)
class RecordContext:
    """Who and what a record is about, besides the event itself."""

    lifecycle_id: str
    key: StreamKey
    correlation_id: str
    causation_id: str | None = None
    lease_id: str | None = None
    owner: str | None = None


class AuditRecorder:
    """Builds records (event id, time, host, pid, redacted error) and appends them to a sink.

    Thread-safety: as thread-safe as the sink; the manager calls it under its lock.
    """

    def __init__(
        self,
        sink: AuditSink,
        clock: Clock,
        redactor: SecretRedactor,
        *,
        host: str | None = None,
        pid: int | None = None,
    ) -> None:
        self.sink = sink
        self._clock = clock
        self._redactor = redactor
        self._host = host or socket.gethostname()
        self._pid = os.getpid() if pid is None else pid

    def append(
        self,
        context: RecordContext,
        *,
        event: str,
        states: tuple[str | None, str | None],
        refs: tuple[int | None, int | None],
        outcome: Outcome = "ok",
        error: BaseException | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> AuditRecord:
        """Append one record and return it as stored (with seq and hashes).

        Raises:
            AuditError: if the sink could not store it; nothing was stored.
            InvalidInputError: if ``details`` is not JSON-serialisable.
        """
        record = AuditRecord(
            event_id=new_id(),
            occurred_at=self._clock.now(),
            lifecycle_id=context.lifecycle_id,
            fingerprint=context.key.fingerprint,
            kind=context.key.kind,
            event=event,
            from_state=states[0],
            to_state=states[1],
            refs_before=refs[0],
            refs_after=refs[1],
            correlation_id=context.correlation_id,
            causation_id=context.causation_id,
            lease_id=context.lease_id,
            owner=context.owner,
            host=self._host,
            pid=self._pid,
            outcome=outcome,
            error_type=type(error).__name__ if error is not None else None,
            error_message=self._error_text(error),
            details=dict(details or {}),
        )
        try:
            return self.sink.append(record)
        except StreamwardenError:
            raise
        except Exception as exc:
            message = self._redactor.redact_text(f"{type(exc).__name__}: {exc}")
            raise AuditUnavailableError(
                f"audit sink failed: {message}", operation=event,
                fingerprint=context.key.fingerprint, correlation_id=context.correlation_id,
            ) from None

    def redact(self, text: str) -> str:
        """``text`` with every known sensitive string removed."""
        return self._redactor.redact_text(text)

    def _error_text(self, error: BaseException | None) -> str | None:
        if error is None:
            return None
        text = error.message if isinstance(error, StreamwardenError) else str(error)
        return self._redactor.redact_text(text)


