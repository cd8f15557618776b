"""Nothing acknowledged is lost when PostgreSQL itself stops mid-run and comes back.

This test stops and restarts the local cluster with ``pg_ctlcluster`` (so it needs root and a
local server), which ends every other session on that server; it always starts the server
again in ``finally``. It is opt-in: it runs only with STREAMWARDEN_TEST_PG_RESTART=1 (``.ci/run``
sets it: CI's server is the machine's own), never against a shared server. With the variable
set but without those means it is skipped, unless STREAMWARDEN_REQUIRE_PG=1, where it fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from streamwarden import AuditUnavailableError, Settings
from streamwarden.audit import migrate
from streamwarden.audit.log import AuditLog
from streamwarden.ids import new_id
from tests.audit.chain_data import make_record, stored
from tests.conftest import PG_URL_VARIABLE, pg_schema_url

CLUSTERS = Path("/etc/postgresql")
RESTART_VARIABLE = "STREAMWARDEN_TEST_PG_RESTART"

pytestmark = pytest.mark.skipif(
    os.environ.get(RESTART_VARIABLE) != "1",
    reason=f"stops and restarts the PostgreSQL server (ending every session on it); set "
           f"{RESTART_VARIABLE}=1 to run it, only against a server of your own",
)


def cluster_command(url: str) -> list[str]:
    """``pg_ctlcluster`` for the local cluster serving ``url``; skip (or fail) without it."""
    host = sa.make_url(url).host
    reason = None
    if shutil.which("pg_ctlcluster") is None or not CLUSTERS.is_dir():
        reason = "pg_ctlcluster is not installed"
    elif os.geteuid() != 0:
        reason = "stopping PostgreSQL needs root"
    elif host not in ("127.0.0.1", "localhost", "::1"):
        reason = f"the test server {host} is not local"
    if reason is not None:
        if os.environ.get("STREAMWARDEN_REQUIRE_PG") == "1":
            pytest.fail(f"STREAMWARDEN_REQUIRE_PG=1 but {reason}")
        pytest.skip(reason)
    version = sorted(path.name for path in CLUSTERS.iterdir())[0]
    return ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main"]


@pytest.fixture
def restartable_pg_url() -> Iterator[str]:
    """Like ``postgresql_url``, but every connection of the set-up and tear-down is new (no
    pool), so that the tear-down works after the server was restarted."""
    base = os.environ.get(PG_URL_VARIABLE)
    if not base:
        if os.environ.get("STREAMWARDEN_REQUIRE_PG") == "1":
            pytest.fail(f"STREAMWARDEN_REQUIRE_PG=1 but {PG_URL_VARIABLE} is not set")
        pytest.skip(f"PostgreSQL tests need {PG_URL_VARIABLE}")
    schema = f"sw_test_{new_id().lower()}"

    def execute(sql: str) -> None:
        engine = sa.create_engine(base, poolclass=sa.pool.NullPool)
        try:
            with engine.begin() as connection:
                connection.exec_driver_sql(sql)
        finally:
            engine.dispose()

    execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield pg_schema_url(base, schema)
    finally:
        execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def pg_ctl(command: list[str], action: str, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*command, action, *options], capture_output=True, text=True,
                          timeout=60, check=False)


@pytest.mark.pg_restart
def test_nothing_acknowledged_is_lost_when_postgresql_stops(restartable_pg_url, tmp_path):
    postgresql_url = restartable_pg_url
    command = cluster_command(postgresql_url)
    migrate.upgrade(postgresql_url)
    spooling = AuditLog.open(postgresql_url, settings=Settings(audit_failure_policy="spool"),
                             spool_path=tmp_path / "spool.jsonl")
    raising = AuditLog.open(postgresql_url)
    batched = AuditLog.open(postgresql_url, settings=Settings(
        audit_durability="batched", audit_failure_policy="spool"),
        spool_path=tmp_path / "batched-spool.jsonl")
    acknowledged: dict[str, list[str]] = {"spool": [], "raise": [], "batched": []}
    logs = {"spool": spooling, "raise": raising, "batched": batched}

    def append_to_each(index: int) -> None:
        for name, log in logs.items():
            try:
                acknowledged[name].append(log.append(make_record(index, owner=name)).event_id)
            except AuditUnavailableError:
                assert name == "raise"

    try:
        for index in range(3):
            append_to_each(index)
        batched.flush()
        stopped = pg_ctl(command, "stop", "-m", "fast")
        assert stopped.returncode == 0, stopped.stderr
        for index in range(3, 6):  # raise: refused; spool and batched: acknowledged
            append_to_each(index)
        assert len(acknowledged["raise"]) == 3 and len(acknowledged["spool"]) == 6
    finally:
        started = pg_ctl(command, "start")
    assert started.returncode == 0, started.stderr
    append_to_each(6)
    spooling.flush()
    batched.flush()
    for log in logs.values():
        log.close()
    records = stored(postgresql_url)
    assert [record.seq for record in records] == list(range(1, len(records) + 1))
    for name, ids in acknowledged.items():
        assert [r.event_id for r in records if r.owner == name] == ids  # all there, in order
    assert len(records) == 7 + 7 + 4
    with AuditLog.open(postgresql_url) as log:
        assert log.verify().ok
