"""Create lifecycle_audit, its indexes and the triggers that make it append-only.

Revision ID: 0001
Revises:
Create Date: 2026-01-01

SQLite: ``BEFORE UPDATE`` and ``BEFORE DELETE`` triggers that ``RAISE(ABORT, ...)``.
PostgreSQL: a plpgsql function raising ``insufficient_privilege``, called by a row trigger
``BEFORE UPDATE OR DELETE`` and a statement trigger ``BEFORE TRUNCATE``. Every object is
created unqualified, so in the first schema of the connection's ``search_path``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

TABLE = "lifecycle_audit"
_INDEXES: dict[str, tuple[str, ...]] = {
    "ix_lifecycle_audit_correlation_id_seq": ("correlation_id", "seq"),
    "ix_lifecycle_audit_lifecycle_id_seq": ("lifecycle_id", "seq"),
    "ix_lifecycle_audit_fingerprint_seq": ("fingerprint", "seq"),
    "ix_lifecycle_audit_kind_event_seq": ("kind", "event", "seq"),
    "ix_lifecycle_audit_occurred_at": ("occurred_at",),
}

_SQLITE_UP = [
    f"""CREATE TRIGGER lifecycle_audit_no_{action.lower()} BEFORE {action} ON {TABLE}
    BEGIN SELECT RAISE(ABORT, '{TABLE} is append-only: {action} refused'); END"""
    for action in ("UPDATE", "DELETE")
]
_SQLITE_DOWN = [
    "DROP TRIGGER IF EXISTS lifecycle_audit_no_update",
    "DROP TRIGGER IF EXISTS lifecycle_audit_no_delete",
]
_POSTGRESQL_UP = [
    f"""CREATE FUNCTION lifecycle_audit_refuse_change() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION '{TABLE} is append-only: % refused', TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END
    $$""",
    f"""CREATE TRIGGER lifecycle_audit_no_update_delete BEFORE UPDATE OR DELETE ON {TABLE}
    FOR EACH ROW EXECUTE FUNCTION lifecycle_audit_refuse_change()""",
    f"""CREATE TRIGGER lifecycle_audit_no_truncate BEFORE TRUNCATE ON {TABLE}
    FOR EACH STATEMENT EXECUTE FUNCTION lifecycle_audit_refuse_change()""",
]
_POSTGRESQL_DOWN = [
    f"DROP TRIGGER IF EXISTS lifecycle_audit_no_truncate ON {TABLE}",
    f"DROP TRIGGER IF EXISTS lifecycle_audit_no_update_delete ON {TABLE}",
    "DROP FUNCTION IF EXISTS lifecycle_audit_refuse_change()",
]


def _statements(*, up: bool) -> list[str]:
    if op.get_bind().dialect.name == "sqlite":
        return _SQLITE_UP if up else _SQLITE_DOWN
    return _POSTGRESQL_UP if up else _POSTGRESQL_DOWN


def upgrade() -> None:
    """Create the table, its indexes and the append-only triggers."""
    op.create_table(
        TABLE,
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("event_id", sa.String(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lifecycle_id", sa.String(), nullable=False),
        sa.Column("fingerprint", sa.String(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("event", sa.String(), nullable=False),
        sa.Column("from_state", sa.String(), nullable=True),
        sa.Column("to_state", sa.String(), nullable=True),
        sa.Column("refs_before", sa.Integer(), nullable=True),
        sa.Column("refs_after", sa.Integer(), nullable=True),
        sa.Column("lease_id", sa.String(), nullable=True),
        sa.Column("owner", sa.String(), nullable=True),
        sa.Column("correlation_id", sa.String(), nullable=False),
        sa.Column("causation_id", sa.String(), nullable=True),
        sa.Column("host", sa.String(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(), nullable=False),
        sa.Column("error_type", sa.String(), nullable=True),
        sa.Column("error_message", sa.String(), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("schema_version", sa.Integer(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("row_hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_lifecycle_audit"),
        sa.UniqueConstraint("event_id", name="uq_lifecycle_audit_event_id"),
        sa.CheckConstraint(
            "outcome IN ('ok', 'rejected', 'failed', 'forced')",
            name="ck_lifecycle_audit_outcome",
        ),
    )
    for name, columns in _INDEXES.items():
        op.create_index(name, TABLE, list(columns))
    for statement in _statements(up=True):
        op.execute(statement)


def downgrade() -> None:
    """Drop the triggers, the indexes and the table (and every record in it)."""
    for statement in _statements(up=False):
        op.execute(statement)
    for name in _INDEXES:
        op.drop_index(name, table_name=TABLE)
    op.drop_table(TABLE)
