"""Alembic environment of the audit schema, run by :mod:`streamwarden.audit.migrate`.

There is no ``alembic.ini``: :func:`streamwarden.audit.migrate.alembic_config` builds the
configuration in code and passes an open connection in ``config.attributes["connection"]``;
the version table ``alembic_version`` lives next to ``lifecycle_audit`` (in the first schema of
a PostgreSQL connection's ``search_path``).
"""

from __future__ import annotations

from alembic import context
from alembic.config import Config

from streamwarden.audit.models import AuditBase


def run_migrations(config: Config) -> None:
    """Run the migrations Alembic was asked for on the connection the caller passed.

    Raises:
        RuntimeError: if no connection was passed (offline ``--sql`` mode is not supported).
    """
    connection = config.attributes.get("connection")
    if connection is None:
        raise RuntimeError(
            "run the audit migrations through streamwarden.audit.migrate or "
            "`streamwarden db upgrade`"
        )
    context.configure(connection=connection, target_metadata=AuditBase.metadata)
    with context.begin_transaction():
        context.run_migrations()


# Alembic executes this file with its proxy ``context.config`` installed; a plain import (for
# example by ``pytest --doctest-modules``) has no such proxy and runs nothing.
_config: Config | None = getattr(context, "config", None)
if _config is not None:
    run_migrations(_config)
