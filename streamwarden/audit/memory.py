"""An in-memory, hash-chained audit sink: for tests, the demo and embedded use.

Not durable: the records live as long as the process. With a ``capacity`` it is a ring that
keeps the newest ``capacity`` records (numbering and chaining go on across the forgotten ones);
a manager built without an audit sink uses such a ring of 1,000 records. Use :class:`AuditLog`
for compliance.
"""

from __future__ import annotations

import threading
from collections import deque

from streamwarden.audit.chain import GENESIS_HASH, seal
from streamwarden.audit.records import AuditRecord
from streamwarden.errors import InvalidInputError


class InMemoryAuditSink:
    """Keeps appended records, numbered and chained like the SQL table.

    Args:
        capacity: keep only the newest ``capacity`` records (None: keep all).

    Raises:
        InvalidInputError: a capacity below 1.

    Thread-safety: every method may be called from any thread. ``append`` never blocks on I/O
    (``nonblocking``), so a manager appends to it on its engine loop directly.
    """

    nonblocking = True

    def __init__(self, capacity: int | None = None) -> None:
        if capacity is not None and (isinstance(capacity, bool) or not isinstance(capacity, int)
                                     or capacity < 1):
            raise InvalidInputError(f"capacity must be None or a whole number >= 1; "
                                    f"got {capacity!r}")
        self._lock = threading.Lock()
        self._records: deque[AuditRecord] = deque(maxlen=capacity)
        self._appended = 0
        self._last_hash = GENESIS_HASH

    @property
    def capacity(self) -> int | None:
        """How many records are kept (None: all)."""
        return self._records.maxlen

    @property
    def appended(self) -> int:
        """How many records were appended in all (the seq of the newest)."""
        return self._appended

    def append(self, record: AuditRecord) -> AuditRecord:
        """Number, chain and keep ``record`` (forgetting the oldest when full).

        Raises:
            InvalidInputError: if its details are not JSON-serialisable; nothing is kept.
        """
        with self._lock:
            sealed = seal(record, seq=self._appended + 1, prev_hash=self._last_hash)
            self._records.append(sealed)
            self._appended += 1
            self._last_hash = sealed.row_hash or GENESIS_HASH
            return sealed

    def records(self) -> tuple[AuditRecord, ...]:
        """A snapshot of the records kept, in append order."""
        with self._lock:
            return tuple(self._records)

    def close(self) -> None:
        """Nothing to release; records stay readable."""
