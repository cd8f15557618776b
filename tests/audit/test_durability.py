"""Durability modes (sync, batched) and failure policies (raise, spool) with a database that
goes away and comes back (see the ``outage`` fixture: a real network cut for PostgreSQL, a
held write lock for SQLite)."""

from __future__ import annotations

import fcntl
import threading
from dataclasses import replace

import pytest

from streamwarden import AuditError, AuditSchemaError, AuditUnavailableError, Settings
from streamwarden.audit import log as log_module
from streamwarden.audit import migrate
from streamwarden.audit import spool as spool_module
from streamwarden.audit.batching import BatchWriter
from streamwarden.audit.log import AuditLog
from streamwarden.audit.spool import Spool, encode
from tests.audit.chain_data import make_record, stored

BATCHED = Settings(audit_durability="batched")
SPOOL = Settings(audit_failure_policy="spool")
BATCHED_SPOOL = Settings(audit_durability="batched", audit_failure_policy="spool")


def event_ids(url: str) -> list[str]:
    return [record.event_id for record in stored(url)]


def verified(url: str) -> bool:
    with AuditLog.open(url) as log:
        return log.verify().ok


def test_sync_commits_before_append_returns(db_url):
    migrate.upgrade(db_url)
    with AuditLog.open(db_url) as log:
        for index in range(3):
            record = log.append(make_record(index))
            assert stored(db_url)[-1] == record


def test_batched_queues_then_commits_in_order_on_flush_and_close(db_url, tmp_path):
    migrate.upgrade(db_url)
    log = AuditLog.open(db_url, settings=BATCHED, batch_size=7, spool_path=tmp_path / "s")
    sent = [make_record(index) for index in range(40)]
    returned = [log.append(record) for record in sent]
    assert returned == sent and all(record.seq is None for record in returned)
    log.flush(timeout=10)
    assert event_ids(db_url) == [record.event_id for record in sent]
    more = [make_record(index) for index in range(15)]
    for record in more:
        log.append(record)
    log.close()  # drains
    log.close()
    assert event_ids(db_url) == [record.event_id for record in sent + more]
    assert verified(db_url)


def test_batched_refusals_are_reported_by_flush_and_the_rest_is_stored(db_url):
    migrate.upgrade(db_url)
    with AuditLog.open(db_url, settings=BATCHED) as log:
        first = make_record(0)
        log.append(first)
        log.flush()
        batch = [make_record(1), replace(first, owner="dup"), make_record(2)]
        for record in batch:  # the duplicate event id is only found by the database
            log.append(record)
        with pytest.raises(AuditError, match="1 queued audit records failed; the last: the "
                                             "audit database refused the record"):
            log.flush()
        log.flush()  # reported once
    assert event_ids(db_url) == [first.event_id, batch[0].event_id, batch[2].event_id]


def test_a_full_queue_blocks_then_raises():
    release = threading.Event()
    committed: list[str] = []

    def slow_commit(records):  # stands in for a database that does not answer
        release.wait(10)
        committed.extend(record.event_id for record in records)

    # queue_size bounds the records accepted and not committed, the batch in flight included.
    writer = BatchWriter(slow_commit, batch_size=1, queue_size=2, put_timeout=0.1)
    writer.submit(make_record(0))  # taken by the writer thread, which then waits
    writer.submit(make_record(1))  # queued: two records not committed
    with pytest.raises(AuditUnavailableError, match=r"audit queue full \(2 records not "):
        writer.submit(make_record(2))
    with pytest.raises(AuditUnavailableError, match="not committed within"):
        writer.flush(0.05)
    release.set()
    writer.close(5)
    writer.close(5)
    assert len(committed) == 2


def test_raise_policy_fails_the_append_and_stores_nothing(db_url, outage):
    with AuditLog.open(outage.url) as log:
        first = log.append(make_record(0))
        outage.down()
        with pytest.raises(AuditUnavailableError, match="unavailable"):
            log.append(make_record(1))
        outage.up()
        second = log.append(make_record(2))
    assert stored(db_url) == [first, second] and second.prev_hash == first.row_hash


# PostgreSQL only: a SQLite file held under an exclusive lock can still be opened and read (WAL),
# so there is no unreachable SQLite database to open.
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_raise_policy_refuses_to_open_an_unreachable_database(db_url, outage):
    outage.down()
    with pytest.raises(AuditUnavailableError):
        AuditLog.open(outage.url)


def test_spool_policy_keeps_order_while_the_database_is_away(db_url, outage, tmp_path):
    spool_path = tmp_path / "audit.spool.jsonl"
    with AuditLog.open(outage.url, settings=SPOOL, spool_path=spool_path) as log:
        before = log.append(make_record(0))
        outage.down()
        away = [log.append(make_record(index)) for index in range(1, 4)]
        assert all(record.seq is None for record in away)
        assert len(spool_path.read_bytes().splitlines()) == 3
        with pytest.raises(AuditUnavailableError):
            log.flush()
        outage.up()
        after = log.append(make_record(4))  # replays the spool first, then stores this one
        assert after.seq == 5 and spool_path.read_bytes() == b""
    assert event_ids(db_url) == [r.event_id for r in [before, *away, after]]
    assert verified(db_url)


def test_spool_policy_flush_replays_and_batched_mode_spools_too(db_url, outage, tmp_path):
    spool_path = tmp_path / "audit.spool.jsonl"
    sent = [make_record(index) for index in range(6)]
    with AuditLog.open(outage.url, settings=BATCHED_SPOOL, spool_path=spool_path) as log:
        log.append(sent[0])
        log.flush()
        outage.down()
        for record in sent[1:]:
            log.append(record)
        with pytest.raises(AuditUnavailableError):
            log.flush()  # the queue drained into the spool; the database is still away
        assert spool_path.stat().st_size > 0
        outage.up()
        log.flush()
    assert event_ids(db_url) == [record.event_id for record in sent]
    assert verified(db_url)


def test_batched_raise_policy_retries_until_the_database_is_back(db_url, outage):
    sent = [make_record(index) for index in range(5)]
    with AuditLog.open(outage.url, settings=BATCHED) as log:
        outage.down()
        for record in sent:
            log.append(record)
        with pytest.raises(AuditUnavailableError, match="not committed within"):
            log.flush(timeout=0.3)
        outage.up()
        log.flush(timeout=10)
    assert event_ids(db_url) == [record.event_id for record in sent]


def test_a_spool_left_by_a_dead_process_is_replayed_once_on_open(db_url, tmp_path):
    migrate.upgrade(db_url)
    spool_path = tmp_path / "audit.spool.jsonl"
    with AuditLog.open(db_url) as log:
        committed = log.append(make_record(0))
    # The process spooled three records, replayed the first one, and died before truncating.
    spooled = [make_record(index) for index in range(1, 4)]
    spool_path.write_bytes(b"".join(encode(record) for record in spooled) + b'{"torn')
    with AuditLog.open(db_url) as log:  # replays what it finds, whatever the policy
        log.append(spooled[0])  # the database already has it: the replay must skip it
    with AuditLog.open(db_url, spool_path=spool_path) as log:
        assert spool_path.read_bytes() == b""
        assert log.query()[-1].event_id == spooled[-1].event_id
    assert event_ids(db_url) == [r.event_id for r in [committed, *spooled]]
    assert verified(db_url)
    spool_path.write_bytes(encode(committed))  # only records the database already has
    with AuditLog.open(db_url, spool_path=spool_path):
        assert spool_path.read_bytes() == b""
    assert len(event_ids(db_url)) == 4


def test_a_log_opened_while_away_checks_the_schema_when_it_is_back(db_url, outage, tmp_path):
    spool_path = tmp_path / "audit.spool.jsonl"
    outage.down()
    with AuditLog.open(outage.url, settings=SPOOL, spool_path=spool_path) as log:
        first = log.append(make_record(0))  # PostgreSQL: opened while away
        assert first.seq is None
        outage.up()
        log.flush()
        second = log.append(make_record(1))
    assert event_ids(db_url) == [first.event_id, second.event_id]


def test_a_closed_log_leaves_its_spool_for_the_next_one(db_url, outage, tmp_path):
    spool_path = tmp_path / "audit.spool.jsonl"
    outage.down()
    with AuditLog.open(outage.url, settings=SPOOL, spool_path=spool_path) as log:
        record = log.append(make_record())
        assert record.seq is None
    assert spool_path.stat().st_size > 0
    outage.up()
    with AuditLog.open(outage.url, settings=SPOOL, spool_path=spool_path):
        pass
    assert event_ids(db_url) == [record.event_id]


def test_closing_while_away_reports_the_queued_records_it_loses(db_url, outage, monkeypatch):
    monkeypatch.setattr(log_module, "FLUSH_TIMEOUT", 0.3)
    log = AuditLog.open(outage.url, settings=BATCHED)
    outage.down()
    log.append(make_record())
    with pytest.raises(AuditUnavailableError, match="1 audit records not committed"):
        log.close()  # the documented loss window: raise policy, batched, database away
    outage.up()
    assert stored(db_url) == []


def test_a_corrupt_or_full_spool_is_reported(tmp_path):
    spool = Spool(tmp_path / "spool.jsonl", max_bytes=600)
    spool.add([make_record(0)])
    with pytest.raises(AuditUnavailableError, match="is full"):
        spool.add([make_record(1)])
    assert len(spool.path.read_bytes().splitlines()) == 1
    spool.path.write_bytes(b'{"not": "a record"}\n' + encode(make_record(2)))
    with pytest.raises(AuditError, match="corrupt at line 1"):
        spool.replay(lambda records: None)
    assert spool.pending()
    torn = tmp_path / "torn.jsonl"
    torn.write_bytes(encode(make_record(3)) + b'{"half')
    Spool(torn).add([make_record(4)])  # the torn line (never acknowledged) is cut first
    replayed: list[str] = []
    assert Spool(torn).replay(lambda rs: replayed.extend(r.owner or "" for r in rs)) == 2
    assert not Spool(tmp_path / "missing.jsonl").pending()


def test_spool_io_failures_are_unavailable_errors(tmp_path, monkeypatch):
    with pytest.raises(AuditUnavailableError, match="cannot write the audit spool"):
        Spool("/dev/full").add([make_record()])
    with pytest.raises(AuditUnavailableError, match="cannot open the audit spool"):
        Spool(tmp_path).add([make_record()])  # a directory
    monkeypatch.setattr(spool_module, "LOCK_TIMEOUT", 0.05)
    spool = Spool(tmp_path / "locked.jsonl")
    with spool.path.open("a") as holder:
        fcntl.flock(holder.fileno(), fcntl.LOCK_EX)  # another process replaying it
        with pytest.raises(AuditUnavailableError, match="stayed locked"):
            spool.add([make_record()])
    spool.add([make_record()])
    assert spool.pending()


def test_open_leaves_a_spool_it_cannot_lock_for_later(db_url, tmp_path, monkeypatch):
    migrate.upgrade(db_url)
    monkeypatch.setattr(spool_module, "LOCK_TIMEOUT", 0.05)
    spool_path = tmp_path / "audit.spool.jsonl"
    record = make_record()
    spool_path.write_bytes(encode(record))
    with spool_path.open("a") as holder:
        fcntl.flock(holder.fileno(), fcntl.LOCK_EX)  # another process is replaying it
        with AuditLog.open(db_url, settings=SPOOL, spool_path=spool_path):
            assert stored(db_url) == []  # opened anyway; the records wait in the spool
    with AuditLog.open(db_url, settings=SPOOL, spool_path=spool_path):
        assert event_ids(db_url) == [record.event_id]


def test_the_writer_survives_any_error_and_reports_it():
    kept: list[str] = []

    def commit(records):  # a sink that refuses some records (not a database stand-in)
        for record in records:
            if record.owner == "type-error":
                raise TypeError("boom")
            if record.owner == "schema":
                raise AuditSchemaError("no audit table")
        kept.extend(record.event_id for record in records)

    writer = BatchWriter(commit, batch_size=10)
    sent = [make_record(0), make_record(1, owner="type-error"), make_record(2, owner="schema"),
            make_record(3)]
    for record in sent:
        writer.submit(record)
    with pytest.raises(AuditError, match="2 queued audit records failed; the last: no audit "
                                         "table"):
        writer.flush(5)
    writer.close(5)
    assert kept == [sent[0].event_id, sent[3].event_id]
