"""AuditLog: the append-only, hash-chained audit trail in SQLite or PostgreSQL."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import sqlalchemy as sa
from sqlalchemy import Engine
from sqlalchemy.engine import URL

from streamwarden._redaction import SecretRedactor
from streamwarden.audit import anchoring, bundle
from streamwarden.audit._parallel_verify import (
    Monotone,
    default_workers,
    verify_parallel,
)
from streamwarden.audit.anchoring import AnchorReport
from streamwarden.audit.appender import Appended, Prepared, Tail, append_chain, prepare
from streamwarden.audit.batching import BatchWriter
from streamwarden.audit.chain import RAW_FIELDS, RawRow
from streamwarden.audit.checkpointer import Checkpointer
from streamwarden.audit.checkpoints import CheckpointWriter, SignedCheckpoint
from streamwarden.audit.database import (
    is_read_only,
    is_sqlite,
    make_engine,
    parse_url,
    redact_url,
    resolve_url,
    sqlite_path,
    translate_error,
)
from streamwarden.audit.migrate import ensure_schema
from streamwarden.audit.models import UndecodableRowError, audit_table, decode_row, raw_select
from streamwarden.audit.notes import Verifier, key_exposed, load_signer
from streamwarden.audit.query import (
    AuditFilter,
    check_id,
    check_limit,
    select_matching_ids,
    select_records,
)
from streamwarden.audit.records import AuditRecord
from streamwarden.audit.spool import Spool, default_spool_path
from streamwarden.audit.verify import PAGE_SIZE, VerifyReport, verify_rows
from streamwarden.config import Durability, FailurePolicy, Settings
from streamwarden.errors import (
    AuditError,
    AuditIntegrityError,
    AuditUnavailableError,
    CheckpointError,
    InvalidInputError,
)
from streamwarden.logging import (
    AUDIT_CHECKPOINT_KEY_EXPOSED,
    AUDIT_WRITE_FAILED,
    make_logger,
)
from streamwarden.validation import check_seconds

#: Seconds :meth:`AuditLog.flush` and :meth:`AuditLog.close` wait by default.
FLUSH_TIMEOUT = 30.0
#: Seconds a thread waits for another thread's append (or flush) before giving up.
APPEND_WAIT = 60.0
#: Log event: an earlier run left records in this database's spool.
AUDIT_SPOOL_LEFTOVER = "audit.spool_leftover"
_SEQ = RAW_FIELDS.index("seq")
_log = make_logger(SecretRedactor())


def _lenient_text(data: bytes) -> str:
    # Text that is not UTF-8 (written behind the log's back) reads with lone surrogates,
    # which decode_row refuses, instead of failing the whole page.
    return data.decode("utf-8", "surrogateescape")


def _fetch(connection: sa.Connection, run: Callable[[], list[RawRow]]) -> list[RawRow]:
    """``run()``; on SQLite, again with lenient text decoding if a row is not UTF-8."""
    try:
        return run()
    except (sa.exc.OperationalError, sqlite3.OperationalError) as exc:
        driver = connection.connection.driver_connection
        if not isinstance(driver, sqlite3.Connection) or "decode" not in str(exc):
            raise
        driver.text_factory = _lenient_text
        try:
            return run()
        finally:
            driver.text_factory = str


class _Holding:
    """Holds ``lock``, waiting at most :data:`APPEND_WAIT` seconds for it (a plain class:
    appends enter one or two of these each).

    Raises:
        AuditUnavailableError: on entry, if another thread held it all that time.
    """

    __slots__ = ("_lock", "_operation")

    def __init__(self, lock: threading.Lock, operation: str) -> None:
        self._lock = lock
        self._operation = operation

    def __enter__(self) -> None:
        if not self._lock.acquire(timeout=APPEND_WAIT):
            raise AuditUnavailableError(f"audit log busy for {APPEND_WAIT} s",
                                        operation=self._operation)

    def __exit__(self, *_exc: object) -> None:
        self._lock.release()


class AuditLog:
    """The ``lifecycle_audit`` table: an append-only, hash-chained :class:`AuditSink`.

    Open with :meth:`open`. Each appended record gets the next ``seq`` and is sealed after the
    previous row (``row_hash = sha256(prev_hash || canonical(record))``, see
    :mod:`streamwarden.audit.chain`); appends from threads and processes are serialised by the
    database (:mod:`streamwarden.audit.appender`), so the chain stays linear.

    Durability (``Settings.audit_durability``):

    * ``sync`` (default): :meth:`append` returns the stored record after its transaction
      committed.
    * ``batched``: :meth:`append` queues the record (bounded queue) and returns it unsealed
      (``seq`` and hashes None: they are assigned at commit); the writer thread
      ``streamwarden-audit-writer`` commits up to ``batch_size`` records per transaction, in
      order. :meth:`flush` and :meth:`close` drain the queue. **Loss window**: records queued
      but not yet committed (at most ``queue_size``, normally those of the last few
      milliseconds) are lost if the process dies or :meth:`close` is never called.

    Failure policy when the database is unreachable (``Settings.audit_failure_policy``):

    * ``raise`` (default): :meth:`append` raises :class:`AuditUnavailableError` and nothing is
      stored, so the manager rolls the transition back. (Batched: the writer keeps the queued
      records and retries every 0.5 s; a full queue makes :meth:`append` raise.)
    * ``spool``: the record is appended, unsealed, to a local fsynced JSONL spool and
      :meth:`append` returns it unsealed. While the spool holds records every append goes to
      it too, so the order is kept. Each append and :meth:`flush` first try the database:
      once it answers, the spool is replayed into the table in order (sealed then, chain
      intact) and emptied. A replay interrupted part-way is resumed without duplicates
      (records are matched by ``event_id``).

    Signed checkpoints (``checkpoint_dir`` and ``checkpoint_key``): the thread
    ``streamwarden-audit-checkpoint`` signs the chain's head into the directory every
    ``checkpoint_every`` committed records and every ``checkpoint_interval`` seconds (a
    heartbeat when nothing happened), and once more at :meth:`close`
    (:mod:`streamwarden.audit.checkpointer`). A checkpoint that cannot be written is logged and
    counted (:attr:`checkpoint_failures`); records are never lost by it.

    A log opened ``read_only`` (or on a ``mode=ro`` SQLite URL) never writes: no migration,
    no spool replay, and :meth:`append` raises.

    Thread-safety: every method may be called from any thread; appends are stored in the
    order of the calls. Close it after the manager that writes to it.
    """

    def __init__(
        self,
        engine: Engine,
        url: URL,
        *,
        spool: Spool,
        durability: Durability = "sync",
        failure_policy: FailurePolicy = "raise",
        batch_size: int = 500,
        queue_size: int = 10_000,
        ready: bool = True,
        checkpoint_writer: CheckpointWriter | None = None,
        checkpoint_every: int = 1000,
        checkpoint_interval: float = 300.0,
        read_only: bool = False,
        lock_timeout: float | None = None,
        leftover_spool_records: int = 0,
    ) -> None:
        """Use :meth:`open`; this wraps an engine whose schema :func:`ensure_schema` checked
        (``ready``) or will check on first use."""
        self._engine = engine
        # Appends test no pooled connection before use (a round trip each): the appender
        # makes an append again on a fresh connection if one proves lost before COMMIT.
        self._appends = engine if is_sqlite(url) or read_only else make_engine(
            url, lock_timeout=lock_timeout, pre_ping=False)
        self._url = url
        self._spool = spool
        self._durability: Durability = durability
        self._policy: FailurePolicy = failure_policy
        self._ready = ready
        self._read_only = read_only
        self._lock_timeout = lock_timeout
        self._tail: Tail | None = None
        self.leftover_spool_records = leftover_spool_records
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._closed = False
        rescue = self._rescue if failure_policy == "spool" else None
        self._writer = (
            BatchWriter(self._commit, rescue=rescue, batch_size=batch_size,
                        queue_size=queue_size)
            if durability == "batched" and not read_only else None
        )
        self._checkpointer = None if checkpoint_writer is None else Checkpointer(
            checkpoint_writer, self._rows_after, every=checkpoint_every,
            interval=checkpoint_interval)

    @classmethod
    def open(
        cls,
        url: str | None = None,
        *,
        settings: Settings | None = None,
        spool_path: str | Path | None = None,
        batch_size: int = 500,
        queue_size: int = 10_000,
        checkpoint_dir: str | Path | None = None,
        checkpoint_key: str | Path | None = None,
        read_only: bool = False,
        lock_timeout: float | None = None,
    ) -> AuditLog:
        """Open the audit database at ``url`` (else ``STREAMWARDEN_DB_URL``, else
        ``sqlite:///./streamwarden-audit.db``).

        A SQLite file that does not exist yet (or has no tables) is created and migrated;
        any other database must be at the newest migration. With the ``spool`` policy an
        unreachable database is accepted (its schema is checked when it answers). Records
        left in the spool by an earlier run are reported (logged as ``audit.spool_leftover``
        and counted in :attr:`leftover_spool_records`) and replayed now if the database
        answers (not when ``read_only``).

        Args:
            settings: durability and failure policy; default ``Settings.from_env()``.
            spool_path: the spool file (default :func:`default_spool_path`: in the user's
                state directory, derived from the database).
            batch_size: group commit size (batched only).
            queue_size: the most records accepted and not yet committed (batched only): the
                loss window if the process dies.
            read_only: never write (for auditors; also implied by a ``mode=ro`` SQLite URL).
            lock_timeout: seconds an append waits for the chain lock (and, on PostgreSQL,
                the bound of its statements; a writer frozen in its transaction loses its
                session after half of it); default
                :data:`~streamwarden.audit.database.LOCK_TIMEOUT`.

            checkpoint_dir, checkpoint_key: the checkpoint directory and the private key file
                (default ``settings.checkpoint_dir`` and ``checkpoint_key``); both or neither.

        Raises:
            InvalidInputError: malformed or unsupported URL, a bad size or timeout, only one of
                ``checkpoint_dir`` and ``checkpoint_key``, or an unreadable or malformed key.
            AuditUnavailableError: the database is unreachable (``raise`` policy).
            AuditSchemaError: the database is behind; the message names the command to run.

        Thread-safety: safe to call from any thread.
        """
        settings = Settings.from_env() if settings is None else settings
        check_limit("batch_size", batch_size)
        check_limit("queue_size", queue_size)
        if lock_timeout is not None:
            check_seconds("lock_timeout", lock_timeout, allow_zero=False)
        parsed = parse_url(resolve_url(url, settings))
        writer = _checkpoint_writer(checkpoint_dir or settings.checkpoint_dir,
                                    checkpoint_key or settings.checkpoint_key)
        read_only = read_only or is_read_only(parsed)
        engine = make_engine(parsed, read_only=read_only, lock_timeout=lock_timeout)
        try:
            try:
                ensure_schema(engine, parsed, create=not read_only)
                ready = True
            except AuditUnavailableError:
                if settings.audit_failure_policy != "spool" or read_only:
                    raise
                ready = False
            spool = Spool(Path(spool_path or default_spool_path(parsed)).absolute())
            leftover = _leftover(spool)
            if leftover:  # records an earlier run could not store
                _log.warning(AUDIT_SPOOL_LEFTOVER, spool=str(spool.path), records=leftover,
                             db=redact_url(parsed))
            if ready and leftover and not read_only:
                try:
                    replay_spool(engine, parsed, spool)
                except AuditUnavailableError as exc:
                    _log.warning(AUDIT_WRITE_FAILED, spool=str(spool.path), error=exc.message)
        except BaseException:
            engine.dispose()
            raise
        return cls(
            engine, parsed, spool=spool, durability=settings.audit_durability,
            failure_policy=settings.audit_failure_policy, batch_size=batch_size,
            queue_size=queue_size, ready=ready, checkpoint_writer=writer,
            checkpoint_every=settings.checkpoint_every,
            checkpoint_interval=settings.checkpoint_interval, read_only=read_only,
            lock_timeout=lock_timeout, leftover_spool_records=leftover,
        )

    @property
    def url(self) -> str:
        """The database URL, password redacted."""
        return redact_url(self._url)

    @property
    def spool_path(self) -> Path:
        """The spool file used while the database is unreachable."""
        return self._spool.path

    def __repr__(self) -> str:
        return (f"AuditLog(url={self.url!r}, durability={self._durability!r}, "
                f"failure_policy={self._policy!r})")

    def append(self, record: AuditRecord) -> AuditRecord:
        """Append ``record`` (its ``seq`` and hashes, if any, are ignored and reassigned).

        Returns:
            ``sync``: the record as stored, with ``seq``, ``prev_hash`` and ``row_hash``.
            ``batched``, or spooled: the record unsealed (they are assigned at commit).

        Raises:
            InvalidInputError: the record is malformed (details not JSON-serialisable, naive
                timestamp, NUL character, unknown outcome); nothing was stored.
            AuditIntegrityError: the chain's last row fails its check (see
                :mod:`streamwarden.audit.appender`); nothing was stored.
            AuditUnavailableError: the database is unreachable (``raise`` policy), the spool
                or the batched queue is full, or another append held the log for
                :data:`APPEND_WAIT` seconds; nothing was stored.
            AuditError: the log is closed or read-only, the database refused the record, a
                queued batch failed since the last append or flush (batched: the message
                names how many records and why), or another database error; nothing was
                stored.

        Thread-safety: safe from any thread; records are stored in call order.
        """
        prepared = prepare(record)
        with _Holding(self._lock, "audit.append"):
            if self._closed or self._read_only:
                state = "closed" if self._closed else "opened read-only"
                raise AuditError(f"the audit log is {state}", operation="audit.append",
                                 correlation_id=record.correlation_id)
            if self._writer is not None:
                self._writer.submit(prepared)
                return record
            appended = self._commit([prepared])
            return record if appended is None else appended.records()[0]

    def flush(self, timeout: float | None = None) -> None:
        """Commit every record appended before this call: drain the batched queue, replay the
        spool. ``timeout`` (seconds, default :data:`FLUSH_TIMEOUT`) bounds the queue wait.

        Raises:
            AuditUnavailableError: records are still queued after ``timeout``, or the database
                is unreachable while the spool holds records (they stay safe in the spool).
            AuditError: queued records failed since the last append or flush (batched; the
                spool kept them under the ``spool`` policy), or another error.
            InvalidInputError: ``timeout`` is not a number of seconds > 0.

        Thread-safety: safe from any thread.
        """
        wait = FLUSH_TIMEOUT if timeout is None else check_seconds("timeout", timeout,
                                                                  allow_zero=False)
        if self._writer is not None:
            self._writer.flush(wait)
        if self._read_only:
            return
        if self._spool.pending() or not self._ready:
            with _Holding(self._write_lock, "audit.flush"):
                self._replay()

    def close(self) -> None:
        """Drain the batched queue and the spool (if the database answers), release the
        connections. Idempotent; appends after it raise.

        Raises:
            AuditUnavailableError, AuditError: as :meth:`flush` for the batched queue (the log
                is closed anyway and records still queued are lost). Records left in the spool
                stay there for the next :meth:`open` with the same spool.

        Thread-safety: safe from any thread.
        """
        with _Holding(self._lock, "audit.close"):
            if self._closed:
                return
            self._closed = True
        try:
            if self._writer is not None:
                self._writer.close(FLUSH_TIMEOUT)
            if not self._read_only and self._spool.pending():
                with _Holding(self._write_lock, "audit.close"):
                    self._replay(leave_if_unavailable=True)
        finally:
            if self._checkpointer is not None:
                self._checkpointer.close(FLUSH_TIMEOUT)
            if self._appends is not self._engine:
                self._appends.dispose()
            self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def query(
        self, *, correlation_id: str | None = None, lifecycle_id: str | None = None,
        fingerprint: str | None = None, kind: str | None = None, event: str | None = None,
        since: datetime | None = None, until: datetime | None = None, limit: int | None = None,
        owner: str | None = None, lease_id: str | None = None,
    ) -> list[AuditRecord]:
        """The records matching every given filter, in ``seq`` order (at most ``limit``).

        ``since`` is inclusive, ``until`` exclusive (timezone-aware); ids, ``owner`` and
        ``event`` match exactly (:class:`~streamwarden.audit.query.AuditFilter`).

        Raises:
            InvalidInputError: a filter is malformed, or ``event`` is no event of the trail.
            AuditIntegrityError: a matching row cannot be decoded (its seq, ``edited``).
            AuditUnavailableError, AuditError: the database could not be read.

        Thread-safety: safe from any thread.
        """
        return list(self.iter_records(
            correlation_id=correlation_id, lifecycle_id=lifecycle_id, fingerprint=fingerprint,
            kind=kind, event=event, since=since, until=until, limit=limit, owner=owner,
            lease_id=lease_id,
        ))

    def iter_records(
        self, *, correlation_id: str | None = None, lifecycle_id: str | None = None,
        fingerprint: str | None = None, kind: str | None = None, event: str | None = None,
        since: datetime | None = None, until: datetime | None = None, limit: int | None = None,
        owner: str | None = None, lease_id: str | None = None, batch_size: int = 1000,
    ) -> Iterator[AuditRecord]:
        """Like :meth:`query`, streamed: pages of ``batch_size`` rows read by ``seq`` (keyset
        pagination), so memory stays constant however many rows match.

        Raises:
            InvalidInputError: a filter or ``batch_size`` is malformed (raised at once).
            AuditError: the log is closed (raised at once).
            AuditIntegrityError: while iterating, at a row that cannot be decoded (naming its
                seq, ``edited``); the rows before it were yielded.
            AuditUnavailableError, AuditError: while iterating, if the database fails.

        Thread-safety: safe from any thread; each page is one short read.
        """
        self._check_open("audit.query")
        flt = AuditFilter(correlation_id=correlation_id, lifecycle_id=lifecycle_id,
                          fingerprint=fingerprint, kind=kind, event=event, since=since,
                          until=until, limit=limit, owner=owner, lease_id=lease_id)
        check_limit("batch_size", batch_size)
        return self._pages(flt, batch_size)

    def newest(self, lifecycle_id: str, *, to_state: str | None = None) -> AuditRecord | None:
        """The newest record of the lifecycle ``lifecycle_id`` (with ``to_state``: the newest
        that entered that state), or None if it has none. One indexed read.

        Raises:
            InvalidInputError: ``lifecycle_id`` or ``to_state`` is malformed.
            AuditIntegrityError: that row cannot be decoded (its seq, ``edited``).
            AuditUnavailableError, AuditError: the log is closed or could not be read.

        Thread-safety: safe from any thread.
        """
        self._check_open("audit.query")
        statement = select_records(AuditFilter(lifecycle_id=lifecycle_id),
                                   dialect_name=self._engine.dialect.name, limit=1,
                                   newest_first=True)
        if to_state is not None:
            statement = statement.where(audit_table.c.to_state == check_id("to_state", to_state))
        rows = self._read(statement)
        return _decoded(rows[0]) if rows else None

    def find_ids(self, column: str, text: str, *, limit: int = 10) -> list[str]:
        """The ids a reader may mean by ``text`` in ``column`` (``lifecycle_id``, ``lease_id``
        or ``correlation_id``): ``[text]`` if some record has exactly that id, else the ids
        that start or end with it (a prefix, or the short form a table shows), sorted, at most
        ``limit`` (:func:`~streamwarden.audit.query.select_matching_ids`). Empty if none.

        Raises:
            InvalidInputError: ``column``, ``text`` or ``limit`` is malformed.
            AuditUnavailableError, AuditError: the log is closed or could not be read.

        Thread-safety: safe from any thread.
        """
        self._check_open("audit.query")
        rows = self._read(select_matching_ids(column, text, limit=limit))
        if rows and rows[0][1]:
            return [rows[0][0]]
        return [row[0] for row in rows]

    def verify(self, *, progress: Callable[[int], None] | None = None,
               workers: int | None = None,
               parallel_min_rows: int | None = None) -> VerifyReport:
        """Walk the whole chain in ``seq`` order (streamed) and report the first break.

        See :mod:`streamwarden.audit.verify` for the reasons; a row that cannot be decoded is
        a break (``edited``), not an error. Rows are read as stored, a page at a time,
        through the driver's own cursor. ``progress`` is called with the number of rows read
        every 10,000 rows and once with the total at the end (increasing).

        SQLite files of at least ``parallel_min_rows`` rows (default
        :data:`~streamwarden.audit._parallel_verify.PARALLEL_MIN_ROWS`, 100,000) are verified by
        ``workers`` processes (default: the CPUs this process may use; 1 keeps it in this
        process), each reading a contiguous range of ``seq`` read-only
        (:mod:`streamwarden.audit._parallel_verify`); if they find anything but an intact chain,
        the serial walk runs and reports the first break exactly as it would alone. PostgreSQL
        is always walked by this process.

        Raises:
            AuditUnavailableError, AuditError: the database could not be read, or a worker
                process died, failed or stayed silent for
                :data:`~streamwarden.audit._parallel_verify.WORKER_TIMEOUT` seconds.

        Thread-safety: safe from any thread.
        """
        self._check_open("audit.verify")
        watched = None if progress is None else Monotone(progress)
        intact = self._verify_parallel(watched, workers, parallel_min_rows)
        if intact is not None:
            if watched is not None:
                watched(intact[0].rows)
            return intact[0]
        return verify_rows(self._raw_pages(), progress=watched)

    def _verify_parallel(self, progress: Callable[[int], None] | None, workers: int | None,
                         min_rows: int | None
                         ) -> tuple[VerifyReport, tuple[object, object]] | None:
        """The parallel walk of a SQLite file (None: stay serial, or not shown intact)."""
        path = sqlite_path(self._url)
        count = default_workers() if workers is None else workers
        if path is None or count < 2:
            return None
        return verify_parallel(str(path.absolute()), workers=count, min_rows=min_rows,
                               progress=progress)

    def _raw_pages(self) -> Iterator[list[RawRow]]:
        """Every row as stored, in pages of :data:`PAGE_SIZE` by ``seq`` (keyset)."""
        dialect = self._engine.dialect
        statement = (raw_select(dialect.name)
                     .where(audit_table.c.seq > sa.bindparam("after", type_=sa.BigInteger))
                     .order_by(audit_table.c.seq).limit(PAGE_SIZE))
        compiled = statement.compile(dialect=dialect)
        sql = str(compiled)
        after: Any = -(2**63)
        try:
            with self._engine.connect() as connection:
                cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
                while True:
                    params = compiled.construct_params({"after": after})
                    bound: Any = (tuple(params[name] for name in compiled.positiontup or ())
                                  if dialect.positional else params)

                    def run(bound: Any = bound) -> list[RawRow]:
                        cursor.execute(sql, bound)
                        return cursor.fetchall()  # type: ignore[no-any-return]

                    page = _fetch(connection, run)
                    if page:
                        yield page
                    if len(page) < PAGE_SIZE:
                        return
                    after = page[-1][_SEQ]
        except sa.exc.SQLAlchemyError as exc:
            raise translate_error(exc, self._url, "audit.verify") from None
        except Exception as exc:
            if not isinstance(exc, self._engine.dialect.loaded_dbapi.Error):
                raise
            raise translate_error(sa.exc.DBAPIError(sql, None, exc), self._url,
                                  "audit.verify") from None

    @property
    def checkpoint_failures(self) -> int:
        """How many checkpoints the background writer could not write (0 without one)."""
        return 0 if self._checkpointer is None else self._checkpointer.failures

    @property
    def checkpoint_written_at(self) -> float | None:
        """When the background writer last wrote a checkpoint, in seconds since the epoch
        (None: none yet in this process, or the log was opened without checkpoints)."""
        return None if self._checkpointer is None else self._checkpointer.written_at

    def write_checkpoint(self, writer: CheckpointWriter | None = None) -> SignedCheckpoint:
        """Sign the chain's current head into the checkpoint directory now: with ``writer``
        (e.g. a second party's directory, or old and new key at a rotation), else with the
        log's own checkpoint key and directory.

        Raises:
            CheckpointError: no ``writer`` and the log has no checkpoint key and directory,
                the table no longer extends the newest checkpoint (``reason``
                ``inconsistent``), or the file cannot be written.
            AuditUnavailableError, AuditError: the database could not be read, or the log is
                closed.

        Thread-safety: safe from any thread; checkpoints are written one at a time.
        """
        self._check_open("audit.checkpoint")
        if writer is not None:
            return writer.write(self._rows_after)
        if self._checkpointer is None:
            raise CheckpointError("this audit log was opened without checkpoint_dir and "
                                  "checkpoint_key", operation="audit.checkpoint")
        return self._checkpointer.write_now()

    def verify_checkpoints(
        self, checkpoint_dir: str | Path | None, public_keys: Sequence[Verifier], *,
        expect_head: tuple[int, str] | None = None, max_age: float | None = None,
        now: datetime | None = None, progress: Callable[[int], None] | None = None,
        workers: int | None = None, parallel_min_rows: int | None = None,
    ) -> AnchorReport:
        """Verify the table against the signed checkpoints in ``checkpoint_dir`` (None: only
        the chain, the head and ``expect_head``); see :mod:`streamwarden.audit.anchoring`.

        Args:
            public_keys: the trusted keys (each checkpoint needs a signature by one).
            expect_head: ``(seq, row_hash)`` the table must still have.
            max_age: fail (``stale``) if the newest checkpoint is older, in seconds.
            now: the current time (default: the clock).
            progress, workers, parallel_min_rows: as for :meth:`verify` (the chain of a large
                SQLite file is walked in parallel; each checkpoint's row is then looked up).

        Raises:
            AuditUnavailableError, AuditError: the database could not be read, or a worker
                process failed (as :meth:`verify`).

        Thread-safety: safe from any thread.
        """
        watched = None if progress is None else Monotone(progress)

        def fast(anchors: Sequence[anchoring.Anchor], steps: Callable[[int], None] | None
                 ) -> AnchorReport | None:
            intact = self._verify_parallel(steps, workers, parallel_min_rows)
            if intact is None:
                return None
            chain, (seq, row_hash) = intact
            if type(seq) is not int or type(row_hash) is not str:  # pragma: no cover
                return None
            if steps is not None:
                steps(chain.rows)
            hashes = self._hashes_at([anchor.size for anchor in anchors
                                      if 0 < anchor.size <= seq])
            return anchoring.judge_intact(chain, (seq, row_hash), anchors, hashes.get)

        return anchoring.verify_database(
            self._engine, self._url, self._raw_pages(), checkpoint_dir,
            public_keys, expect_head=expect_head, max_age=max_age, now=now, progress=watched,
            fast=fast)

    def _hashes_at(self, seqs: Sequence[int]) -> dict[object, object]:
        """The ``row_hash`` of the rows numbered ``seqs`` (missing rows left out).

        Raises:
            AuditUnavailableError, AuditError: the database could not be read.
        """
        found: dict[object, object] = {}
        wanted = sorted(set(seqs))
        for start in range(0, len(wanted), PAGE_SIZE):
            statement = (sa.select(audit_table.c.seq, audit_table.c.row_hash)
                         .where(audit_table.c.seq.in_(wanted[start:start + PAGE_SIZE])))
            found.update((row[0], row[1]) for row in self._read(statement))
        return found

    def export_bundle(self, path: str | Path, checkpoint_dir: str | Path,
                      public_keys: Sequence[Verifier], flt: AuditFilter | None = None
                      ) -> bundle.BundleSummary:
        """Write the records ``flt`` selects with the checkpoints covering them to ``path``,
        verifiable offline (:mod:`streamwarden.audit.bundle`).

        Raises:
            InvalidInputError, CheckpointError, AuditIntegrityError, OSError,
            AuditUnavailableError, AuditError: as :func:`~streamwarden.audit.bundle.write_bundle`.

        Thread-safety: safe from any thread.
        """
        selected = self._pages(flt or AuditFilter(), 1000)
        return bundle.write_bundle(path, selected, self._rows_after, checkpoint_dir,
                                   public_keys)

    def _check_open(self, operation: str) -> None:
        if self._closed:
            raise AuditError("the audit log is closed", operation=operation)

    def _read(self, statement: sa.Select[Any]) -> list[RawRow]:
        """The rows of one short read."""
        try:
            with self._engine.connect() as connection:
                return _fetch(connection, _runner(connection, statement))
        except sa.exc.SQLAlchemyError as exc:
            raise translate_error(exc, self._url, "audit.query") from None

    def _rows_after(self, seq: int) -> Iterator[AuditRecord]:
        return self._pages(AuditFilter(), 1000, after=seq)

    def _pages(self, flt: AuditFilter, batch_size: int, after: int | None = None
               ) -> Iterator[AuditRecord]:
        remaining = flt.limit
        dialect = self._engine.dialect.name
        while remaining is None or remaining > 0:
            size = batch_size if remaining is None else min(batch_size, remaining)
            statement = select_records(flt, dialect_name=dialect, limit=size)
            if after is not None:
                statement = statement.where(audit_table.c.seq > after)
            page = self._read(statement)
            for row in page:
                yield _decoded(row)
            if remaining is not None:
                remaining -= len(page)
            if len(page) < size:
                return
            after = page[-1][_SEQ]

    def _commit(self, records: list[Prepared]) -> Appended | None:
        """Store ``records`` in order (spool first if it holds records); under the policy.
        None: they went to the spool."""
        with _Holding(self._write_lock, "audit.append"):
            try:
                if self._spool.pending() or not self._ready:
                    self._replay()
                appended = append_chain(self._appends, self._url, records,
                                        lock_timeout=self._lock_timeout, trusted=self._tail)
                if appended.tail is not None:
                    self._tail = appended.tail
                    if self._checkpointer is not None:
                        self._checkpointer.committed(len(appended.rows), appended.tail.seq,
                                                    appended.tail.row_hash)
                return appended
            except AuditUnavailableError as exc:
                if self._policy == "raise":
                    raise
                _log.warning(AUDIT_WRITE_FAILED, spooled=len(records), error=exc.message,
                             spool=str(self._spool.path))
                self._rescue(records)
                return None

    def _rescue(self, records: list[Prepared]) -> None:
        """Add ``records`` to the spool, unsealed.

        Raises:
            AuditUnavailableError: as :meth:`Spool.add`.
        """
        self._spool.add([prepared.record for prepared in records])

    def _replay(self, *, leave_if_unavailable: bool = False) -> None:
        """Check the schema once, then replay the spool. Caller holds ``_write_lock``.

        Raises:
            AuditUnavailableError: the database is unreachable (unless
                ``leave_if_unavailable``: the records then stay in the spool for later).
            AuditError: the spool is corrupt or the database refused a spooled record.
        """
        try:
            if not self._ready:
                ensure_schema(self._engine, self._url)
                self._ready = True
            self._tail = None
            replay_spool(self._appends, self._url, self._spool)
        except AuditUnavailableError as exc:
            if not leave_if_unavailable:
                raise
            _log.warning(AUDIT_WRITE_FAILED, spool=str(self._spool.path), error=exc.message)


def replay_spool(engine: Engine, url: URL, spool: Spool) -> None:
    """Replay ``spool`` into the table, in order, skipping records the table already has.

    Raises:
        AuditUnavailableError: the database is unreachable; the spool is left as it was.
        AuditError: the spool is corrupt or the database refused a spooled record.

    Thread-safety: safe from any thread and process (the spool's file lock and the chain
    lock serialise replays).
    """
    spool.replay(lambda chunk: append_chain(engine, url, [prepare(record) for record in chunk],
                                            skip_stored=True))


def _checkpoint_writer(directory: str | Path | None, key: str | Path | None
                       ) -> CheckpointWriter | None:
    """The writer of the checkpoint settings, None without them.

    Raises:
        InvalidInputError: only one of the two is set, or the key cannot be loaded.
    """
    if directory is None and key is None:
        return None
    if directory is None or key is None:
        raise InvalidInputError("checkpoints need both checkpoint_dir and checkpoint_key")
    if key_exposed(key):
        _log.warning(AUDIT_CHECKPOINT_KEY_EXPOSED, key=str(key),
                     advice="the key file is readable by others: chmod 600")
    return CheckpointWriter(Path(directory), [load_signer(key)])


def _leftover(spool: Spool) -> int:
    """Records in ``spool``; 0 (logged) if it cannot be read: that only matters to a writer,
    whose first spool write reports it."""
    try:
        return spool.count()
    except AuditUnavailableError as exc:
        _log.warning(AUDIT_SPOOL_LEFTOVER, spool=str(spool.path), error=exc.message)
        return 0


def _runner(connection: sa.Connection, statement: sa.Select[Any]
            ) -> Callable[[], list[RawRow]]:
    return lambda: [tuple(row) for row in connection.execute(statement)]


def _decoded(row: RawRow) -> AuditRecord:
    """The record of a stored row.

    Raises:
        AuditIntegrityError: if it cannot be decoded (a break at its seq, ``edited``).
    """
    try:
        return decode_row(row)
    except UndecodableRowError as exc:
        raise AuditIntegrityError(
            f"audit chain broken at seq {exc.seq!r:.40} (edited): the row cannot be decoded: "
            f"{exc}", operation="audit.query",
        ) from None
