"""Database URLs and engines of the audit log: validation, redaction, connection set-up.

Supported: SQLite files (``sqlite:///path``, WAL mode) and PostgreSQL through psycopg 3
(``postgresql+psycopg://``; ``postgresql://`` and ``postgres://`` are read as psycopg too).
Every message that shows a URL shows it with the password replaced by ``***``.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine

from streamwarden.config import Settings
from streamwarden.errors import (
    AuditError,
    AuditSchemaError,
    AuditUnavailableError,
    InvalidInputError,
)

DEFAULT_URL = "sqlite:///./streamwarden-audit.db"
#: Seconds SQLite waits for another writer's lock, and PostgreSQL for the chain lock.
LOCK_TIMEOUT = 10.0
#: Seconds to wait for a PostgreSQL connection (unless the URL sets ``connect_timeout``).
CONNECT_TIMEOUT = 5
_PASSWORD_IN_TEXT = re.compile(r"(://[^:/@\s]*:)[^@\s]*@")
_POSTGRES_NAMES = ("postgresql", "postgres")
# libpq connection parameters, unless the URL sets them: bounded connect, and a connection to
# a server that stopped answering fails within about 15 s instead of hanging.
_PG_DEFAULTS: dict[str, Any] = {
    "connect_timeout": CONNECT_TIMEOUT, "keepalives": 1, "keepalives_idle": 5,
    "keepalives_interval": 2, "keepalives_count": 3, "tcp_user_timeout": 15_000,
}
#: Execution option that marks a connection as a chain writer (SQLite: BEGIN IMMEDIATE).
WRITE_OPTION = "streamwarden_chain_writer"


def resolve_url(url: str | None = None, settings: Settings | None = None) -> str:
    """The audit database URL: ``url``, else ``settings.db_url`` (``STREAMWARDEN_DB_URL`` when
    ``settings`` is None), else :data:`DEFAULT_URL`.

    Raises:
        InvalidInputError: if the environment holds a malformed setting.

    Thread-safety: reads the environment only.
    """
    if url is not None:
        return url
    configured = (settings or Settings.from_env()).db_url
    return configured or DEFAULT_URL


def redact_url(url: str | URL) -> str:
    """``url`` as text with its password (if any) replaced by ``***``.

    Works on text that does not parse as a URL too (best effort on ``user:password@``).

    Thread-safety: pure function.
    """
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except (sa.exc.ArgumentError, ValueError):
        return _PASSWORD_IN_TEXT.sub(r"\1***@", url)


def upgrade_command(url: str | URL) -> str:
    """The shell command that brings the database at ``url`` to the newest schema (redacted)."""
    return f"streamwarden db upgrade --db {shlex.quote(redact_url(url))}"


def parse_url(url: str) -> URL:
    """``url`` parsed and normalised to a supported driver.

    Raises:
        InvalidInputError: if it is not a string, does not parse, names an unsupported
            database or driver, or is an in-memory SQLite database (use ``InMemoryAuditSink``).

    Thread-safety: pure function.
    """
    if not isinstance(url, str) or not url.strip():
        raise InvalidInputError("database URL must be a non-empty string")
    try:
        parsed = sa.make_url(url.strip())
    except (sa.exc.ArgumentError, ValueError):
        raise InvalidInputError(
            f"malformed database URL {redact_url(url)!r}; expected sqlite:///PATH or "
            "postgresql+psycopg://USER@HOST:PORT/DATABASE"
        ) from None
    backend, _, driver = parsed.drivername.partition("+")
    if backend == "sqlite" and driver in ("", "pysqlite"):
        database = parsed.database or ""
        if database in ("", ":memory:") or database.startswith("file:"):
            raise InvalidInputError(
                f"the audit log needs a SQLite file, not {redact_url(parsed)!r}; "
                "use streamwarden.InMemoryAuditSink for an in-memory trail"
            )
        return parsed.set(drivername="sqlite+pysqlite")
    if backend in _POSTGRES_NAMES and driver in ("", "psycopg"):
        return parsed.set(drivername="postgresql+psycopg")
    raise InvalidInputError(
        f"unsupported database URL {redact_url(parsed)!r}: the audit log supports "
        "sqlite:///PATH and postgresql+psycopg://..."
    )


def is_sqlite(url: URL) -> bool:
    """Whether ``url`` (from :func:`parse_url`) is a SQLite database."""
    return url.get_backend_name() == "sqlite"


def sqlite_path(url: URL) -> Path | None:
    """The file of a SQLite ``url``, None for PostgreSQL."""
    return Path(url.database or "") if is_sqlite(url) else None


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event emit BEGIN itself (the pysqlite driver's own transaction
    # handling would defer it), and set the pragmas every connection needs.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {int(LOCK_TIMEOUT * 1000)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _on_sqlite_begin(connection: sa.Connection) -> None:
    # Writers take SQLite's write lock when the transaction starts (BEGIN IMMEDIATE), so that
    # reading the chain's tail and inserting after it cannot interleave with another writer.
    immediate = connection.get_execution_options().get(WRITE_OPTION, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")



def make_engine(url: URL) -> Engine:
    """An engine for ``url`` (from :func:`parse_url`); no connection is made yet.

    SQLite: WAL journal, ``synchronous=FULL``, busy timeout :data:`LOCK_TIMEOUT`. PostgreSQL:
    ``connect_timeout`` :data:`CONNECT_TIMEOUT`, TCP keepalives and ``tcp_user_timeout`` (each
    unless the URL sets it); stale pooled connections are detected before use
    (``pool_pre_ping``).

    Thread-safety: the engine may be shared by threads.
    """
    if is_sqlite(url):
        engine = sa.create_engine(url)
        sa.event.listen(engine, "connect", _on_sqlite_connect)
        sa.event.listen(engine, "begin", _on_sqlite_begin)
        return engine
    connect_args = {name: value for name, value in _PG_DEFAULTS.items() if name not in url.query}
    return sa.create_engine(url, pool_pre_ping=True, connect_args=connect_args)


def translate_error(exc: sa.exc.SQLAlchemyError, url: URL, operation: str) -> AuditError:
    """The streamwarden error for a database error raised while doing ``operation``.

    Missing table: AuditSchemaError naming the upgrade command. Unreachable server, refused or
    dropped connection, lock timeout: AuditUnavailableError. Anything else: AuditError. The
    message names the redacted URL and the driver's reason, never a password.

    Thread-safety: pure function.
    """
    reason = _reason(exc, url)
    where = redact_url(url)
    if _missing_table(exc):
        return AuditSchemaError(
            f"the audit database {where} has no audit table: {reason}; "
            f"run `{upgrade_command(url)}`", operation=operation,
        )
    if _unavailable(exc):
        return AuditUnavailableError(
            f"audit database {where} is unavailable: {reason}", operation=operation
        )
    return AuditError(f"audit database {where} failed: {reason}", operation=operation)


def _unavailable(exc: sa.exc.SQLAlchemyError) -> bool:
    if not isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError):
        return False
    # SQLite reports plain SQL errors as OperationalError too (SQLITE_ERROR); only the others
    # (busy, locked, cannot open, I/O, full, read-only) mean the database is out of reach.
    return getattr(exc.orig, "sqlite_errorname", None) != "SQLITE_ERROR"


def _missing_table(exc: sa.exc.SQLAlchemyError) -> bool:
    original = exc.orig if isinstance(exc, sa.exc.DBAPIError) else None
    return getattr(original, "sqlstate", None) == "42P01" or "no such table" in str(original)


def _reason(exc: sa.exc.SQLAlchemyError, url: URL) -> str:
    original = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
    text = " ".join(str(original).split()) or type(original).__name__
    if url.password:
        text = text.replace(str(url.password), "***")
    return _PASSWORD_IN_TEXT.sub(r"\1***@", text)[:500]
