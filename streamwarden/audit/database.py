"""Database URLs and engines of the audit log: validation, redaction, connection set-up.

Supported: SQLite files (``sqlite:///path``, WAL mode; ``sqlite:///file:PATH?mode=ro&uri=true``
opens the file read-only) and PostgreSQL through psycopg 3 (``postgresql+psycopg://``;
``postgresql://`` and ``postgres://`` are read as psycopg too). Every message that shows a URL
shows it with the password, and the value of any ``password``, ``passfile`` or ``sslpassword``
query parameter, replaced by ``***``.

Read-only engines (:func:`make_engine` with ``read_only``) never write: SQLite connections open
the file with ``mode=ro`` and set no persistent pragma; PostgreSQL sessions are
``READ ONLY``, so an auditor's role needs nothing but ``SELECT``.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine

from streamwarden._redaction import redact_text
from streamwarden.audit._sqlite_files import open_read_only
from streamwarden.config import Settings
from streamwarden.errors import (
    AuditError,
    AuditSchemaError,
    AuditUnavailableError,
    InvalidInputError,
)

DEFAULT_URL = "sqlite:///./streamwarden-audit.db"
#: Seconds SQLite waits for another writer's lock, and PostgreSQL for the chain lock; also the
#: PostgreSQL ``statement_timeout`` of an append transaction.
LOCK_TIMEOUT = 10.0
#: Seconds to wait for a PostgreSQL connection (unless the URL sets ``connect_timeout``).
CONNECT_TIMEOUT = 5
#: Query parameters whose values are secrets (compared case-insensitively).
SECRET_PARAMETERS = frozenset({"password", "passfile", "sslpassword"})
_REDACTED = "***"
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
    """``url`` as text with its password and the values of its ``password``, ``passfile`` and
    ``sslpassword`` query parameters (any case) replaced by ``***``.

    Works on text that does not parse as a URL too (best effort on ``user:password@`` and
    ``password=...``).

    >>> redact_url("postgresql://u:pw@db/audit?sslmode=require&PassWord=pw2")
    'postgresql://u:***@db/audit?PassWord=***&sslmode=require'

    Thread-safety: pure function.
    """
    if isinstance(url, URL):
        parsed = url
    else:
        try:
            parsed = sa.make_url(url)
        except (sa.exc.ArgumentError, ValueError):
            return redact_text(url)
    query = {name: (_REDACTED if name.lower() in SECRET_PARAMETERS else value)
             for name, value in parsed.query.items()}
    rendered = parsed.set(query=query).render_as_string(hide_password=True)
    return rendered.replace("=%2A%2A%2A", f"={_REDACTED}")


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
        uri = parsed.query.get("uri") == "true" and database.startswith("file:")
        if database in ("", ":memory:") or (database.startswith("file:") and not uri) or (
            uri and parsed.query.get("mode") == "memory"
        ):
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
    """The file of a SQLite ``url`` (also of a ``file:PATH?...`` URI), None for PostgreSQL."""
    if not is_sqlite(url):
        return None
    database = url.database or ""
    if database.startswith("file:"):
        database = database.removeprefix("file:").partition("?")[0]
    return Path(database)


def require_file(url: URL, operation: str) -> None:
    """Check that a SQLite ``url``'s file exists, so that reading it cannot create an empty one
    (PostgreSQL: nothing to check).

    Raises:
        AuditUnavailableError: if the file does not exist or is not a regular file.

    Thread-safety: reads the file system only.
    """
    path = sqlite_path(url)
    if path is None or path.is_file():
        return
    problem = "is not a regular file" if path.exists() else "does not exist"
    raise AuditUnavailableError(f"no audit database at {path}: it {problem}",
                                operation=operation)


def is_read_only(url: URL) -> bool:
    """Whether ``url`` asks for a read-only SQLite file (``file:...?mode=ro&uri=true``)."""
    return is_sqlite(url) and url.query.get("mode") == "ro"


def _sqlite_session(dbapi_connection: Any, *, lock_timeout: float, read_only: bool) -> None:
    # Let SQLAlchemy's "begin" event emit BEGIN itself (the pysqlite driver's own transaction
    # handling would defer it), and set the pragmas every connection needs. journal_mode
    # writes the file's header: a read-only connection sets nothing that persists.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {int(lock_timeout * 1000)}")
        if not read_only:
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



def _on_pg_connect_read_only(dbapi_connection: Any, _record: Any) -> None:
    with dbapi_connection.cursor() as cursor:
        cursor.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
    dbapi_connection.commit()


def make_engine(url: URL, *, read_only: bool = False, lock_timeout: float | None = None,
                pre_ping: bool = True) -> Engine:
    """An engine for ``url`` (from :func:`parse_url`); no connection is made yet.

    SQLite: WAL journal, ``synchronous=FULL``, busy timeout ``lock_timeout`` (default
    :data:`LOCK_TIMEOUT`); read-only (``read_only`` or a ``mode=ro`` URL): the file opened with
    ``mode=ro`` and only the busy timeout set. PostgreSQL: ``connect_timeout``
    :data:`CONNECT_TIMEOUT`, TCP keepalives and ``tcp_user_timeout`` (each unless the URL sets
    it); stale pooled connections are detected before use (``pool_pre_ping``, a round trip
    per checkout, unless ``pre_ping`` is false: the appender's own engine, which makes an
    append again on a fresh connection instead); read-only: every session is ``READ ONLY``.

    Thread-safety: the engine may be shared by threads.
    """
    wait = LOCK_TIMEOUT if lock_timeout is None else lock_timeout
    if is_sqlite(url):
        read_only = read_only or is_read_only(url)
        path = sqlite_path(url)
        if read_only and path is not None:
            engine = sa.create_engine("sqlite+pysqlite://", creator=lambda: open_read_only(path))
        else:
            engine = sa.create_engine(url)

        def on_connect(dbapi_connection: Any, _record: Any) -> None:
            _sqlite_session(dbapi_connection, lock_timeout=wait, read_only=read_only)

        sa.event.listen(engine, "connect", on_connect)
        sa.event.listen(engine, "begin", _on_sqlite_begin)
        return engine
    connect_args = {name: value for name, value in _PG_DEFAULTS.items() if name not in url.query}
    engine = sa.create_engine(url, pool_pre_ping=pre_ping, connect_args=connect_args)
    if read_only:
        sa.event.listen(engine, "connect", _on_pg_connect_read_only)
    return engine


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
    secrets = [str(url.password)] if url.password else []
    secrets += [value for name, value in url.query.items()
                if name.lower() in SECRET_PARAMETERS and isinstance(value, str) and value]
    for secret in secrets:
        text = text.replace(secret, _REDACTED)
    return redact_text(text)[:500]


def url_argument(text: str) -> str:
    """The type of a command's ``--db`` option (argparse): ``text`` if it is an audit
    database URL the audit log supports.

    Raises:
        argparse.ArgumentTypeError: otherwise, with the reason (the URL's password redacted);
            argparse turns it into exit status 2.

    Thread-safety: pure function.
    """
    try:
        parse_url(text)
    except InvalidInputError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None
    return text
