"""Alembic migrations: upgrade and downgrade on both engines, no drift, append-only triggers."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

import streamwarden
from streamwarden import AuditSchemaError, AuditUnavailableError, InvalidInputError
from streamwarden.audit import migrate
from streamwarden.audit.database import make_engine, parse_url
from streamwarden.audit.models import AuditBase
from tests.audit.chain_data import history, insert_rows, raw, stored

MIGRATIONS = Path(streamwarden.__file__).parent / "migrations"


def tables(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_from_empty_to_head_and_back(db_url):
    head = migrate.head_revision()
    assert head == "0001"
    assert migrate.upgrade(db_url) == (None, head)
    assert {"lifecycle_audit", "alembic_version"} <= tables(db_url)
    assert migrate.current_revision(db_url) == head
    assert migrate.upgrade(db_url) == (head, head)  # idempotent
    assert migrate.downgrade(db_url, "base") == (head, None)
    assert "lifecycle_audit" not in tables(db_url)
    assert migrate.current_revision(db_url) is None
    with raw(db_url) as connection:  # triggers and the PostgreSQL function are gone too
        if connection.dialect.name == "sqlite":
            sql = "SELECT count(*) FROM sqlite_master WHERE type = 'trigger'"
        else:
            sql = ("SELECT count(*) FROM pg_proc WHERE proname = 'lifecycle_audit_refuse_change' "
                   "AND pronamespace = current_schema()::regnamespace")
        assert connection.exec_driver_sql(sql).scalar() == 0
    assert migrate.upgrade(db_url) == (None, head)  # and up again


def test_models_and_migrated_schema_do_not_drift(db_url):
    migrate.upgrade(db_url)
    engine = make_engine(parse_url(db_url))
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, AuditBase.metadata) == []
    finally:
        engine.dispose()


def test_migrations_use_the_connections_schema(postgresql_url):
    migrate.upgrade(postgresql_url)
    with raw(postgresql_url) as connection:
        schema = connection.exec_driver_sql("SELECT current_schema()").scalar()
        found = connection.exec_driver_sql(
            "SELECT table_schema FROM information_schema.tables WHERE table_name = "
            "'lifecycle_audit'").scalars().all()
    assert schema.startswith("sw_test_") and schema in found and "public" not in found


@pytest.mark.parametrize("statement", [
    "UPDATE lifecycle_audit SET owner = 'mallory' WHERE seq = 1",
    "DELETE FROM lifecycle_audit WHERE seq = 1",
])
def test_triggers_refuse_update_and_delete(db_url, statement):
    migrate.upgrade(db_url)
    records = history(2)
    with raw(db_url) as connection:
        insert_rows(connection, records)
    with pytest.raises(sa.exc.DatabaseError, match="append-only"), raw(db_url) as connection:
        connection.exec_driver_sql(statement)
    assert stored(db_url) == records


def test_truncate_is_refused_on_postgresql(postgresql_url):
    migrate.upgrade(postgresql_url)
    with raw(postgresql_url) as connection:
        insert_rows(connection, history(1))
    with pytest.raises(sa.exc.DatabaseError, match="append-only: TRUNCATE"), \
            raw(postgresql_url) as connection:
        connection.exec_driver_sql("TRUNCATE lifecycle_audit")
    assert len(stored(postgresql_url)) == 1


def test_unknown_revisions_are_refused(db_url):
    with pytest.raises(InvalidInputError, match="cannot migrate to revision 'nope'"):
        migrate.upgrade(db_url, "nope")
    with pytest.raises(InvalidInputError, match="revision must be"):
        migrate.downgrade(db_url, "")


def test_a_database_ahead_of_this_version_is_refused(db_url):
    migrate.upgrade(db_url)
    with raw(db_url) as connection:
        connection.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
    engine = make_engine(parse_url(db_url))
    try:
        with pytest.raises(AuditSchemaError, match="revision 9999, which this version"):
            migrate.ensure_schema(engine, parse_url(db_url))
        assert migrate.current_revision(engine) == "9999"
    finally:
        engine.dispose()


def test_url_defaults_to_the_environment_then_the_sqlite_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STREAMWARDEN_DB_URL", raising=False)
    assert migrate.upgrade() == (None, "0001")
    assert (tmp_path / "streamwarden-audit.db").exists()
    monkeypatch.setenv("STREAMWARDEN_DB_URL", f"sqlite:///{tmp_path / 'env.db'}")
    with pytest.raises(AuditUnavailableError, match=r"env\.db: it does not exist"):
        migrate.current_revision()  # reading creates nothing
    assert not (tmp_path / "env.db").exists()
    assert migrate.upgrade()[1] == "0001" and (tmp_path / "env.db").exists()
    assert migrate.current_revision() == "0001"


def test_the_environment_script_runs_nothing_when_imported():
    spec = importlib.util.spec_from_file_location("migrations_env", MIGRATIONS / "env.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # no Alembic context: defines, runs nothing
    with pytest.raises(RuntimeError, match="streamwarden db upgrade"):
        module.run_migrations(migrate.alembic_config())


def test_packaged_migration_files_are_package_data():
    import tomllib  # noqa: PLC0415

    data = tomllib.loads((MIGRATIONS.parent.parent / "pyproject.toml").read_text())
    patterns = data["tool"]["setuptools"]["package-data"]["streamwarden"]
    shipped = {str(path.relative_to(MIGRATIONS.parent)) for path in MIGRATIONS.rglob("*")
               if path.suffix in (".py", ".mako") and "__pycache__" not in path.parts}
    assert shipped == {"migrations/env.py", "migrations/script.py.mako",
                       "migrations/versions/0001_create_lifecycle_audit.py"}
    assert {"migrations/*.py", "migrations/*.mako", "migrations/versions/*.py"} <= set(patterns)
