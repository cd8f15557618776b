"""Verifying the audit trail against signed checkpoints kept outside the database.

The hash chain alone (:mod:`streamwarden.audit.verify`) cannot tell a rewritten, truncated or
forged history from the real one when whoever changed it re-sealed the rows. A checkpoint
signed with a key the database never held pins the head of the chain at a size, so the table
is the signed history exactly when, in this order of checks:

1. every checkpoint's signature verifies with a trusted key (``bad_signature``: a trusted
   key's signature fails, the note was edited; ``unknown_key``: no trusted key signed it;
   ``malformed_checkpoint``), its file is named after its content (``checkpoint_reordered``)
   and it links to the one before it by ``prev`` (``checkpoint_missing`` when the link points
   nowhere, ``checkpoint_reordered`` when it points to a later file or size or time go back,
   ``checkpoint_foreign`` for another origin); the directory holds at least one
   (``no_checkpoints``);
2. the append-only triggers exist, are enabled and still refuse changes
   (``triggers_missing``; database only);
3. the chain is intact (the reasons of :mod:`streamwarden.audit.verify`), the row at each
   checkpoint's size has the checkpoint's head (``rewritten``: the rows up to it were edited
   and re-sealed, deleted and renumbered, or replaced by a forged history), and the table
   reaches the newest checkpoint's size (``truncated``: the newest rows were deleted, or the
   database was rolled back to an older copy or replaced by an empty one); the earliest
   break wins;
4. with ``max_age``, the newest checkpoint is at most that old (``stale``).

What stays undetectable: rows after the newest checkpoint can be deleted or changed and
re-sealed unseen; the writer's heartbeat bounds how old that checkpoint can be (``stale``
makes the bound a failure). See docs/audit.md, "Threat model".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL

from streamwarden.audit.chain import GENESIS_HASH, RAW_FIELDS, RawRow
from streamwarden.audit.checkpoints import (
    Checkpoint,
    SignedCheckpoint,
    checkpoint_files,
    read_checkpoint,
    read_file,
    utc_now,
)
from streamwarden.audit.database import translate_error
from streamwarden.audit.models import TABLE_NAME
from streamwarden.audit.notes import Verifier
from streamwarden.audit.records import AuditRecord
from streamwarden.audit.verify import VerifyReport, record_pages, verify_rows
from streamwarden.errors import AuditIntegrityError, CheckpointError

#: The append-only triggers of migration 0001, and the text their body must hold.
SQLITE_TRIGGERS = ("lifecycle_audit_no_delete", "lifecycle_audit_no_update")
POSTGRESQL_TRIGGERS = ("lifecycle_audit_no_truncate", "lifecycle_audit_no_update_delete")
_REFUSAL = {"sqlite": "RAISE(ABORT", "postgresql": "RAISE EXCEPTION"}
_SQLITE_QUERY = sa.text(
    "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = :table")
_PG_QUERY = sa.text(
    "SELECT t.tgname, p.prosrc FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid "
    "WHERE t.tgrelid = to_regclass(:table) AND NOT t.tgisinternal AND t.tgenabled <> 'D'")


#: Step 3 another way: ``fast(anchors, progress)`` is its report, or None to walk the pages.
FastWalk = Callable[[Sequence["Anchor"], Callable[[int], None] | None], "AnchorReport | None"]


@dataclass(frozen=True)
class Anchor:
    """A head the table must still have: row ``size`` has ``head`` (``label`` names where
    it comes from, e.g. the checkpoint file)."""

    size: int
    head: str
    label: str


@dataclass(frozen=True)
class AnchorReport:
    """The result of verifying against checkpoints (and an expected head).

    Attributes:
        ok: the table (or bundle) is the signed history, as far as checkpoints can tell.
        rows: rows read.
        reason: None when ``ok``, else one of the reasons in the module docstring.
        first_bad_seq: the sequence number concerned, when there is one.
        message: one readable sentence.
        head_seq, head_hash: the last row read (0 and the genesis hash for none); when ``ok``
            the trail's head.
        checkpoints: how many checkpoints were checked.
        origin: their origin.
        newest_size, newest_time, newest_age_seconds: the newest checkpoint's.
        checkpoint: the checkpoint file (or bundle entry) a failure is about.

    Thread-safety: immutable.
    """

    ok: bool
    rows: int = 0
    reason: str | None = None
    first_bad_seq: int | None = None
    message: str = ""
    head_seq: int = 0
    head_hash: str = GENESIS_HASH
    checkpoints: int = 0
    origin: str | None = None
    newest_size: int | None = None
    newest_time: datetime | None = None
    newest_age_seconds: float | None = None
    checkpoint: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Every attribute, JSON-serialisable (the time in ISO 8601)."""
        return {
            "ok": self.ok, "rows": self.rows, "first_bad_seq": self.first_bad_seq,
            "reason": self.reason, "message": self.message, "head_seq": self.head_seq,
            "head_hash": self.head_hash, "checkpoints": self.checkpoints, "origin": self.origin,
            "newest_checkpoint_size": self.newest_size,
            "newest_checkpoint_time": (None if self.newest_time is None
                                       else self.newest_time.isoformat()),
            "newest_checkpoint_age_seconds": self.newest_age_seconds,
            "checkpoint": self.checkpoint,
        }

    def raise_if_broken(self) -> None:
        """Raises AuditIntegrityError naming the reason, if not ``ok``."""
        if not self.ok:
            where = "" if self.first_bad_seq is None else f" at seq {self.first_bad_seq}"
            raise AuditIntegrityError(f"audit trail failed verification{where} "
                                      f"({self.reason}): {self.message}",
                                      operation="audit.verify")


@dataclass
class CheckedCheckpoints:
    """Checkpoints read so far, or the first failure."""

    checkpoints: list[SignedCheckpoint] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    failure: AnchorReport | None = None

    def anchors(self) -> list[Anchor]:
        """One :class:`Anchor` per checkpoint (size 0 needs no row and is left out)."""
        return [Anchor(signed.checkpoint.size, signed.checkpoint.head, label)
                for signed, label in zip(self.checkpoints, self.labels, strict=True)
                if signed.checkpoint.size > 0]


def _fail(reason: str, message: str, *, checkpoint: str | None = None,
          seq: int | None = None, count: int = 0) -> AnchorReport:
    return AnchorReport(ok=False, reason=reason, message=message, checkpoint=checkpoint,
                        first_bad_seq=seq, checkpoints=count)


def check_sequence(entries: Iterable[tuple[str, bytes]], verifiers: Sequence[Verifier], *,
                   from_genesis: bool, named: bool) -> CheckedCheckpoints:
    """Read and check checkpoints given as ``(label, note)`` in their claimed order: the
    signatures, the names (``named``: the label is a file name that must match the content),
    the ``prev`` links, origin, sizes and times. ``from_genesis``: the first must be the
    first one ever signed (prev = zero hash).

    Thread-safety: pure function.
    """
    listed = list(entries)
    digests: dict[str, str] = {}
    checked = CheckedCheckpoints()
    for label, note in listed:
        try:
            signed = read_checkpoint(note, verifiers)
        except CheckpointError as exc:
            checked.failure = _fail(exc.reason, f"checkpoint {label}: {exc.message}",
                                    checkpoint=label, count=len(checked.checkpoints))
            return checked
        digests.setdefault(signed.checkpoint.digest, label)
        checked.checkpoints.append(signed)
        checked.labels.append(label)
    names = [label for label, _ in listed]
    previous: Checkpoint | None = None
    for index, (label, signed) in enumerate(zip(names, checked.checkpoints, strict=True)):
        problem = _link_problem(previous, signed.checkpoint, label, digests, names[:index],
                                from_genesis=from_genesis, named=named)
        if problem is not None:
            checked.failure = _fail(*problem, checkpoint=label, count=index)
            return checked
        previous = signed.checkpoint
    return checked


def _link_problem(previous: Checkpoint | None, current: Checkpoint, label: str,
                  digests: dict[str, str], earlier: list[str], *, from_genesis: bool,
                  named: bool) -> tuple[str, str] | None:
    if named and Path(label).name != current.file_name:
        return ("checkpoint_reordered", f"file {Path(label).name} holds the checkpoint of "
                f"size {current.size} signed at {current.time.isoformat()}")
    if previous is None:
        if from_genesis and current.prev != GENESIS_HASH:
            return ("checkpoint_missing",
                    f"checkpoint {label} follows another one: the oldest checkpoints are gone")
        return None
    return _follow_problem(previous, current, label, digests, earlier)


def _follow_problem(previous: Checkpoint, current: Checkpoint, label: str,
                    digests: dict[str, str], earlier: list[str]) -> tuple[str, str] | None:
    if current.origin != previous.origin:
        return ("checkpoint_foreign", f"checkpoint {label} is of origin {current.origin}, "
                f"not {previous.origin}")
    if current.prev != previous.digest:
        target = digests.get(current.prev)
        if target is not None and target not in earlier:
            return ("checkpoint_reordered", f"checkpoint {label} follows {target}, which "
                    "comes after it")
        return ("checkpoint_missing", f"checkpoint {label} does not follow the one before "
                "it: a checkpoint between them is missing")
    if current.size < previous.size or current.time <= previous.time:
        return ("checkpoint_reordered", f"checkpoint {label} goes back in size or time")
    return None


def read_directory(directory: str | Path, verifiers: Sequence[Verifier]) -> CheckedCheckpoints:
    """Read and check every checkpoint file of ``directory`` (see :func:`check_sequence`).

    Thread-safety: safe from any thread.
    """
    try:
        files = checkpoint_files(directory)
        entries = [(str(path), read_file(path)) for path in files]
    except CheckpointError as exc:
        return CheckedCheckpoints(failure=_fail("no_checkpoints", exc.message))
    if not entries:
        return CheckedCheckpoints(failure=_fail("no_checkpoints", f"no checkpoints in {directory}"))
    return check_sequence(entries, verifiers, from_genesis=True, named=True)


def missing_triggers(connection: sa.Connection) -> list[str]:
    """The append-only triggers of ``lifecycle_audit`` that are missing, disabled, or whose
    body no longer refuses the change.

    Raises:
        sqlalchemy.exc.SQLAlchemyError: the catalog could not be read.

    Thread-safety: as the connection.
    """
    dialect = connection.dialect.name
    expected = SQLITE_TRIGGERS if dialect == "sqlite" else POSTGRESQL_TRIGGERS
    query = _SQLITE_QUERY if dialect == "sqlite" else _PG_QUERY
    present = {str(name) for name, body in connection.execute(query, {"table": TABLE_NAME})
               if _REFUSAL.get(dialect, "\x00") in str(body or "")}
    return [name for name in expected if name not in present]


class HeadWatch:
    """Passes records through, noting the first one whose hash differs from an anchor."""

    def __init__(self, anchors: Sequence[Anchor]) -> None:
        self._by_size: dict[int, list[Anchor]] = {}
        for anchor in anchors:
            self._by_size.setdefault(anchor.size, []).append(anchor)
        self.mismatch: Anchor | None = None
        self.last: AuditRecord | None = None

    def watch(self, records: Iterable[AuditRecord]) -> Iterator[AuditRecord]:
        for record in records:
            if self.mismatch is None:
                for anchor in self._by_size.get(record.seq or 0, ()):
                    if record.row_hash != anchor.head:
                        self.mismatch = anchor
                        break
            self.last = record
            yield record


_SEQ = RAW_FIELDS.index("seq")
_HASH = RAW_FIELDS.index("row_hash")


class RowWatch:
    """Passes pages of stored rows through, noting the first row whose hash differs from an
    anchor, and the last row seen."""

    def __init__(self, anchors: Sequence[Anchor]) -> None:
        self._by_size: dict[int, list[Anchor]] = {}
        for anchor in anchors:
            self._by_size.setdefault(anchor.size, []).append(anchor)
        self.mismatch: Anchor | None = None
        self.last: RawRow | None = None

    def watch(self, pages: Iterable[Sequence[RawRow]]) -> Iterator[Sequence[RawRow]]:
        by_size = self._by_size
        for page in pages:
            if by_size and self.mismatch is None:
                for row in page:
                    seq = row[_SEQ]
                    for anchor in by_size.get(seq, ()) if isinstance(seq, int) else ():
                        if row[_HASH] != anchor.head and self.mismatch is None:
                            self.mismatch = anchor
            if page:
                self.last = page[-1]
            yield page


def walk(records: Iterable[AuditRecord], anchors: Sequence[Anchor], *,
         progress: Callable[[int], None] | None = None) -> AnchorReport:
    """:func:`walk_rows` over records (a bundle's, or a test's).

    Raises:
        whatever iterating ``records`` raises.
    """
    return walk_rows(record_pages(records), anchors, progress=progress)


def walk_rows(pages: Iterable[Sequence[RawRow]], anchors: Sequence[Anchor], *,
              progress: Callable[[int], None] | None = None) -> AnchorReport:
    """Verify the chain of the stored rows in ``pages`` (from seq 1; a row that cannot be
    decoded is a break, never an error) and that each anchor's row has its head and is
    present (step 3 of the module docstring).

    Raises:
        whatever iterating ``pages`` raises.

    Thread-safety: pure, apart from ``pages`` and ``progress``.
    """
    watch = RowWatch(anchors)
    chain = verify_rows(watch.watch(pages), progress=progress)
    last = watch.last
    head_seq = 0 if last is None or chain.rows == 0 or not isinstance(last[_SEQ], int) \
        else int(last[_SEQ])
    head_hash = GENESIS_HASH if last is None else str(last[_HASH])
    return _judge(chain, anchors, watch.mismatch, head_seq, head_hash)


def judge_intact(chain: VerifyReport, head: tuple[int, str], anchors: Sequence[Anchor],
                 hash_at: Callable[[int], object]) -> AnchorReport:
    """Step 3 for a chain already shown intact (``chain.ok``) whose last row is ``head``
    (``(seq, row_hash)``): what :func:`walk_rows` reports, each anchor's row looked up by
    ``hash_at(seq)`` (its ``row_hash``) instead of watched on the way.

    Raises:
        whatever ``hash_at`` raises.

    Thread-safety: pure, apart from ``hash_at``.
    """
    head_seq, head_hash = head
    mismatch = next((anchor for anchor in sorted(anchors, key=_size)
                     if 0 < anchor.size <= head_seq and hash_at(anchor.size) != anchor.head),
                    None)
    return _judge(chain, anchors, mismatch, head_seq, head_hash)


def _size(anchor: Anchor) -> int:
    return anchor.size


def _judge(chain: VerifyReport, anchors: Sequence[Anchor], mismatch: Anchor | None,
           head_seq: int, head_hash: str) -> AnchorReport:
    base = AnchorReport(ok=True, rows=chain.rows, head_seq=head_seq, head_hash=head_hash)
    if mismatch is not None and (chain.ok or (chain.first_bad_seq or 0) > mismatch.size):
        lower = max((a.size for a in anchors if a.size < mismatch.size), default=0) + 1
        return replace(
            base, ok=False, reason="rewritten", first_bad_seq=mismatch.size,
            checkpoint=mismatch.label,
            message=(f"row {mismatch.size} does not have the head recorded in {mismatch.label}: "
                     f"rows {lower}..{mismatch.size} were changed and re-sealed, renumbered or "
                     "forged"))
    if not chain.ok:
        return replace(base, ok=False, reason=chain.reason, first_bad_seq=chain.first_bad_seq,
                       message=chain.message)
    beyond = [anchor for anchor in anchors if anchor.size > head_seq]
    if beyond:
        newest = max(beyond, key=lambda anchor: anchor.size)
        where = "is empty" if head_seq == 0 else f"ends at seq {head_seq}"
        return replace(
            base, ok=False, reason="truncated", first_bad_seq=head_seq + 1,
            checkpoint=newest.label,
            message=(f"the table {where} but {newest.label} covers seq {newest.size}: rows "
                     "were deleted, or the database was rolled back to an older copy"))
    return replace(base, message=f"{chain.rows} rows, chain intact")


def finish(report: AnchorReport, checkpoints: Sequence[SignedCheckpoint], *,
           now: datetime | None = None, max_age: float | None = None) -> AnchorReport:
    """``report`` with the newest checkpoint's size, time and age, and step 4 (``stale``).

    Thread-safety: pure function.
    """
    if not checkpoints:
        return report
    newest = checkpoints[-1].checkpoint
    age = ((now or utc_now()) - newest.time).total_seconds()
    report = replace(report, checkpoints=len(checkpoints), origin=newest.origin,
                     newest_size=newest.size, newest_time=newest.time,
                     newest_age_seconds=round(age, 3))
    if report.ok and max_age is not None and age > max_age:
        return replace(report, ok=False, reason="stale", first_bad_seq=None, message=(
            f"the newest checkpoint is {age:.0f} s old (limit {max_age:g} s): rows after seq "
            f"{newest.size} are not anchored"))
    return report


def verify_history(records: Iterable[AuditRecord], notes: Sequence[tuple[str, bytes]],
                   verifiers: Sequence[Verifier], *, named: bool = False,
                   now: datetime | None = None) -> AnchorReport:
    """Steps 1, 3 and 4 for any records (every row from seq 1, in order) and checkpoint notes
    given as ``(label, note)`` in their order, e.g. as a malicious store returns them.

    Raises:
        whatever iterating ``records`` raises.

    Thread-safety: pure function.
    """
    checked = (check_sequence(notes, verifiers, from_genesis=True, named=named) if notes
               else CheckedCheckpoints(failure=_fail("no_checkpoints", "no checkpoints")))
    if checked.failure is not None:
        return checked.failure
    return finish(walk(records, checked.anchors()), checked.checkpoints, now=now)


def verify_database(engine: sa.Engine, url: URL, pages: Iterable[Sequence[RawRow]],
                    directory: str | Path | None, verifiers: Sequence[Verifier], *,
                    expect_head: tuple[int, str] | None = None, max_age: float | None = None,
                    now: datetime | None = None,
                    progress: Callable[[int], None] | None = None,
                    fast: FastWalk | None = None) -> AnchorReport:
    """Steps 1 to 4 of the module docstring for the table read as ``pages`` of stored rows
    (every row, in ``seq`` order) against the checkpoints in ``directory`` (None: none) and
    ``expect_head`` (``(seq, row_hash)`` the table must still have). The triggers are checked
    whenever ``directory`` or ``expect_head`` is given. ``fast`` (e.g. the parallel walk of a
    SQLite file) is tried first for step 3; when it returns None, ``pages`` are walked.

    Raises:
        AuditUnavailableError, AuditError: the database could not be read.

    Thread-safety: safe from any thread.
    """
    checked = CheckedCheckpoints()
    if directory is not None:
        checked = read_directory(directory, verifiers)
        if checked.failure is not None:
            return checked.failure
    if directory is not None or expect_head is not None:
        try:
            with engine.connect() as connection:
                missing = missing_triggers(connection)
        except sa.exc.SQLAlchemyError as exc:
            raise translate_error(exc, url, "audit.verify") from None
        if missing:
            return finish(_fail("triggers_missing", f"append-only trigger(s) {', '.join(missing)} "
                                "missing, disabled or not refusing changes",
                                count=len(checked.checkpoints)), checked.checkpoints, now=now)
    anchors = checked.anchors()
    if expect_head is not None:
        anchors.append(Anchor(*expect_head, f"--expect-head {expect_head[0]}:{expect_head[1]}"))
    report = None if fast is None else fast(anchors, progress)
    if report is None:
        report = walk_rows(pages, anchors, progress=progress)
    return finish(report, checked.checkpoints, now=now, max_age=max_age)
