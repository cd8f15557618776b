"""Verifying the hash chain: the first place where it breaks, and why.

Definitions. Records are read in ``seq`` order. Record ``r`` is *intact* when it follows the
last intact record ``q`` (or starts the chain): ``r.seq == q.seq + 1`` (1 for the first),
``r.prev_hash == q.row_hash`` (:data:`~streamwarden.audit.chain.GENESIS_HASH` for the first)
and ``r.row_hash == link(r, r.prev_hash)`` (``r`` is *self-consistent*). At the first record
``r`` that is not intact, with ``e`` the expected sequence number, ``p`` the expected previous
hash and ``n`` the record after ``r`` (if any), the break is classified by the first rule that
applies:

0. ``r`` has no ``seq`` or hashes (an unsealed record): **inserted** at ``e``.
1. ``r.seq < e``: **inserted** at ``r.seq`` (a number the chain had already used or never uses).
2. ``r.seq > e``: **deleted** at ``e`` (the rows ``e .. r.seq - 1`` are missing).
3. ``r.prev_hash == p`` (so ``r`` is not self-consistent): if ``n.prev_hash == p`` too, two rows
   claim the same predecessor and ``r`` is **inserted** at ``e``; otherwise its content or
   ``row_hash`` was changed: **edited** at ``e``.
4. ``r.prev_hash == q.prev_hash`` and ``r`` is self-consistent as number ``e - 1``: the row
   sealed as ``e - 1`` was pushed back by ``q``: **inserted** at ``q.seq``.
5. ``n.prev_hash == p`` (the row that belongs at ``e`` comes next): **reordered** at ``e`` if
   ``r`` is self-consistent as number ``e + 1`` (two rows swapped places), else **inserted** at
   ``e`` (a foreign row in front of it).
6. ``r`` is self-consistent but chained to a hash that is not its predecessor's: **inserted**.
7. ``n`` is missing or still points at ``r`` (``n.prev_hash == r.row_hash``): ``r``'s
   ``prev_hash`` was changed: **edited** at ``e``; otherwise ``r`` carries another row's
   hashes: **reordered** at ``e``.

What these rules guarantee (and the property tests check) for a chain that was intact, after
one change made behind the append-only triggers: editing any column but ``seq`` of row ``k``
is *edited* at ``k``; deleting row ``k`` that is not the newest is *deleted* at ``k``;
inserting a row at ``k`` (renumbering the rows after it, the new row forged with a correct hash
or not) is *inserted* at ``k``; swapping the places (``seq``) of rows ``i < j`` is *reordered*
at ``i``. Limits: deleting the newest rows, or appending forged rows with correct hashes,
leaves a valid shorter or longer chain; a hash chain cannot tell (ADR 0003).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Literal

from streamwarden.audit.chain import GENESIS_HASH, link
from streamwarden.audit.records import AuditRecord
from streamwarden.errors import AuditIntegrityError, InvalidInputError

Reason = Literal["edited", "deleted", "inserted", "reordered"]
REASONS: tuple[str, ...] = ("edited", "deleted", "inserted", "reordered")
PROGRESS_EVERY = 10_000


@dataclass(frozen=True)
class VerifyReport:
    """The result of walking the chain.

    Attributes:
        ok: whether every row is intact.
        rows: how many rows were read (all of them when ``ok``).
        first_bad_seq: the sequence number of the first break, None when ``ok``.
        reason: ``edited``, ``deleted``, ``inserted`` or ``reordered`` (module docstring), None
            when ``ok``.
        message: one human-readable sentence.

    Thread-safety: immutable.
    """

    ok: bool
    rows: int
    first_bad_seq: int | None = None
    reason: Reason | None = None
    message: str = ""

    def raise_if_broken(self) -> None:
        """Raise if the chain is broken.

        Raises:
            AuditIntegrityError: naming the first bad sequence number and the reason.
        """
        if not self.ok:
            raise AuditIntegrityError(
                f"audit chain broken at seq {self.first_bad_seq} ({self.reason}): {self.message}",
                operation="audit.verify",
            )


def verify_records(
    records: Iterable[AuditRecord],
    *,
    progress: Callable[[int], None] | None = None,
    progress_every: int = PROGRESS_EVERY,
) -> VerifyReport:
    """Walk ``records`` (in ``seq`` order) and report the first break of the chain.

    Reads the iterable once, holding two records at a time (constant memory). ``progress`` is
    called with the number of rows read every ``progress_every`` rows and once at the end.

    Raises:
        whatever iterating ``records`` raises.

    Thread-safety: pure function (``progress`` runs on the caller's thread).
    """
    iterator = iter(records)
    last: AuditRecord | None = None
    rows = 0
    for record in iterator:
        rows += 1
        if _follows(last, record) and _consistent(record, record.seq):
            last = record
            if progress is not None and rows % progress_every == 0:
                progress(rows)
            continue
        following = next(iterator, None)
        rows += following is not None
        report = _classify(last, record, following, rows)
        break
    else:
        report = VerifyReport(ok=True, rows=rows, message=f"{rows} rows, chain intact")
    if progress is not None:
        progress(rows)
    return report


def _expected(last: AuditRecord | None) -> tuple[int, str]:
    if last is None:
        return 1, GENESIS_HASH
    return (last.seq or 0) + 1, last.row_hash or ""


def _follows(last: AuditRecord | None, record: AuditRecord) -> bool:
    return (record.seq, record.prev_hash) == _expected(last)


def _consistent(record: AuditRecord, seq: int | None) -> bool:
    """Whether ``record`` numbered ``seq`` hashes to its own ``row_hash``."""
    try:
        return link(replace(record, seq=seq), record.prev_hash or "") == record.row_hash
    except InvalidInputError:
        return False


def _broken(rows: int, seq: int, reason: Reason, message: str) -> VerifyReport:
    return VerifyReport(ok=False, rows=rows, first_bad_seq=seq, reason=reason, message=message)


def _classify(
    last: AuditRecord | None, record: AuditRecord, following: AuditRecord | None, rows: int
) -> VerifyReport:
    seq, _ = _expected(last)
    found = record.seq
    if found is None or record.prev_hash is None or record.row_hash is None:
        return _broken(rows, seq, "inserted", f"row {seq} has no sequence number or hashes")
    if found < seq:
        return _broken(rows, found, "inserted",
                       f"row {found} is out of sequence where row {seq} was expected")
    if found > seq:
        missing = str(seq) if found == seq + 1 else f"{seq}..{found - 1}"
        return _broken(rows, seq, "deleted", f"row {missing} missing before row {found}")
    return _classify_misplaced(last, record, following, rows)


def _classify_misplaced(
    last: AuditRecord | None, record: AuditRecord, following: AuditRecord | None, rows: int
) -> VerifyReport:
    """Rules 3 to 7: ``record`` has the expected ``seq`` but is not intact."""
    seq, prev = _expected(last)
    next_prev = following.prev_hash if following is not None else None
    if record.prev_hash == prev:
        if next_prev == prev:
            return _broken(rows, seq, "inserted",
                           f"rows {seq} and {seq + 1} both follow row {seq - 1}")
        return _broken(rows, seq, "edited", f"row {seq}'s content does not match its hash")
    if last is not None and record.prev_hash == last.prev_hash and _consistent(record, seq - 1):
        return _broken(rows, seq - 1, "inserted",
                       f"row {seq - 1} was put before the row sealed as {seq - 1}")
    return _classify_unlinked(record, next_prev, rows, seq, prev)


def _classify_unlinked(
    record: AuditRecord, next_prev: str | None, rows: int, seq: int, prev: str
) -> VerifyReport:
    if next_prev == prev:
        if _consistent(record, seq + 1):
            return _broken(rows, seq, "reordered", f"rows {seq} and {seq + 1} swapped places")
        return _broken(rows, seq, "inserted", f"row {seq} is not part of the chain")
    if _consistent(record, seq):
        return _broken(rows, seq, "inserted",
                       f"row {seq} is sealed but chained to another row's hash")
    if next_prev is None or next_prev == record.row_hash:
        return _broken(rows, seq, "edited", f"row {seq}'s previous-hash was changed")
    return _broken(rows, seq, "reordered", f"row {seq} holds another row's content")
