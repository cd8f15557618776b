"""Single changes made to a sealed history behind the append-only triggers' back.

Each :class:`Tamper` can be applied to a list of records (pure) or to the SQL table (with the
triggers switched off by the caller), and knows what ``verify`` must report for it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from hypothesis import strategies as st

from streamwarden import AuditRecord
from streamwarden.audit.chain import GENESIS_HASH, seal
from streamwarden.audit.models import audit_table, record_to_row
from streamwarden.audit.records import OUTCOMES
from tests.audit.chain_data import make_record

_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                max_size=12)
_JSON = st.recursive(st.none() | st.booleans() | st.integers(-10**6, 10**6) | _TEXT,
                     lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(_TEXT, inner, max_size=3), max_leaves=6)
#: Columns an edit may change (every column but seq), with values to change them to.
EDITS: dict[str, st.SearchStrategy[Any]] = {
    "event_id": _TEXT.filter(bool),
    "occurred_at": st.datetimes(min_value=datetime(2000, 1, 1),
                                max_value=datetime(2100, 1, 1),
                                timezones=st.just(UTC)),
    "lifecycle_id": _TEXT, "fingerprint": _TEXT, "kind": _TEXT, "event": _TEXT,
    "from_state": st.none() | _TEXT, "to_state": st.none() | _TEXT,
    "refs_before": st.none() | st.integers(-5, 2**31 - 1),
    "refs_after": st.none() | st.integers(-5, 2**31 - 1),
    "lease_id": st.none() | _TEXT, "owner": st.none() | _TEXT, "correlation_id": _TEXT,
    "causation_id": st.none() | _TEXT, "host": _TEXT, "pid": st.integers(0, 2**31 - 1),
    "outcome": st.sampled_from(OUTCOMES), "error_type": st.none() | _TEXT,
    "error_message": st.none() | _TEXT,
    "details": st.dictionaries(_TEXT, _JSON, max_size=4),
    "schema_version": st.integers(0, 100),
    "prev_hash": st.text("0123456789abcdef", min_size=64, max_size=64),
    "row_hash": st.text("0123456789abcdef", min_size=64, max_size=64),
}


@dataclass(frozen=True)
class Tamper:
    """One change: ``edit`` (row ``k``'s ``column`` := ``value``), ``delete`` (row ``k``),
    ``insert`` (``row`` put at ``k``, the rows from ``k`` on renumbered +1) or ``swap`` (rows
    ``k`` and ``j`` exchange their seq)."""

    kind: str
    k: int
    j: int = 0
    column: str = ""
    value: Any = None
    row: AuditRecord | None = None

    @property
    def expected(self) -> tuple[str, int]:
        reason = {"edit": "edited", "delete": "deleted", "insert": "inserted",
                  "swap": "reordered"}[self.kind]
        return reason, self.k

    def apply(self, records: list[AuditRecord]) -> list[AuditRecord]:
        """The history after this change (a new list, in seq order)."""
        out = list(records)
        index = self.k - 1
        if self.kind == "edit":
            out[index] = replace(out[index], **{self.column: self.value})
        elif self.kind == "delete":
            del out[index]
        elif self.kind == "insert":
            assert self.row is not None
            out = [*out[:index], self.row, *(replace(r, seq=(r.seq or 0) + 1) for r in out[index:])]
        else:
            first, second = out[index], out[self.j - 1]
            out[index], out[self.j - 1] = replace(second, seq=self.k), replace(first, seq=self.j)
        return out

    def apply_sql(self, connection: sa.Connection) -> None:
        """The same change on the table (the caller switched the triggers off)."""
        table, seq = audit_table, audit_table.c.seq
        if self.kind == "edit":
            connection.execute(sa.update(table).where(seq == self.k)
                               .values({self.column: self.value}))
        elif self.kind == "delete":
            connection.execute(sa.delete(table).where(seq == self.k))
        elif self.kind == "insert":
            assert self.row is not None  # renumber in two steps: seq is a primary key
            connection.execute(sa.update(table).where(seq >= self.k).values(seq=-(seq + 1)))
            connection.execute(sa.update(table).where(seq < 0).values(seq=-seq))
            connection.execute(sa.insert(table), [record_to_row(self.row)])
        else:
            connection.execute(sa.update(table).where(seq == self.j).values(seq=-1))
            connection.execute(sa.update(table).where(seq == self.k).values(seq=self.j))
            connection.execute(sa.update(table).where(seq == -1).values(seq=self.k))


@st.composite
def tampers(draw: st.DrawFn, records: list[AuditRecord]) -> Tamper:
    """Any single edit, deletion (not of the newest row), insertion or swap of ``records``."""
    count = len(records)
    kind = draw(st.sampled_from(["edit", "delete", "insert", "swap"]))
    if kind == "delete":
        return Tamper("delete", draw(st.integers(1, count - 1)))
    if kind == "swap":
        k = draw(st.integers(1, count - 1))
        return Tamper("swap", k, j=draw(st.integers(k + 1, count)))
    k = draw(st.integers(1, count))
    if kind == "edit":
        column = draw(st.sampled_from(sorted(EDITS)))
        original = getattr(records[k - 1], column)
        value = draw(EDITS[column].filter(lambda v: v != original))
        return Tamper("edit", k, column=column, value=value)
    return Tamper("insert", k, row=draw(_intruders(records, k)))


@st.composite
def _intruders(draw: st.DrawFn, records: list[AuditRecord], k: int) -> AuditRecord:
    """A row to put at ``k``: forged with a correct hash after row ``k - 1``, a copy of another
    row (new event id, its hashes kept), or a row with made-up hashes."""
    prev_hash = records[k - 2].row_hash if k > 1 else GENESIS_HASH
    fresh = make_record(draw(st.integers(0, 99)), owner="intruder")
    style = draw(st.sampled_from(["forged", "copy", "made-up"]))
    if style == "forged":
        return seal(fresh, seq=k, prev_hash=prev_hash or GENESIS_HASH)
    if style == "copy":
        source = draw(st.sampled_from(records))
        return replace(source, seq=k, event_id=fresh.event_id)
    fake = st.text("0123456789abcdef", min_size=64, max_size=64)
    return replace(fresh, seq=k, prev_hash=draw(fake), row_hash=draw(fake))
