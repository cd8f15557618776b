"""``streamwarden demo`` runs end to end: simulator, real SDK, SQL audit log, report, verify."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
from collections import defaultdict
from pathlib import Path
from typing import IO

import pytest
import sqlalchemy as sa

from streamwarden.audit.log import AuditLog
from streamwarden.cli import main
from tests.waiting import wait_until

STRATEGIES = ("momentum", "pairs", "meanrev")
BOUND = 30.0
"""Generous bound on a whole demo run, or on its shutdown after Ctrl-C."""


def _line(out: str, start: str) -> str:
    (line,) = [line for line in out.splitlines() if line.startswith(start)]
    return line


def test_demo_shares_drops_recovers_and_verifies(db_url, tmp_path, capsys):
    diagram = tmp_path / "lifecycle.mmd"
    assert main(["db", "upgrade", "--db", db_url]) == 0  # PostgreSQL is never migrated implicitly
    status = main(["demo", "--db", db_url, "--seconds", "1", "--plain",
                   "--diagram", str(diagram)])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "verify: OK" in out
    assert diagram.read_text().startswith("stateDiagram")
    # The drop line comes once the socket is down, then the reconnect line.
    dropped = _line(out, "simulator dropped the market-data socket: ")
    reconnected = _line(out, "reconnected: ")
    assert out.index(dropped) < out.index(reconnected)
    assert "market_data=starting (refs 3" in dropped
    assert "market_data=running (refs 3, reconnects 1)" in reconnected
    with AuditLog.open(db_url) as audit:
        records = audit.query()
        assert audit.verify().ok
    run_id = re.search(r"audit trail of run (demo-\S+)", out)[1]  # type: ignore[index]
    by_owner = {f"{run_id}-{name}" for name in STRATEGIES}
    assert {r.correlation_id for r in records} == by_owner
    for record in records:
        if record.owner is not None:
            assert record.correlation_id == f"{run_id}-{record.owner}"
    for name in STRATEGIES:  # each its own fill, and only it
        assert _line(out, f"{name} (").endswith(f"fills: {name}-1")
        assert f"{run_id}-{name}" in out
    filters = {r.owner: r.details for r in records
               if r.kind == "trade_updates" and r.event == "acquire"}
    assert filters == {name: {"filter": {"client_order_id_prefix": f"{name}-"}}
                       for name in STRATEGIES}
    by_kind = {kind: [(r.event, r.owner) for r in records if r.kind == kind]
               for kind in ("market_data", "trade_updates")}
    market = [event for event, _ in by_kind["market_data"]]
    assert market.count("acquire") == 3 and market.count("release") == 3
    assert market[market.index("connection_lost") + 1] == "connected"
    assert market[-1] == "closed" and by_kind["trade_updates"][-1] == ("closed", None)


def test_demo_on_live_endpoints_needs_credentials(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("APCA_API_KEY_ID", raising=False)
    monkeypatch.delenv("APCA_API_SECRET_KEY", raising=False)
    db = tmp_path / "never.db"
    assert main(["demo", "--live-endpoints", "--db", f"sqlite:///{db}"]) == 1
    assert "APCA_API_KEY_ID" in capsys.readouterr().err
    if db.exists():  # nothing was recorded
        assert sa.inspect(sa.create_engine(f"sqlite:///{db}")).get_table_names() == []


@pytest.mark.parametrize(("argv", "reason"), [
    (["--db", "notaurl"], "argument --db: malformed database URL"),
    (["--db", "sqlite:///:memory:"], "argument --db: "),
    (["--db", "mysql://u@h/db"], "argument --db: "),
    (["--seconds", "-1"], "argument --seconds: must be a finite number > 0, got -1"),
    (["--seconds", "0"], "argument --seconds: must be a finite number > 0"),
    (["--seconds", "nan"], "argument --seconds: must be a finite number > 0"),
    (["--seconds", "inf"], "argument --seconds: must be a finite number > 0"),
    (["--seconds", "soon"], "argument --seconds: expected a number, got 'soon'"),
    (["--quote-rate", "0"], "argument --quote-rate: must be a finite number > 0"),
    (["--quote-rate", "-20"], "argument --quote-rate: must be a finite number > 0"),
    (["--quote-rate", "1e999"], "argument --quote-rate: must be a finite number > 0"),
    (["--diagram", "{tmp}"], "argument --diagram: '{tmp}' is a directory, not a file"),
    (["--diagram", "{tmp}/missing/d.mmd"], "argument --diagram: directory '{tmp}/missing' "
                                           "does not exist"),
    (["--diagram", "/proc/sys/d.mmd"], "argument --diagram: '/proc/sys/d.mmd' is not writable"),
    (["--diagram", ""], "argument --diagram: expected a file name"),
    (["--plain", "--frobnicate"], "unrecognized arguments: --frobnicate"),
])
def test_bad_arguments_exit_2_with_a_reason_and_touch_nothing(argv, reason, tmp_path, capsys):
    db = tmp_path / "never.db"
    argv = [arg.replace("{tmp}", str(tmp_path)) for arg in argv]
    with pytest.raises(SystemExit) as exited:
        main(["demo", "--db", f"sqlite:///{db}", *argv])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert reason.replace("{tmp}", str(tmp_path)) in err.splitlines()[-1]
    assert "Traceback" not in err and not db.exists()


def test_a_diagram_that_cannot_be_written_after_the_run_is_one_line_and_exit_1(tmp_path,
                                                                              capsys):
    # /dev/full passes the up-front check (a writable file) and fails the write: ENOSPC.
    db = f"sqlite:///{tmp_path / 'audit.db'}"
    status = main(["demo", "--db", db, "--seconds", "0.2", "--plain", "--diagram", "/dev/full"])
    captured = capsys.readouterr()
    assert status == 1
    assert "verify: OK" in captured.out  # the run itself completed
    assert captured.err == ("streamwarden: cannot write the state diagram to /dev/full: "
                            "No space left on device\n")


def _read_until(stream: IO[str], start: str) -> None:
    for line in stream:
        if line.startswith(start):
            return
    pytest.fail(f"the demo ended before printing {start!r}")


def test_ctrl_c_closes_the_connections_writes_the_trail_and_exits_130(tmp_path):
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    demo = subprocess.Popen(
        [sys.executable, "-m", "streamwarden", "demo", "--plain", "--db", url, "--seconds", "30",
         "--diagram", str(tmp_path / "d.mmd")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert demo.stdout is not None
        _read_until(demo.stdout, "streaming quotes")  # plain lines are flushed as printed
        demo.send_signal(signal.SIGINT)
        _read_until(demo.stdout, "releasing")
        demo.send_signal(signal.SIGINT)  # a second Ctrl-C, during the shutdown, changes nothing
        out, err = demo.communicate(timeout=BOUND)
    finally:
        demo.kill()
        demo.wait(BOUND)
    assert demo.returncode == 130, err
    assert err == (f"interrupted: leases released, connections closed, audit trail written "
                   f"to {url}\n")
    assert "verify:" not in out  # no report after Ctrl-C
    assert not (tmp_path / "d.mmd").exists()
    with AuditLog.open(url, read_only=True) as audit:
        assert audit.verify().ok
        records = audit.query()
    last_state: dict[str, str | None] = {}
    leases: dict[str, list[str]] = defaultdict(list)
    for record in records:
        last_state[record.lifecycle_id] = record.to_state
        if record.lease_id is not None:
            leases[record.lease_id].append(record.event)
    assert sorted(last_state.values()) == ["stopped", "stopped"]
    assert len(leases) == 6
    assert all(events == ["acquire", "release"] for events in leases.values()), leases


def test_the_live_view_shows_connections_and_each_strategys_fills(monkeypatch, tmp_path,
                                                                 capsys):
    monkeypatch.setenv("FORCE_COLOR", "1")  # a terminal, as far as the demo can tell
    db = f"sqlite:///{tmp_path / 'audit.db'}"
    status = main(["demo", "--db", db, "--seconds", "0.5",
                   "--diagram", str(tmp_path / "d.mmd")])
    out = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", capsys.readouterr().out)
    assert status == 0, out
    assert "connections: all connections stopped" in out and "reconnects" in out
    for name in STRATEGIES:
        assert re.search(rf"{name} .* {name}-\* .* {name}-1 ", out), name


def _acquires(path: Path) -> int:
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            return int(db.execute("SELECT count(*) FROM lifecycle_audit "
                                  "WHERE event = 'acquire'").fetchone()[0])
    except sqlite3.Error:  # not created yet
        return 0


def test_ctrl_c_in_process_returns_130_once_the_connections_are_closed(tmp_path, capsys):
    path = tmp_path / "audit.db"

    def press_ctrl_c() -> None:
        if wait_until(lambda: _acquires(path) == 6, timeout=BOUND):  # every lease is granted
            os.kill(os.getpid(), signal.SIGINT)

    presser = threading.Thread(target=press_ctrl_c, daemon=True)
    presser.start()
    status = main(["demo", "--plain", "--db", f"sqlite:///{path}", "--seconds", "30",
                   "--diagram", str(tmp_path / "d.mmd")])
    presser.join(BOUND)
    captured = capsys.readouterr()
    assert status == 130, captured.out
    assert captured.err.startswith("interrupted: ") and captured.err.count("\n") == 1
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with AuditLog.open(f"sqlite:///{path}", read_only=True) as audit:
        events = [record.event for record in audit.query()]
    assert events.count("release") == 6 and events.count("closed") == 2
