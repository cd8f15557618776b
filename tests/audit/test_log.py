"""AuditLog: opening, appending, reading, closing, and every kind of bad input."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from streamwarden import (
    AuditError,
    AuditSchemaError,
    AuditUnavailableError,
    InvalidInputError,
    Settings,
)
from streamwarden.audit import log as log_module
from streamwarden.audit import migrate
from streamwarden.audit.chain import GENESIS_HASH, link
from streamwarden.audit.database import redact_url, translate_error
from streamwarden.audit.log import AuditLog, default_spool_path
from tests.audit.chain_data import T0, make_record, raw, stored


def with_password(url: str, password: str = "hunter2-secret") -> str:
    """``url`` with a password (PostgreSQL's trust authentication ignores it)."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return url
    return parsed.set(password=password).render_as_string(hide_password=False)


def test_append_numbers_chains_and_commits(db_url):
    migrate.upgrade(db_url)
    with AuditLog.open(db_url) as log:
        appended = [log.append(make_record(index)) for index in range(3)]
        assert [record.seq for record in appended] == [1, 2, 3]
        assert appended[0].prev_hash == GENESIS_HASH
        for before, record in zip([None, *appended], appended, strict=False):
            assert record.prev_hash == (before.row_hash if before else GENESIS_HASH)
            assert record.row_hash == link(record, record.prev_hash or "")
        assert stored(db_url) == appended  # committed: visible to another connection
        assert log.verify().ok
    with AuditLog.open(db_url) as log:  # a later log continues the chain
        assert log.append(make_record(3)).seq == 4
        assert log.verify().rows == 4


def test_a_sealed_record_is_renumbered(db_url):
    migrate.upgrade(db_url)
    with AuditLog.open(db_url) as log:
        first = log.append(make_record())
        again = log.append(replace(first, event_id="other-event"))
    assert again.seq == 2 and again.prev_hash == first.row_hash


def test_a_new_sqlite_file_is_created_and_migrated(tmp_path):
    url = f"sqlite:///{tmp_path / 'new.db'}"
    with AuditLog.open(url) as log:
        log.append(make_record())
    assert migrate.current_revision(url) == migrate.head_revision()
    engine = sa.create_engine(url)
    with engine.connect() as connection:  # WAL mode persists in the file
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    engine.dispose()


def test_url_from_argument_settings_environment_or_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STREAMWARDEN_DB_URL", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    with AuditLog.open() as log:
        assert log.url == "sqlite+pysqlite:///./streamwarden-audit.db"
        assert log.spool_path.parent == tmp_path / "state" / "streamwarden" / "spool"
    assert (tmp_path / "streamwarden-audit.db").exists()
    monkeypatch.setenv("STREAMWARDEN_DB_URL", f"sqlite:///{tmp_path / 'env.db'}")
    with AuditLog.open() as log:
        assert log.url.endswith("env.db")
    settings = Settings(db_url=f"sqlite:///{tmp_path / 'settings.db'}")
    with AuditLog.open(settings=settings) as log:
        assert log.url.endswith("settings.db")
    with AuditLog.open(f"sqlite:///{tmp_path / 'arg.db'}", settings=settings) as log:
        assert log.url.endswith("arg.db")
    assert "settings.db" not in repr(settings)  # a URL may hold a password: not in repr


def test_the_url_is_redacted_everywhere(db_url):
    url = with_password(db_url)
    migrate.upgrade(url)
    with AuditLog.open(url) as log:
        assert "hunter2" not in log.url and "hunter2" not in repr(log)
        assert "hunter2" not in str(default_spool_path(sa.make_url(url)))
    assert redact_url("postgresql://u:pw@h:bad/db") == "postgresql://u:***@h:bad/db"


@pytest.mark.parametrize(("url", "match"), [
    ("not a url", "malformed database URL 'not a url'"),
    ("postgresql+psycopg://u:s3cret@host:bad/db", "malformed database URL"),
    ("mysql://u:s3cret@localhost/db", "unsupported database URL"),
    ("postgresql+asyncpg://u:s3cret@localhost/db", "unsupported database URL"),
    ("sqlite://", "needs a SQLite file"),
    ("sqlite:///:memory:", "needs a SQLite file"),
    ("   ", "non-empty string"),
])
def test_malformed_or_unsupported_urls_are_refused(url, match):
    with pytest.raises(InvalidInputError, match=match) as caught:
        AuditLog.open(url)
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize("url", [
    "postgresql+psycopg://postgres:s3cret@127.0.0.1:1/test",
    "postgresql://postgres:s3cret@127.0.0.1:1/test?connect_timeout=2",
])
def test_an_unreachable_server_is_reported_without_the_password(url):
    expected = r"127\.0\.0\.1:1/test.* is unavailable"
    with pytest.raises(AuditUnavailableError, match=expected) as caught:
        AuditLog.open(url)
    assert "s3cret" not in str(caught.value) and "***" in str(caught.value)
    for call in (migrate.current_revision, migrate.upgrade):
        with pytest.raises(AuditUnavailableError) as caught:
            call(url)
        assert "s3cret" not in str(caught.value)


def test_driver_messages_are_redacted_too():
    url = sa.make_url("postgresql+psycopg://u:s3cret@db.example/audit")
    error = sa.exc.OperationalError("SELECT 1", {}, Exception("auth failed for u:s3cret@db"))
    message = translate_error(error, url, "audit.append").message
    assert "s3cret" not in message and "unavailable" in message
    other = translate_error(sa.exc.ProgrammingError("x", {}, Exception("boom")), url, "op")
    assert type(other) is AuditError and "failed: boom" in other.message


def test_a_failing_migration_changes_nothing(db_url):
    with raw(db_url) as connection:  # a table of that name that the migration did not make
        connection.exec_driver_sql("CREATE TABLE lifecycle_audit (x INTEGER)")
    with pytest.raises(AuditError, match=r"failed: .*lifecycle_audit.* already exists"):
        migrate.upgrade(db_url)
    assert migrate.current_revision(db_url) is None


def test_a_busy_log_gives_up_after_a_bound(db_url, monkeypatch):
    migrate.upgrade(db_url)
    monkeypatch.setattr(log_module, "APPEND_WAIT", 0.05)
    with AuditLog.open(db_url) as log:
        log._lock.acquire()  # another thread stuck inside append
        try:
            with pytest.raises(AuditUnavailableError, match="busy"):
                log.append(make_record())
        finally:
            log._lock.release()


def test_a_database_behind_on_migrations_names_the_command(db_url):
    url = with_password(db_url)
    migrate.upgrade(url)
    migrate.downgrade(url, "base")  # SQLite: an existing file that is behind is not upgraded
    with pytest.raises(AuditSchemaError, match="streamwarden db upgrade --db") as caught:
        AuditLog.open(url)
    message = str(caught.value)
    assert "has no audit schema, behind the newest revision 0001" in message
    assert redact_url(url) in message and "hunter2" not in message


def test_an_empty_postgresql_schema_is_not_upgraded_behind_the_users_back(postgresql_url):
    with pytest.raises(AuditSchemaError, match="run `streamwarden db upgrade --db"):
        AuditLog.open(postgresql_url)
    assert migrate.current_revision(postgresql_url) is None


def test_a_table_dropped_under_an_open_log_is_a_schema_error(db_url):
    migrate.upgrade(db_url)
    with AuditLog.open(db_url) as log:
        log.append(make_record())
        migrate.downgrade(db_url, "base")
        with pytest.raises(AuditSchemaError, match="no audit table"):
            log.append(make_record())
        with pytest.raises(AuditSchemaError, match="streamwarden db upgrade"):
            log.query()


@pytest.mark.parametrize(("change", "match"), [
    ({"details": {"when": object()}}, "JSON-serialisable"),
    ({"details": {"x": float("inf")}}, "JSON-serialisable"),
    ({"occurred_at": datetime(2026, 1, 1)}, "timezone-aware"),
    ({"owner": "nul\x00byte"}, "NUL character"),
    ({"details": {"note": "lone \ud800 surrogate"}}, "details contains a NUL character or a "
                                                     "lone surrogate"),
    ({"pid": 2**63}, "pid is out of the 64-bit integer range"),
    ({"refs_after": -(2**63) - 1}, "refs_after is out of the 64-bit integer range"),
])
def test_bad_records_are_refused_and_nothing_is_written(db_url, change, match):
    migrate.upgrade(db_url)
    with AuditLog.open(db_url) as log:
        first = log.append(make_record())
        with pytest.raises(InvalidInputError, match=match):
            log.append(make_record(**change))
        assert stored(db_url) == [first]
        assert log.append(make_record()).prev_hash == first.row_hash  # the chain goes on


def test_not_a_record_and_duplicate_event_ids_are_refused(db_url):
    migrate.upgrade(db_url)
    with AuditLog.open(db_url) as log:
        first = log.append(make_record())
        with pytest.raises(InvalidInputError, match="expected an AuditRecord"):
            log.append({"event": "acquire"})  # type: ignore[arg-type]
        with pytest.raises(AuditError, match="refused the record") as caught:
            log.append(replace(first, seq=None))
        assert not isinstance(caught.value, InvalidInputError)
        assert stored(db_url) == [first]


def test_bad_sizes_are_refused(db_url):
    migrate.upgrade(db_url)
    with pytest.raises(InvalidInputError, match="batch_size"):
        AuditLog.open(db_url, batch_size=0)
    with AuditLog.open(db_url) as log:
        with pytest.raises(InvalidInputError, match="timeout"):
            log.flush(timeout=-1)
        with pytest.raises(InvalidInputError, match="batch_size"):
            log.iter_records(batch_size=0)


def test_query_and_iter_records_filter_and_page(db_url):
    migrate.upgrade(db_url)
    with AuditLog.open(db_url) as log:
        appended = [log.append(make_record(index)) for index in range(12)]
        assert log.query() == appended
        assert log.query(limit=5) == appended[:5]
        assert [r.seq for r in log.query(correlation_id="corr-1")] == [2, 6, 10]
        assert [r.seq for r in log.query(lifecycle_id="lc-0", kind="market_data")] == [1, 7]
        assert log.query(fingerprint="f" * 24, event="acquire", limit=2) == appended[:2]
        since, until = T0 + timedelta(microseconds=3), T0 + timedelta(microseconds=6)
        assert [r.seq for r in log.query(since=since, until=until)] == [4, 5, 6]
        assert list(log.iter_records(batch_size=5)) == appended  # three pages
        assert list(log.iter_records(batch_size=4, limit=6)) == appended[:6]
        assert list(log.iter_records(batch_size=3, correlation_id="corr-1", limit=2)) == [
            appended[1], appended[5]]
        assert log.query(correlation_id="nobody") == []
        with pytest.raises(InvalidInputError, match="kind"):
            log.query(kind="options")
        with pytest.raises(InvalidInputError, match="timezone-aware"):
            log.query(since=datetime(2026, 1, 1))


def test_verify_reports_progress(db_url):
    migrate.upgrade(db_url)
    seen: list[int] = []
    with AuditLog.open(db_url) as log:
        for index in range(3):
            log.append(make_record(index))
        report = log.verify(progress=seen.append)
    assert report.ok and report.rows == 3 and seen == [3]


def test_close_is_idempotent_and_final(db_url):
    migrate.upgrade(db_url)
    log = AuditLog.open(db_url)
    log.append(make_record())
    log.close()
    log.close()
    with pytest.raises(AuditError, match="closed"):
        log.append(make_record())
    with pytest.raises(AuditError, match="closed"):
        log.query()
    assert len(stored(db_url)) == 1


# PostgreSQL only: a locked SQLite database can still be read (WAL), so reads have no outage.
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_reading_an_unreachable_database_is_typed(db_url, outage):
    with AuditLog.open(outage.url) as log:
        log.append(make_record())
        outage.down()
        with pytest.raises(AuditUnavailableError, match="unavailable"):
            log.query()
        outage.up()
        assert len(log.query()) == 1


def test_raw_helper_sees_the_same_rows(db_url):
    migrate.upgrade(db_url)
    with AuditLog.open(db_url) as log:
        log.append(make_record())
    with raw(db_url) as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM lifecycle_audit").scalar() == 1
