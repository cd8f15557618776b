"""The hash chain and the in-memory sink."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from streamwarden import AuditRecord, InMemoryAuditSink, InvalidInputError
from streamwarden.audit.chain import GENESIS_HASH, canonical, link, seal
from streamwarden.audit.records import SCHEMA_VERSION


def record(**changes) -> AuditRecord:
    base = AuditRecord(
        event_id="01JTESTEVENT00000000000000", occurred_at=datetime(2026, 1, 2, 3, 4, 5, 6, UTC),
        lifecycle_id="01JTESTLIFECYCLE0000000000", fingerprint="f" * 24, kind="market_data",
        event="acquire", from_state="idle", to_state="starting", refs_before=0, refs_after=1,
        correlation_id="run-1", host="h", pid=1,
    )
    return replace(base, **changes)


def test_canonical_encoding_is_stable_and_excludes_the_hashes():
    first = record(details={"b": 1, "a": [1, 2]})
    assert first.schema_version == SCHEMA_VERSION == 2
    assert canonical(first) == canonical(replace(first, prev_hash="x", row_hash="y"))
    assert b"\x1f'2026-01-02 03:04:05.000006'\x1f" in canonical(first)
    assert canonical(first).endswith(b"""\x1f'{"a":[1,2],"b":1}'\x1f2""")
    assert canonical(first) != canonical(replace(first, refs_after=2))
    # Types and separators stay distinguishable: None vs "None", 5 vs "5", 0x1f in a value.
    assert canonical(replace(first, owner=None)) != canonical(replace(first, owner="None"))
    assert canonical(replace(first, lease_id="a\x1fb")) != canonical(
        replace(first, lease_id="a", owner="b"))


# Known answers: a change to either encoding fails here, not only in a database months later.
# Version 1 is the encoding of streamwarden 0.1 (compact sorted JSON), kept for old rows.
@pytest.mark.parametrize(("version", "row_hash"), [
    (2, "5f7e074c1304188cbf5cb18bf1efe6ead2f450d25ffde4f20c2338445b5a7921"),
    (1, "1f2214e7303e188e3016c946559cef5f5325239d34c087be67ff2e6c552650b0"),
])
def test_each_schema_version_has_a_fixed_encoding(version, row_hash):
    sealed = seal(record(details={"b": 1, "a": [1, 2]}, owner="é\x1f", schema_version=version),
                  seq=1, prev_hash=GENESIS_HASH)
    assert sealed.row_hash == row_hash


def test_an_unknown_schema_version_cannot_be_encoded():
    with pytest.raises(InvalidInputError, match="unknown audit schema_version 3"):
        canonical(record(schema_version=3))


def test_seal_links_to_the_previous_hash():
    sealed = seal(record(), seq=1, prev_hash=GENESIS_HASH)
    assert sealed.seq == 1 and sealed.prev_hash == GENESIS_HASH
    assert sealed.row_hash == link(sealed, GENESIS_HASH) and len(sealed.row_hash) == 64
    assert seal(record(), seq=2, prev_hash=GENESIS_HASH).row_hash != sealed.row_hash


@pytest.mark.parametrize("bad", [
    {"details": {"when": object()}},
    {"details": {"x": float("nan")}},
    {"occurred_at": datetime(2026, 1, 1)},
])
def test_unencodable_records_are_refused(bad):
    with pytest.raises(InvalidInputError):
        canonical(record(**bad))


def test_memory_sink_numbers_and_chains_under_threads():
    sink = InMemoryAuditSink()

    def append_many() -> None:
        for _ in range(200):
            sink.append(record())

    threads = [threading.Thread(target=append_many) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    records = sink.records()
    assert [r.seq for r in records] == list(range(1, 801))
    previous = GENESIS_HASH
    for stored in records:
        assert stored.prev_hash == previous and stored.row_hash == link(stored, previous)
        previous = stored.row_hash
    with pytest.raises(InvalidInputError):
        sink.append(record(details={"x": object()}))
    assert len(sink.records()) == 800
    sink.close()
