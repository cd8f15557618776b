"""Benchmark: the SQL audit log on SQLite and PostgreSQL, against a bare SQLAlchemy Core floor.

In one run, on each engine:

* appends per second through ``AuditLog.append`` in ``sync`` durability (one commit per record)
  and in ``batched`` durability (group commit; the time includes the final ``flush``), next to
  the floor: a bare Core ``INSERT`` of the same, already sealed, rows on an engine with the
  same settings (one row per transaction, and ``executemany`` of 500 rows per transaction);
  medians of three rounds, each measuring the log and its floor back to back;
* ``AuditLog.verify`` throughput in rows per second over N rows (default 1,000,000), created
  fast by bulk inserts of pre-sealed rows (not through ``append``), then settled (PostgreSQL
  vacuumed and checkpointed, the SQLite WAL checkpointed: ``settle``) so that no server is
  still digesting the load while verify is timed;
* latency (p50 and min/max over several runs) of ``AuditLog.query(correlation_id=...)`` for
  one correlation id among those N rows;
* signed checkpoints: verify throughput against a checkpoint every 1,000 of those N rows
  (signatures, links, triggers and every head), and the cost per sync append of a log that
  writes a checkpoint every tenth of the sync appends, next to the same appends without.
* each figure next to its goal (issue #10): verify at least 200,000 rows/s on SQLite, sync
  appends at least 0.9x their floor, batched appends at least 0.8x theirs (``goals``).

SQLite uses temporary files; PostgreSQL fresh schemas that are dropped at the end. Progress
goes to stderr, the JSON result to stdout.

    python bench/audit_throughput.py [--rows N] [--pg-url URL] [--no-pg]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from ulid import ULID

from streamwarden import AuditRecord, Settings, __version__
from streamwarden.audit import migrate
from streamwarden.audit.chain import GENESIS_HASH, details_text, link
from streamwarden.audit.checkpoints import CheckpointWriter
from streamwarden.audit.database import make_engine, parse_url, redact_url
from streamwarden.audit.log import AuditLog
from streamwarden.audit.models import COLUMNS, audit_table, decode_row, raw_select
from streamwarden.audit.notes import Signer
from streamwarden.errors import AuditUnavailableError

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
# One lifecycle's events, in order: (event, from, to, refs before, refs after).
_CYCLE = (
    ("acquire", "idle", "starting", 0, 1), ("connected", "starting", "running", 1, 1),
    ("acquire", "running", "running", 1, 2), ("release", "running", "running", 2, 1),
    ("release", "running", "draining", 1, 0), ("closed", "draining", "stopped", 0, 0),
)
ROWS_PER_CORRELATION = 100
QUERY_RUNS = 9
BULK_CHUNK = 20_000
T0 = datetime(2026, 1, 2, 9, 30, tzinfo=UTC)
ATTEMPTS = 3
ROUNDS = 3
SERVER_WAIT = 180.0
#: Goals of issue #10: verify rows/s on SQLite; appends as a fraction of their floors.
GOALS = {"verify_rows_per_s": {"sqlite": 200_000}, "sync_vs_floor": 0.9,
         "batched_vs_floor": 0.8}
#: The PostgreSQL base URL of this run (set by ``main``) and what interrupted it.
PG_URL = [DEFAULT_PG_URL]
INTERRUPTIONS: list[str] = []


def progress(message: str) -> None:
    sys.stderr.write(f"[audit bench] {message}\n")
    sys.stderr.flush()


def make_record(index: int, correlations: int, *, prev_hash: str | None = None) -> AuditRecord:
    """Record ``index`` of a synthetic trail: lifecycles of six events each, interleaved
    by correlation id (``run-<k>``, ``index`` round robin over ``correlations`` ids).

    With ``prev_hash`` it is numbered ``index + 1`` after that hash (``row_hash`` unset)."""
    event, from_state, to_state, before, after = _CYCLE[index % len(_CYCLE)]
    lifecycle = index // len(_CYCLE)
    return AuditRecord(
        event_id=f"{index:026d}", occurred_at=T0 + timedelta(milliseconds=index),
        lifecycle_id=f"lc-{lifecycle:020d}", fingerprint=f"{lifecycle % 97:024x}",
        kind="market_data" if lifecycle % 3 else "trade_updates", event=event,
        from_state=from_state, to_state=to_state, refs_before=before, refs_after=after,
        correlation_id=f"run-{index % correlations}", host="bench-host", pid=4242,
        lease_id=f"lease-{index:020d}" if event in ("acquire", "release") else None,
        owner="momentum" if event in ("acquire", "release") else None,
        details={"symbols": ["AAPL", "MSFT"]} if event == "acquire" else {},
        seq=None if prev_hash is None else index + 1, prev_hash=prev_hash,
    )


def sealed_rows(count: int, correlations: int) -> Iterator[list[dict[str, Any]]]:
    """Chunks of insertable rows, numbered 1..count and chain-sealed like ``append`` does."""
    prev_hash = GENESIS_HASH
    chunk: list[dict[str, Any]] = []
    for index in range(count):
        numbered = make_record(index, correlations, prev_hash=prev_hash)
        prev_hash = link(numbered, prev_hash)
        chunk.append({**vars(numbered), "row_hash": prev_hash})
        if len(chunk) == BULK_CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class Databases:
    """Fresh databases on demand: SQLite files in a temporary directory, PostgreSQL schemas
    (dropped by :meth:`close`)."""

    def __init__(self, pg_url: str | None) -> None:
        self._directory = tempfile.TemporaryDirectory(prefix="sw-audit-bench-")
        self._pg_url = pg_url
        self._schemas: list[str] = []
        self._files = 0

    def new(self, engine_name: str, purpose: str) -> str:
        if engine_name == "sqlite":
            self._files += 1
            return f"sqlite:///{Path(self._directory.name) / purpose}_{self._files}.db"
        assert self._pg_url is not None
        schema = f"sw_bench_{str(ULID()).lower()}_{purpose}"
        admin = sa.create_engine(self._pg_url)
        try:
            with admin.begin() as conn:
                conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        finally:
            admin.dispose()
        self._schemas.append(schema)
        separator = "&" if "?" in self._pg_url else "?"
        return f"{self._pg_url}{separator}options=-csearch_path%3D{schema}"

    def close(self) -> None:
        self._directory.cleanup()
        if not self._schemas or self._pg_url is None:
            return
        admin = sa.create_engine(self._pg_url)
        try:
            with admin.begin() as conn:
                for schema in self._schemas:
                    conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        except sa.exc.SQLAlchemyError as exc:
            progress(f"could not drop the schemas {', '.join(self._schemas)}: {exc}")
        finally:
            admin.dispose()


def _rate(count: int, seconds: float) -> float:
    return round(count / seconds, 1)


def bench_appends(databases: Databases, engine_name: str, mode: str, count: int) -> float:
    url = databases.new(engine_name, f"append_{mode}")
    migrate.upgrade(url)
    records = [make_record(index, 50) for index in range(count)]
    with AuditLog.open(url, settings=Settings(audit_durability=mode)) as log:
        started = time.perf_counter()
        for record in records:
            log.append(record)
        log.flush()
        elapsed = time.perf_counter() - started
        assert log.verify().ok
    return _rate(count, elapsed)


def bench_floor(databases: Databases, engine_name: str, count: int, *, per_row: bool) -> float:
    url = databases.new(engine_name, "floor_row" if per_row else "floor_many")
    migrate.upgrade(url)
    rows = [row for chunk in sealed_rows(count, 50) for row in chunk]
    engine = make_engine(parse_url(url))  # the audit log's engine settings (WAL, fsync ...)
    insert = sa.insert(audit_table)
    try:
        started = time.perf_counter()
        if per_row:
            for row in rows:
                with engine.begin() as conn:
                    conn.execute(insert, row)
        else:
            for start in range(0, len(rows), 500):
                with engine.begin() as conn:
                    conn.execute(insert, rows[start:start + 500])
        elapsed = time.perf_counter() - started
    finally:
        engine.dispose()
    return _rate(count, elapsed)


def _copy_rows(engine: sa.Engine, rows: list[dict[str, Any]]) -> None:
    """PostgreSQL ``COPY`` of ``rows`` in one transaction (the fastest bulk load)."""
    statement = f"COPY {audit_table.name} ({', '.join(COLUMNS)}) FROM STDIN"
    connection = engine.raw_connection()
    try:
        driver = connection.driver_connection
        assert driver is not None
        with driver.cursor() as cursor, cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row([details_text(row[name]) if name == "details" else row[name]
                                for name in COLUMNS])
        connection.commit()
    finally:
        connection.close()


def _insert_rows(engine: sa.Engine, rows: list[dict[str, Any]]) -> None:
    if engine.dialect.name == "postgresql":
        _copy_rows(engine, rows)
        return
    with engine.begin() as conn:  # SQLite: Core executemany in one transaction
        conn.execute(sa.insert(audit_table), rows)


def _verify_database(databases: Databases, engine_name: str) -> str:
    url = databases.new(engine_name, "verify")
    migrate.upgrade(url)
    return url


def bulk_fill(urls: dict[str, str], rows: int, correlations: int) -> float:
    """Insert ``rows`` pre-sealed rows into every database of ``urls``; returns seconds."""
    engines = {name: make_engine(parse_url(url)) for name, url in urls.items()}
    started = time.perf_counter()
    done = 0
    try:
        for chunk in sealed_rows(rows, correlations):
            for name, engine in engines.items():
                # A COPY or transaction that failed was rolled back: retrying it is safe.
                _retrying(f"bulk insert of {len(chunk):,} rows ({name})",
                          lambda engine=engine, chunk=chunk: _insert_rows(engine, chunk),
                          quiet=True)
            done += len(chunk)
            if done % 100_000 == 0 or done == rows:
                progress(f"bulk insert: {done:,}/{rows:,} rows into {', '.join(engines)} "
                         f"({time.perf_counter() - started:.0f} s)")
    finally:
        for engine in engines.values():
            engine.dispose()
    return time.perf_counter() - started


def settle(urls: dict[str, str]) -> float:
    """Let the databases digest the bulk fill before anything is timed; returns seconds.

    A verify timed right after the fill shares the CPUs with PostgreSQL still writing the
    COPY out and vacuuming it (on a 2-CPU machine, a quarter of SQLite's parallel verify).
    PostgreSQL: ``VACUUM ANALYZE`` of the table and a ``CHECKPOINT`` (skipped without the
    privilege); SQLite: the WAL checkpointed into the file."""
    started = time.perf_counter()
    for name, url in urls.items():
        engine = make_engine(parse_url(url))
        try:
            with engine.connect() as connection:
                if name == "postgresql":
                    connection.execution_options(isolation_level="AUTOCOMMIT")
                    connection.exec_driver_sql(f"VACUUM ANALYZE {audit_table.name}")
                    try:
                        connection.exec_driver_sql("CHECKPOINT")
                    except sa.exc.ProgrammingError as exc:  # not a superuser or pg_checkpoint
                        progress(f"settle: no CHECKPOINT ({exc.orig})")
                else:
                    connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            engine.dispose()
    progress(f"settle: {time.perf_counter() - started:.1f} s")
    return time.perf_counter() - started


def bench_verify(url: str, rows: int, engine_name: str) -> dict[str, Any]:
    reported = [0]

    def report_progress(done: int) -> None:
        if done % 100_000 == 0 and done > reported[0]:
            reported[0] = done
            progress(f"verify {engine_name}: {done:,}/{rows:,} rows")

    with AuditLog.open(url, settings=Settings()) as log:
        started = time.perf_counter()
        report = log.verify(progress=report_progress)
        elapsed = time.perf_counter() - started
    assert report.ok and report.rows == rows, report
    return {"rows": rows, "seconds": round(elapsed, 2), "rows_per_s": _rate(rows, elapsed)}


def bench_checkpoints(databases: Databases, engine_name: str, verify_url: str, rows: int,
                      appends: int, *, every: int = 1000) -> dict[str, Any]:
    """Signed checkpoints: verify rows/s against checkpoints (one every ``every`` rows over the
    ``rows`` already in ``verify_url``), and the cost per sync append of a log that writes a
    checkpoint every ``every`` records, next to the same appends without checkpoints."""
    every = max(1, min(every, rows))
    signer = Signer.generate("bench.example/audit")
    with tempfile.TemporaryDirectory(prefix="sw-bench-ck-") as scratch:
        directory = Path(scratch) / "verify"
        writer = CheckpointWriter(directory, [signer])
        engine = make_engine(parse_url(verify_url))
        try:
            started = time.perf_counter()
            for size in range(every, rows + 1, every):
                writer.write(lambda after, size=size: _rows(engine, after, size))
            signing = time.perf_counter() - started
        finally:
            engine.dispose()
        with AuditLog.open(verify_url, settings=Settings()) as log:
            started = time.perf_counter()
            report = log.verify_checkpoints(directory, [signer.verifier])
            elapsed = time.perf_counter() - started
        assert report.ok and report.rows == rows, report
        key = Path(scratch) / "audit.key"
        key.write_text(signer.encode() + "\n")
        key.chmod(0o600)
        per_append = {}
        for label, options in (("without", {}), ("with", {
                "checkpoint_dir": Path(scratch) / "appends", "checkpoint_key": key})):
            url = databases.new(engine_name, f"ck_{label}")
            migrate.upgrade(url)
            records = [make_record(index, 50) for index in range(appends)]
            settings = Settings(checkpoint_every=max(1, appends // 10))
            with AuditLog.open(url, settings=settings, **options) as log:
                started = time.perf_counter()
                for record in records:
                    log.append(record)
                log.flush()
                per_append[label] = (time.perf_counter() - started) / appends
    each = signing / max(1, report.checkpoints)
    return {
        "verify_with_checkpoints_rows_per_s": _rate(rows, elapsed),
        "verify_checkpoints": report.checkpoints,
        "checkpoint_every_rows": every,
        "checkpoint_seconds_each": round(each, 4),
        # The work a checkpoint does per record it covers (reading and re-hashing the new
        # rows, signing, two fsyncs), on the checkpoint thread, off the append path.
        "checkpoint_cost_per_append_us": round(each / every * 1e6, 1),
        # What the appending thread itself pays (counting only): noise-level by design.
        "sync_append_us_without_checkpoints": round(per_append["without"] * 1e6, 1),
        "sync_append_us_with_checkpoints": round(per_append["with"] * 1e6, 1),
        "checkpoint_every_appends": max(1, appends // 10),
    }


def _rows(engine: sa.Engine, after: int, until: int) -> list[AuditRecord]:
    """The rows after seq ``after`` up to ``until``: the table as it was at ``until``, so
    that checkpoints can be signed at past sizes of a bulk-filled table."""
    statement = (raw_select(engine.dialect.name).where(audit_table.c.seq > after)
                 .order_by(audit_table.c.seq).limit(max(1, until - after)))
    with engine.connect() as connection:
        return [decode_row(tuple(row)) for row in connection.execute(statement)]


def bench_query(url: str, correlation_id: str) -> dict[str, Any]:
    samples: list[float] = []
    with AuditLog.open(url, settings=Settings()) as log:
        matched = len(log.query(correlation_id=correlation_id))  # warm-up
        for _ in range(QUERY_RUNS):
            started = time.perf_counter()
            log.query(correlation_id=correlation_id)
            samples.append(time.perf_counter() - started)
    return {"correlation_id": correlation_id, "matched_rows": matched, "runs": QUERY_RUNS,
            "p50_ms": round(statistics.median(samples) * 1000, 2),
            "min_ms": round(min(samples) * 1000, 2), "max_ms": round(max(samples) * 1000, 2)}


def bench_engine_appends(databases: Databases, engine_name: str,
                         sync_count: int, batched_count: int) -> dict[str, Any]:
    """Medians over :data:`ROUNDS` rounds, each measuring the log and its floor back to back
    on fresh databases, so that disk or CPU noise from other processes hits both alike."""
    samples: dict[str, list[float]] = {"sync": [], "floor_row": [], "batched": [],
                                       "floor_many": []}
    for round_number in range(1, ROUNDS + 1):
        progress(f"{engine_name} round {round_number}/{ROUNDS}: {sync_count:,} sync appends "
                 f"and {batched_count:,} batched, each with its floor")
        samples["sync"].append(bench_appends(databases, engine_name, "sync", sync_count))
        samples["floor_row"].append(bench_floor(databases, engine_name, sync_count,
                                                per_row=True))
        samples["batched"].append(bench_appends(databases, engine_name, "batched",
                                                batched_count))
        samples["floor_many"].append(bench_floor(databases, engine_name, batched_count,
                                                 per_row=False))
    sync, floor_row, batched, floor_many = (statistics.median(samples[key]) for key in (
        "sync", "floor_row", "batched", "floor_many"))
    return {
        "sync_appends_per_s": sync,
        "floor_core_insert_commit_per_row_per_s": floor_row,
        "sync_vs_floor": round(sync / floor_row, 3),
        "batched_appends_per_s": batched,
        "floor_core_executemany_500_per_commit_per_s": floor_many,
        "batched_vs_floor": round(batched / floor_many, 3),
        "sync_appends": sync_count,
        "batched_appends": batched_count,
        "rounds": ROUNDS,
        "samples_per_s": samples,
    }


def goals(engine_name: str, result: dict[str, Any]) -> dict[str, Any]:
    """Each measured figure of ``result`` next to its goal, and whether it meets it."""
    checks: dict[str, Any] = {}
    for key in ("sync_vs_floor", "batched_vs_floor"):
        goal = GOALS[key]
        checks[key] = {"measured": result[key], "goal": goal, "met": result[key] >= goal}
    verify_goal = GOALS["verify_rows_per_s"]
    assert isinstance(verify_goal, dict)
    if engine_name in verify_goal and "verify" in result:
        measured = result["verify"]["rows_per_s"]
        checks["verify_rows_per_s"] = {"measured": measured, "goal": verify_goal[engine_name],
                                       "met": measured >= verify_goal[engine_name]}
    return checks


def _pg_reachable(url: str) -> bool:
    engine = sa.create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect():
            return True
    except sa.exc.OperationalError:
        return False
    finally:
        engine.dispose()


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000,
                        help="rows for verify and query (default 1,000,000)")
    parser.add_argument("--sync-appends", type=int, default=2_000)
    parser.add_argument("--batched-appends", type=int, default=20_000)
    parser.add_argument("--pg-url", default=os.environ.get("STREAMWARDEN_TEST_PG_URL",
                                                           DEFAULT_PG_URL))
    parser.add_argument("--no-pg", action="store_true", help="SQLite only")
    return parser.parse_args()


def _retrying(label: str, action: Callable[[], Any], *, quiet: bool = False) -> Any:
    """Run ``action``; if the PostgreSQL server went away (restarted by someone else on a
    shared machine), wait for it and run it again, up to :data:`ATTEMPTS` times. Each
    interruption is noted in the result's ``interruptions``."""
    for attempt in range(1, ATTEMPTS + 1):
        started = time.perf_counter()
        try:
            result = action()
        except (sa.exc.OperationalError, sa.exc.InterfaceError, AuditUnavailableError) as exc:
            if attempt == ATTEMPTS:
                raise
            reason = " ".join(str(exc).split())[:300]
            INTERRUPTIONS.append(f"{label}: {reason}")
            progress(f"{label} interrupted ({reason}); waiting for the server to retry")
            _wait_for_server()
            continue
        if not quiet:
            progress(f"{label} done in {time.perf_counter() - started:.1f} s")
        return result
    raise AssertionError("unreachable")  # pragma: no cover


def _wait_for_server() -> None:
    deadline = time.monotonic() + SERVER_WAIT
    while time.monotonic() < deadline:
        if _pg_reachable(PG_URL[0]):
            time.sleep(1.0)  # let it finish starting up
            return
        time.sleep(1.0)


def main() -> None:
    args = _arguments()
    engine_names = ["sqlite"]
    pg_note = "skipped (--no-pg)"
    if not args.no_pg:
        if _pg_reachable(args.pg_url):
            engine_names.append("postgresql")
            pg_note = redact_url(args.pg_url)
        else:
            pg_note = f"skipped: unreachable at {redact_url(args.pg_url)}"
    PG_URL[0] = args.pg_url
    correlations = max(1, args.rows // ROWS_PER_CORRELATION)
    target = f"run-{correlations // 2}"
    databases = Databases(args.pg_url if "postgresql" in engine_names else None)
    results: dict[str, Any] = {}
    try:
        for name in engine_names:
            results[name] = _retrying(f"{name} appends", lambda name=name: bench_engine_appends(
                databases, name, args.sync_appends, args.batched_appends))
        urls = {name: _retrying(f"{name} schema", lambda name=name: _verify_database(
            databases, name)) for name in engine_names}
        fill_seconds = bulk_fill(urls, args.rows, correlations)
        settle_seconds = _retrying("settle", lambda: settle(urls))
        for name, url in urls.items():
            results[name]["verify"] = _retrying(f"{name} verify",
                                                lambda url=url, name=name: bench_verify(
                                                    url, args.rows, name))
            results[name]["query_one_correlation_id"] = _retrying(
                f"{name} query", lambda url=url: bench_query(url, target))
            results[name]["checkpoints"] = _retrying(
                f"{name} checkpoints", lambda url=url, name=name: bench_checkpoints(
                    databases, name, url, args.rows, args.sync_appends))
            results[name]["goals"] = goals(name, results[name])
    finally:
        databases.close()
    print(json.dumps({
        "benchmark": "audit_throughput",
        "streamwarden": __version__,
        "python": platform.python_version(),
        "sqlalchemy": sa.__version__,
        "postgresql": pg_note,
        "rows": args.rows,
        "correlation_ids": correlations,
        "bulk_fill_seconds": round(fill_seconds, 1),
        "settle_seconds": round(settle_seconds, 1),
        "results": results,
        "interruptions": INTERRUPTIONS,
    }, indent=2))


if __name__ == "__main__":
    main()
