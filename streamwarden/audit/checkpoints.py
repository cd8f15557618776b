"""Signed checkpoints of the audit trail: their text, their files and the writer.

A checkpoint is a C2SP signed note (:mod:`streamwarden.audit.notes`) laid out like a
tlog-checkpoint (https://c2sp.org/tlog-checkpoint)::

    streamwarden.example/audit                  origin: the trail's stable id
    1000                                        size: the seq it covers
    q1b8...=                                    base64 of the head: row_hash of row seq == size
    time 2026-01-02T09:30:00.123456Z            when it was signed (UTC)
    prev 3q2+...=                               base64 SHA-256 of the previous checkpoint's text

    — streamwarden.example/audit <base64(key id || Ed25519 signature)>

The head is the hash chain's ``row_hash`` at ``size`` (the 64 zeros of the genesis hash when
``size`` is 0), not an RFC 6962 Merkle root (ADR 0006). ``prev`` of the first checkpoint of a
directory is 32 zero bytes. The origin of a directory's first checkpoint is the signing key's
name; later ones keep it.

Each checkpoint is one file in the checkpoint directory, named ``<size, 20 digits>-<time>.
checkpoint`` so that names sort by size, then time. A file is written once (temporary file,
fsync, hard link to its name, fsync of the directory) and never rewritten.

>>> from datetime import UTC, datetime
>>> cp = Checkpoint("example.org/audit", 2, "ab" * 32, datetime(2026, 1, 2, tzinfo=UTC),
...                 GENESIS_HASH)
>>> Checkpoint.parse(cp.text()) == cp
True
>>> cp.file_name
'00000000000000000002-20260102T000000.000000Z.checkpoint'
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import hashlib
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from streamwarden.audit._flock import lock_within
from streamwarden.audit.chain import GENESIS_HASH, link
from streamwarden.audit.notes import (
    MAX_NOTE_BYTES,
    Signer,
    Verifier,
    check_key_name,
    open_note,
    sign_note,
)
from streamwarden.audit.records import AuditRecord
from streamwarden.errors import CheckpointError, InvalidInputError

SUFFIX = ".checkpoint"
#: Seconds a writer waits for another writer's lock on the checkpoint directory.
LOCK_TIMEOUT = 10.0
_LOCK_FILE = ".lock"
_NAME = re.compile(r"^\d{20}-\d{8}T\d{6}\.\d{6}Z\.checkpoint$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_SIZE = re.compile(r"^(0|[1-9]\d{0,18})$")
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"

Clock = Callable[[], datetime]
#: Reads the table: the records with ``seq > after``, in ``seq`` order.
TableReader = Callable[[int], Iterable[AuditRecord]]


def utc_now() -> datetime:
    """The current time in UTC (the default clock)."""
    return datetime.now(UTC)


def _b64_hash(hex_hash: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_hash)).decode()


def _hex_hash(text: str, what: str) -> str:
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error:
        raise CheckpointError(f"checkpoint {what} is not base64") from None
    if len(raw) != 32:
        raise CheckpointError(f"checkpoint {what} is not a SHA-256 hash")
    return raw.hex()


@dataclass(frozen=True)
class Checkpoint:
    """The content of one checkpoint (what is signed).

    Attributes:
        origin: the trail's stable id.
        size: the sequence number covered (0: an empty trail).
        head: ``row_hash`` (hex) of row ``seq == size``; :data:`GENESIS_HASH` for size 0.
        time: when it was signed (timezone-aware).
        prev: SHA-256 (hex) of the previous checkpoint's text; :data:`GENESIS_HASH` if none.

    Raises:
        InvalidInputError: on construction, for a malformed field.

    Thread-safety: immutable.
    """

    origin: str
    size: int
    head: str
    time: datetime
    prev: str

    def __post_init__(self) -> None:
        check_key_name(self.origin)
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 0:
            raise InvalidInputError("checkpoint size must be a whole number >= 0")
        for name in ("head", "prev"):
            if not isinstance(getattr(self, name), str) or not _HEX64.match(getattr(self, name)):
                raise InvalidInputError(f"checkpoint {name} must be 64 lowercase hex digits")
        if not isinstance(self.time, datetime) or self.time.tzinfo is None:
            raise InvalidInputError("checkpoint time must be timezone-aware")

    def text(self) -> bytes:
        """The note text that is signed."""
        when = self.time.astimezone(UTC).strftime(_TIME_FORMAT)
        return (f"{self.origin}\n{self.size}\n{_b64_hash(self.head)}\ntime {when}\n"
                f"prev {_b64_hash(self.prev)}\n").encode()

    @property
    def digest(self) -> str:
        """SHA-256 (hex) of :meth:`text`: what the next checkpoint's ``prev`` holds."""
        return hashlib.sha256(self.text()).hexdigest()

    @property
    def file_name(self) -> str:
        """``<size, 20 digits>-<UTC time>.checkpoint``: sorts by size, then time."""
        return (f"{self.size:020d}-{self.time.astimezone(UTC).strftime('%Y%m%dT%H%M%S.%f')}Z"
                f"{SUFFIX}")

    @classmethod
    def parse(cls, text: bytes) -> Checkpoint:
        """The checkpoint in a note's (already verified) ``text``.

        Raises:
            CheckpointError: if the text is not exactly a streamwarden checkpoint.
        """
        lines = text.decode("utf-8", errors="replace").split("\n")
        if len(lines) != 6 or lines[5] != "":
            raise CheckpointError("a checkpoint has exactly five lines")
        origin, size, head, when, prev = lines[:5]
        if not _SIZE.match(size):
            raise CheckpointError("checkpoint size is not a decimal number")
        if not when.startswith("time ") or not prev.startswith("prev "):
            raise CheckpointError("checkpoint lacks its time or prev line")
        try:
            moment = datetime.strptime(when.removeprefix("time "), _TIME_FORMAT)
            checkpoint = cls(origin, int(size), _hex_hash(head, "head"),
                             moment.replace(tzinfo=UTC),
                             _hex_hash(prev.removeprefix("prev "), "prev"))
        except (ValueError, InvalidInputError) as exc:
            raise CheckpointError(f"malformed checkpoint: {exc}") from None
        if checkpoint.text() != text:  # one encoding only: no second form of the same content
            raise CheckpointError("checkpoint text is not in canonical form")
        return checkpoint


@dataclass(frozen=True)
class SignedCheckpoint:
    """A checkpoint with its signed note, after the signatures were checked.

    Attributes:
        checkpoint: the content.
        note: the whole signed note (text, blank line, signatures).
        signed_by: names of the trusted keys whose signatures verified.

    Thread-safety: immutable.
    """

    checkpoint: Checkpoint
    note: bytes
    signed_by: tuple[str, ...]


def read_checkpoint(note: bytes, verifiers: Sequence[Verifier]) -> SignedCheckpoint:
    """Check ``note``'s signatures against ``verifiers`` and parse it.

    Raises:
        CheckpointError: with ``reason`` ``bad_signature``, ``unknown_key`` or
            ``malformed_checkpoint``.

    Thread-safety: pure function.
    """
    opened = open_note(note, verifiers)
    return SignedCheckpoint(Checkpoint.parse(opened.text), note, opened.signed_by)


def checkpoint_files(directory: str | os.PathLike[str]) -> list[Path]:
    """The checkpoint files in ``directory``, sorted by name (size, then time).

    Files that do not look like checkpoints by name are ignored.

    Raises:
        CheckpointError: if the directory cannot be listed.

    Thread-safety: safe from any thread.
    """
    folder = Path(directory)
    try:
        names = sorted(entry.name for entry in os.scandir(folder) if _NAME.match(entry.name))
    except OSError as exc:
        raise CheckpointError(f"cannot read the checkpoint directory {folder}: "
                              f"{exc.strerror}") from None
    return [folder / name for name in names]


def read_file(path: Path) -> bytes:
    """The bytes of a checkpoint file (at most a note's maximum size, plus one).

    Raises:
        CheckpointError: if it cannot be read.
    """
    try:
        with path.open("rb") as handle:
            return handle.read(MAX_NOTE_BYTES + 1)
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror}") from None


def fsync_directory(directory: Path) -> None:
    """Make a rename or link in ``directory`` durable.

    Raises:
        OSError: the directory cannot be opened or synced.
    """
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_new_file(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write ``data`` to ``path``, which must not exist: temporary file in the same
    directory, fsync, hard link to ``path`` (fails if it exists), fsync of the directory.

    Raises:
        FileExistsError: ``path`` exists (it is left as it was).
        OSError: the file cannot be written; no temporary file remains.

    Thread-safety: safe from any thread and process.
    """
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                             suffix=".partial")
    try:
        try:
            os.fchmod(descriptor, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(descriptor, view):]
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.link(temporary, path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
    fsync_directory(path.parent)


class CheckpointWriter:
    """Signs and writes checkpoints of one trail into one directory.

    Before signing, it checks that the table still extends its directory's newest checkpoint:
    the row at that size still has that head, and every row after it chains on. It never
    signs a history inconsistent with a checkpoint it signed (tlog-checkpoint's rule).

    Thread-safety: :meth:`write` may be called from any thread and process: writers of one
    directory are serialised by an ``flock`` on ``<directory>/.lock``.
    """

    def __init__(self, directory: str | os.PathLike[str], signers: Sequence[Signer], *,
                 clock: Clock = utc_now) -> None:
        """Raises InvalidInputError without a signer."""
        if not signers:
            raise InvalidInputError("a checkpoint writer needs at least one key")
        self.directory = Path(directory)
        self._signers = tuple(signers)
        self._clock = clock

    def __repr__(self) -> str:
        return f"CheckpointWriter(directory={str(self.directory)!r}, signers={self._signers!r})"

    def write(self, rows: TableReader, *, expect: tuple[int, str] | None = None
              ) -> SignedCheckpoint:
        """Sign the table's current head and write it as the newest checkpoint.

        Args:
            rows: reads the table's records after a given seq, in order.
            expect: ``(seq, row_hash)`` of a row the caller stored; refused if it is gone.

        Returns:
            The checkpoint written.

        Raises:
            CheckpointError: the newest checkpoint is not signed by one of this writer's keys,
                the table no longer extends it (``reason`` ``inconsistent``), the directory is
                locked for :data:`LOCK_TIMEOUT` s or cannot be written (``write_failed``).
            AuditUnavailableError, AuditError: reading the table failed.
        """
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CheckpointError(f"cannot create the checkpoint directory {self.directory}: "
                                  f"{exc.strerror}", reason="write_failed") from None
        with self._locked():
            newest = self._newest()
            size, head = extend(rows, newest, expect)
            checkpoint = self._next(newest, size, head)
            note = sign_note(checkpoint.text(), self._signers)
            try:
                write_new_file(self.directory / checkpoint.file_name, note)
            except OSError as exc:
                raise CheckpointError(f"cannot write checkpoint {checkpoint.file_name} in "
                                      f"{self.directory}: {exc.strerror or exc}",
                                      reason="write_failed") from None
        return SignedCheckpoint(checkpoint, note, tuple(s.name for s in self._signers))

    def _next(self, newest: Checkpoint | None, size: int, head: str) -> Checkpoint:
        now = self._clock().astimezone(UTC)
        if newest is None:
            return Checkpoint(self._signers[0].name, size, head, now, GENESIS_HASH)
        # Strictly later than the newest, so names and times never repeat or go back.
        when = max(now, newest.time + timedelta(microseconds=1))
        return Checkpoint(newest.origin, size, head, when, newest.digest)

    def _newest(self) -> Checkpoint | None:
        files = checkpoint_files(self.directory)
        if not files:
            return None
        verifiers = [signer.verifier for signer in self._signers]
        try:
            return read_checkpoint(read_file(files[-1]), verifiers).checkpoint
        except CheckpointError as exc:
            raise CheckpointError(f"the newest checkpoint {files[-1]} cannot be extended: "
                                  f"{exc.message}", reason=exc.reason) from None

    @contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            handle = (self.directory / _LOCK_FILE).open("a+b")
        except OSError as exc:
            raise CheckpointError(f"cannot lock the checkpoint directory {self.directory}: "
                                  f"{exc.strerror}", reason="write_failed") from None
        with handle:
            if not lock_within(handle, LOCK_TIMEOUT):
                raise CheckpointError(
                    f"the checkpoint directory {self.directory} stayed locked for "
                    f"{LOCK_TIMEOUT} s", reason="write_failed")
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _inconsistent(message: str) -> CheckpointError:
    return CheckpointError(f"refusing to sign: {message}", reason="inconsistent",
                           operation="audit.checkpoint")


def extend(rows: TableReader, newest: Checkpoint | None,
           expect: tuple[int, str] | None = None) -> tuple[int, str]:
    """The table's ``(size, head)`` after checking that it extends ``newest``: row
    ``newest.size`` has ``newest.head`` and every later row chains on (from the genesis hash
    when there is no checkpoint yet). With ``expect``, row ``expect[0]`` must have hash
    ``expect[1]``.

    Raises:
        CheckpointError: ``reason`` ``inconsistent``, naming the first row that does not fit.
        Whatever ``rows`` raises.

    Thread-safety: pure, apart from what ``rows`` does.
    """
    size, head = (0, GENESIS_HASH) if newest is None else (newest.size, newest.head)
    records = iter(rows(max(size - 1, 0)))
    if size > 0:
        anchor = next(records, None)
        if anchor is None or anchor.seq != size or anchor.row_hash != head:
            raise _inconsistent(f"row {size} no longer has the head of the newest checkpoint")
    for record in records:
        if record.seq != size + 1 or record.prev_hash != head or not _sealed(record, head):
            raise _inconsistent(f"row {size + 1} does not chain onto row {size}")
        size, head = size + 1, str(record.row_hash)
        if expect is not None and expect[0] == size and expect[1] != head:
            raise _inconsistent(f"row {size} is not the row this log stored")
    if expect is not None and expect[0] > size:
        raise _inconsistent(f"row {expect[0]}, stored by this log, is gone (table ends at "
                            f"{size})")
    return size, head


def _sealed(record: AuditRecord, prev_hash: str) -> bool:
    try:
        return link(record, prev_hash) == record.row_hash
    except InvalidInputError:
        return False
