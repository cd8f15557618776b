"""verify: an untouched chain verifies; any single change behind the triggers' back is found,
with the right sequence number and reason.

The pure tests tamper with lists of records; the SQL test tampers with the table itself, after
switching the append-only triggers off (SQLite: DROP TRIGGER; PostgreSQL: ALTER TABLE ...
DISABLE TRIGGER USER), and verifies through AuditLog.verify.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamwarden import AuditIntegrityError
from streamwarden.audit.chain import GENESIS_HASH, seal
from streamwarden.audit.log import AuditLog
from streamwarden.audit.migrate import upgrade
from streamwarden.audit.verify import VerifyReport, verify_records
from tests.audit.chain_data import disable_triggers, history, insert_rows, make_record, raw
from tests.audit.tampering import Tamper, tampers

HISTORIES = st.integers(2, 30).map(history)
MIGRATED: set[str] = set()


@given(HISTORIES)
def test_an_untouched_history_verifies(records):
    report = verify_records(records)
    assert report == VerifyReport(ok=True, rows=len(records),
                                  message=f"{len(records)} rows, chain intact")
    report.raise_if_broken()


@settings(max_examples=300)
@given(st.data())
def test_any_single_change_is_found_at_the_right_seq(data):
    records = data.draw(HISTORIES)
    tamper = data.draw(tampers(records))
    report = verify_records(tamper.apply(records))
    assert (report.ok, report.reason, report.first_bad_seq) == (False, *tamper.expected), tamper
    with pytest.raises(AuditIntegrityError, match=f"seq {tamper.k} "):
        report.raise_if_broken()


@pytest.mark.parametrize(("records", "expected"), [
    ([], (True, None, None)),
    ([replace(history(1)[0], seq=0)], (False, "inserted", 0)),
    (history(3)[1:], (False, "deleted", 1)),
    ([history(1)[0], make_record()], (False, "inserted", 2)),  # unsealed record
])
def test_edge_cases(records, expected):
    report = verify_records(records)
    assert (report.ok, report.reason, report.first_bad_seq) == expected


EXAMPLE = history(6)


def _examples() -> list[tuple[str, Tamper]]:
    records = EXAMPLE
    forged = seal(make_record(50), seq=3, prev_hash=records[1].row_hash or "")
    made_up = replace(make_record(51), seq=3, prev_hash=records[1].row_hash, row_hash="f" * 64)
    return [
        ("content", Tamper("edit", 3, column="owner", value="mallory")),
        ("prev_hash", Tamper("edit", 3, column="prev_hash", value="e" * 64)),
        ("newest prev_hash", Tamper("edit", 6, column="prev_hash", value="e" * 64)),
        ("row_hash", Tamper("edit", 3, column="row_hash", value="e" * 64)),
        ("first row", Tamper("delete", 1)),
        ("forged", Tamper("insert", 3, row=forged)),
        ("made-up hash", Tamper("insert", 3, row=made_up)),
        ("copy", Tamper("insert", 3, row=replace(records[4], seq=3, event_id="copy"))),
        ("adjacent", Tamper("swap", 3, j=4)),
        ("far", Tamper("swap", 2, j=6)),
    ]


@pytest.mark.parametrize(("name", "tamper"), _examples(), ids=[n for n, _ in _examples()])
def test_each_rule_on_an_example(name, tamper):
    report = verify_records(tamper.apply(EXAMPLE))
    assert (report.reason, report.first_bad_seq) == tamper.expected, name


def test_a_sealed_row_chained_elsewhere_is_inserted():
    records = history(3)
    other = history(3)  # another chain: row 2 is self-consistent but follows another row 1
    report = verify_records([records[0], other[1], records[2]])
    assert (report.reason, report.first_bad_seq) == ("inserted", 2)
    assert "sealed but chained to another row's hash" in report.message


def test_gaps_name_every_missing_row():
    records = history(6)
    report = verify_records([*records[:2], *records[4:]])
    assert (report.reason, report.first_bad_seq) == ("deleted", 3)
    assert report.message == "row 3..4 missing before row 5"


def test_unencodable_content_counts_as_edited():
    records = history(2)
    broken = replace(records[1], details={"x": float("nan")})
    assert verify_records([records[0], broken]).reason == "edited"


def test_progress_is_reported_in_steps_and_at_the_end():
    seen: list[int] = []
    report = verify_records(history(25), progress=seen.append, progress_every=10)
    assert report.ok and seen == [10, 20, 25]
    seen.clear()
    verify_records(history(20), progress=seen.append, progress_every=10)
    assert seen == [10, 20]  # a total on a step is reported once
    seen.clear()
    verify_records([replace(r, prev_hash=GENESIS_HASH) for r in history(3)],
                   progress=seen.append)
    assert seen == [3]


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_changes_made_in_sql_behind_the_triggers_back_are_found(db_url, data):
    records = data.draw(st.integers(2, 30).map(history))
    tamper = data.draw(tampers(records))
    if db_url not in MIGRATED:  # once per database, not per example
        upgrade(db_url)
        MIGRATED.add(db_url)
    with raw(db_url) as connection:
        disable_triggers(connection)  # the tamperer's first step
        connection.exec_driver_sql("DELETE FROM lifecycle_audit")  # fresh table per example
        insert_rows(connection, records)
    with AuditLog.open(db_url) as log:
        assert log.verify().ok
        with raw(db_url) as connection:
            tamper.apply_sql(connection)
        report = log.verify()
    assert (report.ok, report.reason, report.first_bad_seq) == (False, *tamper.expected), tamper
