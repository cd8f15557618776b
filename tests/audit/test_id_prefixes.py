"""Ids typed by a reader: a whole id, a unique prefix, or the short form tables show, resolved in
the database (SQLite and PostgreSQL) by ``AuditLog.find_ids`` and by every command's id
options."""

from __future__ import annotations

import json

import pytest

from streamwarden import InvalidInputError
from streamwarden.audit.report import short_id
from tests.audit.anchored import anchored_trail
from tests.audit.histories import open_log, record
from tests.cli_run import run, usage_error

LC_1 = "01JPREFIXAAAA0000000ABCDEF"
LC_2 = "01JPREFIXBBBB0000000XYZ123"
LC_3 = "01JOTHER000000000000ZZTAIL"
LEASE_1, LEASE_2 = "01JLEASE000000000000AAAAAA", "01JLEASE000000000000BBBBBB"
AWKWARD = ("run-1", "run-10", "RUN-2", "a%b", "a_b", "ab", "50%", "x\\")
ELLIPSIS = "\N{HORIZONTAL ELLIPSIS}"


@pytest.fixture
def ids_url(db_url) -> str:
    """Records of three lifecycles (two sharing a prefix), two leases, and correlation ids
    with LIKE's metacharacters, different cases, and one a prefix of another."""
    with open_log(db_url) as log:
        for index, correlation_id in enumerate(AWKWARD):
            lifecycle_id = (LC_1, LC_2, LC_3)[index % 3]
            log.append(record(event_id=f"ev-{index}", lifecycle_id=lifecycle_id,
                              correlation_id=correlation_id,
                              lease_id=LEASE_1 if lifecycle_id == LC_1 else LEASE_2))
    return db_url


@pytest.mark.parametrize(("column", "text", "found"), [
    ("lifecycle_id", LC_1, [LC_1]),
    ("lifecycle_id", "01JPREF", [LC_1, LC_2]),  # ambiguous: both, sorted
    ("lifecycle_id", "01JO", [LC_3]),  # a unique prefix
    ("lifecycle_id", short_id(LC_2), [LC_2]),  # the short form a table shows
    ("lifecycle_id", "TAIL", [LC_3]),  # any unique ending
    ("lifecycle_id", "01jprefixaaaa0000000abcdef", []),  # case counts, on SQLite too
    ("lifecycle_id", "PREFIX", []),  # in the middle: neither a prefix nor an ending
    ("lease_id", "AAAAAA", [LEASE_1]),
    ("correlation_id", "run-1", ["run-1"]),  # exact wins over run-10, which starts with it
    ("correlation_id", "run", ["run-1", "run-10"]),
    ("correlation_id", "RUN", ["RUN-2"]),
    ("correlation_id", "a%", ["a%b"]),  # % is a plain character, not "anything"
    ("correlation_id", "a_", ["a_b"]),  # so is _
    ("correlation_id", "%", ["50%"]),
    ("correlation_id", "_", []),
    ("correlation_id", "\\", ["x\\"]),
    ("correlation_id", f"{ELLIPSIS}n-10", ["run-10"]),  # the table's ellipsis is ignored
    ("correlation_id", "nobody", []),
])
def test_find_ids(ids_url, column, text, found):
    with open_log(ids_url) as log:
        assert log.find_ids(column, text) == found


def test_find_ids_limit_and_bad_input(ids_url):
    with open_log(ids_url) as log:
        assert log.find_ids("correlation_id", "a", limit=2) == ["a%b", "a_b"]
        for column, text, message in [
            ("owner", "x", "ids are matched in lifecycle_id, lease_id, correlation_id"),
            ("lease_id", "", "lease_id must be 1..256 characters"),
            ("lease_id", ELLIPSIS, "lease_id must be 1..256 characters"),
            ("lease_id", "a\tb", "lease_id must be printable"),
            ("lease_id", 42, "lease_id must be a string, got int"),
        ]:
            with pytest.raises(InvalidInputError, match=message):
                log.find_ids(column, text)
        with pytest.raises(InvalidInputError, match="limit must be at least 1"):
            log.find_ids("lease_id", "x", limit=0)
def report(capsys, ids_url, *filters: str) -> list[dict]:
    status, out, _ = run(capsys, "audit", "report", "--db", ids_url, "--format", "json",
                         *filters)
    assert status == 0
    return json.loads(out)


def test_report_filters_take_prefixes_and_short_forms(ids_url, capsys):
    rows = report(capsys, ids_url, "--lifecycle", short_id(LC_1))
    assert rows and {row["lifecycle_id"] for row in rows} == {LC_1}
    rows = report(capsys, ids_url, "--lease", "01JLEASE000000000000B")
    assert rows and {row["lease_id"] for row in rows} == {LEASE_2}
    rows = report(capsys, ids_url, "--correlation-id", "run-1")
    assert [row["correlation_id"] for row in rows] == ["run-1"]
    rows = report(capsys, ids_url, "--correlation-id", "n-10", "--lifecycle", "01JPREFIXB")
    assert [(row["correlation_id"], row["lifecycle_id"]) for row in rows] == [("run-10", LC_2)]


@pytest.mark.parametrize("command", ["report", "export", "timeline", "holders"])
def test_an_ambiguous_id_exits_2_naming_the_candidates(ids_url, capsys, tmp_path, command):
    extra = {"report": [], "export": ["--format", "jsonl", "-o", tmp_path / "x.jsonl"],
             "timeline": [], "holders": ["--at", "2030-01-01T00:00:00Z"]}[command]
    line = usage_error(capsys, "audit", command, "--db", ids_url, "--lifecycle", "01JPREF",
                       *extra)
    assert (f"error: --lifecycle 01JPREF is ambiguous: it matches {LC_1}, {LC_2}; give more "
            f"of it") in line
    assert not (tmp_path / "x.jsonl").exists()


def test_many_candidates_are_cut_short(ids_url, capsys):
    line = usage_error(capsys, "audit", "report", "--db", ids_url, "--correlation-id", "a")
    assert "--correlation-id a is ambiguous: it matches a%b, a_b, ab; give more" in line
    with open_log(ids_url) as log:
        for index in range(7):
            log.append(record(event_id=f"more-{index}", correlation_id=f"batch-{index}"))
    line = usage_error(capsys, "audit", "report", "--db", ids_url, "--correlation-id", "batch")
    assert "it matches batch-0, batch-1, batch-2, batch-3, batch-4, ...; give more of it" in line


@pytest.mark.parametrize(("command", "option"), [
    ("report", "--lease"), ("report", "--correlation-id"), ("export", "--lifecycle"),
    ("timeline", "--lifecycle"), ("holders", "--lifecycle"),
])
def test_an_id_matching_nothing_exits_1(ids_url, capsys, tmp_path, command, option):
    name = option.removeprefix("--").replace("-id", " id")
    extra = {"report": [], "export": ["--format", "csv", "-o", tmp_path / "x.csv"],
             "timeline": [], "holders": ["--at", "2030-01-01T00:00:00Z"]}[command]
    status, out, err = run(capsys, "audit", command, "--db", ids_url, option, "NOPE", *extra)
    assert (status, out) == (1, "")
    assert err.startswith(f"streamwarden: no audit records for {name} NOPE in ")
    assert not (tmp_path / "x.csv").exists()


def test_export_and_timeline_take_short_forms(ids_url, capsys, tmp_path):
    target = tmp_path / "lc2.jsonl"
    status, _, _ = run(capsys, "audit", "export", "--db", ids_url, "--format", "jsonl", "-o",
                       target, "--lifecycle", short_id(LC_2))
    lines = [json.loads(line) for line in target.read_text().splitlines()]
    assert status == 0 and lines and {line["lifecycle_id"] for line in lines} == {LC_2}
    status, out, _ = run(capsys, "audit", "timeline", "--db", ids_url, "--lifecycle", "TAIL",
                         "--format", "json")
    assert status == 0 and json.loads(out)["lifecycle_id"] == LC_3


def test_export_bundle_takes_an_id_ending(db_url, tmp_path, capsys):
    trail = anchored_trail(db_url, tmp_path)  # lc-0..lc-9 round robin; lc-5 at seq 6, 16, 26
    bundle = tmp_path / "lc-5.jsonl"
    status, out, err = run(capsys, "audit", "export", "--bundle", "-o", bundle, "--db",
                           trail.url, "--checkpoints", trail.directory, "--public-key",
                           f"{trail.key}.pub", "--lifecycle", "c-5")  # only lc-5 ends so
    assert status == 0, err
    assert out.startswith("exported records 6..30 (25) with ")
    status, out, _ = run(capsys, "audit", "verify", "--file", bundle, "--public-key",
                         f"{trail.key}.pub")
    assert status == 0 and out.startswith("OK")
