"""The tamper matrix: what an insider with write access to the database can do, and how
verification against signed checkpoints reports it, on SQLite and PostgreSQL.

The trail (tests/audit/anchored.py) has 35 rows and checkpoints at seq 10, 20 and 30. Each
attack is made behind the append-only triggers' back, and the triggers are put back
afterwards (an insider covers their tracks), except in the attack on the triggers themselves.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from datetime import timedelta

import pytest

from streamwarden.audit import migrate
from streamwarden.audit.chain import seal
from streamwarden.audit.checkpoints import CheckpointWriter
from streamwarden.audit.log import AuditLog
from streamwarden.audit.notes import Signer
from streamwarden.errors import AuditIntegrityError, CheckpointError
from tests.audit.anchored import (
    CHECKPOINT_SIZES,
    ROWS,
    Trail,
    anchored_trail,
    append,
    behind_the_triggers,
    replace_table,
    rows,
    writer,
)
from tests.audit.chain_data import disable_triggers, insert_rows, raw, seal_all
from tests.audit.histories import synthetic_records


@pytest.fixture
def trail(db_url, tmp_path) -> Trail:
    return anchored_trail(db_url, tmp_path)


def failure(report) -> tuple[str | None, int | None]:
    assert not report.ok
    return report.reason, report.first_bad_seq


def test_an_intact_trail_passes_and_reports_its_head_and_newest_checkpoint(trail):
    report = trail.verify()
    assert report.ok and report.rows == ROWS and report.head_seq == ROWS
    assert report.head_hash == rows(trail.url)[-1].row_hash
    assert (report.checkpoints, report.newest_size) == (3, 30)
    assert report.origin == "test.example/audit" and 0 <= report.newest_age_seconds < 60
    report.raise_if_broken()


def test_an_edit_resealed_with_the_chain_code_is_rewritten_at_the_next_checkpoint(trail):
    records = rows(trail.url)
    records[11] = replace(records[11], owner="mallory")  # row 12
    replace_table(trail.url, seal_all(records))
    report = trail.verify()
    assert failure(report) == ("rewritten", 20)
    assert "rows 11..20" in report.message and report.checkpoint.endswith(".checkpoint")
    with pytest.raises(AuditIntegrityError, match=r"at seq 20 \(rewritten\)"):
        report.raise_if_broken()


def test_an_edit_without_resealing_is_found_by_the_chain_itself(trail):
    with behind_the_triggers(trail.url) as connection:
        connection.exec_driver_sql("UPDATE lifecycle_audit SET owner = 'mallory' WHERE seq = 12")
    assert failure(trail.verify()) == ("edited", 12)


def test_delete_and_renumber_resealed_is_rewritten(trail):
    records = rows(trail.url)
    del records[11]
    replace_table(trail.url, seal_all(records))  # seal_all renumbers from 1
    assert failure(trail.verify()) == ("rewritten", 20)


def test_tail_truncation_before_the_newest_checkpoint_is_found(trail):
    with behind_the_triggers(trail.url) as connection:
        connection.exec_driver_sql("DELETE FROM lifecycle_audit WHERE seq > 25")
    report = trail.verify()
    assert failure(report) == ("truncated", 26)
    assert "ends at seq 25" in report.message and "covers seq 30" in report.message


def test_tail_truncation_after_the_newest_checkpoint_is_bounded_by_the_heartbeat(trail):
    with behind_the_triggers(trail.url) as connection:
        connection.exec_driver_sql("DELETE FROM lifecycle_audit WHERE seq > 31")
    # Not detectable by the checkpoints: the table still has every signed head...
    report = trail.verify()
    assert report.ok and report.head_seq == 31 and report.newest_size == 30
    # ...but the newest checkpoint's age is reported, and a bound on it fails verification
    # once the heartbeat should have signed a newer one.
    later = report.newest_time + timedelta(seconds=301)
    stale = trail.verify(max_age=300, now=later)
    assert failure(stale) == ("stale", None)
    assert "rows after seq 30 are not anchored" in stale.message
    assert trail.verify(max_age=300, now=report.newest_time + timedelta(seconds=299)).ok


def test_a_forged_consistent_history_is_rewritten_at_the_first_checkpoint(trail):
    forged = seal_all(replace(r, seq=None, prev_hash=None, row_hash=None, owner="forger")
                      for r in synthetic_records(ROWS))
    replace_table(trail.url, forged)
    assert failure(trail.verify()) == ("rewritten", 10)


def test_a_rollback_to_an_older_copy_is_truncated(trail):
    with AuditLog.open(trail.url) as log:
        log.write_checkpoint(writer(trail))  # covers 35
    older = rows(trail.url)[:32]  # a copy taken when the table had 32 rows
    replace_table(trail.url, older)
    report = trail.verify()
    assert failure(report) == ("truncated", 33)
    assert "rolled back" in report.message


def test_a_rollback_then_new_appends_is_rewritten(trail):
    with AuditLog.open(trail.url) as log:
        log.write_checkpoint(writer(trail))  # covers 35
    replace_table(trail.url, rows(trail.url)[:32])
    with AuditLog.open(trail.url) as log:  # the application carries on after the restore
        append(log, [replace(r, event_id=f"new-{r.event_id}") for r in
                     list(synthetic_records(10))])
    assert failure(trail.verify()) == ("rewritten", 35)


def test_an_empty_freshly_migrated_database_is_truncated(trail):
    migrate.downgrade(trail.url, "base")
    migrate.upgrade(trail.url)
    report = trail.verify()
    assert failure(report) == ("truncated", 1)
    assert "the table is empty" in report.message


def test_dropped_or_disabled_triggers_are_found(trail):
    with raw(trail.url) as connection:
        disable_triggers(connection)
    report = trail.verify()
    assert failure(report) == ("triggers_missing", None)
    assert "lifecycle_audit_no_" in report.message


def test_an_edited_checkpoint_file_fails_its_signature(trail):
    path = trail.checkpoint_files()[1]
    path.write_bytes(path.read_bytes().replace(b"\n20\n", b"\n19\n", 1))
    report = trail.verify()
    assert failure(report) == ("bad_signature", None) and report.checkpoint == str(path)


def test_a_checkpoint_deleted_from_the_middle_is_missing(trail):
    trail.checkpoint_files()[1].unlink()
    report = trail.verify()
    assert failure(report) == ("checkpoint_missing", None)
    assert "a checkpoint between them is missing" in report.message


def test_the_oldest_checkpoint_deleted_is_missing(trail):
    trail.checkpoint_files()[0].unlink()
    assert failure(trail.verify()) == ("checkpoint_missing", None)


def test_reordered_checkpoint_files_are_found(trail):
    first, second, _ = trail.checkpoint_files()
    spare = first.with_name("spare")
    shutil.move(first, spare)
    shutil.move(second, first)
    shutil.move(spare, second)
    report = trail.verify()
    assert failure(report) == ("checkpoint_reordered", None)


def test_a_wrong_public_key_verifies_nothing(trail):
    other = Signer.generate("test.example/audit")  # same name, another key
    with AuditLog.open(trail.url) as log:
        report = log.verify_checkpoints(trail.directory, [other.verifier])
    assert failure(report) == ("unknown_key", None)


def test_a_checkpoint_signed_by_an_attackers_key_is_not_trusted(trail):
    attacker = Signer.generate("attacker.example/audit")
    with AuditLog.open(trail.url) as log:
        with pytest.raises(CheckpointError) as raised:  # it cannot extend our directory...
            log.write_checkpoint(CheckpointWriter(trail.directory, [attacker]))
        assert raised.value.reason == "unknown_key"
    assert trail.verify().ok  # ...and nothing was written


def test_no_checkpoints_at_all_fails(trail):
    for path in trail.checkpoint_files():
        path.unlink()
    assert failure(trail.verify()) == ("no_checkpoints", None)


def test_the_writer_refuses_to_sign_a_rewritten_history(trail):
    records = rows(trail.url)
    records[3] = replace(records[3], owner="mallory")
    replace_table(trail.url, seal_all(records))
    before = trail.checkpoint_files()
    with AuditLog.open(trail.url) as log, pytest.raises(CheckpointError) as raised:
        log.write_checkpoint(writer(trail))
    assert raised.value.reason == "inconsistent"
    assert "row 30 no longer has the head" in raised.value.message
    assert trail.checkpoint_files() == before


def test_the_writer_refuses_rows_that_do_not_chain_on(trail):
    forged = seal(replace(rows(trail.url)[0], event_id="forged"), seq=ROWS + 1,
                  prev_hash="e" * 64)
    with behind_the_triggers(trail.url) as connection:
        insert_rows(connection, [forged])
    with AuditLog.open(trail.url) as log, pytest.raises(CheckpointError, match="row 36"):
        log.write_checkpoint(writer(trail))


def test_expect_head_without_checkpoints(trail):
    records = rows(trail.url)
    with AuditLog.open(trail.url) as log:
        assert log.verify_checkpoints(None, [], expect_head=(20, records[19].row_hash)).ok
        wrong = log.verify_checkpoints(None, [], expect_head=(20, "a" * 64))
        beyond = log.verify_checkpoints(None, [], expect_head=(99, "a" * 64))
    assert failure(wrong) == ("rewritten", 20) and failure(beyond) == ("truncated", 36)


def test_checkpoint_sizes_are_the_ones_written(trail):
    names = [path.name[:20] for path in trail.checkpoint_files()]
    assert [int(name) for name in names] == list(CHECKPOINT_SIZES)
