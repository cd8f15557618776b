"""Fixtures and markers of the SQL audit log tests."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import sqlalchemy as sa

from streamwarden.audit import database
from streamwarden.audit.migrate import upgrade
from tests.audit.tcp_proxy import TcpProxy


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "pg_restart: stops and restarts the local PostgreSQL server (pg_ctlcluster)"
    )


@dataclass
class Outage:
    """A database that a test can make unreachable (``down``) and reachable again (``up``).

    PostgreSQL: the log connects through a :class:`TcpProxy` that refuses connections while
    down. SQLite: another connection holds the write lock while down, and the log's busy timeout
    is shortened to 0.2 s, so writes fail with "database is locked" as from a stuck server.
    """

    url: str
    down: Callable[[], None]
    up: Callable[[], None]


@pytest.fixture
def outage(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Outage]:
    upgrade(db_url)
    parsed = sa.make_url(db_url)
    if parsed.get_backend_name() == "sqlite":
        monkeypatch.setattr(database, "LOCK_TIMEOUT", 0.2)
        holders: list[sqlite3.Connection] = []

        def down() -> None:
            holder = sqlite3.connect(parsed.database or "", isolation_level=None)
            holder.execute("BEGIN EXCLUSIVE")
            holders.append(holder)

        def up() -> None:
            while holders:
                holder = holders.pop()
                holder.execute("ROLLBACK")
                holder.close()

        yield Outage(db_url, down, up)
        up()
        return
    proxy = TcpProxy((parsed.host or "127.0.0.1", parsed.port or 5432))
    url = parsed.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    yield Outage(url, proxy.down, proxy.up)
    proxy.down()
