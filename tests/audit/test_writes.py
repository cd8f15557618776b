"""Writes check what they chain onto, are bounded in time, never lose records silently in
batched mode, and keep their spool private and findable."""

from __future__ import annotations

import contextlib
import stat
import subprocess
import sys
import threading
import time
from dataclasses import replace

import pytest
import sqlalchemy as sa

from streamwarden import (
    AuditError,
    AuditIntegrityError,
    AuditRecord,
    AuditUnavailableError,
    InvalidInputError,
    Settings,
)
from streamwarden.audit import migrate
from streamwarden.audit.appender import begin_append
from streamwarden.audit.chain import seal
from streamwarden.audit.database import WRITE_OPTION, make_engine, parse_url
from streamwarden.audit.log import AuditLog
from streamwarden.audit.spool import default_spool_path, encode
from tests.audit.chain_data import insert_rows, make_record, raw, stored

BATCHED = Settings(audit_durability="batched")
BATCHED_SPOOL = Settings(audit_durability="batched", audit_failure_policy="spool")


def foreign_tail(url: str, style: str) -> int:
    """Three rows appended by the log, then one inserted behind its back (as the application
    role could: INSERT only). Returns the foreign row's seq."""
    with AuditLog.open(url) as log:
        last = [log.append(make_record(index)) for index in range(3)][-1]
    seq = {"overflow": 2**63 - 1, "jump": 10**9, "wrong hash": 4}[style]
    row = seal(make_record(9, owner="intruder"), seq=seq, prev_hash=last.row_hash or "")
    if style == "wrong hash":
        row = replace(row, row_hash="f" * 64)
    with raw(url) as connection:
        insert_rows(connection, [row])
    return seq


@pytest.mark.parametrize("style", ["overflow", "jump", "wrong hash"])
def test_a_foreign_tail_is_refused_naming_its_seq(db_url, style):
    migrate.upgrade(db_url)
    seq = foreign_tail(db_url, style)
    with AuditLog.open(db_url) as log:
        with pytest.raises(AuditIntegrityError, match=f"seq {seq}\\)") as caught:
            log.append(make_record(10))
        assert "refusing to append" in str(caught.value)
    assert len(stored(db_url)) == 4  # nothing was chained onto it


def test_database_refusals_are_audit_errors(db_url):
    migrate.upgrade(db_url)
    with AuditLog.open(db_url) as log:
        first = log.append(make_record())
        with pytest.raises(AuditError, match="refused the record") as caught:
            log.append(replace(first, seq=None))  # duplicate event id
        assert not isinstance(caught.value, InvalidInputError)
        with pytest.raises(InvalidInputError, match="outcome"):
            log.append(make_record(outcome="maybe"))  # type: ignore[arg-type]
    assert stored(db_url) == [first]


def test_batched_failures_surface_at_the_next_append_and_flush(db_url):
    migrate.upgrade(db_url)
    foreign_tail(db_url, "jump")
    log = AuditLog.open(db_url, settings=BATCHED)
    log.append(make_record(10))  # accepted; its batch fails in the writer
    with pytest.raises(AuditError, match=r"1 queued audit records failed.*refusing"):
        log.flush(timeout=10)
    log.append(make_record(11))
    deadline = time.monotonic() + 10
    with pytest.raises(AuditError, match="queued audit records failed"):
        while time.monotonic() < deadline:  # accepted until the failure is known
            log.append(make_record(12))
            time.sleep(0.02)
    with contextlib.suppress(AuditError):  # records queued meanwhile failed too: reported
        log.close()
    assert len(stored(db_url)) == 4


def test_batched_failures_are_spooled_under_the_spool_policy(db_url, tmp_path):
    migrate.upgrade(db_url)
    foreign_tail(db_url, "wrong hash")
    spool_path = tmp_path / "spool.jsonl"
    log = AuditLog.open(db_url, settings=BATCHED_SPOOL, spool_path=spool_path)
    sent = [log.append(make_record(index)) for index in range(3)]
    with pytest.raises(AuditError, match="records spooled, not committed"):
        log.flush(timeout=10)
    with pytest.raises(AuditError):
        log.close()  # the spool cannot be replayed onto a broken tail either
    assert [line for line in spool_path.read_bytes().splitlines()] == [
        encode(record).rstrip(b"\n") for record in sent]
    assert len(stored(db_url)) == 4


def test_the_loss_window_is_bounded_by_queue_size(db_url, outage):
    with AuditLog.open(outage.url, settings=BATCHED, queue_size=5) as log:
        log.append(make_record(0))
        log.flush()
        outage.down()
        for index in range(1, 6):
            log.append(make_record(index))
        started = time.monotonic()
        with pytest.raises(AuditUnavailableError, match=r"5 records not committed"):
            log.append(make_record(6))  # the sixth uncommitted record is refused
        assert time.monotonic() - started < 10
        outage.up()
        log.flush(timeout=30)
    assert len(stored(db_url)) == 6


FROZEN_WRITER = """
import os, signal, sys
from streamwarden.audit.appender import begin_append
from streamwarden.audit.database import WRITE_OPTION, make_engine, parse_url
url, bound = parse_url(sys.argv[1]), float(sys.argv[2])
engine = make_engine(url, lock_timeout=bound)
with engine.connect() as connection:
    connection.execution_options(**{WRITE_OPTION: True})
    with connection.begin():
        begin_append(connection, url, bound)  # inside the append transaction, lock held
        print("locked", flush=True)
        os.kill(os.getpid(), signal.SIGSTOP)
"""


def _stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as handle:
        return handle.read().rsplit(")", 1)[1].split()[0] == "T"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_frozen_writer_does_not_block_another_process_past_the_bound(db_url):
    migrate.upgrade(db_url)
    frozen_bound, bound = 2.0, 4.0
    child = subprocess.Popen([sys.executable, "-c", FROZEN_WRITER, db_url, str(frozen_bound)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "locked\n"
        deadline = time.monotonic() + 10
        while not _stopped(child.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _stopped(child.pid)
        with AuditLog.open(db_url, lock_timeout=bound) as log:
            started = time.monotonic()
            if sa.make_url(db_url).get_backend_name() == "sqlite":
                # No server can end a frozen SQLite writer: the wait ends, typed, at the bound.
                with pytest.raises(AuditUnavailableError, match="locked"):
                    log.append(make_record())
                elapsed = time.monotonic() - started
                assert bound - 0.5 < elapsed < bound + 2, elapsed
                assert stored(db_url) == []
            else:
                # The server ends the frozen session after half its bound; the lock is free.
                appended = log.append(make_record())
                elapsed = time.monotonic() - started
                assert elapsed < bound, elapsed
                assert stored(db_url) == [appended]
    finally:
        child.kill()
        child.wait(10)


def test_the_default_spool_is_private_stable_and_a_leftover_is_reported(
        db_url, outage, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.chdir(tmp_path)
    settings = Settings(audit_failure_policy="spool")
    with AuditLog.open(outage.url, settings=settings) as log:
        expected = default_spool_path(sa.make_url(outage.url))
        assert log.spool_path == expected.absolute()
        assert expected.parent == tmp_path / "state" / "streamwarden" / "spool"
        outage.down()
        spooled = log.append(make_record())
        assert spooled.seq is None
    assert stat.S_IMODE(expected.stat().st_mode) == 0o600
    assert stat.S_IMODE(expected.parent.stat().st_mode) == 0o700
    outage.up()
    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.chdir(other)  # another working directory finds the same spool
    with AuditLog.open(outage.url, read_only=True) as reader:
        assert reader.leftover_spool_records == 1 and expected.stat().st_size > 0
    assert "audit.spool_leftover" in caplog.text and "records=1" in caplog.text
    with AuditLog.open(outage.url, settings=settings) as log:
        assert log.leftover_spool_records == 1
    assert [r.event_id for r in stored(db_url)] == [spooled.event_id]
    assert expected.read_bytes() == b""


def test_a_bad_lock_timeout_is_refused(sqlite_url):
    with pytest.raises(InvalidInputError, match="lock_timeout"):
        AuditLog.open(sqlite_url, lock_timeout=0)


FOREIGN_WRITER = """
import sys
from dataclasses import replace
from streamwarden.audit.chain import seal
from streamwarden.audit.log import AuditLog
from tests.audit.chain_data import insert_rows, make_record, raw
url, style, prev = sys.argv[1], sys.argv[2], sys.argv[3]
if style == "honest":
    with AuditLog.open(url) as log:
        log.append(make_record(7, owner="other process"))
else:
    row = replace(seal(make_record(9, owner="intruder"), seq=3, prev_hash=prev),
                  row_hash="f" * 64)
    with raw(url) as connection:
        insert_rows(connection, [row])
"""


def _tail_reads(log: AuditLog) -> list[str]:
    statements: list[str] = []
    sa.event.listen(log._appends, "before_cursor_execute",
                    lambda _c, _cur, sql, *_rest: statements.append(sql)
                    if "ORDER BY lifecycle_audit.seq DESC" in sql else None)
    return statements


@pytest.mark.parametrize("style", ["honest", "foreign"])
def test_a_write_by_another_process_makes_the_appender_check_the_tail_again(db_url, style):
    migrate.upgrade(db_url)
    with AuditLog.open(db_url) as log:
        log.append(make_record(0))
        second = log.append(make_record(1))  # the log trusts the tail it left
        subprocess.run([sys.executable, "-c", FOREIGN_WRITER, db_url, style,
                        second.row_hash or ""], check=True, timeout=60)
        if style == "foreign":
            with pytest.raises(AuditIntegrityError, match=r"seq 3\)"):
                log.append(make_record(2))
        else:
            assert log.append(make_record(2)).seq == 4
            assert log.verify().ok
    assert [row.owner for row in stored(db_url)][2] in ("other process", "intruder")


def test_sqlite_skips_the_tail_read_while_no_other_connection_wrote(sqlite_url):
    migrate.upgrade(sqlite_url)
    with AuditLog.open(sqlite_url) as log:
        reads = _tail_reads(log)
        log.append(make_record(0))
        assert len(reads) == 1  # the first append reads the tail
        for index in range(1, 4):
            log.append(make_record(index))
        assert len(reads) == 1  # the log's own commits leave it unchanged
        with raw(sqlite_url) as connection:  # another connection commits
            connection.execute(sa.text("CREATE TABLE unrelated (x INTEGER)"))
        log.append(make_record(4))
        assert len(reads) == 2
        assert log.verify().ok and log.verify().rows == 5


def test_postgresql_checks_its_own_tail_in_the_insert(postgresql_url):
    migrate.upgrade(postgresql_url)
    with AuditLog.open(postgresql_url) as log:
        reads = _tail_reads(log)
        log.append(make_record(0))
        assert len(reads) == 1  # the first append reads the tail
        for index in range(1, 4):
            log.append(make_record(index))
        assert len(reads) == 1  # each insert checked that the log's last row was the tail
        subprocess.run([sys.executable, "-c", FOREIGN_WRITER, postgresql_url, "honest", ""],
                       check=True, timeout=60)
        assert log.append(make_record(4)).seq == 6  # refused by the check: tail read again
        assert len(reads) == 3
        assert log.verify().ok and log.verify().rows == 6


def test_a_row_added_while_an_append_waits_for_the_lock_is_chained_after(postgresql_url):
    """The single-statement append after a known tail may check the tail as it was before
    the statement waited for the chain lock; the row another writer added meanwhile holds
    the new row's seq, and the append is made again after it (no refusal, no fork)."""
    migrate.upgrade(postgresql_url)
    url = parse_url(postgresql_url)
    engine = make_engine(url)
    admin = sa.create_engine(postgresql_url, poolclass=sa.pool.NullPool)
    try:
        with AuditLog.open(postgresql_url) as log:
            first = log.append(make_record(0))  # the log now knows the tail: seq 1
            other = seal(make_record(1), seq=2, prev_hash=first.row_hash or "")
            result: dict[str, object] = {}
            with engine.connect() as connection:
                connection.execution_options(**{WRITE_OPTION: True})
                with connection.begin():
                    begin_append(connection, url)  # another writer holds the chain lock
                    insert_rows(connection, [other])
                    waiter = threading.Thread(
                        target=lambda: result.update(record=log.append(make_record(2))))
                    waiter.start()
                    deadline = time.monotonic() + 10
                    while time.monotonic() < deadline and not _waiting_for_advisory(admin):
                        time.sleep(0.01)
                    assert _waiting_for_advisory(admin)
                waiter.join(10)
            appended = result["record"]
            assert isinstance(appended, AuditRecord)
            assert (appended.seq, appended.prev_hash) == (3, other.row_hash)
            assert log.verify().ok
    finally:
        engine.dispose()
        admin.dispose()
    assert [r.seq for r in stored(postgresql_url)] == [1, 2, 3]


def _waiting_for_advisory(admin: sa.Engine) -> bool:
    with admin.connect() as connection:
        return bool(connection.execute(sa.text(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'advisory'")).scalar())


def test_an_append_whose_pooled_connection_was_lost_goes_through(postgresql_url):
    """Appends test no pooled connection before use: one the server ended since (a restart,
    an administrator) fails before COMMIT, and the append is made again on a fresh one."""
    name = f"sw-lost-{time.monotonic_ns()}"
    url = f"{postgresql_url}&application_name={name}"
    migrate.upgrade(url)
    admin = sa.create_engine(postgresql_url, poolclass=sa.pool.NullPool)
    try:
        with AuditLog.open(url) as log:
            first = log.append(make_record(0))
            assert _end_sessions(admin, name) >= 1  # the log's idle pooled connections
            second = log.append(make_record(1))
            assert (second.seq, second.prev_hash) == (2, first.row_hash)
            assert _end_sessions(admin, name) >= 1
            assert log.verify().ok  # reads test their pooled connections first
    finally:
        admin.dispose()
    assert [r.seq for r in stored(postgresql_url)] == [1, 2]


def _end_sessions(admin: sa.Engine, name: str) -> int:
    """End every session named ``name``; wait until the server has let them go."""
    sessions = "SELECT pid FROM pg_stat_activity WHERE application_name = :name"
    with admin.connect() as connection:
        ended = len(connection.execute(sa.text(
            f"SELECT pg_terminate_backend(pid) FROM ({sessions}) AS s"), {"name": name}).all())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with admin.connect() as connection:
            if not connection.execute(sa.text(sessions), {"name": name}).first():
                return ended
        time.sleep(0.02)
    raise AssertionError(f"sessions {name} still there after 10 s")
