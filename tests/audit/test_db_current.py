"""``streamwarden db current``: a check scripts can rely on. It creates and changes nothing, and
exits 0 only when the database is at the newest revision."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa

import streamwarden
from streamwarden.audit import migrate
from streamwarden.cli import main
from tests.audit.chain_data import raw, stored

NEWER_REVISION = '''"""A later revision (test only): changes nothing."""

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
'''


def current(capsys: pytest.CaptureFixture[str], url: str) -> tuple[int, str, str]:
    status = main(["db", "current", "--db", url])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def sqlite_file(url: str) -> Path | None:
    parsed = sa.make_url(url)
    return Path(parsed.database or "") if parsed.get_backend_name() == "sqlite" else None


def test_a_missing_sqlite_file_is_reported_and_not_created(sqlite_url, capsys):
    status, out, err = current(capsys, sqlite_url)
    assert status == 1 and out == ""
    assert "AuditUnavailableError: no audit database at" in err and "does not exist" in err
    path = sqlite_file(sqlite_url)
    assert path is not None and not path.exists()
    assert list(path.parent.iterdir()) == []  # no -wal or -shm either


def test_an_empty_database_is_not_current(db_url, capsys):
    path = sqlite_file(db_url)
    if path is not None:
        path.touch()  # an empty file is an empty SQLite database
    status, out, _ = current(capsys, db_url)
    assert status == 1
    assert "revision (empty), newest 0001: no audit schema yet: run `streamwarden db upgrade" in out
    assert migrate.current_revision(db_url) is None  # still empty: nothing was created
    if path is not None:
        assert path.stat().st_size == 0


def test_the_newest_revision_exits_0(db_url, capsys):
    migrate.upgrade(db_url)
    status, out, err = current(capsys, db_url)
    assert (status, err) == (0, "")
    assert out.endswith(": revision 0001, newest 0001: up to date\n")


def test_a_revision_this_version_does_not_know_exits_1(db_url, capsys):
    migrate.upgrade(db_url)
    with raw(db_url) as connection:
        connection.exec_driver_sql("UPDATE alembic_version SET version_num = 'f00dcafe'")
    status, out, _ = current(capsys, db_url)
    assert status == 1
    assert "revision f00dcafe, newest 0001: unknown to this version of streamwarden" in out
    assert "upgrade streamwarden" in out


@pytest.fixture
def newer_release(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The migrations of a later streamwarden: the packaged ones and a revision 0002.

    This version ships one revision, so no database can be behind it; pointing the migration
    scripts at a copy with one more revision makes a database at 0001 really behind.
    """
    scripts = tmp_path / "migrations"
    shutil.copytree(Path(streamwarden.__file__).parent / "migrations", scripts,
                    ignore=shutil.ignore_patterns("__pycache__"))
    (scripts / "versions" / "0002_later.py").write_text(NEWER_REVISION)
    monkeypatch.setattr(migrate, "SCRIPT_LOCATION", str(scripts))


def test_a_database_behind_exits_1_and_names_the_upgrade(db_url, capsys, newer_release):
    migrate.upgrade(db_url, "0001")
    status, out, _ = current(capsys, db_url)
    assert status == 1
    assert "revision 0001, newest 0002: behind: run `streamwarden db upgrade --db " in out
    assert main(["db", "upgrade", "--db", db_url]) == 0
    status, out, _ = current(capsys, db_url)
    assert status == 0 and "revision 0002, newest 0002: up to date" in out


def test_reading_the_revision_writes_nothing(db_url, capsys):
    migrate.upgrade(db_url)
    before = stored(db_url)
    path = sqlite_file(db_url)
    files = sorted(path.parent.iterdir()) if path is not None else []
    assert current(capsys, db_url)[0] == 0
    assert stored(db_url) == before
    if path is not None:
        assert sorted(path.parent.iterdir()) == files


def test_an_unreachable_postgresql_database_exits_1(postgresql_url, capsys):
    missing = sa.make_url(postgresql_url).set(database="sw_no_such_database")
    status, out, err = current(capsys, missing.render_as_string(hide_password=False))
    assert status == 1 and out == ""
    assert "AuditUnavailableError" in err and 'database "sw_no_such_database" does not exist' in err


def test_the_exit_statuses_are_in_the_help(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["db", "current", "--help"])
    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "without creating or changing anything" in text
    assert "Exit status, for scripts: 0 the database is at the newest revision; 1 it is not" in text
    assert "2 bad arguments" in text
