"""A trail with signed checkpoints, and the insider's tools to tamper with it.

``anchored_trail`` appends 35 records through a real AuditLog and signs checkpoints at
seq 10, 20 and 30 with a real key (rows 31..35 stay after the newest checkpoint). The tamper
helpers work behind AuditLog's back as an insider with the table owner's rights would: switch
the append-only triggers off, change the rows (re-sealing them with the project's own chain
code where the attack calls for it), and switch the triggers back on to cover their tracks.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from streamwarden.audit.anchoring import AnchorReport
from streamwarden.audit.checkpoints import CheckpointWriter
from streamwarden.audit.log import AuditLog
from streamwarden.audit.notes import Verifier, load_signer, load_verifier, write_key_pair
from streamwarden.audit.records import AuditRecord
from tests.audit.chain_data import disable_triggers, insert_rows, raw, stored
from tests.audit.histories import open_log, synthetic_records

CHECKPOINT_SIZES = (10, 20, 30)
ROWS = 35


@dataclass(frozen=True)
class Trail:
    """A database with its checkpoint directory and key pair."""

    url: str
    directory: Path
    key: Path
    public: Verifier

    def verify(self, **options: Any) -> AnchorReport:
        with AuditLog.open(self.url) as log:
            return log.verify_checkpoints(self.directory, [self.public], **options)

    def checkpoint_files(self) -> list[Path]:
        return sorted(self.directory.glob("*.checkpoint"))


def unsealed(records: list[AuditRecord]) -> list[AuditRecord]:
    return [replace(r, seq=None, prev_hash=None, row_hash=None) for r in records]


def append(log: AuditLog, records: list[AuditRecord]) -> None:
    for record in unsealed(records):
        log.append(record)


def anchored_trail(db_url: str, tmp_path: Path) -> Trail:
    key = tmp_path / "audit.key"
    write_key_pair(key, "test.example/audit")
    directory = tmp_path / "checkpoints"
    records = list(synthetic_records(ROWS))
    with open_log(db_url) as log:
        start = 0
        for size in CHECKPOINT_SIZES:
            append(log, records[start:size])
            log.write_checkpoint(_writer(directory, key))
            start = size
        append(log, records[start:])
    return Trail(db_url, directory, key, load_verifier(f"{key}.pub"))


def writer(trail: Trail) -> CheckpointWriter:
    """A writer of ``trail``'s directory with its key."""
    return _writer(trail.directory, trail.key)


def _writer(directory: Path, key: Path) -> CheckpointWriter:
    return CheckpointWriter(directory, [load_signer(key)])


def restore_triggers(connection: sa.Connection) -> None:
    """Put the append-only triggers back as the migration made them."""
    if connection.dialect.name == "sqlite":
        for action in ("UPDATE", "DELETE"):
            connection.exec_driver_sql(
                f"CREATE TRIGGER IF NOT EXISTS lifecycle_audit_no_{action.lower()} BEFORE "
                f"{action} ON lifecycle_audit BEGIN SELECT RAISE(ABORT, 'lifecycle_audit is "
                f"append-only: {action} refused'); END")
    else:
        connection.exec_driver_sql("ALTER TABLE lifecycle_audit ENABLE TRIGGER USER")


@contextmanager
def behind_the_triggers(url: str) -> Iterator[sa.Connection]:
    """A transaction with the triggers off; they are back on when it commits."""
    with raw(url) as connection:
        disable_triggers(connection)
        yield connection
        restore_triggers(connection)


def replace_table(url: str, records: list[AuditRecord]) -> None:
    """Replace every row by ``records`` (sealed), covering the tracks afterwards."""
    with behind_the_triggers(url) as connection:
        connection.exec_driver_sql("DELETE FROM lifecycle_audit")
        insert_rows(connection, records)


def rows(url: str) -> list[AuditRecord]:
    return stored(url)
