"""Shared fixtures: credentials with a recognisable secret, fast settings, managers."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

from streamwarden import ConnectionManager, Credentials, InMemoryAuditSink, Settings
from streamwarden.testing import InMemoryTransportFactory

hypothesis_settings.register_profile("ci", deadline=None, print_blob=True)
hypothesis_settings.register_profile("dev", deadline=None)
hypothesis_settings.load_profile("ci" if os.environ.get("CI") else "dev")

CANARY_KEY_ID = "PKCANARYKEYID0000001"
CANARY_SECRET = "sk-CANARY-9f8e7d6c5b4a39281706-SECRET"


@pytest.fixture
def creds() -> Credentials:
    return Credentials(CANARY_KEY_ID, CANARY_SECRET, paper=True)


@pytest.fixture
def fast_settings() -> Settings:
    return Settings(start_timeout=2.0, stop_timeout=0.5, drain_grace=0.0, debug=True)


@pytest.fixture
def factory() -> InMemoryTransportFactory:
    return InMemoryTransportFactory()


@pytest.fixture
def sink() -> InMemoryAuditSink:
    return InMemoryAuditSink()


@pytest.fixture
def manager(
    factory: InMemoryTransportFactory, sink: InMemoryAuditSink, fast_settings: Settings
) -> Iterator[ConnectionManager]:
    manager = ConnectionManager(transport_factory=factory, audit=sink, settings=fast_settings)
    yield manager
    manager.close()
    assert manager.check_invariants() == []


# SQL backends. Every test that touches SQL takes ``db_url`` and so runs on SQLite and on
# PostgreSQL. PostgreSQL comes from STREAMWARDEN_TEST_PG_URL; each test gets its own schema
# (dropped afterwards) so that runs don't collide. Without a server the PostgreSQL variant is
# skipped, unless STREAMWARDEN_REQUIRE_PG=1 (CI), where it fails.

PG_URL_VARIABLE = "STREAMWARDEN_TEST_PG_URL"


def _pg_base_url() -> str:
    url = os.environ.get(PG_URL_VARIABLE)
    if url:
        return url
    if os.environ.get("STREAMWARDEN_REQUIRE_PG") == "1":
        pytest.fail(f"STREAMWARDEN_REQUIRE_PG=1 but {PG_URL_VARIABLE} is not set")
    pytest.skip(f"PostgreSQL tests need {PG_URL_VARIABLE}")


def pg_schema_url(base_url: str, schema: str) -> str:
    """``base_url`` with every connection's search_path set to ``schema``."""
    separator = "&" if "?" in base_url else "?"
    return f"{base_url}{separator}options=-csearch_path%3D{schema}"


@pytest.fixture
def postgresql_url() -> Iterator[str]:
    """A PostgreSQL URL whose connections use a fresh schema of their own."""
    import sqlalchemy as sa  # noqa: PLC0415
    import ulid  # noqa: PLC0415

    base = _pg_base_url()
    schema = f"sw_test_{str(ulid.ULID()).lower()}"
    # No pool: a test may restart the server, and teardown must still reach it afresh.
    engine = sa.create_engine(base, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.OperationalError as exc:
        engine.dispose()
        if os.environ.get("STREAMWARDEN_REQUIRE_PG") == "1":
            pytest.fail(f"PostgreSQL unreachable at {base}: {exc}")
        pytest.skip(f"PostgreSQL unreachable at {base}")
    try:
        yield pg_schema_url(base, schema)
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A URL of a fresh SQLite file."""
    return f"sqlite:///{tmp_path / 'audit.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    """Each SQL test runs twice: on a fresh SQLite file and on a fresh PostgreSQL schema."""
    return str(request.getfixturevalue(f"{request.param}_url"))
