"""Audit histories for the query, report, export, timeline and command tests.

``run_history`` drives a real ConnectionManager (in-memory transport) so the records are the ones
the library writes; ``synthetic_records`` builds many chain-sealed records quickly.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from streamwarden import AuditRecord, AuditSink, ConnectionManager, Credentials, Settings
from streamwarden.audit import migrate
from streamwarden.audit.chain import GENESIS_HASH, seal
from streamwarden.audit.log import AuditLog
from streamwarden.testing import InMemoryTransportFactory
from tests.waiting import wait_until

T0 = datetime(2026, 1, 2, 9, 30, tzinfo=UTC)


@dataclass(frozen=True)
class History:
    """What ``run_history`` did: the lifecycle ids of the two connections it opened."""

    market_data_lifecycle: str
    trade_updates_lifecycle: str


def run_history(sink: AuditSink, creds: Credentials, settings: Settings) -> History:
    """Two consumers share a market-data connection (correlation ids run-1 and run-2), one uses
    trade updates (run-3); all release and the manager closes, so both lifecycles stop."""
    manager = ConnectionManager(transport_factory=InMemoryTransportFactory(), audit=sink,
                                settings=settings)
    try:
        first = manager.market_data(creds, symbols=["AAPL"], correlation_id="run-1",
                                    owner="momentum")
        second = manager.market_data(creds, symbols=["MSFT"], correlation_id="run-2",
                                     owner="[bold]mean-reversion[/bold]")
        orders = manager.trade_updates(creds, on_update=lambda message: None,
                                       correlation_id="run-3", owner="executor")
        history = History(first.lifecycle_id, orders.lifecycle_id)
        first.release()
        second.release()
        orders.release()
        assert wait_until(lambda: not manager.health().lifecycles)
    finally:
        manager.close()
    return history


def open_log(db_url: str, *, batched: bool = False) -> AuditLog:
    """The audit log at ``db_url``, migrated to head first (a fresh PostgreSQL schema is empty;
    a fresh SQLite file would be migrated by ``open`` itself)."""
    migrate.upgrade(db_url)
    settings = Settings(audit_durability="batched" if batched else "sync")
    return AuditLog.open(db_url, settings=settings)


def fill(log: AuditLog, count: int) -> None:
    """Append ``count`` :func:`synthetic_records` through ``log`` (resealed by it)."""
    for sealed in synthetic_records(count):
        log.append(replace(sealed, seq=None, prev_hash=None, row_hash=None))
    log.flush()


def record(**changes: object) -> AuditRecord:
    """An unsealed acquire record at :data:`T0`; ``changes`` override fields."""
    base = AuditRecord(
        event_id="01JTESTEVENT00000000000000", occurred_at=T0,
        lifecycle_id="01JTESTLIFECYCLE0000000000", fingerprint="f" * 24, kind="market_data",
        event="acquire", from_state="idle", to_state="starting", refs_before=0, refs_after=1,
        correlation_id="run-1", host="h", pid=1,
    )
    return replace(base, **changes)


def synthetic_records(count: int, *, lifecycles: int = 10) -> Iterator[AuditRecord]:
    """``count`` sealed records, one microsecond apart from :data:`T0`, spread round-robin over
    ``lifecycles`` lifecycles (``lc-<i>``), correlation ids ``corr-<i>``, both kinds."""
    prev_hash = GENESIS_HASH
    for index in range(count):
        lifecycle = index % lifecycles
        sealed = seal(record(
            event_id=f"ev-{index:08d}", occurred_at=T0 + timedelta(microseconds=index),
            lifecycle_id=f"lc-{lifecycle}", correlation_id=f"corr-{lifecycle}",
            kind="market_data" if lifecycle % 2 == 0 else "trade_updates",
            event="acquire" if index % 3 else "release", details={"index": index},
        ), seq=index + 1, prev_hash=prev_hash)
        prev_hash = sealed.row_hash or GENESIS_HASH
        yield sealed
