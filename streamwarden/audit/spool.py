"""The local spool: audit records kept on disk, in order, while the database is unreachable.

One JSON object per line (JSONL), one line per record, written with ``fsync`` before
:meth:`Spool.add` returns. Spooled records are not sealed: ``seq`` and the hashes are assigned
when they are replayed into the database, after the chain's tail at that moment. Several
processes may share one spool file: every read and write holds an exclusive ``flock`` on it.
The file is created readable by its owner only (0600), in a directory only its owner can
enter (0700), as audit data should be.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import fields
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from sqlalchemy.engine import URL

from streamwarden.audit._flock import lock_within
from streamwarden.audit.database import redact_url, sqlite_path
from streamwarden.audit.records import AuditRecord
from streamwarden.errors import AuditError, AuditUnavailableError

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
LOCK_TIMEOUT = 10.0
_UNSEALED = frozenset({"seq", "prev_hash", "row_hash"})
_FIELDS = tuple(f.name for f in fields(AuditRecord) if f.name not in _UNSEALED)


def state_directory(environ: Mapping[str, str] | None = None) -> Path:
    """The user's state directory for streamwarden: ``$XDG_STATE_HOME/streamwarden``, else
    ``~/.local/state/streamwarden`` (XDG Base Directory specification).

    Thread-safety: reads the environment only.
    """
    environ = os.environ if environ is None else environ
    base = environ.get("XDG_STATE_HOME", "")
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".local" / "state"
    return root / "streamwarden"


def default_spool_path(url: URL, environ: Mapping[str, str] | None = None) -> Path:
    """Where records wait while the database at ``url`` is unreachable (spool policy):
    ``<state directory>/spool/<id>.jsonl`` (:func:`state_directory`), the same from any
    working directory. ``<id>`` is derived from the database: the absolute path of a SQLite
    file, or the password-less PostgreSQL URL, so two databases never share a spool and a
    changed password does not orphan one.

    Thread-safety: reads the environment only.
    """
    path = sqlite_path(url)
    identity = f"sqlite:{path.absolute()}" if path is not None else redact_url(url)
    digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
    return state_directory(environ) / "spool" / f"{digest}.jsonl"


def encode(record: AuditRecord) -> bytes:
    """One spool line (with its newline) holding ``record``'s content, without seq and hashes.

    Raises:
        TypeError, ValueError: if the details are not JSON-serialisable.
    """
    content: dict[str, Any] = {name: getattr(record, name) for name in _FIELDS}
    content["occurred_at"] = record.occurred_at.isoformat(timespec="microseconds")
    content["details"] = dict(record.details)
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return text.encode() + b"\n"


def decode(line: bytes) -> AuditRecord:
    """The unsealed record of one spool line.

    Raises:
        ValueError, TypeError, KeyError: if the line is not a spooled record.
    """
    content = json.loads(line)
    if not isinstance(content, dict) or set(content) != set(_FIELDS):
        raise ValueError("not a spooled audit record")
    content["occurred_at"] = datetime.fromisoformat(content["occurred_at"])
    return AuditRecord(**content)


def _write_all(fd: int, data: bytes) -> None:
    """Write ``data`` at the end of the file (unbuffered: a failure leaves nothing pending)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _drop_torn_tail(handle: IO[bytes]) -> int:
    """Cut a last line without newline (a torn, never acknowledged write); the new size."""
    size = handle.seek(0, os.SEEK_END)
    if size == 0:
        return 0
    handle.seek(size - 1)
    if handle.read(1) == b"\n":
        return size
    handle.seek(0)
    size = handle.read().rfind(b"\n") + 1
    handle.truncate(size)
    return size


class Spool:
    """An fsynced JSONL file of audit records waiting for the database.

    Thread-safety: every method may be called from any thread and process; they serialise on
    an exclusive file lock, waited for at most :data:`LOCK_TIMEOUT` seconds.
    """

    def __init__(self, path: str | os.PathLike[str], *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes

    def pending(self) -> bool:
        """Whether the spool holds records (a cheap size check, without the lock); False if it
        cannot be seen (writing to it then reports why)."""
        try:
            return self.path.stat().st_size > 0
        except OSError:
            return False

    def count(self) -> int:
        """How many complete records the spool holds (reads it, without the lock).

        Raises:
            AuditUnavailableError: if the file exists but cannot be read.
        """
        try:
            with self.path.open("rb") as handle:
                return sum(1 for line in handle if line.endswith(b"\n"))
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise AuditUnavailableError(f"cannot read the audit spool {self.path}: "
                                        f"{exc.strerror}", operation="audit.spool") from None

    def add(self, records: Sequence[AuditRecord]) -> None:
        """Append ``records`` in order and fsync them.

        Raises:
            AuditUnavailableError: if the spool is full (``max_bytes``), cannot be written, or
                its lock was not obtained in time; nothing was added.
        """
        data = b"".join(encode(record) for record in records)
        with self._locked() as handle:
            size = _drop_torn_tail(handle)
            if size + len(data) > self.max_bytes:
                raise AuditUnavailableError(
                    f"audit database unreachable and the spool {self.path} is full "
                    f"({size} of {self.max_bytes} bytes)", operation="audit.spool",
                )
            try:
                _write_all(handle.fileno(), data)
                os.fsync(handle.fileno())
            except OSError as exc:
                with contextlib.suppress(OSError):
                    handle.truncate(size)
                raise AuditUnavailableError(
                    f"cannot write the audit spool {self.path}: {exc.strerror}",
                    operation="audit.spool",
                ) from None

    def replay(self, write: Callable[[list[AuditRecord]], object], *, chunk: int = 500) -> int:
        """Hand every spooled record, in order and in chunks, to ``write``; then empty the spool.

        ``write`` must be idempotent for records it already stored (a failure part-way leaves
        the spool whole, so the next replay hands them over again).

        Returns:
            How many records were replayed.

        Raises:
            AuditError: whatever ``write`` raises (the spool is left as it was), or if the
                spool holds a line that is not a record.
            AuditUnavailableError: if the lock was not obtained in time.
        """
        with self._locked() as handle:
            handle.seek(0)
            records = list(self._read(handle))
            for start in range(0, len(records), chunk):
                write(records[start:start + chunk])
            handle.truncate(0)
            handle.flush()
            os.fsync(handle.fileno())
            return len(records)

    def _read(self, handle: IO[bytes]) -> Iterator[AuditRecord]:
        for number, line in enumerate(handle, start=1):
            if not line.endswith(b"\n"):
                return  # torn write of a process that died in add(): never acknowledged
            try:
                yield decode(line)
            except (ValueError, TypeError, KeyError):
                raise AuditError(
                    f"the audit spool {self.path} is corrupt at line {number}; "
                    "move it aside and replay its valid lines by hand", operation="audit.spool",
                ) from None

    @contextmanager
    def _locked(self) -> Iterator[IO[bytes]]:
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
            handle = os.fdopen(descriptor, "a+b")
        except OSError as exc:
            raise AuditUnavailableError(
                f"cannot open the audit spool {self.path}: {exc.strerror}", operation="audit.spool"
            ) from None
        with handle:
            if not lock_within(handle, LOCK_TIMEOUT):
                raise AuditUnavailableError(
                    f"the audit spool {self.path} stayed locked for {LOCK_TIMEOUT} s",
                    operation="audit.spool")
            try:
                yield handle
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
