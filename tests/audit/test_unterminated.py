"""A process killed while it held a connection never writes the lifecycle's final record:
``audit timeline`` and ``audit holders`` say it is unterminated, naming its pid, instead of
showing it live forever."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from streamwarden.audit.processes import LocalProcesses
from streamwarden.audit.report import short_id
from tests.cli_run import run

#: Holds a market-data lease through a real manager on a SQLite audit log, prints the lease's
#: lifecycle id, and waits to be killed.
HOLDER = """
import sys, time
from streamwarden import ConnectionManager, Credentials
from streamwarden.audit.log import AuditLog
from streamwarden.testing import InMemoryTransportFactory

log = AuditLog.open(sys.argv[1])
manager = ConnectionManager(transport_factory=InMemoryTransportFactory(), audit=log)
lease = manager.market_data(Credentials("PKTESTKEYID000000001", "test-secret-value-0001"),
                            symbols=["AAPL"], owner="doomed", correlation_id="run-killed")
print(lease.lifecycle_id, flush=True)
time.sleep(120)
"""


@pytest.fixture
def holder(sqlite_url) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """A running holder and the lifecycle id of its lease; killed (SIGKILL) at the end."""
    child = subprocess.Popen([sys.executable, "-c", HOLDER, sqlite_url],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    try:
        ready, _, _ = select.select([child.stdout], [], [], 60)
        assert ready, "the holder did not acquire its lease in time"
        lifecycle_id = child.stdout.readline().strip()
        assert len(lifecycle_id) == 26
        yield child, lifecycle_id
    finally:
        kill(child)


def kill(child: subprocess.Popen[str]) -> None:
    if child.returncode is None:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(30)
        assert child.stdout is not None
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL


@pytest.fixture
def killed(holder, sqlite_url) -> tuple[str, str, int]:
    """The database, the lifecycle id and the pid of a holder killed with SIGKILL."""
    child, lifecycle_id = holder
    kill(child)
    return sqlite_url, lifecycle_id, child.pid


def test_timeline_says_live_while_the_process_runs(holder, sqlite_url, capsys, monkeypatch):
    child, lifecycle_id = holder
    monkeypatch.setenv("COLUMNS", "200")
    status, out, _ = run(capsys, "audit", "timeline", "--db", sqlite_url, "--lifecycle",
                      lifecycle_id[:12])
    assert status == 0 and "): live, 2 transitions, 2 events" in out
    assert f"live: process {child.pid} on {LocalProcesses().host()} is running" in out
    assert "(open)" in out and "unterminated" not in out


def test_timeline_says_unterminated_with_the_pid(killed, capsys, monkeypatch):
    db_url, lifecycle_id, pid = killed
    monkeypatch.setenv("COLUMNS", "200")
    status, out, _ = run(capsys, "audit", "timeline", "--db", db_url, "--lifecycle",
                      short_id(lifecycle_id))
    host = LocalProcesses().host()
    assert status == 0 and f"lifecycle {lifecycle_id} (market_data" in out
    assert "): unterminated, 2 transitions, 2 events" in out and "live" not in out
    assert f"unterminated: no final record, and process {pid} on {host} is gone " \
           f"(last record " in out
    assert "(unterminated)" in out
    status, out, _ = run(capsys, "audit", "timeline", "--db", db_url, "--lifecycle",
                      short_id(lifecycle_id), "--format", "json")
    document = json.loads(out)
    assert (document["status"], document["pid"], document["host"]) == (
        "unterminated", pid, host)
    assert document["stopped"] is False and document["states"][-1]["state"] == "running"


def test_holders_mark_the_lease_of_a_killed_process(killed, capsys, monkeypatch):
    db_url, lifecycle_id, pid = killed
    monkeypatch.setenv("COLUMNS", "200")
    now = datetime.now(UTC).isoformat()
    status, out, _ = run(capsys, "audit", "holders", "--db", db_url, "--at", now)
    doomed = next(line for line in out.splitlines() if "doomed" in line)
    assert status == 0 and "unterminated" in doomed and short_id(lifecycle_id) in doomed
    assert f"lifecycle {lifecycle_id}: unterminated: no final record, and process {pid}" in out
    status, out, _ = run(capsys, "audit", "holders", "--db", db_url, "--at", now, "--format",
                      "json")
    (row,) = json.loads(out)
    assert (row["owner"], row["lifecycle_status"], row["pid"], row["correlation_id"]) == (
        "doomed", "unterminated", pid, "run-killed")
