"""Rows that cannot be decoded, written behind the log's back: every read reports a break at
their seq (``edited``), none raises a traceback; and reads need no write access at all
(SQLite opened read-only as an unprivileged user, PostgreSQL as a role with only SELECT)."""

from __future__ import annotations

import io
import json
import os
import pwd
import sys
import tempfile
import traceback
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import replace
from pathlib import Path

import pytest
import sqlalchemy as sa

from streamwarden import AuditIntegrityError
from streamwarden.audit.chain import GENESIS_HASH, seal
from streamwarden.audit.log import AuditLog
from streamwarden.audit.migrate import upgrade
from streamwarden.audit.models import AuditBase
from streamwarden.cli import main
from tests.audit.chain_data import disable_triggers, history, insert_rows, make_record, raw, stored
from tests.audit.histories import fill, open_log

ROWS = 5
# (name, engines, row, SQL run with the triggers and checks off): each leaves row ``row``
# undecodable. SQLite keeps whatever type it is given; PostgreSQL only what its types allow.
BAD_ROWS = [
    ("details not JSON", {"sqlite"}, 3, "UPDATE lifecycle_audit SET details = 'not json' "
                                        "WHERE seq = 3"),
    ("details not an object", {"sqlite", "postgresql"}, 3,
     "UPDATE lifecycle_audit SET details = '[1, 2]' WHERE seq = 3"),
    ("bad timestamp", {"sqlite"}, 3, "UPDATE lifecycle_audit SET occurred_at = 'yesterday' "
                                     "WHERE seq = 3"),
    ("infinite timestamp", {"postgresql"}, 3,
     "UPDATE lifecycle_audit SET occurred_at = 'infinity' WHERE seq = 3"),
    ("text seq", {"sqlite"}, ROWS, f"UPDATE lifecycle_audit SET seq = 'five' WHERE seq = {ROWS}"),
    ("text pid", {"sqlite"}, 3, "UPDATE lifecycle_audit SET pid = 'x' WHERE seq = 3"),
    ("blob owner", {"sqlite"}, 3, "UPDATE lifecycle_audit SET owner = x'ff' WHERE seq = 3"),
    ("owner not UTF-8", {"sqlite"}, 3,
     "UPDATE lifecycle_audit SET owner = CAST(x'ff' AS TEXT) WHERE seq = 3"),
    ("unknown outcome", {"sqlite", "postgresql"}, 3,
     "UPDATE lifecycle_audit SET outcome = 'maybe' WHERE seq = 3"),
    ("NULL where not expected", {"sqlite", "postgresql"}, 3,
     "UPDATE lifecycle_audit SET correlation_id = NULL WHERE seq = 3"),
    # Python's JSON parser recurses: this depth raises RecursionError, not ValueError.
    ("details nested too deeply", {"sqlite"}, 3,
     "UPDATE lifecycle_audit SET details = '" + '{"a":' * 100_000 + "1" + "}" * 100_000
     + "' WHERE seq = 3"),
]


def damage(url: str, sql: str) -> None:
    with raw(url) as connection:
        disable_triggers(connection)
        if connection.dialect.name == "sqlite":
            connection.exec_driver_sql("PRAGMA ignore_check_constraints = ON")
            # A NOT NULL column cannot be altered in SQLite: recreate the table without them,
            # as a tamperer with write access could.
            connection.exec_driver_sql("ALTER TABLE lifecycle_audit RENAME TO old_audit")
            columns = ", ".join(f"{c.name} {c.type.compile(connection.dialect)}"
                                for c in AuditBase.metadata.tables["lifecycle_audit"].columns)
            connection.exec_driver_sql(f"CREATE TABLE lifecycle_audit ({columns})")
            connection.exec_driver_sql("INSERT INTO lifecycle_audit SELECT * FROM old_audit")
            connection.exec_driver_sql("DROP TABLE old_audit")
        else:
            (check,) = connection.exec_driver_sql(
                "SELECT conname FROM pg_constraint WHERE contype = 'c' AND "
                "conrelid = 'lifecycle_audit'::regclass").scalars()
            connection.exec_driver_sql(f'ALTER TABLE lifecycle_audit DROP CONSTRAINT "{check}"')
            connection.exec_driver_sql("ALTER TABLE lifecycle_audit ALTER COLUMN correlation_id "
                                       "DROP NOT NULL")
        connection.exec_driver_sql(sql)


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        status = main(list(argv))
    return status, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("case", BAD_ROWS, ids=[case[0] for case in BAD_ROWS])
def test_an_undecodable_row_is_a_break_in_every_read(db_url, tmp_path, case):
    name, engines, row, sql = case
    dialect = sa.make_url(db_url).get_backend_name()
    if dialect not in engines:
        pytest.skip(f"{name}: the {dialect} column types refuse it")
    upgrade(db_url)
    records = history(ROWS)
    with raw(db_url) as connection:
        insert_rows(connection, records)
    damage(db_url, sql)
    with AuditLog.open(db_url) as log:
        report = log.verify()
        assert (report.ok, report.reason, report.first_bad_seq) == (False, "edited", row), report
        assert "cannot be decoded" in report.message
        with pytest.raises(AuditIntegrityError, match=r"\(edited\): the row cannot be decoded"):
            log.query()
        assert list(log.iter_records(limit=row - 1)) == records[:row - 1]
    status, out, _ = run("audit", "verify", "--db", db_url, "--json")
    assert status == 1 and json.loads(out)["first_bad_seq"] == row
    lifecycle = records[row - 1].lifecycle_id
    exports = tmp_path / "exports"
    exports.mkdir()
    for argv in (["report", "--format", "csv"], ["export", "--format", "jsonl", "-o",
                                                 str(exports / "out.jsonl")],
                 ["timeline", "--lifecycle", lifecycle]):
        status, _, err = run("audit", *argv, "--db", db_url)
        assert status == 1, argv
        assert "AuditIntegrityError" in err and "(edited)" in err and "Traceback" not in err
    assert not list(exports.iterdir())  # the failed export left nothing behind


def test_a_middle_row_with_a_text_seq_is_reported_missing_there(sqlite_url):
    upgrade(sqlite_url)
    with raw(sqlite_url) as connection:
        insert_rows(connection, history(ROWS))
    damage(sqlite_url, "UPDATE lifecycle_audit SET seq = 'three' WHERE seq = 3")
    with AuditLog.open(sqlite_url) as log:
        report = log.verify()
    assert (report.reason, report.first_bad_seq) == ("deleted", 3)


def test_rows_of_both_schema_versions_verify_and_edits_of_either_are_found(db_url):
    upgrade(db_url)
    old = [replace(record, schema_version=1) for record in (make_record(i) for i in range(3))]
    sealed, prev_hash = [], GENESIS_HASH
    for seq, record in enumerate([*old, make_record(3), make_record(4)], start=1):
        sealed.append(seal(record, seq=seq, prev_hash=prev_hash))
        prev_hash = sealed[-1].row_hash or ""
    assert [r.schema_version for r in sealed] == [1, 1, 1, 2, 2]
    legacy = sa.Table("lifecycle_audit", sa.MetaData(),
                      *(sa.Column(c.name, sa.JSON if c.name == "details" else c.type)
                        for c in AuditBase.metadata.tables["lifecycle_audit"].columns))
    with raw(db_url) as connection:  # version 1 rows, written as streamwarden 0.1 wrote them
        connection.execute(sa.insert(legacy), [
            {**vars(r), "details": dict(r.details)} for r in sealed[:3]])
        insert_rows(connection, sealed[3:])
    with AuditLog.open(db_url) as log:
        assert log.verify().ok and log.query() == stored(db_url)
        log.append(make_record(5))
        assert log.verify().rows == 6
    for seq in (2, 4):
        with raw(db_url) as connection:
            disable_triggers(connection)
            connection.execute(sa.text("UPDATE lifecycle_audit SET owner = 'mallory' "
                                       "WHERE seq = :seq"), {"seq": seq})
        with AuditLog.open(db_url) as log:
            report = log.verify()
        assert (report.reason, report.first_bad_seq) == ("edited", 2)


def _as_nobody(argv: list[str]) -> tuple[int, str]:
    """Run the CLI in a forked child that switched to the unprivileged user ``nobody``
    (every module it needs is imported here first: the interpreter's files are not readable
    by that user)."""
    nobody = pwd.getpwnam("nobody")
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover  (runs in the child)
        os.close(read)
        status = 99
        try:
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            out = io.StringIO()
            with redirect_stdout(out), redirect_stderr(out):
                status = main(argv)
            os.write(write, out.getvalue().encode())
        except BaseException:
            os.write(write, traceback.format_exc().encode())
        finally:
            os._exit(status)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        output = pipe.read().decode()
    _, status = os.waitpid(child, 0)
    return os.waitstatus_to_exitcode(status), output


@pytest.mark.skipif(sys.platform != "linux" or os.geteuid() != 0,
                    reason="switching to the user nobody needs root on Linux")
def test_sqlite_verify_as_a_user_without_write_access(tmp_path):
    # Outside tmp_path: pytest's base directory is closed to other users.
    holder = tempfile.TemporaryDirectory(prefix="sw-readonly-")
    os.chmod(holder.name, 0o755)  # owned by root: nobody cannot create -wal/-shm files here
    directory = Path(holder.name)
    url = f"sqlite:///{directory / 'audit.db'}"
    with open_log(url) as log:
        fill(log, 50)
    warm_up = f"sqlite:///{tmp_path / 'warm-up.db'}"
    with open_log(warm_up) as log:
        fill(log, 1)
    run("audit", "verify", "--db", warm_up)  # imports every module the child will need
    run("audit", "report", "--db", warm_up, "--format", "json")
    before = {path.name: path.read_bytes() for path in directory.iterdir()}
    try:
        assert set(before) == {"audit.db"}
        for db in (url, f"sqlite:///file:{directory / 'audit.db'}?mode=ro&uri=true"):
            status, output = _as_nobody(["audit", "verify", "--db", db])
            assert (status, output.splitlines()[0]) == (0, "OK: 50 rows, chain intact")
            status, output = _as_nobody(["audit", "report", "--db", db, "--format", "json"])
            assert status == 0 and len(json.loads(output)) == 50
        assert {path.name: path.read_bytes() for path in directory.iterdir()} == before
    finally:
        holder.cleanup()


def test_a_read_only_sqlite_url_never_writes(sqlite_url, tmp_path):
    with open_log(sqlite_url) as log:
        fill(log, 5)
    path = sa.make_url(sqlite_url).database or ""
    read_only = f"sqlite:///file:{path}?mode=ro&uri=true"
    with AuditLog.open(read_only) as log:
        assert log.verify().ok and len(log.query()) == 5
        with pytest.raises(Exception, match="read-only"):
            log.append(make_record())
    status, out, _ = run("audit", "verify", "--db", read_only)
    assert (status, out.splitlines()[0]) == (0, "OK: 5 rows, chain intact")


def test_postgresql_reads_with_a_select_only_role(postgresql_url, tmp_path):
    with open_log(postgresql_url) as log:
        fill(log, 20)
    url = sa.make_url(postgresql_url)
    role = f"sw_auditor_{os.getpid()}"
    schema = url.query["options"].split("=")[-1]
    statements = [f'CREATE ROLE "{role}" LOGIN', f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"',
                  f'GRANT SELECT ON "{schema}".lifecycle_audit, "{schema}".alembic_version '
                  f'TO "{role}"']
    with raw(postgresql_url) as connection:
        for statement in statements:
            connection.exec_driver_sql(statement)
    auditor = url.set(username=role).render_as_string(hide_password=False)
    try:
        status, out, err = run("audit", "verify", "--db", auditor)
        assert (status, out.splitlines()[0]) == (0, "OK: 20 rows, chain intact"), err
        status, out, _ = run("audit", "export", "--db", auditor, "--format", "csv", "-o", "-")
        assert status == 0 and len(out.splitlines()) == 21
        status, out, _ = run("audit", "report", "--db", auditor, "--format", "json")
        assert status == 0 and len(json.loads(out)) == 20
        with AuditLog.open(auditor) as log:  # the role cannot write, and is told so typed
            with pytest.raises(Exception, match=r"permission denied|read-only") as caught:
                log.append(make_record())
            assert type(caught.value).__module__ == "streamwarden.errors"
    finally:
        with raw(postgresql_url) as connection:
            connection.exec_driver_sql(f'DROP OWNED BY "{role}"')
            connection.exec_driver_sql(f'DROP ROLE "{role}"')
