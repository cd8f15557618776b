"""Streaming export of audit records to a file, for a regulator: JSON Lines or CSV.

Memory stays constant however many rows there are: records are consumed one at a time from an
iterator (``AuditLog.iter_records``, which reads the table in ``seq``-ordered batches) and
written straight out. The file appears complete or not at all: rows go to a temporary file in
the target's directory, which is flushed, fsynced and renamed over the target at the end; on
any failure the temporary file is removed and an existing target is left untouched.

Every column is exported (:data:`streamwarden.audit.report.COLUMNS`) with the hashes, so the
export can be re-verified outside the database. A target that exists must be a regular file
(or a symbolic link to one): a device, a directory or a FIFO is refused
(:func:`check_target`). :func:`write_records` writes to an open stream (standard output);
:func:`write_atomically` is the complete-or-nothing file writing, for other formats too.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import stat
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, TextIO, TypeVar

from streamwarden.audit.records import AuditRecord
from streamwarden.audit.report import COLUMNS, record_to_csv_row, record_to_json
from streamwarden.errors import InvalidInputError

EXPORT_FORMATS: tuple[str, ...] = ("jsonl", "csv")
#: Rows between two progress lines.
PROGRESS_EVERY = 100_000

T = TypeVar("T")


def check_target(path: str | os.PathLike[str]) -> None:
    """Refuse an export target that exists and is not a regular file (following links).

    Raises:
        InvalidInputError: naming the target and what it is.

    Thread-safety: reads the file system only.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise InvalidInputError(f"cannot export to {os.fspath(path)}: {exc.strerror}") from None
    if not stat.S_ISREG(mode):
        kind = ("a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode)
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a file")
        raise InvalidInputError(f"cannot export to {os.fspath(path)}: it is {kind}, not a "
                                "regular file (use -o - for standard output)")


def write_records(records: Iterable[AuditRecord], fmt: str, out: IO[str], *,
                  progress: TextIO | None = None, progress_every: int = PROGRESS_EVERY) -> int:
    """Write ``records`` to the open stream ``out`` as ``jsonl`` or ``csv``; returns how many.

    Raises:
        InvalidInputError: on an unknown format or a ``progress_every`` below 1.
        OSError: if ``out`` cannot be written.
        Whatever iterating ``records`` raises (what was written stays written).

    Thread-safety: not thread-safe on a shared ``out``.
    """
    _check_arguments(fmt, progress_every)
    return _write_rows(records, fmt, out, progress, progress_every)


def _check_arguments(fmt: str, progress_every: int) -> None:
    if fmt not in EXPORT_FORMATS:
        raise InvalidInputError(f"export format must be one of {', '.join(EXPORT_FORMATS)}; "
                                f"got {fmt!r}")
    if progress_every < 1:
        raise InvalidInputError(f"progress_every must be at least 1, got {progress_every}")


def _write_rows(records: Iterable[AuditRecord], fmt: str, out: IO[str],
                progress: TextIO | None, progress_every: int) -> int:
    writer = csv.writer(out, lineterminator="\r\n") if fmt == "csv" else None
    if writer is not None:
        writer.writerow(COLUMNS)
    count = 0
    for record in records:
        if writer is not None:
            writer.writerow(record_to_csv_row(record))
        else:
            out.write(json.dumps(record_to_json(record), ensure_ascii=False,
                                 separators=(",", ":"), allow_nan=False))
            out.write("\n")
        count += 1
        if progress is not None and count % progress_every == 0:
            progress.write(f"exported {count:,} records ...\n")
            progress.flush()
    return count


def _fsync_directory(directory: Path) -> None:
    # Makes the rename durable; not every platform can open a directory (Windows cannot).
    with contextlib.suppress(OSError):
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def write_atomically(path: str | os.PathLike[str], write: Callable[[IO[str]], T]) -> T:
    """Call ``write`` with a text stream (UTF-8, no newline translation) whose content
    becomes the file ``path`` only if ``write`` returns; returns what it returned.

    The stream is a temporary file in the target's directory, readable by its owner only
    (mode 0600), which is flushed, fsynced and renamed over ``path`` at the end.

    Postconditions: on success ``path`` is a new file (mode 0600) holding exactly what was
    written; on failure ``path`` is as it was before (absent or the previous file) and no
    temporary file remains.

    Raises:
        InvalidInputError: if ``path`` exists and is not a regular file (:func:`check_target`).
        OSError: if the file cannot be written (directory missing, disk full, permissions).
        Whatever ``write`` raises, after cleaning up.

    Thread-safety: safe to call from several threads with different paths.
    """
    check_target(path)
    target = Path(path)
    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115  (closed below, before the rename)
        "w", encoding="utf-8", newline="", dir=target.parent,
        prefix=f".{target.name}.", suffix=".partial", delete=False,
    )
    try:
        with handle:
            result = write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(handle.name)
        raise
    _fsync_directory(target.resolve().parent)
    return result


def export_records(
    records: Iterable[AuditRecord],
    fmt: str,
    path: str | os.PathLike[str],
    *,
    progress: TextIO | None = None,
    progress_every: int = PROGRESS_EVERY,
) -> int:
    """Write ``records`` to ``path`` as ``jsonl`` (one JSON object a line) or ``csv`` (a
    header row, then one row a record); returns how many records were written.

    Postconditions: on success ``path`` holds exactly the records, in the order given; on
    failure ``path`` is as it was before (absent or the previous file) and no temporary file
    remains (:func:`write_atomically`).

    Args:
        records: consumed once, lazily; pass an iterator to keep memory constant.
        progress: where to write a line every ``progress_every`` records (None: silent).

    Raises:
        InvalidInputError: on an unknown format, a ``progress_every`` below 1, or a target that
            exists and is not a regular file (:func:`check_target`).
        OSError: if the file cannot be written (directory missing, disk full, permissions).
        Whatever iterating ``records`` raises (e.g. AuditUnavailableError), after cleaning up.

    Thread-safety: safe to call from several threads with different paths.
    """
    _check_arguments(fmt, progress_every)
    return write_atomically(
        path, lambda out: _write_rows(records, fmt, out, progress, progress_every))
