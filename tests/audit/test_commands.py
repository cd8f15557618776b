"""``streamwarden db`` and ``streamwarden audit``: output, formats, filters and exit codes."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from streamwarden import InvalidInputError
from streamwarden.audit import commands
from streamwarden.audit.database import redact_url
from streamwarden.audit.log import AuditLog
from streamwarden.audit.migrate import head_revision
from streamwarden.audit.report import COLUMNS, short_id
from tests.audit.histories import T0, History, fill, open_log, record, run_history
from tests.cli_run import run, usage_error

SYNTHETIC = 30


@pytest.fixture
def filled(db_url, creds, fast_settings) -> tuple[str, History]:
    """A real manager history (run-1, run-2 on market data, run-3 on trade updates) followed
    by SYNTHETIC synthetic records at T0 (correlation ids corr-0..corr-9)."""
    with open_log(db_url) as log:
        history = run_history(log, creds, fast_settings)
        fill(log, SYNTHETIC)
    return db_url, history
def with_password(db_url: str, password: str) -> str:
    """``db_url`` with a password (PostgreSQL trust auth and SQLite both ignore it)."""
    url = sa.make_url(db_url)
    if url.get_backend_name() == "sqlite":
        return db_url
    return url.set(password=password).render_as_string(hide_password=False)


def test_db_upgrade_then_current(db_url, capsys):
    url = with_password(db_url, "pw-CANARY-42")
    status, _, _ = run(capsys, "db", "current", "--db", url)
    assert status == 1  # not at the newest revision (see test_db_current.py)
    status, out, _ = run(capsys, "db", "upgrade", "--db", url)
    assert status == 0 and f"upgraded from (empty) to {head_revision()}" in out
    status, out, _ = run(capsys, "db", "upgrade", "--db", url)
    assert status == 0 and f"already at the newest revision {head_revision()}" in out
    status, out, _ = run(capsys, "db", "current", "--db", url)
    assert status == 0 and "up to date" in out
    assert "pw-CANARY-42" not in out


def test_report_json_filters_by_correlation_id(filled, capsys):
    db_url, _ = filled
    status, out, _ = run(capsys, "audit", "report", "--db", db_url, "--correlation-id", "run-2",
                         "--format", "json")
    assert status == 0
    rows = json.loads(out)
    assert rows and {row["correlation_id"] for row in rows} == {"run-2"}
    assert [row["event"] for row in rows] == ["acquire", "release"]
    assert rows[0]["owner"] == "[bold]mean-reversion[/bold]"
    assert list(rows[0]) == list(COLUMNS) and rows[0]["occurred_at"].endswith("+00:00")


def test_report_csv_with_kind_event_and_limit(filled, capsys):
    db_url, _ = filled
    status, out, _ = run(capsys, "audit", "report", "--db", db_url, "--kind", "market_data",
                         "--event", "release", "--limit", "3", "--format", "csv")
    assert status == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 3 and list(rows[0]) == list(COLUMNS)
    assert {(row["kind"], row["event"]) for row in rows} == {("market_data", "release")}
    assert [int(row["seq"]) for row in rows] == sorted(int(row["seq"]) for row in rows)


def test_report_time_window_and_lifecycle(filled, capsys):
    db_url, history = filled
    status, out, _ = run(capsys, "audit", "report", "--db", db_url, "--format", "json",
                         "--since", "2026-01-02T09:30:00.000005Z",
                         "--until", "2026-01-02T10:30:00.000008+01:00")
    assert status == 0
    assert [row["event_id"] for row in json.loads(out)] == ["ev-00000005", "ev-00000006",
                                                          "ev-00000007"]
    status, out, _ = run(capsys, "audit", "report", "--db", db_url, "--format", "json",
                         "--lifecycle", history.trade_updates_lifecycle)
    rows = json.loads(out)
    assert status == 0 and {row["lifecycle_id"] for row in rows} == {
        history.trade_updates_lifecycle}
    assert {row["kind"] for row in rows} == {"trade_updates"}


def test_report_table(filled, capsys):
    db_url, history = filled
    status, out, _ = run(capsys, "audit", "report", "--db", db_url, "--fingerprint",
                         "f" * 24, "--limit", "2")
    assert status == 0
    assert "2 audit records in" in out and "correlation" in out and "corr-0" in out
    status, out, _ = run(capsys, "audit", "report", "--db", db_url, "--correlation-id",
                         "run-1")
    assert short_id(history.market_data_lifecycle) in out and "idle -> starting" in out
    assert "momentum" in out and "run-2" not in out


def test_report_from_the_environment_url(filled, capsys, monkeypatch):
    db_url, _ = filled
    monkeypatch.setenv("STREAMWARDEN_DB_URL", db_url)
    status, out, _ = run(capsys, "audit", "report", "--format", "json", "--limit", "1")
    assert status == 0 and json.loads(out)[0]["seq"] == 1


def test_verify_ok_text_and_json(filled, capsys, monkeypatch):
    db_url, _ = filled
    monkeypatch.setattr(commands, "VERIFY_PROGRESS_EVERY", 1)  # a progress line per report
    status, out, err = run(capsys, "audit", "verify", "--db", db_url)
    rows = int(out.split()[1])
    assert err == f"verified {rows:,} rows ...\n"
    assert status == 0 and rows > SYNTHETIC
    ok_line, head_line = out.splitlines()
    assert ok_line == f"OK: {rows} rows, chain intact" and head_line.startswith(f"head: {rows}:")
    status, out, _ = run(capsys, "audit", "verify", "--db", db_url, "--json")
    document = json.loads(out)
    assert status == 0 and document["ok"] is True and document["rows"] == rows
    assert document["first_bad_seq"] is None and document["reason"] is None


def tamper(db_url: str, seq: int) -> None:
    """Edit row ``seq`` behind the audit log's back. The migration's append-only triggers
    refuse UPDATE, so the test first switches them off: on SQLite by dropping
    ``lifecycle_audit_no_update``, on PostgreSQL by disabling ``lifecycle_audit_no_update_delete``
    (what an attacker with owner rights could do; the hash chain is what still catches it)."""
    engine = sa.create_engine(db_url)
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql("DROP TRIGGER lifecycle_audit_no_update")
            else:
                conn.exec_driver_sql(
                    "ALTER TABLE lifecycle_audit DISABLE TRIGGER lifecycle_audit_no_update_delete")
            conn.execute(sa.text("UPDATE lifecycle_audit SET owner = 'mallory' WHERE seq = :s"),
                         {"s": seq})
    finally:
        engine.dispose()


def test_verify_a_tampered_database_exits_1_naming_the_seq(filled, capsys):
    db_url, _ = filled
    tamper(db_url, 3)
    status, out, _ = run(capsys, "audit", "verify", "--db", db_url)
    assert status == 1
    assert out.startswith("BROKEN at seq 3 (edited): ")
    status, out, _ = run(capsys, "audit", "verify", "--db", db_url, "--json")
    document = json.loads(out)
    assert status == 1 and (document["ok"], document["first_bad_seq"], document["reason"]) == (
        False, 3, "edited")


def test_export_jsonl_and_csv(filled, capsys, tmp_path):
    db_url, _ = filled
    target = tmp_path / "regulator.jsonl"
    status, out, _ = run(capsys, "audit", "export", "--db", db_url, "--format", "jsonl",
                         "-o", str(target), "--kind", "trade_updates")
    lines = [json.loads(line) for line in target.read_text().splitlines()]
    assert status == 0 and out == f"exported {len(lines)} records to {target} (jsonl)\n"
    assert lines and {line["kind"] for line in lines} == {"trade_updates"}
    seqs = [line["seq"] for line in lines]
    assert seqs == sorted(seqs)
    target = tmp_path / "all.csv"
    status, out, _ = run(capsys, "audit", "export", "--db", db_url, "--format", "csv",
                         "--output", str(target), "--since", T0.isoformat(),
                         "--until", (T0 + timedelta(seconds=1)).isoformat())
    with target.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert status == 0 and [row["event_id"] for row in rows] == [
        f"ev-{i:08d}" for i in range(SYNTHETIC)]


def test_export_to_a_missing_directory_fails_cleanly(filled, capsys, tmp_path):
    db_url, _ = filled
    status, _, err = run(capsys, "audit", "export", "--db", db_url, "--format", "csv", "-o",
                         str(tmp_path / "missing" / "a.csv"))
    assert status == 1 and err.startswith("streamwarden: cannot write ")
    assert not (tmp_path / "missing").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_timeline_table_and_json(filled, capsys):
    db_url, history = filled
    status, out, _ = run(capsys, "audit", "timeline", "--db", db_url, "--lifecycle",
                         history.market_data_lifecycle)
    assert status == 0 and history.market_data_lifecycle in out
    assert "stopped after" in out and "(terminal)" in out
    for state in ("idle", "starting", "running", "draining", "stopped"):
        assert state in out
    status, out, _ = run(capsys, "audit", "timeline", "--db", db_url, "--lifecycle",
                         history.trade_updates_lifecycle, "--format", "json")
    document = json.loads(out)
    assert status == 0 and document["kind"] == "trade_updates" and document["stopped"]
    assert [s["state"] for s in document["states"]] == [
        "idle", "starting", "running", "draining", "stopped"]


def test_timeline_of_an_unknown_lifecycle_exits_1(filled, capsys):
    db_url, _ = filled
    status, out, err = run(capsys, "audit", "timeline", "--db", db_url, "--lifecycle", "nope")
    assert (status, out) == (1, "") and "no audit records for lifecycle nope" in err


@pytest.mark.parametrize(("argv", "reason"), [
    (["audit", "report", "--limit", "0"], "argument --limit: must be at least 1, got 0"),
    (["audit", "report", "--limit", "ten"], "argument --limit: expected a whole number"),
    (["audit", "report", "--since", "yesterday"], "argument --since: must be an ISO 8601"),
    (["audit", "report", "--until", "2026-01-02T10:00:00"], "has no time zone; add Z"),
    (["audit", "report", "--kind", "quotes"], "argument --kind: invalid choice: 'quotes'"),
    (["audit", "report", "--format", "xml"], "argument --format: invalid choice: 'xml'"),
    (["audit", "report", "--since", "2026-01-02T10:00:00Z", "--until", "2026-01-02T09:00:00Z"],
     "error: since (2026-01-02T10:00:00+00:00) must be before until"),
    (["audit", "report", "--correlation-id", ""], "expected a non-empty, printable value"),
    (["audit", "export", "--format", "csv"], "the following arguments are required: -o"),
    (["audit", "export", "-o", "x.json", "--format", "json"], "invalid choice: 'json'"),
    (["audit", "timeline"], "the following arguments are required: --lifecycle"),
    (["audit", "verify", "--db", "mysql://u:hunter2@db/x"], "unsupported database URL"),
    (["db", "upgrade", "--db", "sqlite://"], "needs a SQLite file"),
    (["audit"], "the following arguments are required: COMMAND"),
])
def test_bad_arguments_exit_2_with_a_one_line_reason(capsys, argv, reason):
    line = usage_error(capsys, *argv)
    assert reason in line and "error:" in line
    assert "hunter2" not in line


def test_failures_exit_1_with_a_typed_message(postgresql_url, sqlite_url, capsys):
    unreachable = "postgresql+psycopg://postgres:pw-CANARY-42@127.0.0.1:1/test?connect_timeout=2"
    status, _, err = run(capsys, "audit", "verify", "--db", unreachable)
    assert status == 1 and "AuditUnavailableError" in err and "pw-CANARY-42" not in err
    status, _, err = run(capsys, "audit", "report", "--db", postgresql_url)
    assert status == 1 and "AuditSchemaError" in err and "streamwarden db upgrade" in err
    # A read command does not create a database where there was none (a mistyped path).
    status, _, err = run(capsys, "audit", "report", "--db", sqlite_url)
    assert status == 1 and "AuditUnavailableError: no audit database at" in err
    assert not Path(sa.make_url(sqlite_url).database).exists()
    assert run(capsys, "db", "upgrade", "--db", sqlite_url)[0] == 0
    assert run(capsys, "audit", "report", "--db", sqlite_url, "--format", "json")[:2] == (
        0, "[]\n")


def test_export_to_standard_output(filled, capsys):
    db_url, _ = filled
    status, out, err = run(capsys, "audit", "export", "--db", db_url, "--format", "jsonl",
                           "-o", "-", "--limit", "4")
    assert status == 0 and [json.loads(line)["seq"] for line in out.splitlines()] == [1, 2, 3, 4]
    assert "exported 4 records to standard output (jsonl)" in err
    assert not Path("-").exists()


def _targets(tmp_path: Path) -> dict[str, Path]:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    link = tmp_path / "link-to-fifo"
    link.symlink_to(fifo)
    directory = tmp_path / "directory"
    directory.mkdir()
    return {"a device": Path("/dev/null"), "a directory": directory, "a FIFO": fifo,
            "a FIFO (link)": link}


def test_export_refuses_targets_that_are_not_regular_files(filled, capsys, tmp_path):
    db_url, _ = filled
    for kind, target in _targets(tmp_path).items():
        line = usage_error(capsys, "audit", "export", "--db", db_url, "--format", "csv",
                           "-o", str(target))
        assert f"cannot export to {target}: it is {kind.split(' (')[0]}" in line, kind
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "audit.db" and not
                  p.name.startswith("audit.db-")) == ["directory", "fifo", "link-to-fifo"]


def test_csv_cells_that_look_like_formulas_are_neutralised(db_url, capsys, tmp_path):
    owners = ['=HYPERLINK("http://evil.example","x")', "+1", "-2", "@SUM(A1)", "\tx", "\rx",
              "plain"]
    with open_log(db_url) as log:
        for owner in owners:
            log.append(record(event_id=f"ev-{owner!r}", owner=owner))
    target = tmp_path / "exports" / "a.csv"
    target.parent.mkdir()
    assert run(capsys, "audit", "export", "--db", db_url, "--format", "csv", "-o",
               str(target))[0] == 0
    with target.open(newline="") as handle:
        cells = [row["owner"] for row in csv.DictReader(handle)]
    assert cells == [f"'{owner}" for owner in owners[:-1]] + ["plain"]
    status, out, _ = run(capsys, "audit", "report", "--db", db_url, "--format", "json")
    assert status == 0 and [row["owner"] for row in json.loads(out)] == owners  # unchanged


@pytest.mark.parametrize("parameter", ["password", "PassWord", "passfile", "sslpassword"])
def test_password_query_parameters_are_redacted_wherever_a_url_is_shown(
        postgresql_url, capsys, parameter):
    secret = "qp-CANARY-77"
    url = f"{postgresql_url}&{parameter}={secret}"
    assert secret not in redact_url(url) and f"{parameter}=***" in redact_url(url)
    status, _, err = run(capsys, "audit", "report", "--db", url)  # schema behind: the hint
    assert status == 1 and secret not in err
    if parameter != "PassWord":  # libpq refuses that spelling: an error, not the hint
        assert "streamwarden db upgrade --db" in err
    unreachable = f"postgresql+psycopg://postgres@127.0.0.1:1/test?{parameter}={secret}"
    status, _, err = run(capsys, "audit", "verify", "--db", unreachable)
    assert status == 1 and "streamwarden: Audit" in err and secret not in err
    with pytest.raises(InvalidInputError) as caught:
        AuditLog.open(f"mysql://h/db?{parameter}={secret}")
    assert secret not in str(caught.value)
    if parameter == "password":  # psycopg uses it: the log opens, and shows no secret
        run(capsys, "db", "upgrade", "--db", url)
        with AuditLog.open(url) as log:
            assert secret not in repr(log) and secret not in log.url
    assert secret not in capsys.readouterr().out
