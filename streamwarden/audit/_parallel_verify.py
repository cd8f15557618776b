"""Verifying a SQLite audit file with several processes: one contiguous ``seq`` range each.

The rows ``1 .. max(seq)`` are cut into ``workers`` contiguous chunks. Chunk ``k`` is every row
with ``seq`` in ``(after_k, until_k]`` (the first from the lowest number, the last to the end,
so every row of the table is in one chunk), walked by :func:`~streamwarden.audit.verify.
verify_from` after the stored row at ``after_k`` (read by the parent, None for the first).
The parent walks chunk 0 itself while child processes walk the others (new interpreters,
as multiprocessing's ``spawn`` starts them: never a bare ``fork``, the caller may run threads;
see :class:`Workers`), each on its own read-only connection to the file
(:func:`~streamwarden.audit._verify_worker.open_file`, the way read-only logs open it).

The chain is intact when every chunk is intact and each chunk's last row is the row the next
one started after (its ``seq`` and ``row_hash``). Anything else (a break, a chunk that does
not join, an unexpected table or read error) returns None: the caller then runs the serial
walk, which finds and classifies the first break exactly. A worker that dies, fails or stays
silent for ``timeout`` seconds raises :class:`~streamwarden.errors.AuditError`; workers are
always reaped.

Progress counts only rows verified in order from the chain's start (chunk 0, then each later
chunk once the ones before it joined), so it never exceeds what the serial walk would report.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from functools import partial
from multiprocessing.connection import Connection
from types import TracebackType

from streamwarden.audit._verify_worker import (
    BOOT,
    ROW_AT,
    TABLE,
    Chunk,
    ChunkResult,
    open_file,
    walk_chunk,
)
from streamwarden.audit.chain import RAW_FIELDS
from streamwarden.audit.verify import PROGRESS_EVERY, VerifyReport
from streamwarden.errors import AuditError

#: Below this many rows (by the highest ``seq``) verify stays in one process: planning,
#: starting and reaping the workers cost about 0.1 s, which the rows they take over must repay.
PARALLEL_MIN_ROWS = 100_000
#: Extra rows the parent walks while a worker process starts (about 0.05 s of walking).
LEAD_ROWS = 5_000
#: Seconds the parent waits for any message (rows verified, or the result) from a worker.
WORKER_TIMEOUT = 120.0
_LOWEST = -(2**63)
_SEQ, _ROW = RAW_FIELDS.index("seq"), RAW_FIELDS.index("row_hash")
_RANGE = f"SELECT min(seq), max(seq) FROM {TABLE}"
_REAP = 5.0


def default_workers() -> int:
    """The CPUs this process may run on (at least 1)."""
    affinity = getattr(os, "sched_getaffinity", None)
    count = len(affinity(0)) if affinity is not None else os.cpu_count()
    return max(1, count or 1)


def plan(path: str, workers: int, min_rows: int) -> list[Chunk] | None:
    """``workers`` chunks over the file's rows, or None when verify should stay serial: too
    few rows (the highest ``seq`` below ``min_rows``), one worker, a table that does not
    number its rows from 1 with integers, or a read error.

    Thread-safety: safe from any thread.
    """
    try:
        connection = open_file(path)
    except sqlite3.Error:
        return None
    try:
        low, high = connection.execute(_RANGE).fetchone()
        if type(low) is not int or type(high) is not int or low != 1 or high < min_rows:
            return None
        count = min(workers, high)
        bounds = _bounds(high, count)
        starts = [connection.execute(ROW_AT, (bound,)).fetchone() for bound in bounds]
    except sqlite3.Error:
        return None
    finally:
        connection.close()
    if count < 2 or any(start is None for start in starts):
        return None
    afters = [_LOWEST, *bounds]
    untils: list[int | None] = [*bounds, None]
    return [Chunk(after, until, tuple(last) if last is not None else None)
            for after, until, last in zip(afters, untils, [None, *starts], strict=True)]


def _offset(report: Callable[[int], None], base: int, rows: int) -> None:
    report(base + rows)


def _bounds(high: int, count: int) -> list[int]:
    """The last ``seq`` of each chunk but the last: the parent's chunk (the first) is larger
    by up to :data:`LEAD_ROWS`, the others share the rest equally."""
    first = high // count + min(LEAD_ROWS, high // (2 * count))
    rest = high - first
    return [first + rest * k // (count - 1) for k in range(count - 1)]


def _joins(result: ChunkResult, following: Chunk | None) -> bool:
    """Whether ``result`` is intact and ends on the row ``following`` starts after."""
    if not result.ok:
        return False
    if following is None:
        return True
    last = following.last
    return last is not None and (result.last_seq, result.last_hash) == (last[_SEQ], last[_ROW])


class _Steps:
    """Reports each multiple of ``every`` reached by the rows verified in order."""

    def __init__(self, progress: Callable[[int], None] | None, every: int) -> None:
        self._progress = progress
        self._every = every
        self._done = 0

    def reached(self, rows: int) -> None:
        if self._progress is None:
            return
        for step in range(self._done + 1, rows // self._every + 1):
            self._progress(step * self._every)
        self._done = max(self._done, rows // self._every)


class Workers:
    """Child processes walking chunks, one pipe each; reaped on exit (terminated, then
    killed, if still running).

    Each is a new interpreter (``sys.executable``) started with ``subprocess`` (fork and
    exec in one step, so safe while threads run, like multiprocessing's ``spawn``) that
    imports only :mod:`streamwarden.audit._verify_worker`: not the caller's ``__main__``.

    Raises:
        AuditError: on construction, if a process cannot be started.

    Thread-safety: use from one thread.
    """

    def __init__(self, path: str, chunks: list[Chunk], every: int, timeout: float) -> None:
        self._timeout = timeout
        self._processes: list[subprocess.Popen[bytes]] = []
        self._pipes: list[Connection] = []
        self._answered: set[int] = set()
        try:
            for chunk in chunks:
                self._start(path, chunk, every)
        except OSError as exc:
            self.close()
            raise AuditError(f"cannot start a verify worker: {exc}",
                             operation="audit.verify") from None
        except BaseException:
            self.close()
            raise

    def _start(self, path: str, chunk: Chunk, every: int) -> None:
        mine, theirs = multiprocessing.Pipe()
        try:
            fd = theirs.fileno()
            process = subprocess.Popen([sys.executable, "-c", BOOT, str(fd)], pass_fds=(fd,),
                                       stdin=subprocess.DEVNULL)
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()  # the child's end: EOF here once the child is gone
        self._pipes.append(mine)
        self._processes.append(process)
        mine.send(list(sys.path))
        mine.send((path, chunk, every))

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def result(self, index: int, rows: Callable[[int], None]) -> ChunkResult:
        """Worker ``index``'s result, calling ``rows`` with its progress meanwhile.

        Raises:
            AuditError: it died, failed, or sent nothing for ``timeout`` seconds.
        """
        pipe, process = self._pipes[index], self._processes[index]
        name = f"verify worker {index + 1} (pid {process.pid})"
        while True:
            if not pipe.poll(self._timeout):
                raise AuditError(f"{name} sent nothing for {self._timeout:g} s",
                                 operation="audit.verify")
            try:
                kind, payload = pipe.recv()
            except (EOFError, OSError):
                raise AuditError(f"{name} died (exit status {_status(process)})",
                                 operation="audit.verify") from None
            if kind == "rows":
                rows(payload)
            elif kind == "done":
                self._answered.add(index)
                return payload  # type: ignore[no-any-return]
            else:
                raise AuditError(f"{name} failed: {payload}", operation="audit.verify")

    def close(self) -> None:
        """Close the pipes and reap every process."""
        for pipe in self._pipes:
            pipe.close()
        for index, process in enumerate(self._processes):
            if index in self._answered:  # exiting by itself
                _wait(process)
            if process.poll() is None:
                process.terminate()
                _wait(process)
            if process.poll() is None:  # pragma: no cover  (ignored SIGTERM)
                process.kill()
                process.wait()


def _wait(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(_REAP)


def _status(process: subprocess.Popen[bytes]) -> object:
    _wait(process)
    return process.returncode


def verify_parallel(path: str, *, workers: int, min_rows: int | None = None,
                    progress: Callable[[int], None] | None = None,
                    progress_every: int = PROGRESS_EVERY,
                    timeout: float = WORKER_TIMEOUT
                    ) -> tuple[VerifyReport, tuple[object, object]] | None:
    """The chain of the SQLite file at ``path`` verified by ``workers`` processes (module
    docstring) if its highest ``seq`` reaches ``min_rows`` (default
    :data:`PARALLEL_MIN_ROWS`): the report and the last row's ``(seq, row_hash)`` when the
    whole chain is intact; None when it could not be shown intact this way, or when there is
    no Python interpreter to start (``sys.executable`` empty, or a frozen application): the
    caller then walks it serially. ``progress`` gets multiples of ``progress_every`` only
    (the caller reports the total).

    Raises:
        AuditError: a worker died, failed, or stayed silent for ``timeout`` seconds.

    Thread-safety: safe from any thread; starts and always reaps its child processes.
    """
    if not sys.executable or getattr(sys, "frozen", False):  # no interpreter to start
        return None
    chunks = plan(path, workers, PARALLEL_MIN_ROWS if min_rows is None else min_rows)
    if chunks is None:
        return None
    steps = _Steps(progress, progress_every)
    with Workers(path, chunks[1:], progress_every, timeout) as pool:
        result = walk_chunk(path, chunks[0], steps.reached, progress_every)
        rows = result.rows
        for index, following in enumerate([*chunks[1:], None]):
            if not _joins(result, following):
                return None
            if following is None:
                break
            result = pool.result(index, partial(_offset, steps.reached, rows))
            rows += result.rows
            steps.reached(rows)
    report = VerifyReport(ok=True, rows=rows, message=f"{rows} rows, chain intact")
    return report, (result.last_seq, result.last_hash)


class Monotone:
    """Forwards to ``progress`` only counts above every count forwarded before (so that a
    serial walk after a parallel attempt does not report fewer rows than it did).

    Thread-safety: use from one thread.
    """

    def __init__(self, progress: Callable[[int], None]) -> None:
        self._progress = progress
        self._high = -1

    def __call__(self, rows: int) -> None:
        if rows > self._high:
            self._high = rows
            self._progress(rows)
