"""Rendering audit records for a reader: a rich table, a JSON array or CSV.

The JSON and CSV forms carry every column of ``lifecycle_audit`` (:data:`COLUMNS`, in table
order) so that an export can be checked against the database and re-verified; timestamps are
ISO 8601 in UTC with microseconds, exactly as the hash chain encodes them. The table shows the
columns a reviewer reads first, and turns into a block per record on a narrow terminal
(:func:`render_table`).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

from rich.console import Console, Group
from rich.text import Text

from streamwarden.audit._layout import Column, make_block, print_rows
from streamwarden.audit.query import ELLIPSIS
from streamwarden.audit.records import AuditRecord
from streamwarden.errors import InvalidInputError

ReportFormat = Literal["table", "json", "csv"]
REPORT_FORMATS: tuple[str, ...] = ("table", "json", "csv")

#: Every column of ``lifecycle_audit``, in the order of the table (and of CSV headers).
COLUMNS: tuple[str, ...] = (
    "seq", "event_id", "occurred_at", "lifecycle_id", "fingerprint", "kind", "event",
    "from_state", "to_state", "refs_before", "refs_after", "lease_id", "owner",
    "correlation_id", "causation_id", "host", "pid", "outcome", "error_type", "error_message",
    "details", "schema_version", "prev_hash", "row_hash",
)
#: Characters of a ULID shown in the table: the random tail, which tells ids created in the
#: same millisecond apart (the head is the timestamp).
SHORT_ID = 8
#: Correlation ids up to this long are shown whole in the table.
CORRELATION_WIDTH = 16
_TABLE_COLUMNS = (
    Column("seq", right=True), Column("time (UTC)"), Column("lifecycle"), Column("kind"),
    Column("event"), Column("from -> to"), Column("refs", right=True), Column("lease"),
    Column("owner", free=True), Column("correlation"), Column("outcome"),
    Column("reason", free=True), Column("cause"),
)
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(cell: str) -> str:
    """``cell`` with a leading ``'`` if a spreadsheet would read it as a formula.

    Thread-safety: pure function.
    """
    return "'" + cell if cell.startswith(_FORMULA_STARTS) else cell


def format_time(value: datetime) -> str:
    """``value`` as ISO 8601 in UTC with microseconds (``2026-01-02T03:04:05.000006+00:00``).

    Raises:
        InvalidInputError: if ``value`` is naive (its instant would be ambiguous).

    Thread-safety: pure function.
    """
    if value.tzinfo is None:
        raise InvalidInputError("audit timestamps must be timezone-aware")
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def display_time(value: datetime) -> str:
    """``value`` in UTC for a table: ``2026-01-02 03:04:05.000006`` (zone implied by the header).

    Raises:
        InvalidInputError: if ``value`` is naive.

    Thread-safety: pure function.
    """
    return format_time(value).removesuffix("+00:00").replace("T", " ")


def record_to_json(record: AuditRecord) -> dict[str, Any]:
    """Every column of ``record`` as JSON-safe values, keys in :data:`COLUMNS` order.

    Raises:
        InvalidInputError: if ``occurred_at`` is naive.

    Thread-safety: pure function.
    """
    row = {name: getattr(record, name) for name in COLUMNS}
    row["occurred_at"] = format_time(record.occurred_at)
    row["details"] = dict(record.details)
    return row


def record_to_csv_row(record: AuditRecord) -> list[str]:
    """Every column of ``record`` as CSV cells in :data:`COLUMNS` order.

    Absent values are empty cells; ``details`` is compact JSON with sorted keys; cells that
    start like a formula are neutralised (:func:`neutralise`).

    Raises:
        InvalidInputError: if ``occurred_at`` is naive.

    Thread-safety: pure function.
    """
    row = record_to_json(record)
    row["details"] = json.dumps(row["details"], sort_keys=True, separators=(",", ":"),
                                ensure_ascii=False)
    return ["" if row[name] is None else neutralise(str(row[name])) for name in COLUMNS]


def write_json(records: Iterable[AuditRecord], out: TextIO) -> int:
    """Write ``records`` to ``out`` as one indented JSON array; returns how many.

    Raises:
        InvalidInputError: if a record's timestamp is naive.
        OSError: if ``out`` cannot be written.

    Thread-safety: not thread-safe on a shared ``out``.
    """
    rows = [record_to_json(record) for record in records]
    json.dump(rows, out, indent=2, ensure_ascii=False, allow_nan=False)
    out.write("\n")
    return len(rows)


def write_csv(records: Iterable[AuditRecord], out: TextIO) -> int:
    """Write ``records`` to ``out`` as CSV (RFC 4180: quoting, CRLF line ends, so a carriage
    return inside a cell is quoted too) after a header row of
    :data:`COLUMNS`; returns how many records.

    Raises:
        InvalidInputError: if a record's timestamp is naive.
        OSError: if ``out`` cannot be written.

    Thread-safety: not thread-safe on a shared ``out``.
    """
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    count = 0
    for record in records:
        writer.writerow(record_to_csv_row(record))
        count += 1
    return count


def short_id(value: str | None) -> str:
    """The last :data:`SHORT_ID` characters of an id, or ``""`` for None. Pure function."""
    if value is None:
        return ""
    return value[-SHORT_ID:]


def table_correlation(value: str) -> str:
    """A correlation id as the table shows it: whole up to :data:`CORRELATION_WIDTH`
    characters, else ``…`` and its last :data:`SHORT_ID` (which the filters accept, with or
    without the ``…``). Pure function."""
    return value if len(value) <= CORRELATION_WIDTH else ELLIPSIS + short_id(value)


def _states(record: AuditRecord) -> str:
    if record.to_state is None:
        return f"{record.from_state or '?'} -> (none)"
    return f"{record.from_state or '?'} -> {record.to_state}"


def _refs(record: AuditRecord) -> str:
    if record.refs_before is None and record.refs_after is None:
        return ""
    return f"{record.refs_before}->{record.refs_after}"


def _outcome(record: AuditRecord) -> Text:
    return Text(record.outcome, style="green" if record.outcome == "ok" else "bold red")


def _table_row(record: AuditRecord, full_ids: bool) -> tuple[Text, ...]:
    # Text, not str: rich would interpret "[...]" in owners or error messages as markup.
    def ident(value: str | None) -> Text:
        return Text((value or "") if full_ids else short_id(value))

    correlation = record.correlation_id if full_ids else table_correlation(
        record.correlation_id)
    return (Text("" if record.seq is None else str(record.seq)),
            Text(display_time(record.occurred_at)), ident(record.lifecycle_id),
            Text(record.kind), Text(record.event), Text(_states(record)), Text(_refs(record)),
            ident(record.lease_id), Text(record.owner or ""), Text(correlation),
            _outcome(record), Text(record.reason or ""), ident(record.causation_id))


def _block(record: AuditRecord) -> Group:
    heading = Text("  ").join([
        Text(f"#{record.seq}" if record.seq is not None else "#-"),
        Text(display_time(record.occurred_at)), Text(record.kind), Text(record.event),
        _outcome(record)])
    states = _states(record) + (f", refs {_refs(record)}" if _refs(record) else "")
    fields = [("lifecycle", Text(record.lifecycle_id)), ("states", Text(states))]
    if record.lease_id is not None:
        owner = "" if record.owner is None else f", owner {record.owner}"
        fields.append(("lease", Text(record.lease_id + owner)))
    elif record.owner is not None:
        fields.append(("owner", Text(record.owner)))
    fields.append(("correlation", Text(record.correlation_id)))
    if record.causation_id is not None:
        fields.append(("caused by", Text(record.causation_id)))
    if record.reason is not None:
        fields.append(("reason", Text(record.reason)))
    return make_block(heading, fields)


def render_table(records: Iterable[AuditRecord], console: Console, *,
                 title: str | None = None, full_ids: bool = False) -> int:
    """Print ``records`` to ``console`` for a reader; returns how many.

    A table when ``console`` is wide enough for its columns (:mod:`._layout`: about 160
    characters for a typical trail with short ids, more with ``full_ids``), with one line per
    record unless an owner or a reason is long; ids (lifecycle, lease, the causing event)
    are shortened to their last :data:`SHORT_ID` characters unless ``full_ids``, long
    correlation ids as :func:`table_correlation`. On a narrower console, one block per record:
    a heading (seq, time, kind, event, outcome) over labelled lines with every id in full.
    Either way the reason is shown (:attr:`AuditRecord.reason`: the error, or why a
    connection was lost) and values are shown literally: rich markup in them is not
    interpreted. Materialises ``records`` (it measures them before printing).

    Raises:
        InvalidInputError: if a record's timestamp is naive.

    Thread-safety: as thread-safe as ``console``.
    """
    records = list(records)
    rows = [_table_row(record, full_ids) for record in records]
    print_rows(console, _TABLE_COLUMNS, rows, map(_block, records), title=title)
    return len(records)


def render(records: Iterable[AuditRecord], fmt: str, out: TextIO, *,
           console: Console | None = None) -> int:
    """Write ``records`` to ``out`` in ``fmt`` (table, json or csv); returns how many.

    ``console`` is used for the table (one writing to ``out`` is created when None).

    Raises:
        InvalidInputError: on an unknown format or a naive timestamp.
        OSError: if ``out`` cannot be written.

    Thread-safety: not thread-safe on a shared ``out``.
    """
    if fmt == "table":
        return render_table(records, console or Console(file=out))
    if fmt == "json":
        return write_json(records, out)
    if fmt == "csv":
        return write_csv(records, out)
    raise InvalidInputError(f"report format must be one of {', '.join(REPORT_FORMATS)}; "
                            f"got {fmt!r}")
