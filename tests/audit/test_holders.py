"""``streamwarden audit holders --at TIME``: who held which connection at that moment, over a
known history in a real database (SQLite and PostgreSQL) and over a real manager's."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from datetime import datetime, timedelta

import pytest
from rich.console import Console

from streamwarden import InvalidInputError
from streamwarden.audit.holders import render_holders
from streamwarden.audit.holdings import holdings
from streamwarden.audit.processes import LocalProcesses
from streamwarden.audit.report import short_id
from streamwarden.cli import main
from tests.audit.anchored import behind_the_triggers
from tests.audit.histories import T0, open_log, record, run_history
from tests.cli_run import run

LC_A, LC_B, LC_C = ("01JHOLDERSAAAAAAAAAAAAAAAA", "01JHOLDERSBBBBBBBBBBBBBBBB",
                    "01JHOLDERSCCCCCCCCCCCCCCCC")
HOST = LocalProcesses().host()


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def iso(seconds: float) -> str:
    return at(seconds).isoformat()


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(30)
    return child.pid


def known_history(pid: int) -> list:
    """Connection A (market data): momentum 0..60, pairs 10..30, a refused acquire at 20,
    meanrev 40..50 (revoked), then A stops at 61. Connection B (trade updates, this host,
    process ``pid``): executor from 5, never ended. Connection C (another host): remote from 7,
    never ended."""
    steps = [
        (0, LC_A, "acquire", "idle", "starting", {"lease_id": "L-mom", "owner": "momentum"}),
        (1, LC_A, "connected", "starting", "running", {}),
        (5, LC_B, "acquire", "idle", "starting", {"lease_id": "L-exe", "owner": "executor",
                                                  "kind": "trade_updates", "pid": pid,
                                                  "fingerprint": "b" * 24}),
        (6, LC_B, "connected", "starting", "running", {"kind": "trade_updates", "pid": pid,
                                                       "fingerprint": "b" * 24}),
        (7, LC_C, "acquire", "idle", "starting", {"lease_id": "L-rem", "owner": "remote",
                                                  "host": "elsewhere.example"}),
        (10, LC_A, "acquire", "running", "running", {"lease_id": "L-pairs", "owner": "pairs",
                                                     "correlation_id": "run-pairs"}),
        (20, LC_A, "acquire", "running", None, {"lease_id": "L-late", "owner": "late",
                                                "outcome": "rejected"}),
        (30, LC_A, "release", "running", "running", {"lease_id": "L-pairs", "owner": "pairs"}),
        (40, LC_A, "acquire", "running", "running", {"lease_id": "L-mean", "owner": "meanrev"}),
        (50, LC_A, "lease_revoked", "running", "running", {
            "lease_id": "L-mean", "owner": "meanrev", "outcome": "failed",
            "error_type": "LeaseOverflowError", "error_message": "queue full"}),
        (60, LC_A, "release", "running", "draining", {"lease_id": "L-mom", "owner": "momentum"}),
        (61, LC_A, "closed", "draining", "stopped", {}),
    ]
    host_of = {LC_A: HOST, LC_B: HOST, LC_C: "elsewhere.example"}
    return [record(event_id=f"ev-{index:02d}", occurred_at=at(seconds), lifecycle_id=lifecycle,
                   event=event, from_state=before, to_state=after,
                   **{"host": host_of[lifecycle], **changes})
            for index, (seconds, lifecycle, event, before, after, changes) in enumerate(steps)]


@pytest.fixture
def known(db_url) -> tuple[str, int]:
    pid = dead_pid()
    with open_log(db_url) as log:
        for source in known_history(pid):
            log.append(source)
    return db_url, pid

def holders(capsys, db_url: str, seconds: float, *options: str) -> list[dict]:
    status, out, err = run(capsys, "audit", "holders", "--db", db_url, "--at", iso(seconds),
                           "--format", "json", *options)
    assert status == 0, err
    return json.loads(out)


@pytest.mark.parametrize(("seconds", "owners"), [
    (-1, []),
    (0, ["momentum"]),  # acquired exactly then: held
    (9.999999, ["momentum", "executor", "remote"]),
    (10, ["momentum", "executor", "remote", "pairs"]),
    (30, ["momentum", "executor", "remote"]),  # half-open: released at 30 is not held at 30
    (45, ["momentum", "executor", "remote", "meanrev"]),
    (50, ["momentum", "executor", "remote"]),  # revoked at 50
    (60, ["executor", "remote"]),
    (3660, ["executor", "remote"]),  # 10:31 the next hour: still held as far as the trail says
])
def test_holders_at_a_time(known, capsys, seconds, owners):
    db_url, _ = known
    assert [row["owner"] for row in holders(capsys, db_url, seconds)] == owners


def test_what_each_holder_row_says(known, capsys):
    db_url, pid = known
    rows = {row["owner"]: row for row in holders(capsys, db_url, 45)}
    assert rows["meanrev"] == {
        "lease_id": "L-mean", "owner": "meanrev", "kind": "market_data", "lifecycle_id": LC_A,
        "fingerprint": "f" * 24, "correlation_id": "run-1", "receives": "",
        "acquired_at": "2026-01-02T09:30:40.000000+00:00", "held_for_s": 5.0,
        "lifecycle_status": "stopped", "host": HOST, "pid": 1, "last_record_at": None}
    assert rows["momentum"]["held_for_s"] == 45.0
    executor = rows["executor"]
    assert (executor["lifecycle_status"], executor["pid"], executor["host"]) == (
        "unterminated", pid, HOST)
    assert executor["last_record_at"] == "2026-01-02T09:30:06.000000+00:00"
    assert (rows["remote"]["lifecycle_status"], rows["remote"]["host"]) == (
        "unchecked", "elsewhere.example")


def test_filters(known, capsys):
    db_url, _ = known
    assert [r["owner"] for r in holders(capsys, db_url, 45, "--owner", "executor")] == [
        "executor"]
    assert [r["owner"] for r in holders(capsys, db_url, 45, "--kind", "trade_updates")] == [
        "executor"]
    assert [r["owner"] for r in holders(capsys, db_url, 45, "--fingerprint", "b" * 24)] == [
        "executor"]
    assert [r["owner"] for r in holders(capsys, db_url, 45, "--lifecycle", short_id(LC_A))] == [
        "momentum", "meanrev"]
    assert holders(capsys, db_url, 45, "--owner", "nobody-at-all") == []


def test_table_with_notes_on_unterminated_and_unchecked_connections(known, capsys, monkeypatch):
    db_url, pid = known
    monkeypatch.setenv("COLUMNS", "200")
    status, out, _ = run(capsys, "audit", "holders", "--db", db_url, "--at", iso(45))
    lines = out.splitlines()
    assert status == 0 and "4 leases held at 2026-01-02 09:30:45.000000 UTC" in lines[0]
    assert "lifecycle now" in lines[1] and "held for" in lines[1]
    executor = next(line for line in lines if "executor" in line)
    for cell in ("trade_updates", short_id(LC_B), "b" * 24, "2026-01-02 09:30:05.000000",
                 "40.000 s", "every order", "unterminated"):
        assert cell in executor
    assert f"lifecycle {LC_B}: unterminated: no final record, and process {pid} on {HOST} " \
           f"is gone (last record 2026-01-02 09:30:06.000000 UTC)" in lines
    assert any(line.startswith(f"lifecycle {LC_C}: unchecked: no final record; process 1 on "
                               "host elsewhere.example cannot be checked from here")
               for line in lines)
    assert not any(line.startswith(f"lifecycle {LC_A}") for line in lines)  # it stopped
    status, out, _ = run(capsys, "audit", "holders", "--db", db_url, "--at", iso(45),
                         "--full-ids")
    assert status == 0 and LC_B in next(line for line in out.splitlines() if "executor" in line)


def test_blocks_on_a_narrow_terminal(known, capsys, monkeypatch):
    db_url, _ = known
    monkeypatch.setenv("COLUMNS", "80")
    status, out, _ = run(capsys, "audit", "holders", "--db", db_url, "--at", iso(45))
    lines = out.splitlines()
    assert status == 0 and max(len(line) for line in lines) <= 80
    assert not [line for line in lines if "lifecycle now" in line and "held for" in line]
    assert any(line.startswith("executor  trade_updates  since 2026-01-02 09:30:05.000000 UTC")
               for line in lines)
    for whole in (LC_A, LC_B, LC_C, "L-mean", "b" * 24):
        assert any(whole in line for line in lines), whole
    assert any("unterminated: no final record, and process" in line for line in lines)
    assert len(lines) <= 1 + 8 * 4  # a long status line may take two


def test_nobody(known, capsys):
    db_url, _ = known
    status, out, _ = run(capsys, "audit", "holders", "--db", db_url, "--at", iso(-60))
    assert (status, out) == (0, "nobody held a connection at 2026-01-02 09:29:00.000000 UTC\n")
    status, out, _ = run(capsys, "audit", "holders", "--db", db_url, "--at",
                         "9999-12-31T23:59:59.999999+00:00", "--owner", "nobody")
    assert (status, out) == (0, "nobody held a connection at 9999-12-31 23:59:59.999999 UTC\n")


def test_only_the_records_up_to_the_time_are_read(known, capsys):
    """A record after TIME that cannot even be decoded does not disturb the answer."""
    db_url, _ = known
    with open_log(db_url) as log:
        log.append(record(event_id="ev-late", occurred_at=at(7200), lifecycle_id="01JLATE"))
    with behind_the_triggers(db_url) as connection:
        connection.exec_driver_sql(
            "UPDATE lifecycle_audit SET details = '[1, 2]' WHERE event_id = 'ev-late'")
    assert [r["owner"] for r in holders(capsys, db_url, 3600)] == ["executor", "remote"]
    status, _, err = run(capsys, "audit", "report", "--db", db_url)
    assert status == 1 and "AuditIntegrityError" in err  # the row is really undecodable


def test_a_real_managers_history(db_url, creds, fast_settings, capsys):
    with open_log(db_url) as log:
        run_history(log, creds, fast_settings)
        found = holdings(log.iter_records())
    second = found[1]
    middle = second.acquired_at + (second.released_at - second.acquired_at) / 2
    status, out, _ = run(capsys, "audit", "holders", "--db", db_url, "--at",
                         middle.isoformat(), "--format", "json")
    rows = json.loads(out)
    assert status == 0 and "[bold]mean-reversion[/bold]" in [row["owner"] for row in rows]
    assert {row["lifecycle_status"] for row in rows} == {"stopped"}
    after = max(holding.released_at for holding in found)
    status, out, _ = run(capsys, "audit", "holders", "--db", db_url, "--at", after.isoformat())
    assert status == 0 and out.startswith("nobody held a connection at ")


@pytest.mark.parametrize(("argv", "reason"), [
    ([], "the following arguments are required: --at"),
    (["--at", "yesterday"], "argument --at: must be an ISO 8601 timestamp"),
    (["--at", "2026-01-02T10:31:00"], "argument --at: '2026-01-02T10:31:00' has no time zone"),
    (["--at", "2026-01-02T10:31:00Z", "--kind", "stocks"], "argument --kind: invalid choice"),
    (["--at", "2026-01-02T10:31:00Z", "--format", "csv"], "argument --format: invalid choice"),
    (["--at", "2026-01-02T10:31:00Z", "--owner", ""], "expected a non-empty, printable value"),
])
def test_bad_arguments_exit_2(capsys, argv, reason):
    with pytest.raises(SystemExit) as exit_info:
        main(["audit", "holders", *argv])
    assert exit_info.value.code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert reason in line and "error:" in line


def test_render_refuses_an_unknown_format():
    with pytest.raises(InvalidInputError, match="holders format must be one of table, json"):
        render_holders([], T0, "csv", io.StringIO(), unfinished={})
    out = io.StringIO()
    render_holders([], T0, "json", out, unfinished={}, console=Console(file=out))
    assert json.loads(out.getvalue()) == []


def test_a_block_says_what_the_lease_receives(sqlite_url, capsys, monkeypatch):
    with open_log(sqlite_url) as log:
        log.append(record(lease_id="L-f", owner="filtered", kind="trade_updates",
                          details={"filter": {"client_order_id_prefix": "mom-"}}))
    monkeypatch.setenv("COLUMNS", "80")
    status, out, _ = run(capsys, "audit", "holders", "--db", sqlite_url, "--at", iso(1))
    assert status == 0
    assert any(line.split() == ["receives", "orders", "with", "client_order_id", "mom-*"]
               for line in out.splitlines()), out
