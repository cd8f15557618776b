"""The parallel verify of SQLite files: the same report as the serial walk, on real files.

Tables are small and the threshold is forced to 0, so that every test takes the parallel path
(checked through :func:`verify_parallel`, which returns None whenever the serial walk must
decide).
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from streamwarden import AuditError
from streamwarden.audit import _parallel_verify as parallel
from streamwarden.audit import _verify_worker, database, models, verify
from streamwarden.audit.chain import RAW_FIELDS, V2_FORMAT, raw_hash, raw_row
from streamwarden.audit.log import AuditLog
from streamwarden.audit.migrate import upgrade
from streamwarden.audit.verify import VerifyReport, verify_records, verify_rows
from tests.audit.anchored import anchored_trail, behind_the_triggers, replace_table, rows
from tests.audit.chain_data import (
    disable_triggers,
    history,
    insert_rows,
    make_record,
    raw,
    seal_all,
)
from tests.audit.tampering import Tamper
from tests.cli_run import run, usage_error

ROWS = 600
WORKERS = 2
FAST = {"workers": WORKERS, "parallel_min_rows": 0}
NOW = datetime.now(UTC)  # one clock for both walks of a trail: the same checkpoint age


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file holding an intact chain of :data:`ROWS` records."""
    path = tmp_path_factory.mktemp("parallel") / "template.db"
    url = f"sqlite:///{path}"
    upgrade(url)
    with raw(url) as connection:
        insert_rows(connection, history(ROWS))
    return path


@pytest.fixture
def audit_file(template: Path, tmp_path: Path) -> Path:
    path = tmp_path / "audit.db"
    shutil.copy(template, path)
    return path


def _url(path: Path) -> str:
    return f"sqlite:///{path}"


def _boundary(path: Path) -> int:
    """The last seq of the parent's chunk (the row the next chunk starts after)."""
    chunks = parallel.plan(str(path), WORKERS, 0)
    assert chunks is not None
    return chunks[1].after


def _damage(path: Path, sql: str) -> None:
    """Run ``sql`` on the file with the append-only triggers off."""
    with raw(_url(path)) as connection:
        disable_triggers(connection)
        connection.exec_driver_sql(sql)


def _both(path: Path, url: str | None = None) -> tuple[VerifyReport, VerifyReport]:
    with AuditLog.open(url or _url(path)) as log:
        return log.verify(**FAST), log.verify(workers=1)


def test_an_intact_chain_is_verified_in_parallel(audit_file):
    found = parallel.verify_parallel(str(audit_file), workers=3, min_rows=0)
    assert found is not None
    report, (seq, row_hash) = found
    assert report == VerifyReport(ok=True, rows=ROWS, message=f"{ROWS} rows, chain intact")
    assert seq == ROWS and isinstance(row_hash, str)
    fast, serial = _both(audit_file)
    assert fast == serial == report


def _tamper(kind: str, k: int) -> Tamper:
    if kind == "edit":
        return Tamper("edit", k, column="host", value="mallory")
    if kind == "delete":
        return Tamper("delete", k)
    if kind == "insert":
        fake = "ab" * 32
        return Tamper("insert", k, row=replace(make_record(7, owner="intruder"), seq=k,
                                               prev_hash=fake, row_hash=fake))
    return Tamper("swap", k, j=k + 1)


@pytest.mark.parametrize("where", ["first chunk", "boundary", "later chunk"])
@pytest.mark.parametrize("kind", ["edit", "delete", "insert", "swap", "undecodable"])
def test_a_break_anywhere_is_reported_as_the_serial_walk_reports_it(audit_file, kind, where):
    boundary = _boundary(audit_file)
    k = {"first chunk": boundary // 2, "boundary": boundary,
         "later chunk": (boundary + ROWS) // 2}[where]
    with raw(_url(audit_file)) as connection:
        disable_triggers(connection)
        if kind == "undecodable":
            connection.exec_driver_sql(f"UPDATE lifecycle_audit SET details = '[1' WHERE seq = {k}")
            expected = ("edited", k)
        else:
            tamper = _tamper(kind, k)
            tamper.apply_sql(connection)
            expected = tamper.expected
    assert parallel.verify_parallel(str(audit_file), workers=WORKERS, min_rows=0) is None
    with AuditLog.open(_url(audit_file)) as log:  # what verify(workers=2) then runs
        serial = log.verify(workers=1)
    assert (serial.ok, serial.reason, serial.first_bad_seq) == (False, *expected)


@pytest.mark.parametrize("keep", [10, 350, ROWS - 1])
def test_a_truncated_table_is_a_shorter_intact_chain(audit_file, keep):
    _damage(audit_file, f"DELETE FROM lifecycle_audit WHERE seq > {keep}")
    fast, serial = _both(audit_file)
    assert fast == serial and fast.ok and fast.rows == keep


def test_a_changed_row_hash_at_the_boundary_breaks_both_chunks_and_is_edited(audit_file):
    boundary = _boundary(audit_file)
    _damage(audit_file,
            f"UPDATE lifecycle_audit SET row_hash = '{'cd' * 32}' WHERE seq = {boundary}")
    fast, serial = _both(audit_file)
    assert fast == serial and (fast.reason, fast.first_bad_seq) == ("edited", boundary)


def test_chunks_that_do_not_join_fall_back_to_the_serial_walk(audit_file):
    """Each chunk intact on its own, the second chained to another history."""
    chunks = parallel.plan(str(audit_file), WORKERS, 0)
    assert chunks is not None and chunks[1].last is not None
    foreign = replace(chunks[1], last=(*chunks[1].last[:-1], "ef" * 32))
    assert not parallel._joins(parallel.walk_chunk(str(audit_file), chunks[0], None, 100),
                               foreign)
    assert parallel._joins(parallel.walk_chunk(str(audit_file), chunks[-1], None, 100), None)


def test_tables_the_plan_does_not_split(audit_file, tmp_path):
    path = str(audit_file)
    assert parallel.plan(path, 1, 0) is None  # one worker
    assert parallel.plan(path, WORKERS, ROWS + 1) is None  # below the threshold
    assert parallel.plan(str(tmp_path / "missing.db"), WORKERS, 0) is None
    empty = tmp_path / "empty.db"
    upgrade(_url(empty))
    assert parallel.plan(str(empty), WORKERS, 0) is None
    with raw(_url(empty)) as connection:  # numbered from 2: the serial walk must say why
        insert_rows(connection, [replace(r, seq=(r.seq or 0) + 1) for r in history(3)])
    assert parallel.plan(str(empty), WORKERS, 0) is None
    whole = parallel.Chunk(after=-1, until=None, last=None)
    assert parallel.walk_chunk(str(empty), whole, None, 100) == parallel.ChunkResult(
        ok=False, rows=2)  # row 2 where 1 belongs, and the row after it: no row intact
    missing = str(tmp_path / "missing.db")
    assert parallel.walk_chunk(missing, whole, None, 100) == parallel.ChunkResult(
        ok=False, rows=0)
    with AuditLog.open(_url(empty)) as log:
        assert log.verify(**FAST).reason == "deleted"
    with raw(_url(audit_file)) as connection:
        connection.exec_driver_sql("DROP TABLE lifecycle_audit")
    assert parallel.plan(path, WORKERS, 0) is None  # a read error: the serial walk reports it


def test_a_row_missing_at_the_boundary_is_left_to_the_serial_walk(audit_file):
    boundary = _boundary(audit_file)
    _damage(audit_file, f"DELETE FROM lifecycle_audit WHERE seq = {boundary}")
    assert parallel.plan(str(audit_file), WORKERS, 0) is None
    fast, serial = _both(audit_file)
    assert fast == serial and (fast.reason, fast.first_bad_seq) == ("deleted", boundary)


def test_a_row_that_is_not_utf8_is_left_to_the_serial_walk(audit_file):
    boundary = _boundary(audit_file)
    _damage(audit_file,
            f"UPDATE lifecycle_audit SET host = CAST(X'ff' AS TEXT) WHERE seq = {boundary + 5}")
    chunks = parallel.plan(str(audit_file), WORKERS, 0)
    assert chunks is not None
    assert parallel.walk_chunk(str(audit_file), chunks[1], None, 100) == parallel.ChunkResult(
        ok=False, rows=0)
    fast, serial = _both(audit_file)
    assert fast == serial and (fast.reason, fast.first_bad_seq) == ("edited", boundary + 5)


def test_progress_counts_rows_verified_in_order_and_the_total_once(audit_file):
    seen: list[int] = []
    found = parallel.verify_parallel(str(audit_file), workers=3, min_rows=0,
                                     progress=seen.append, progress_every=100)
    assert found is not None and seen == list(range(100, ROWS + 1, 100))
    seen.clear()
    with AuditLog.open(_url(audit_file)) as log:
        assert log.verify(progress=seen.append, **FAST).ok
    assert seen == [ROWS]


def test_progress_stays_monotone_when_the_serial_walk_takes_over(audit_file):
    """A break in the last chunk: the parallel phase reports the first chunk's rows, then the
    serial walk counts from the start again; the caller sees one increasing series."""
    later = (_boundary(audit_file) + ROWS) // 2
    with raw(_url(audit_file)) as connection:
        disable_triggers(connection)
        _tamper("edit", later).apply_sql(connection)
    seen: list[int] = []
    watched = parallel.Monotone(seen.append)
    assert parallel.verify_parallel(str(audit_file), workers=WORKERS, min_rows=0,
                                    progress=watched, progress_every=100) is None
    before = list(seen)
    assert before and before[-1] <= later
    with AuditLog.open(_url(audit_file)) as log:
        pages = log._raw_pages()
        report = verify_rows(pages, progress=watched, progress_every=100)
    assert seen == sorted(set(seen)) and seen[-1] == report.rows == later + 1
    assert seen[:len(before)] == before


def test_a_read_only_file_is_verified_in_parallel_without_writing(audit_file):
    uri = f"sqlite:///file:{audit_file}?mode=ro&uri=true"
    before = audit_file.read_bytes()
    fast, serial = _both(audit_file, uri)
    assert fast == serial and fast.ok and fast.rows == ROWS
    audit_file.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    audit_file.parent.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        assert parallel.verify_parallel(str(audit_file), workers=WORKERS, min_rows=0)
        with AuditLog.open(_url(audit_file), read_only=True) as log:
            assert log.verify(**FAST) == fast
    finally:
        audit_file.parent.chmod(stat.S_IRWXU)
        audit_file.chmod(stat.S_IRUSR | stat.S_IWUSR)
    assert audit_file.read_bytes() == before


def _children() -> list[int]:
    listing = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children")
    return [int(pid) for pid in listing.read_text().split()]


needs_proc = pytest.mark.skipif(not Path("/proc/self/task").exists(),
                                reason="lists child processes through /proc")


@needs_proc
def test_a_silent_worker_is_an_audit_error_and_is_reaped(audit_file):
    before = _children()
    with pytest.raises(AuditError, match="sent nothing for"):
        parallel.verify_parallel(str(audit_file), workers=3, min_rows=0, timeout=0.001)
    assert _children() == before


@needs_proc
def test_a_worker_that_dies_is_an_audit_error_and_is_reaped(audit_file):
    before = set(_children())

    def kill_workers(_rows: int) -> None:
        for pid in set(_children()) - before:
            os.kill(pid, signal.SIGKILL)

    with pytest.raises(AuditError, match=r"died \(exit status -9\)"):
        parallel.verify_parallel(str(audit_file), workers=WORKERS, min_rows=0,
                                 progress=kill_workers, progress_every=1)
    assert set(_children()) == before


def test_without_an_interpreter_to_start_verify_stays_serial(audit_file, monkeypatch):
    monkeypatch.setattr(parallel.sys, "frozen", True, raising=False)
    assert parallel.verify_parallel(str(audit_file), workers=WORKERS, min_rows=0) is None
    monkeypatch.delattr(parallel.sys, "frozen")
    monkeypatch.setattr(parallel.sys, "executable", "")
    assert parallel.verify_parallel(str(audit_file), workers=WORKERS, min_rows=0) is None
    with AuditLog.open(_url(audit_file)) as log:
        assert log.verify(**FAST).ok


def test_a_worker_that_cannot_start_is_an_audit_error(audit_file, monkeypatch):
    monkeypatch.setattr(parallel.sys, "executable", str(audit_file.parent / "no-python"))
    with pytest.raises(AuditError, match="cannot start a verify worker"):
        parallel.verify_parallel(str(audit_file), workers=WORKERS, min_rows=0)


def test_checkpoints_verify_in_parallel_and_still_catch_a_rewrite(sqlite_url, tmp_path):
    trail = anchored_trail(sqlite_url, tmp_path)
    fast, serial = trail.verify(now=NOW, **FAST), trail.verify(now=NOW, workers=1)
    assert fast == serial and fast.ok and fast.head_seq == 35
    assert fast.head_hash == rows(trail.url)[-1].row_hash
    records = rows(trail.url)
    records[11] = replace(records[11], owner="mallory")  # row 12, re-sealed: chain intact
    replace_table(trail.url, seal_all(records))
    fast, serial = trail.verify(now=NOW, **FAST), trail.verify(now=NOW, workers=1)
    assert fast == serial and (fast.reason, fast.first_bad_seq) == ("rewritten", 20)
    with behind_the_triggers(trail.url) as connection:
        connection.exec_driver_sql("DELETE FROM lifecycle_audit WHERE seq > 25")
    fast, serial = trail.verify(now=NOW, **FAST), trail.verify(now=NOW, workers=1)
    assert fast == serial and (fast.reason, fast.first_bad_seq) == ("rewritten", 20)


def test_checkpoints_find_truncation_in_parallel(sqlite_url, tmp_path):
    trail = anchored_trail(sqlite_url, tmp_path)
    with behind_the_triggers(trail.url) as connection:
        connection.exec_driver_sql("DELETE FROM lifecycle_audit WHERE seq > 25")
    seen: list[int] = []
    fast = trail.verify(progress=seen.append, now=NOW, **FAST)
    assert fast == trail.verify(now=NOW, workers=1)
    assert (fast.reason, fast.first_bad_seq) == ("truncated", 26) and seen == [25]


DEEP = 100_000


def test_details_nested_too_deep_for_the_parser_are_an_edit(sqlite_url):
    """Row 2's details are a JSON object nested 100,000 deep, sealed with a correct hash:
    json.loads raises RecursionError, which must be a break, not a traceback."""
    upgrade(sqlite_url)
    first, second = history(2)
    row = dict(zip(RAW_FIELDS, raw_row(second), strict=True))
    row["details"] = '{"a":' * DEEP + "1" + "}" * DEEP
    row["row_hash"] = raw_hash(tuple(row.values()))
    with raw(sqlite_url) as connection:
        insert_rows(connection, [first])
        connection.execute(sa.text(f"INSERT INTO lifecycle_audit ({', '.join(row)}) "
                                   f"VALUES ({', '.join(':' + name for name in row)})"), row)
    with AuditLog.open(sqlite_url) as log:
        report = log.verify(workers=1)
    assert (report.ok, report.reason, report.first_bad_seq) == (False, "edited", 2)
    assert "nested too deeply" in report.message


def test_records_whose_details_nest_too_deep_are_an_edit():
    first, second = history(2)
    deep: dict[str, object] = {}
    inner = deep
    for _ in range(DEEP):
        inner["a"] = inner = {}
    report = verify_records([first, replace(second, details=deep)])
    assert (report.ok, report.reason, report.first_bad_seq) == (False, "edited", 2)


def test_the_worker_side_constants_match_the_models_and_the_database():
    """The worker and verify modules spell these out to import no SQLAlchemy."""
    assert models.TABLE_NAME == _verify_worker.TABLE
    assert int(database.LOCK_TIMEOUT * 1000) == _verify_worker.BUSY_TIMEOUT_MS
    assert tuple(frozenset(types) for types in models.RAW_TYPES) == verify._ALLOWED


def test_the_cli_takes_a_worker_count(audit_file, capsys, monkeypatch):
    monkeypatch.setattr(parallel, "PARALLEL_MIN_ROWS", 0)  # this small file goes parallel
    status, out, _ = run(capsys, "audit", "verify", "--db", _url(audit_file), "--workers", "2")
    assert status == 0 and out.startswith(f"OK: {ROWS} rows, chain intact")
    with raw(_url(audit_file)) as connection:
        disable_triggers(connection)
        _tamper("edit", ROWS - 5).apply_sql(connection)
    status, out, _ = run(capsys, "audit", "verify", "--db", _url(audit_file), "--workers", "2")
    assert status == 1 and f"seq {ROWS - 5} (edited)" in out
    assert "--workers" in usage_error(capsys, "audit", "verify", "--workers", "0")


_TEXTS = st.one_of(st.text(max_size=6), st.sampled_from(["", "'", '"', "\\", "a'b\"c", "é",
                                                         "\x1f", "\x7f", "\t", "plain"]))


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_the_page_format_gives_each_row_the_v2_text(data):
    """verify hashes a page with a format chosen from its columns: the same text as
    V2_FORMAT, whatever the values."""
    count = data.draw(st.integers(1, 4))
    columns = []
    for types in verify._ALLOWED:
        values = st.one_of(*(
            st.integers(-(2**63), 2**63 - 1) if kind is int else _TEXTS if kind is str
            else st.none() for kind in types))
        if data.draw(st.booleans()):  # a column of one value: all ints, texts or NULLs
            values = st.just(data.draw(values))
        columns.append(data.draw(st.lists(values, min_size=count, max_size=count)))
    page = list(zip(*columns, strict=True))
    types = [set(map(type, column)) for column in columns]
    form = verify._page_format(columns, types)
    assert [form(row) for row in page] == [V2_FORMAT % row for row in page]


def test_chunks_of_several_pages(tmp_path):
    """Each chunk is read a page (1,000 rows) at a time."""
    url = _url(tmp_path / "pages.db")
    upgrade(url)
    with raw(url) as connection:
        insert_rows(connection, history(2500))
    path = str(tmp_path / "pages.db")
    found = parallel.verify_parallel(path, workers=WORKERS, min_rows=0)
    assert found is not None and found[0].rows == 2500 and found[1][0] == 2500
