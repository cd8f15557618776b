"""Schema migrations of the audit database, through the Alembic scripts shipped in the package.

``streamwarden db upgrade`` calls :func:`upgrade`; :class:`~streamwarden.audit.log.AuditLog`
calls :func:`ensure_schema` when it opens a database.
"""

from __future__ import annotations

from typing import Literal

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, Engine, inspect, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError

from streamwarden.audit.database import (
    WRITE_OPTION,
    is_sqlite,
    make_engine,
    parse_url,
    require_file,
    resolve_url,
    translate_error,
    upgrade_command,
)
from streamwarden.errors import AuditSchemaError, InvalidInputError

SCRIPT_LOCATION = "streamwarden:migrations"
SchemaState = Literal["current", "behind", "empty", "unknown"]
"""Where a database's schema stands against the packaged migrations (:func:`schema_state`)."""
# Concurrent upgrades of one PostgreSQL schema wait for each other ("SWMG", schema).
_PG_MIGRATION_LOCK = text(
    f"SELECT pg_advisory_xact_lock({0x53574D47}, hashtext(coalesce(current_schema(), '')))"
)


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic configuration for the packaged migrations (no ``alembic.ini`` needed).

    With ``connection``, the migrations run on it (inside the caller's transaction).
    """
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision of the packaged migrations."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships revision 0001
        raise AuditSchemaError("the streamwarden package ships no audit migrations")
    return head


def current_revision(bind: Engine | Connection | str | None = None) -> str | None:
    """The revision the database is at; None if it was never migrated.

    Given a URL, the database is opened read-only: nothing is created or written (a SQLite file
    that does not exist is an error, not a new empty database).

    Args:
        bind: an engine or connection, or a URL (None: ``STREAMWARDEN_DB_URL``, else the
            default SQLite file).

    Raises:
        InvalidInputError: if the URL is malformed or unsupported.
        AuditUnavailableError: if the database is unreachable, or a SQLite file is missing.
        AuditError: if it cannot be read.

    Thread-safety: safe to call from any thread.
    """
    if isinstance(bind, Connection):
        return MigrationContext.configure(bind).get_current_revision()
    if isinstance(bind, Engine):
        url, engine = bind.url, bind
    else:
        url = parse_url(resolve_url(bind))
        require_file(url, "db.current")
        engine = make_engine(url, read_only=True)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    except SQLAlchemyError as exc:
        raise translate_error(exc, url, "db.current") from None
    finally:
        if engine is not bind:
            engine.dispose()


def schema_state(revision: str | None) -> SchemaState:
    """Where a database at ``revision`` stands against the packaged migrations.

    ``"current"``: at the newest revision. ``"empty"``: never migrated (``revision`` None).
    ``"behind"``: at an older revision; ``streamwarden db upgrade`` brings it up. ``"unknown"``:
    at a revision this version does not ship (a newer streamwarden migrated it).

    Thread-safety: pure function (reads the packaged migration scripts).
    """
    if revision is None:
        return "empty"
    if revision == head_revision():
        return "current"
    return "behind" if revision in _known_revisions() else "unknown"


def upgrade(url: str | None = None, revision: str = "head") -> tuple[str | None, str | None]:
    """Apply the migrations up to ``revision`` to the database at ``url``, in one transaction.

    ``url`` None means ``STREAMWARDEN_DB_URL``, else the default SQLite file (created if it
    does not exist).

    Returns:
        The revisions before and after (None: no schema).

    Raises:
        InvalidInputError: if ``url`` or ``revision`` is malformed, or ``url`` is unsupported.
        AuditUnavailableError: if the database is unreachable.
        AuditError: if a migration fails (nothing was changed).

    Thread-safety: safe to call from any thread.
    """
    return _run(url, revision, upgrade=True)


def downgrade(url: str | None, revision: str) -> tuple[str | None, str | None]:
    """Revert the migrations down to ``revision`` (``"base"`` drops the audit table and data).

    Returns, raises and thread-safety: as :func:`upgrade`.
    """
    return _run(url, revision, upgrade=False)


def _run(url: str | None, revision: str, *, upgrade: bool) -> tuple[str | None, str | None]:
    if not isinstance(revision, str) or not revision:
        raise InvalidInputError("revision must be a non-empty string such as 'head' or 'base'")
    parsed = parse_url(resolve_url(url))
    engine = make_engine(parsed)
    try:
        before = current_revision(engine)
        migrate_engine(engine, parsed, revision, upgrade=upgrade)
        return before, current_revision(engine)
    finally:
        engine.dispose()


def migrate_engine(engine: Engine, url: URL, revision: str, *, upgrade: bool) -> None:
    """Run the migrations to ``revision`` on ``engine`` (whose URL is ``url``).

    Raises:
        InvalidInputError: if Alembic does not know ``revision``.
        AuditUnavailableError, AuditError: as :func:`upgrade`.
    """
    operation = "db.upgrade" if upgrade else "db.downgrade"
    try:
        with engine.connect() as connection:
            connection.execution_options(**{WRITE_OPTION: True})
            connection.begin()
            if not is_sqlite(url):  # SQLite: BEGIN IMMEDIATE (WRITE_OPTION) serialises
                connection.execute(_PG_MIGRATION_LOCK)
            config = alembic_config(connection)
            if upgrade:
                command.upgrade(config, revision)
            else:
                command.downgrade(config, revision)
            connection.commit()
    except SQLAlchemyError as exc:
        raise translate_error(exc, url, operation) from None
    except CommandError as exc:
        raise InvalidInputError(f"cannot migrate to revision {revision!r}: {exc}") from None


def ensure_schema(engine: Engine, url: URL, *, create: bool = True) -> None:
    """Check that the database at ``engine`` is at the newest revision.

    With ``create``, a SQLite database without any table (a file that did not exist or is
    empty) is upgraded on the spot; anything else that is behind is left alone.

    Raises:
        AuditSchemaError: if the database is behind (or ahead of this version of streamwarden);
            the message names the command to run.
        AuditUnavailableError: if the database is unreachable.

    Thread-safety: safe to call from any thread.
    """
    head = head_revision()
    try:
        with engine.connect() as connection:
            current = current_revision(connection)
            fresh = current is None and not inspect(connection).get_table_names()
    except SQLAlchemyError as exc:
        raise translate_error(exc, url, "audit.open") from None
    state = schema_state(current)
    if state == "current":
        return
    if fresh and create and is_sqlite(url):
        migrate_engine(engine, url, "head", upgrade=True)
        return
    if state == "unknown":
        raise AuditSchemaError(
            f"the audit database is at revision {current}, which this version of streamwarden "
            f"does not know (newest: {head}); upgrade streamwarden",
            operation="audit.open",
        )
    where = "has no audit schema" if current is None else f"is at revision {current}"
    raise AuditSchemaError(
        f"the audit database {where}, behind the newest revision {head}; "
        f"run `{upgrade_command(url)}`",
        operation="audit.open",
    )


def _known_revisions() -> set[str]:
    scripts = ScriptDirectory.from_config(alembic_config())
    return {script.revision for script in scripts.walk_revisions()}
