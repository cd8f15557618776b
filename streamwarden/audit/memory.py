"""An in-memory, hash-chained audit sink: for tests, the demo and embedded use.

Not durable: the records live as long as the process. Use :class:`AuditLog` for compliance.
"""

from __future__ import annotations

import threading

from streamwarden.audit.chain import GENESIS_HASH, seal
from streamwarden.audit.records import AuditRecord


class InMemoryAuditSink:
    """Keeps appended records in a list, numbered and chained like the SQL table.

    Thread-safety: every method may be called from any thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: list[AuditRecord] = []
        self._last_hash = GENESIS_HASH

    def append(self, record: AuditRecord) -> AuditRecord:
        """Number, chain and keep ``record``.

        Raises:
            InvalidInputError: if its details are not JSON-serialisable; nothing is kept.
        """
        with self._lock:
            sealed = seal(record, seq=len(self._records) + 1, prev_hash=self._last_hash)
            self._records.append(sealed)
            self._last_hash = sealed.row_hash or GENESIS_HASH
            return sealed

    def records(self) -> tuple[AuditRecord, ...]:
        """A snapshot of every record, in append order."""
        with self._lock:
            return tuple(self._records)

    def close(self) -> None:
        """Nothing to release; records stay readable."""
