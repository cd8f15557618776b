"""``streamwarden audit report --format html``: options, files, filters, verification and
checkpoints, through the real CLI on SQLite and PostgreSQL.

The trails are real: a manager over the real alpaca-py SDK and the simulator
(``run_sim_history``), or records appended through a real AuditLog with real signed
checkpoints (``anchored_trail``)."""

from __future__ import annotations

import os
import re
import stat
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from streamwarden.audit._markup import escape
from streamwarden.audit.database import redact_url
from streamwarden.audit.log import AuditLog
from streamwarden.cli import main
from tests.audit.anchored import ROWS, anchored_trail, behind_the_triggers
from tests.audit.histories import open_log
from tests.audit.html_page import Elements, metrics, section
from tests.audit.sim_history import HOSTILE_OWNER, OWNERS, SimHistory, run_sim_history
from tests.cli_run import run, usage_error


@pytest.fixture
def sim_trail(db_url, creds) -> tuple[str, SimHistory]:
    with open_log(db_url) as log:
        return db_url, run_sim_history(log, creds)


def test_a_report_of_a_real_trail(sim_trail, tmp_path, capsys):
    db_url, history = sim_trail
    target = tmp_path / "report.html"
    before = datetime.now(UTC)
    status, out, _ = run(capsys, "audit", "report", "--db", db_url, "--format", "html",
                         "-o", target)
    with AuditLog.open(db_url) as log:
        records = log.query()
    assert status == 0
    assert out == (f"wrote the HTML report on {len(records)} records to {target}; "
                   "hash chain OK\n")
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    text = target.read_text(encoding="utf-8")
    assert metrics(text) == {
        "records": len(records), "accounts": 1, "connections": 3, "leases": 5,
        "owners": 5, "reconnects": 1, "failures": sum(r.outcome == "failed" for r in records),
        "refused": 0}
    articles = re.findall(r'<article class="connection" id="conn-\d">.*?</article>', text)
    assert len(articles) == 3 and history.market_data in articles[0]
    assert history.trade_updates in articles[1]
    assert articles[0].count('class="marker reconnect"') == 1
    assert 'class="marker failure"' in articles[2] and "AuthenticationError" in articles[2]
    labels = [label for article in articles
              for label in re.findall(r'class="lease-label">([^<]*)<', article)]
    assert len(labels) == 5
    owners_table = section(text, "summary")
    elements = Elements(text)
    assert not elements.named("img") and not elements.named("script")
    for owner in (*OWNERS, "late-executor"):
        assert f"<tr><td>{escape(owner)}</td>" in owners_table
    assert HOSTILE_OWNER in "".join(elements.text)
    assert f"{len(records)} rows, chain intact" in text
    assert "no checkpoints configured" in text
    assert redact_url(db_url).replace("&", "&amp;") in section(text, "report-header")
    generated = re.search(r'id="generated-at">([^<]*) UTC', text)
    assert generated is not None
    stamp = datetime.fromisoformat(generated.group(1) + "+00:00")
    assert before <= stamp <= datetime.now(UTC)
    assert '<div class="diagram"><svg' in text or "is not installed" in text


def test_the_filters_select_and_are_shown(sim_trail, tmp_path, capsys):
    db_url, history = sim_trail
    target = tmp_path / "r.html"
    status, out, _ = run(capsys, "audit", "report", "--db", db_url, "--format", "html",
                         "-o", target, "--lifecycle", history.trade_updates,
                         "--since", "2000-01-01T00:00:00Z")
    assert status == 0
    text = target.read_text(encoding="utf-8")
    with AuditLog.open(db_url) as log:
        selected = log.query(lifecycle_id=history.trade_updates)
    assert f"on {len(selected)} records" in out and metrics(text)["records"] == len(selected)
    assert metrics(text)["connections"] == 1 and text.count('<article class="connection"') == 1
    header = section(text, "report-header")
    assert f'lifecycle_id</span> = <span class="filter-value">{history.trade_updates}' in header
    assert 'since</span> = <span class="filter-value">2000-01-01T00:00:00.000000+00:00' in header
    # The chain is still verified whole.
    with AuditLog.open(db_url) as log:
        assert f"{len(log.query())} rows, chain intact" in text


def test_to_standard_output(sim_trail, capsys):
    db_url, _ = sim_trail
    status, out, err = run(capsys, "audit", "report", "--db", db_url, "--format", "html",
                           "-o", "-")
    assert status == 0 and out.startswith("<!DOCTYPE html>") and out.endswith("</html>\n")
    assert re.fullmatch(r"wrote the HTML report on \d+ records to standard output; "
                        r"hash chain OK\n", err)


@pytest.mark.parametrize(("argv", "reason"), [
    (["--format", "html"], "--format html needs -o FILE (or -o - for standard output)"),
    (["--format", "json", "-o", "x.html"], "-o, --checkpoints and --public-key go with "
                                           "--format html"),
    (["--checkpoints", "ck"], "-o, --checkpoints and --public-key go with --format html"),
    (["--format", "html", "-o", "r.html", "--checkpoints", "ck"],
     "--checkpoints needs --public-key"),
    (["--format", "html", "-o", "r.html", "--public-key", "{pub}"],
     "--public-key needs --checkpoints DIR (or STREAMWARDEN_CHECKPOINT_DIR)"),
    (["--format", "html", "-o", "{dir}"], "is a directory, not a regular file"),
    (["--format", "pdf", "-o", "r.html"], "invalid choice: 'pdf'"),
], ids=["no-output", "output-without-html", "checkpoints-without-html", "no-key", "no-dir",
        "directory", "format"])
def test_bad_arguments_exit_2_with_one_line(argv, reason, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("STREAMWARDEN_CHECKPOINT_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    pub = tmp_path / "audit.key.pub"
    assert main(["audit", "keygen", "-o", str(tmp_path / "audit.key")]) == 0
    capsys.readouterr()
    argv = [arg.format(pub=pub, dir=tmp_path) for arg in argv]
    db = tmp_path / "none.db"
    assert reason in usage_error(capsys, "audit", "report", "--db", f"sqlite:///{db}", *argv)
    assert not db.exists() and not (tmp_path / "r.html").exists()


def test_an_unwritable_target_exits_1_and_leaves_nothing(sim_trail, tmp_path, capsys):
    db_url, _ = sim_trail
    target = tmp_path / "missing" / "r.html"
    status, out, err = run(capsys, "audit", "report", "--db", db_url, "--format", "html",
                           "-o", target)
    assert status == 1 and out == ""
    assert err == f"streamwarden: cannot write {target}: No such file or directory\n"
    assert not target.parent.exists()


def test_a_missing_database_exits_1(tmp_path, capsys):
    missing = tmp_path / "none.db"
    status, _, err = run(capsys, "audit", "report", "--db", f"sqlite:///{missing}",
                         "--format", "html", "-o", tmp_path / "r.html")
    assert status == 1 and f"no audit database at {missing}" in err
    assert not (tmp_path / "r.html").exists() and not missing.exists()


@pytest.fixture
def trail(db_url, tmp_path):
    return anchored_trail(db_url, tmp_path)


def checkpoint_status(path) -> str:
    text = path.read_text(encoding="utf-8")
    found = re.search(r'id="checkpoint-status">Signed checkpoints: ([^<]*)</p>', text)
    assert found is not None
    return found.group(1)


def test_checkpoints_verified_from_the_option_or_the_setting(trail, tmp_path, capsys,
                                                            monkeypatch):
    monkeypatch.delenv("STREAMWARDEN_CHECKPOINT_DIR", raising=False)
    target = tmp_path / "r.html"
    pub = f"{trail.key}.pub"
    base = ["audit", "report", "--db", trail.url, "--format", "html", "-o", target]
    assert run(capsys, *base, "--checkpoints", trail.directory, "--public-key", pub)[0] == 0
    assert checkpoint_status(target) == (
        f"{trail.directory}: OK: 3 checkpoints of test.example/audit verified; the newest "
        "covers seq 30, signed ") + checkpoint_status(target).split("signed ")[1]
    # The application's own settings (directory and private key, as it writes checkpoints).
    monkeypatch.setenv("STREAMWARDEN_CHECKPOINT_DIR", str(trail.directory))
    monkeypatch.setenv("STREAMWARDEN_CHECKPOINT_KEY", str(trail.key))
    assert run(capsys, *base)[0] == 0
    assert checkpoint_status(target) == (f"{trail.directory}: not verified: no public key "
                                         "given (--public-key PUB)")
    assert run(capsys, *base, "--public-key", pub)[0] == 0
    assert "OK: 3 checkpoints" in checkpoint_status(target)
    other = tmp_path / "other.key"
    assert main(["audit", "keygen", "-o", str(other)]) == 0
    assert run(capsys, *base, "--public-key", f"{other}.pub")[0] == 0
    assert checkpoint_status(target).startswith(f"{trail.directory}: FAILED (unknown_key)")


def test_a_broken_chain_is_reported_in_the_page_and_the_closing_line(trail, tmp_path, capsys):
    with behind_the_triggers(trail.url) as connection:
        connection.execute(sa.text("UPDATE lifecycle_audit SET outcome = 'failed', "
                                   "error_message = 'mallory was here' WHERE seq = 5"))
    target = tmp_path / "r.html"
    status, out, _ = run(capsys, "audit", "report", "--db", trail.url, "--format", "html",
                         "-o", target, "--checkpoints", trail.directory, "--public-key",
                         f"{trail.key}.pub")
    assert status == 0
    assert out.endswith(f"{ROWS} records to {target}; hash chain BROKEN at seq 5 (edited)\n")
    text = target.read_text(encoding="utf-8")
    assert re.search(r"BROKEN</span> Hash chain: at seq 5 \(edited\)", text)
    assert checkpoint_status(target).startswith(f"{trail.directory}: FAILED at seq 5 (edited)")
    assert "mallory was here" in section(text, "events")  # what the table holds now


def test_without_graphviz_the_diagram_is_a_table(trail, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no `dot` on it
    target = tmp_path / "r.html"
    assert run(capsys, "audit", "report", "--db", trail.url, "--format", "html",
               "-o", target)[0] == 0
    diagram = section(target.read_text(encoding="utf-8"), "diagram")
    assert "Graphviz (<code>dot</code>) is not installed" in diagram and "<svg" not in diagram
    assert "<td>running</td><td>connection_lost</td><td></td><td>starting</td>" in diagram
