"""Export bundles: records with the signed checkpoints that prove them, verifiable offline.

A bundle is a JSON Lines file (ADR 0006)::

    {"format": "streamwarden-audit-bundle", "version": 1, "origin": ..., "first_seq": a,
     "last_seq": c, "checkpoints": n, "records": m}
    {"checkpoint": "<signed note>"}           n lines, oldest first
    {"record": {<every column>}}              m = c - a + 1 lines, seq a..c in order

``a`` is the first record selected, ``c`` the size of the first checkpoint at or after the
last one selected; the bundle holds every row from ``a`` to ``c`` and every checkpoint whose
size lies in ``a..c``, the last one of size ``c``. The proof is the hash chain itself: row
``c``'s ``row_hash`` is the signed head, and it commits to rows ``a..c`` (and to row ``a``'s
``prev_hash``), so nobody can change, drop, add or reorder a record without either breaking
the chain or changing the head, which a signature covers.

:func:`verify_bundle` needs the file and the trusted public keys only. The header is not
signed: it is checked against the content but trusted for nothing.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, fields, replace
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from streamwarden.audit.anchoring import (
    AnchorReport,
    CheckedCheckpoints,
    HeadWatch,
    check_sequence,
    finish,
    read_directory,
)
from streamwarden.audit.chain import link
from streamwarden.audit.checkpoints import SignedCheckpoint, fsync_directory
from streamwarden.audit.notes import Verifier
from streamwarden.audit.records import AuditRecord
from streamwarden.audit.report import record_to_json
from streamwarden.errors import AuditIntegrityError, CheckpointError, InvalidInputError

FORMAT = "streamwarden-audit-bundle"
VERSION = 1
_FIELDS = {f.name: f for f in fields(AuditRecord)}
_HEADER_KEYS = {"format", "version", "origin", "first_seq", "last_seq", "checkpoints",
                "records"}


@dataclass(frozen=True)
class BundleSummary:
    """What :func:`write_bundle` wrote: rows ``first_seq..last_seq`` and ``checkpoints``."""

    path: Path
    first_seq: int
    last_seq: int
    records: int
    checkpoints: int


def _covering(checked: CheckedCheckpoints, first: int, last: int) -> list[SignedCheckpoint]:
    """The checkpoints of sizes ``first..c``, ``c`` the first size >= ``last``.

    Raises:
        CheckpointError: no checkpoint covers ``last`` yet.
    """
    chosen: list[SignedCheckpoint] = []
    for signed in checked.checkpoints:
        size = signed.checkpoint.size
        if size >= first:
            chosen.append(signed)
        if size >= last:
            return chosen
    raise CheckpointError(f"no checkpoint covers seq {last} yet; write one first "
                          "(streamwarden audit checkpoint) and export again",
                          operation="audit.export")


def _selected_range(selected: Iterable[AuditRecord]) -> tuple[int, int]:
    first = last = None
    for record in selected:
        first = record.seq if first is None else first
        last = record.seq
    if first is None or last is None:
        raise InvalidInputError("no records match: nothing to bundle")
    return first, last


def _write_lines(out: IO[str], header: dict[str, Any], checkpoints: Sequence[SignedCheckpoint],
                 records: Iterable[AuditRecord], last: int) -> int:
    def line(value: dict[str, Any]) -> None:
        out.write(json.dumps(value, ensure_ascii=False, separators=(",", ":"),
                             allow_nan=False) + "\n")

    line(header)
    for signed in checkpoints:
        line({"checkpoint": signed.note.decode()})
    count = 0
    for record in records:
        if (record.seq or 0) > last:
            break
        line({"record": record_to_json(record)})
        count += 1
    return count


def write_bundle(path: str | os.PathLike[str], selected: Iterable[AuditRecord],
                 rows: Callable[[int], Iterable[AuditRecord]], directory: str | Path,
                 verifiers: Sequence[Verifier]) -> BundleSummary:
    """Write a bundle of the rows from the first to the last of ``selected`` (extended to the
    checkpoint covering it) to ``path``, atomically (it appears complete or not at all; an
    existing regular file is replaced), then verify it.

    Args:
        selected: the records the reader asked for, in ``seq`` order (read once).
        rows: reads the table's records after a given seq, in order.
        directory, verifiers: the checkpoint directory and the keys its checkpoints are
            checked with before they are bundled.

    Raises:
        InvalidInputError: nothing selected, or ``path`` exists and is not a regular file.
        CheckpointError: the checkpoints do not verify, or none covers the selection yet.
        AuditIntegrityError: the rows do not match the checkpoints (nothing is written).
        OSError: the file cannot be written.
        AuditUnavailableError, AuditError: reading the table failed.

    Thread-safety: safe from any thread, for different paths.
    """
    target = Path(path)
    if os.path.lexists(target) and not target.is_file():
        raise InvalidInputError(f"{target} exists and is not a regular file")
    first, last = _selected_range(selected)
    checked = read_directory(directory, verifiers)
    if checked.failure is not None:
        raise CheckpointError(f"the checkpoints do not verify ({checked.failure.reason}): "
                              f"{checked.failure.message}", reason=str(checked.failure.reason))
    chosen = _covering(checked, first, last)
    end = chosen[-1].checkpoint.size
    header = {"format": FORMAT, "version": VERSION, "origin": chosen[-1].checkpoint.origin,
              "first_seq": first, "last_seq": end, "checkpoints": len(chosen),
              "records": end - first + 1}
    temporary = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        with temporary.open("x", encoding="utf-8") as out:
            os.fchmod(out.fileno(), 0o600)
            _write_lines(out, header, chosen, rows(first - 1), end)
            out.flush()
            os.fsync(out.fileno())
        report = verify_bundle(temporary, verifiers)
        if not report.ok:
            raise AuditIntegrityError(f"the table does not match its checkpoints "
                                      f"({report.reason}): {report.message}",
                                      operation="audit.export")
        os.replace(temporary, target)
    finally:
        with contextlib.suppress(OSError):
            temporary.unlink()
    with contextlib.suppress(OSError):  # not every platform can open a directory
        fsync_directory(target.resolve().parent)
    return BundleSummary(target, first, end, end - first + 1, len(chosen))


def record_from_json(value: object) -> AuditRecord:
    """The sealed record of one bundle ``record`` object (every column, as exported).

    Raises:
        ValueError, TypeError: if it is not exactly such an object.

    Thread-safety: pure function.
    """
    if not isinstance(value, dict) or set(value) != set(_FIELDS):
        raise ValueError("a record needs exactly the table's columns")
    content = dict(value)
    occurred = content["occurred_at"]
    if not isinstance(occurred, str):
        raise TypeError("occurred_at must be a string")
    content["occurred_at"] = datetime.fromisoformat(occurred)
    if content["occurred_at"].tzinfo is None:
        raise ValueError("occurred_at must have a UTC offset")
    for name in ("seq", "pid", "schema_version"):
        if isinstance(content[name], bool) or not isinstance(content[name], int):
            raise TypeError(f"{name} must be a whole number")
    if not isinstance(content["details"], dict):
        raise TypeError("details must be an object")
    return AuditRecord(**content)


@dataclass
class _Parsed:
    header: dict[str, Any]
    notes: list[tuple[str, bytes]]
    records: Iterator[AuditRecord]


def _lines(handle: IO[str]) -> Iterator[tuple[int, Any]]:
    for number, text in enumerate(handle, start=1):
        try:
            yield number, json.loads(text)
        except (ValueError, RecursionError):
            raise CheckpointError(f"bundle line {number} is not JSON (or nested too deeply)"
                                  ) from None


def _records(lines: Iterator[tuple[int, Any]], first: tuple[int, Any]
             ) -> Iterator[AuditRecord]:
    for number, value in itertools.chain([first], lines):
        if not isinstance(value, dict) or set(value) != {"record"}:
            raise CheckpointError(f"bundle line {number} is not a record")
        try:
            yield record_from_json(value["record"])
        except (ValueError, TypeError, KeyError) as exc:
            raise CheckpointError(f"bundle line {number}: malformed record ({exc})") from None


def _parse(handle: IO[str]) -> _Parsed:
    lines = _lines(handle)
    _, header = next(lines, (0, None))
    if (not isinstance(header, dict) or set(header) != _HEADER_KEYS
            or header.get("format") != FORMAT or header.get("version") != VERSION):
        raise CheckpointError(f"not a {FORMAT} version {VERSION} file")
    notes: list[tuple[str, bytes]] = []
    for number, value in lines:
        if isinstance(value, dict) and set(value) == {"checkpoint"}:
            if not isinstance(value["checkpoint"], str):
                raise CheckpointError(f"bundle line {number}: a checkpoint must be text")
            notes.append((f"bundle checkpoint {len(notes) + 1}",
                          value["checkpoint"].encode()))
            continue
        return _Parsed(header, notes, _records(lines, (number, value)))
    return _Parsed(header, notes, iter(()))


def verify_bundle(path: str | os.PathLike[str], verifiers: Sequence[Verifier], *,
                  now: datetime | None = None) -> AnchorReport:
    """Check a bundle with the trusted public keys only: every checkpoint's signature and
    links, the records' chain from the first to the last, each checkpoint's head at its size,
    the last record at the newest checkpoint, and the header against the content. Any change
    to the file fails it.

    Reasons: those of :mod:`streamwarden.audit.anchoring`, and ``malformed_bundle``.

    Raises:
        CheckpointError: the file cannot be read (reason ``malformed_bundle``).

    Thread-safety: safe from any thread.
    """
    try:
        with Path(path).open(encoding="utf-8") as handle:
            return _verify_open(handle, verifiers, now)
    except OSError as exc:
        raise CheckpointError(f"cannot read bundle {path}: {exc.strerror}",
                              reason="malformed_bundle") from None
    except UnicodeDecodeError:
        return AnchorReport(ok=False, reason="malformed_bundle", message="bundle is not UTF-8")


def _verify_open(handle: IO[str], verifiers: Sequence[Verifier],
                 now: datetime | None) -> AnchorReport:
    try:
        parsed = _parse(handle)
        checked = check_sequence(parsed.notes, verifiers, from_genesis=False, named=False)
        if checked.failure is not None:
            return checked.failure
        if not checked.checkpoints:
            return AnchorReport(ok=False, reason="no_checkpoints",
                                message="the bundle holds no checkpoint")
        report = _walk_slice(parsed.records, checked)
    except CheckpointError as exc:
        return AnchorReport(ok=False, reason="malformed_bundle", message=exc.message)
    report = finish(report, checked.checkpoints, now=now)
    if report.ok:
        return _check_header(report, parsed.header, len(checked.checkpoints))
    return report


def _check_header(report: AnchorReport, header: dict[str, Any], checkpoints: int
                  ) -> AnchorReport:
    first = report.head_seq - report.rows + 1
    actual = {"origin": report.origin, "first_seq": first, "last_seq": report.head_seq,
              "checkpoints": checkpoints, "records": report.rows}
    wrong = sorted(key for key, value in actual.items() if header.get(key) != value)
    if wrong:
        return replace(report, ok=False, reason="malformed_bundle",
                       message=f"the header's {', '.join(wrong)} do not match the content")
    return report


def _walk_slice(records: Iterator[AuditRecord], checked: CheckedCheckpoints) -> AnchorReport:
    """The chain of ``records`` from the first one's ``prev_hash``; every anchor inside."""
    anchors = checked.anchors()
    watch = HeadWatch(anchors)
    rows = 0
    expected_seq: int | None = None
    prev = ""
    for record in watch.watch(records):
        rows += 1
        if expected_seq is None:
            expected_seq, prev = record.seq or 0, str(record.prev_hash)
        problem = _slice_problem(record, expected_seq, prev)
        if problem is not None:
            return AnchorReport(ok=False, rows=rows, reason=problem[0],
                                first_bad_seq=expected_seq, message=problem[1])
        expected_seq, prev = expected_seq + 1, str(record.row_hash)
    last = 0 if expected_seq is None else expected_seq - 1
    first = last - rows + 1
    base = AnchorReport(ok=True, rows=rows, head_seq=last, head_hash=prev)
    if watch.mismatch is not None:
        return replace(base, ok=False, reason="rewritten", first_bad_seq=watch.mismatch.size,
                       checkpoint=watch.mismatch.label,
                       message=f"record {watch.mismatch.size} does not have the signed head")
    outside = [a for a in anchors if not first <= a.size <= last]
    newest = checked.checkpoints[-1].checkpoint.size
    if outside or rows == 0 or newest != last:
        return replace(base, ok=False, reason="truncated",
                       message=f"the records ({first}..{last}) do not end at the newest "
                               f"checkpoint ({newest}) or miss a checkpoint's row")
    return replace(base, message=f"{rows} records ({first}..{last}), chain intact, "
                                 f"anchored by {len(anchors)} checkpoints")


def _slice_problem(record: AuditRecord, seq: int, prev: str) -> tuple[str, str] | None:
    found = record.seq or 0
    if found > seq:
        return "deleted", f"record {seq} is missing before record {found}"
    if found < seq:
        return "inserted", f"record {found} is out of sequence where {seq} was expected"
    if record.prev_hash != prev:
        return "edited", f"record {seq} does not chain onto record {seq - 1}"
    try:
        sealed = link(record, prev) == record.row_hash
    except InvalidInputError:
        sealed = False
    return None if sealed else ("edited", f"record {seq}'s content does not match its hash")
