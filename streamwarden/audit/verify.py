"""Verifying the hash chain: the first place where it breaks, and why.

Definitions. Records are read in ``seq`` order. Record ``r`` is *intact* when it follows the
last intact record ``q`` (or starts the chain): ``r.seq == q.seq + 1`` (1 for the first),
``r.prev_hash == q.row_hash`` (:data:`~streamwarden.audit.chain.GENESIS_HASH` for the first)
and ``r.row_hash == link(r, r.prev_hash)`` (``r`` is *self-consistent*). At the first record
``r`` that is not intact, with ``e`` the expected sequence number, ``p`` the expected previous
hash and ``n`` the record after ``r`` (if any), the break is classified by the first rule that
applies:

0. ``r`` has no ``seq`` or hashes (an unsealed record): **inserted** at ``e``; ``r``'s
   ``seq`` or hashes are not an integer and text (the row cannot be decoded): **edited** at
   ``e``.
1. ``r.seq < e``: **inserted** at ``r.seq`` (a number the chain had already used or never uses).
2. ``r.seq > e``: **deleted** at ``e`` (the rows ``e .. r.seq - 1`` are missing).
3. ``r`` cannot be decoded (a column of the wrong type, a timestamp or details that do not
   parse, an unknown outcome): **edited** at ``e``. ``r.prev_hash == p`` (so ``r`` is not
   self-consistent): if ``n.prev_hash == p`` too, two rows claim the same predecessor and
   ``r`` is **inserted** at ``e``; otherwise its content or ``row_hash`` was changed:
   **edited** at ``e``.
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

Rows are checked as stored (:data:`~streamwarden.audit.chain.RAW_FIELDS`), a page at a time:
a page of version 2 rows whose types, timestamps, details, numbers, links and hashes all check
out is accepted with a few passes over its columns; any other page is walked row by row, each
row hashed in the encoding of its own ``schema_version``, and the first break classified as
above.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from operator import methodcaller
from typing import Literal

from streamwarden.audit.chain import (
    GENESIS_HASH,
    RAW_FIELDS,
    RawRow,
    link,
    raw_hash,
    raw_row,
    renumbered,
)
from streamwarden.audit.records import OUTCOMES, AuditRecord
from streamwarden.errors import AuditIntegrityError, InvalidInputError

Reason = Literal["edited", "deleted", "inserted", "reordered"]
REASONS: tuple[str, ...] = ("edited", "deleted", "inserted", "reordered")
PROGRESS_EVERY = 10_000
PAGE_SIZE = 1000
_PREV, _SEQ, _TIME = 0, RAW_FIELDS.index("seq"), RAW_FIELDS.index("occurred_at")
_OUTCOME, _DETAILS = RAW_FIELDS.index("outcome"), RAW_FIELDS.index("details")
_VERSION, _ROW = RAW_FIELDS.index("schema_version"), RAW_FIELDS.index("row_hash")
_OUTCOMES = frozenset(OUTCOMES)
_HEXDIGEST = methodcaller("hexdigest")
_DETAILS_CACHE = 4096
_FORMATS: dict[tuple[str, ...], Callable[[RawRow], str]] = {}
_FORMATS_CACHE = 256
_JUST_INT, _JUST_STR, _JUST_NONE = {int}, {str}, {type(None)}
# The types each stored value may have: models.RAW_TYPES (a test keeps them equal), spelled
# out so that this module imports no SQLAlchemy and a verify worker process starts quickly.
_NULLABLE = frozenset({"from_state", "to_state", "refs_before", "refs_after", "lease_id",
                       "owner", "causation_id", "error_type", "error_message"})
_INTEGERS = frozenset({"seq", "refs_before", "refs_after", "pid", "schema_version"})
_ALLOWED = tuple(frozenset({int if name in _INTEGERS else str,
                            *((type(None),) if name in _NULLABLE else ())})
                 for name in RAW_FIELDS)


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

    Reads the iterable once, a page at a time (constant memory). ``progress`` is called with
    the number of rows read every ``progress_every`` rows and with the total at the end (once:
    not again when the total is itself a multiple of ``progress_every``).

    Raises:
        whatever iterating ``records`` raises.

    Thread-safety: pure function (``progress`` runs on the caller's thread).
    """
    return verify_rows(record_pages(records), progress=progress,
                       progress_every=progress_every)


def record_pages(records: Iterable[AuditRecord]) -> Iterator[list[RawRow]]:
    """``records`` as pages of stored rows, for :func:`verify_rows`. Lazy."""
    rows = map(_as_row, records)
    return iter(lambda: list(islice(rows, PAGE_SIZE)), [])


def _as_row(record: AuditRecord) -> RawRow:
    try:
        return raw_row(record)
    except (InvalidInputError, RecursionError):  # not storable as it is: broken details or time
        return tuple(None if name == "details" else getattr(record, name)
                     for name in RAW_FIELDS)


def verify_rows(
    pages: Iterable[Sequence[RawRow]],
    *,
    progress: Callable[[int], None] | None = None,
    progress_every: int = PROGRESS_EVERY,
) -> VerifyReport:
    """Walk stored rows (:data:`~streamwarden.audit.chain.RAW_FIELDS` order, pages in ``seq``
    order) and report the first break of the chain. Never raises on a row's content: a row
    that cannot be decoded is a break (module docstring).

    Raises:
        whatever iterating ``pages`` raises.

    Thread-safety: pure function (``progress`` runs on the caller's thread).
    """
    walk = _Walk(iter(pages), progress, progress_every)
    return walk.run()


def verify_from(
    pages: Iterable[Sequence[RawRow]],
    last: RawRow | None,
    *,
    progress: Callable[[int], None] | None = None,
    progress_every: int = PROGRESS_EVERY,
) -> tuple[VerifyReport, RawRow | None]:
    """:func:`verify_rows` for a part of the chain: ``pages`` are the rows after ``last`` (the
    stored row they follow; None: the chain's start). Returns the report (``rows`` counts this
    part only) and the last intact row (``last`` if none).

    Raises:
        whatever iterating ``pages`` raises.

    Thread-safety: pure function (``progress`` runs on the caller's thread).
    """
    walk = _Walk(iter(pages), progress, progress_every, last)
    return walk.run(), walk.last


class _Walk:
    """The state of one verification: the last intact row, rows read, pages to come."""

    def __init__(self, pages: Iterator[Sequence[RawRow]],
                 progress: Callable[[int], None] | None, progress_every: int,
                 last: RawRow | None = None) -> None:
        self._pages = pages
        self._progress = progress
        self._every = progress_every
        self._last = last
        self._rows = 0
        self._details: set[str] = set()

    @property
    def last(self) -> RawRow | None:
        """The last intact row."""
        return self._last

    def run(self) -> VerifyReport:
        report = None
        for page in self._pages:
            before = self._rows
            if page and self._page_intact(page):
                self._last = page[-1]
                self._rows += len(page)
            else:
                report = self._walk_page(page)
            self._report_progress(before)
            if report is not None:
                break
        else:
            report = VerifyReport(ok=True, rows=self._rows,
                                  message=f"{self._rows} rows, chain intact")
        if self._progress is not None and not (self._rows and self._rows % self._every == 0):
            self._progress(self._rows)  # the total, unless its step just reported it
        return report

    def _report_progress(self, before: int) -> None:
        if self._progress is None:
            return
        for done in range(before // self._every + 1, self._rows // self._every + 1):
            self._progress(done * self._every)

    def _page_intact(self, page: Sequence[RawRow]) -> bool:
        """Whether every row of ``page`` is an intact version 2 row following the last one."""
        columns = tuple(zip(*page, strict=True))
        if len(columns) != len(RAW_FIELDS):
            return False
        seq, prev = _expected(self._last)
        types = [set(map(type, column)) for column in columns]
        if not all(map(frozenset.issuperset, _ALLOWED, types)):
            return False
        return (
            columns[_VERSION].count(2) == len(page)
            and columns[_SEQ] == tuple(range(seq, seq + len(page)))
            and columns[_PREV] == (prev, *columns[_ROW][:-1])
            and _OUTCOMES.issuperset(columns[_OUTCOME])
            and self._details_valid(columns[_DETAILS])
            and _times_valid(columns[_TIME])
            and _digests(page, _page_format(columns, types)) == list(columns[_ROW])
        )

    def _details_valid(self, texts: Iterable[str]) -> bool:
        for text in set(texts) - self._details:
            try:
                if type(json.loads(text)) is not dict:
                    return False
            except (ValueError, RecursionError):  # deep nesting: not a record's details
                return False
            if len(self._details) >= _DETAILS_CACHE:
                self._details.clear()
            self._details.add(text)
        return True

    def _walk_page(self, page: Sequence[RawRow]) -> VerifyReport | None:
        for index, row in enumerate(page):
            self._rows += 1
            if _follows(self._last, row) and self_hash(row, row[_SEQ]) == row[_ROW]:
                self._last = row
                continue
            following = page[index + 1] if index + 1 < len(page) else self._next_row()
            self._rows += following is not None
            return _classify(self._last, row, following, self._rows)
        return None

    def _next_row(self) -> RawRow | None:
        for page in self._pages:
            if page:
                return page[0]
        return None


def _page_format(columns: Sequence[Sequence[object]], types: Sequence[set[type]]
                 ) -> Callable[[RawRow], str]:
    """A format that gives every row of the page (``columns``, of ``types``) the text
    :data:`~streamwarden.audit.chain.V2_FORMAT` gives it, converting fewer values: ``%d`` for
    a column of ints, the text between quotes for a column of printable ASCII text without
    quote or backslash (what ``ascii()`` makes of it), ``None`` for a column of NULLs, and
    ``%a`` as V2_FORMAT for any other column."""
    key = tuple(map(_conversion, columns[1:-1], types[1:-1]))
    found = _FORMATS.get(key)
    if found is None:
        if len(_FORMATS) >= _FORMATS_CACHE:
            _FORMATS.clear()
        found = _FORMATS[key] = ("%s" + "".join("\x1f" + part for part in key) + "%.0s").__mod__
    return found


def _conversion(column: Sequence[object], types: set[type]) -> str:
    if types == _JUST_INT:
        return "%d"
    if types == _JUST_NONE:
        return "None%.0s"
    if types == _JUST_STR:
        text = "".join(column)  # type: ignore[arg-type]
        if text.isascii() and text.isprintable() and "'" not in text and "\\" not in text:
            return "'%s'"
    return "%a"


def _digests(page: Sequence[RawRow], form: Callable[[RawRow], str]) -> list[str] | None:
    """The version 2 hashes of ``page``'s rows formatted by ``form``; None if one is not
    plain UTF-8 text (its ``prev_hash`` holds a lone surrogate: the row walk hashes it as
    :func:`raw_hash` does). The text is ASCII but for ``prev_hash``, so the strict codec is
    exact here."""
    try:
        return list(map(_HEXDIGEST, map(hashlib.sha256, map(str.encode, map(form, page)))))
    except UnicodeEncodeError:
        return None


def _times_valid(texts: Iterable[str]) -> bool:
    try:
        return not any(value.tzinfo for value in map(datetime.fromisoformat, texts))
    except ValueError:
        return False


def _expected(last: RawRow | None) -> tuple[int, str]:
    if last is None:
        return 1, GENESIS_HASH
    return last[_SEQ] + 1, last[_ROW]


def _follows(last: RawRow | None, row: RawRow) -> bool:
    return type(row[_SEQ]) is int and (row[_SEQ], row[_PREV]) == _expected(last)


def self_hash(row: RawRow, seq: object) -> str | None:
    """The ``row_hash`` the stored ``row`` would have at ``seq``, in the encoding of its
    ``schema_version``; None if it cannot be decoded.

    Thread-safety: pure function.
    """
    from streamwarden.audit.models import UndecodableRowError, decode_row  # noqa: PLC0415

    numbered = renumbered(row, seq)
    try:
        record = decode_row(numbered)
        if record.schema_version == 2:
            return raw_hash(numbered)
        return link(record, record.prev_hash or "")
    except (UndecodableRowError, InvalidInputError, RecursionError):
        return None


def _consistent(row: RawRow, seq: object) -> bool:
    """Whether ``row`` numbered ``seq`` hashes to its own ``row_hash``."""
    return bool(self_hash(row, seq) == row[_ROW])


def _broken(rows: int, seq: int, reason: Reason, message: str) -> VerifyReport:
    return VerifyReport(ok=False, rows=rows, first_bad_seq=seq, reason=reason, message=message)


def _classify(
    last: RawRow | None, row: RawRow, following: RawRow | None, rows: int
) -> VerifyReport:
    seq, _ = _expected(last)
    found, prev_hash, row_hash = row[_SEQ], row[_PREV], row[_ROW]
    if found is None or prev_hash is None or row_hash is None:
        return _broken(rows, seq, "inserted", f"row {seq} has no sequence number or hashes")
    if type(found) is not int or type(prev_hash) is not str or type(row_hash) is not str:
        return _broken(rows, seq, "edited", f"row {seq} cannot be decoded: its seq or hashes "
                                            f"are not a number and text ({found!r:.40})")
    if found < seq:
        return _broken(rows, found, "inserted",
                       f"row {found} is out of sequence where row {seq} was expected")
    if found > seq:
        missing = str(seq) if found == seq + 1 else f"{seq}..{found - 1}"
        return _broken(rows, seq, "deleted", f"row {missing} missing before row {found}")
    problem = _undecodable(row)
    if problem is not None:
        return _broken(rows, seq, "edited", f"row {seq} cannot be decoded: {problem}")
    return _classify_misplaced(last, row, following, rows)


def _undecodable(row: RawRow) -> str | None:
    """Why ``row`` cannot be decoded, None if it can."""
    from streamwarden.audit.models import UndecodableRowError, decode_row  # noqa: PLC0415

    try:
        decode_row(row)
    except UndecodableRowError as exc:
        return str(exc)
    except RecursionError:  # json.loads of details nested deeper than the parser goes
        return "details is nested too deeply"
    return None


def _classify_misplaced(
    last: RawRow | None, row: RawRow, following: RawRow | None, rows: int
) -> VerifyReport:
    """Rules 3 to 7: ``row`` has the expected ``seq`` but is not intact."""
    seq, prev = _expected(last)
    next_prev = following[_PREV] if following is not None else None
    if row[_PREV] == prev:
        if next_prev == prev:
            return _broken(rows, seq, "inserted",
                           f"rows {seq} and {seq + 1} both follow row {seq - 1}")
        return _broken(rows, seq, "edited", f"row {seq}'s content does not match its hash")
    if last is not None and row[_PREV] == last[_PREV] and _consistent(row, seq - 1):
        return _broken(rows, seq - 1, "inserted",
                       f"row {seq - 1} was put before the row sealed as {seq - 1}")
    return _classify_unlinked(row, next_prev, rows, seq, prev)


def _classify_unlinked(
    row: RawRow, next_prev: object, rows: int, seq: int, prev: str
) -> VerifyReport:
    if next_prev == prev:
        if _consistent(row, seq + 1):
            return _broken(rows, seq, "reordered", f"rows {seq} and {seq + 1} swapped places")
        return _broken(rows, seq, "inserted", f"row {seq} is not part of the chain")
    if _consistent(row, seq):
        return _broken(rows, seq, "inserted",
                       f"row {seq} is sealed but chained to another row's hash")
    if next_prev is None or next_prev == row[_ROW]:
        return _broken(rows, seq, "edited", f"row {seq}'s previous-hash was changed")
    return _broken(rows, seq, "reordered", f"row {seq} holds another row's content")
