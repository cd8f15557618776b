"""One chunk of a parallel verify (:mod:`streamwarden.audit._parallel_verify`): what a worker
process runs, and the parent for its own chunk.

Imports only the standard library, :mod:`streamwarden.audit._sqlite_files` and
:mod:`streamwarden.audit.verify` (no SQLAlchemy), so
that a worker process starts in a few tens of milliseconds.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from streamwarden.audit._sqlite_files import open_read_only
from streamwarden.audit.chain import RAW_FIELDS, RawRow
from streamwarden.audit.verify import PAGE_SIZE, verify_from

#: ``models.TABLE_NAME`` and ``database.LOCK_TIMEOUT`` in ms (a test keeps them equal).
TABLE = "lifecycle_audit"
BUSY_TIMEOUT_MS = 10_000
_SEQ, _ROW = RAW_FIELDS.index("seq"), RAW_FIELDS.index("row_hash")
_SELECT = f"SELECT {', '.join(RAW_FIELDS)} FROM {TABLE} "
_PAGE = _SELECT + f"WHERE seq > ? ORDER BY seq LIMIT {PAGE_SIZE}"
_BOUNDED_PAGE = _SELECT + f"WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT {PAGE_SIZE}"
#: The stored row numbered ``?``.
ROW_AT = _SELECT + "WHERE seq = ?"


@dataclass(frozen=True)
class Chunk:
    """The rows with ``after < seq <= until`` (``until`` None: to the end), following
    ``last``, the stored row at ``after`` (None: the chain's start)."""

    after: int
    until: int | None
    last: RawRow | None


@dataclass(frozen=True)
class ChunkResult:
    """One chunk's walk: ``ok`` (intact, and read without error), rows read, and the
    ``seq`` and ``row_hash`` of its last intact row."""

    ok: bool
    rows: int
    last_seq: object = None
    last_hash: object = None


def open_file(path: str) -> sqlite3.Connection:
    """``path`` opened read-only the way read-only audit logs open it
    (:func:`~streamwarden.audit._sqlite_files.open_read_only`), with the log's busy timeout.
    Sets nothing that persists.

    Raises:
        sqlite3.Error: it cannot be opened.

    Thread-safety: the connection may be used from any one thread at a time.
    """
    connection = open_read_only(Path(path))
    connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    return connection


def chunk_pages(connection: sqlite3.Connection, chunk: Chunk) -> Iterator[list[RawRow]]:
    """The rows of ``chunk`` in ``seq`` order, :data:`PAGE_SIZE` at a time (keyset), each
    page one statement.

    Raises:
        sqlite3.Error: while iterating, if a page cannot be read.

    Thread-safety: as ``connection``.
    """
    cursor = connection.cursor()
    after: Any = chunk.after
    while True:
        if chunk.until is None:
            page = cursor.execute(_PAGE, (after,)).fetchall()
        else:
            page = cursor.execute(_BOUNDED_PAGE, (after, chunk.until)).fetchall()
        if page:
            yield page
        if len(page) < PAGE_SIZE:
            return
        after = page[-1][_SEQ]


def walk_chunk(path: str, chunk: Chunk, progress: Callable[[int], None] | None,
               every: int) -> ChunkResult:
    """Walk ``chunk`` of the file at ``path`` on a connection of its own. A read error (a
    row that is not UTF-8 text, a locked or unreadable file) is a chunk that is not ``ok``.

    Thread-safety: safe from any thread.
    """
    try:
        connection = open_file(path)
    except sqlite3.Error:
        return ChunkResult(ok=False, rows=0)
    try:
        report, last = verify_from(chunk_pages(connection, chunk), chunk.last,
                                   progress=progress, progress_every=every)
    except sqlite3.Error:
        return ChunkResult(ok=False, rows=0)
    finally:
        connection.close()
    if last is None:
        return ChunkResult(ok=report.ok, rows=report.rows)
    return ChunkResult(ok=report.ok, rows=report.rows, last_seq=last[_SEQ],
                       last_hash=last[_ROW])


#: The worker's program (``python -c BOOT FD``): take the parent's import path from the pipe
#: on ``FD``, then walk the chunk it is sent.
BOOT = (
    "import sys\n"
    "from multiprocessing.connection import Connection\n"
    "pipe = Connection(int(sys.argv[1]))\n"
    "sys.path[:] = pipe.recv()\n"
    "from streamwarden.audit._verify_worker import work\n"
    "work(pipe)\n"
)


def work(pipe: Connection) -> None:  # pragma: no cover  (runs in the worker process)
    """The worker process: receive ``(path, chunk, every)``, walk the chunk and send
    ``("rows", n)`` as it goes, then ``("done", ChunkResult)`` or ``("error", text)``; exit."""
    try:
        path, chunk, every = pipe.recv()
        result = walk_chunk(path, chunk, lambda rows: pipe.send(("rows", rows)), every)
        pipe.send(("done", result))
    except BaseException as exc:
        pipe.send(("error", f"{type(exc).__name__}: {exc}"))
    pipe.close()
    os._exit(0)  # nothing to flush or finalise: spare the interpreter's shutdown
