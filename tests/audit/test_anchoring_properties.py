"""A malicious store: whatever rows and checkpoint files it returns, verification never says
OK for a history that differs from the signed one.

The genuine trail is a sealed history with checkpoints signed by the trusted key. The store
starts from it and applies any sequence of changes: rows edited, deleted, inserted, swapped,
truncated or appended, re-sealed with the project's chain code or not, or replaced by a forged
history; checkpoint notes dropped, reordered, duplicated or edited byte by byte, and notes
signed by an attacker's key of the same name added. Property: if the verifier reports OK,
every checkpoint it accepted is one the trusted key signed, and the rows up to the newest
accepted checkpoint's size are exactly the genuine rows.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import event, given, settings
from hypothesis import strategies as st

from streamwarden.audit.anchoring import verify_history
from streamwarden.audit.chain import GENESIS_HASH
from streamwarden.audit.checkpoints import Checkpoint
from streamwarden.audit.notes import Signer, sign_note, split_note
from streamwarden.audit.records import AuditRecord
from tests.audit.chain_data import history, make_record, seal_all
from tests.audit.tampering import tampers

TRUSTED = Signer.generate("trail.example/audit")
ATTACKER = Signer.generate("trail.example/audit")  # same name, another key
T0 = datetime(2026, 1, 2, tzinfo=UTC)


def checkpoint_notes(records: list[AuditRecord], sizes: list[int], signer: Signer
                     ) -> list[bytes]:
    """Signed, linked checkpoints of ``records`` at ``sizes``."""
    notes: list[bytes] = []
    prev = GENESIS_HASH
    for index, size in enumerate(sizes):
        head = GENESIS_HASH if size == 0 else str(records[size - 1].row_hash)
        checkpoint = Checkpoint(signer.name, size, head, T0 + timedelta(seconds=index), prev)
        notes.append(sign_note(checkpoint.text(), [signer]))
        prev = checkpoint.digest
    return notes


def unsealed(records: list[AuditRecord]) -> list[AuditRecord]:
    return [replace(r, seq=None, prev_hash=None, row_hash=None) for r in records]


@st.composite
def malicious_rows(draw: st.DrawFn, genuine: list[AuditRecord]) -> list[AuditRecord]:
    rows = list(genuine)
    for _ in range(draw(st.integers(0, 3))):
        action = draw(st.sampled_from(["tamper", "truncate", "append", "forge", "reseal"]))
        if action == "tamper" and len(rows) >= 2:
            rows = draw(tampers(rows)).apply(rows)
        elif action == "truncate":
            rows = rows[:draw(st.integers(0, len(rows)))]
        elif action == "append" and all(row.schema_version in (1, 2) for row in rows):
            extra = [make_record(90 + i, owner="appended") for i in range(draw(st.integers(1, 3)))]
            rows = seal_all([*unsealed(rows), *extra])
        elif action == "forge":
            rows = seal_all(make_record(i, owner="forger") for i in range(len(rows)))
        elif action == "reseal" and all(row.schema_version in (1, 2) for row in rows):
            rows = seal_all(unsealed(rows))  # the project's own code seals known versions
    return rows


@st.composite
def malicious_notes(draw: st.DrawFn, genuine: list[bytes], rows: list[AuditRecord]
                    ) -> list[bytes]:
    notes = list(genuine)
    for _ in range(draw(st.integers(0, 3))):
        action = draw(st.sampled_from(["drop", "shuffle", "duplicate", "flip", "attacker"]))
        if action == "drop" and notes:
            del notes[draw(st.integers(0, len(notes) - 1))]
        elif action == "shuffle":
            notes = draw(st.permutations(notes))
        elif action == "duplicate" and notes:
            notes.insert(draw(st.integers(0, len(notes))), draw(st.sampled_from(notes)))
        elif action == "flip" and notes:
            index = draw(st.integers(0, len(notes) - 1))
            data = bytearray(notes[index])
            data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
            notes[index] = bytes(data)
        elif action == "attacker":  # the attacker signs checkpoints of the rows it serves
            sizes = sorted(draw(st.sets(st.integers(0, len(rows)), min_size=1, max_size=3)))
            notes = checkpoint_notes(rows, sizes, ATTACKER) if draw(st.booleans()) else [
                *notes, *checkpoint_notes(rows, sizes, ATTACKER)]
    return notes


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_the_verifier_never_accepts_a_history_that_differs_from_the_signed_one(data):
    genuine = history(data.draw(st.integers(2, 16), label="rows"))
    sizes = sorted(data.draw(st.sets(st.integers(0, len(genuine)), min_size=1, max_size=4),
                             label="checkpoint sizes"))
    signed = checkpoint_notes(genuine, sizes, TRUSTED)
    rows = data.draw(malicious_rows(genuine), label="served rows")
    notes = data.draw(malicious_notes(signed, rows), label="served notes")
    labelled = [(f"note {i}", note) for i, note in enumerate(notes)]
    report = verify_history(rows, labelled, [TRUSTED.verifier])
    event(f"ok={report.ok} reason={report.reason}")
    if not report.ok:
        return
    accepted = {split_note(note)[0] for note in notes}
    assert accepted <= {split_note(note)[0] for note in signed}  # only genuine checkpoints
    newest = report.newest_size or 0
    assert rows[:newest] == genuine[:newest]
    assert report.head_seq == len(rows) >= newest


def test_the_untouched_trail_is_accepted():
    genuine = history(8)
    notes = checkpoint_notes(genuine, [3, 8], TRUSTED)
    report = verify_history(genuine, [("a", notes[0]), ("b", notes[1])], [TRUSTED.verifier])
    assert report.ok and report.newest_size == 8

