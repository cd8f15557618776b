"""Opening a SQLite audit file read-only, with the standard library alone (the parallel
verify's worker processes import no SQLAlchemy)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import quote


def open_read_only(path: Path) -> sqlite3.Connection:
    """``path`` opened read-only (``mode=ro``; sets nothing that persists). A WAL database
    needs its ``-shm`` file, which a reader without write access to the directory cannot
    create: when there is no ``-wal`` file either (no writer has the database open), the file
    is read as immutable instead.

    Raises:
        sqlite3.Error: it cannot be opened.

    Thread-safety: the connection may be used from any one thread at a time.
    """
    target = quote(str(path.absolute()))
    connection = sqlite3.connect(f"file:{target}?mode=ro", uri=True, check_same_thread=False)
    try:
        connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return connection
    except sqlite3.OperationalError as exc:
        connection.close()
        wal = path.with_name(path.name + "-wal")
        if getattr(exc, "sqlite_errorname", "").startswith("SQLITE_READONLY") and (
            not wal.exists()
        ):
            return sqlite3.connect(f"file:{target}?mode=ro&immutable=1", uri=True,
                                   check_same_thread=False)
        raise
