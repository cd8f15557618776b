"""Rendering audit records for a reader: a rich table, a JSON array or CSV.

The JSON and CSV forms carry every column of ``lifecycle_audit`` (:data:`COLUMNS`, in table
order) so that an export can be checked against the database and re-verified; timestamps are
ISO 8601 in UTC with microseconds, exactly as the hash chain encodes them. The table shows the
columns a reviewer reads first.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text

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
_TABLE_HEADERS = ("seq", "time (UTC)", "lifecycle", "kind", "event", "from -> to", "refs",
                  "lease", "owner", "correlation", "outcome", "error")
_NO_WRAP = frozenset({"seq", "lifecycle", "refs", "lease", "outcome"})
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


def _states(record: AuditRecord) -> str:
    if record.to_state is None:
        return f"{record.from_state or '?'} -> (none)"
    return f"{record.from_state or '?'} -> {record.to_state}"


def _refs(record: AuditRecord) -> str:
    if record.refs_before is None and record.refs_after is None:
        return ""
    return f"{record.refs_before}->{record.refs_after}"


def _error(record: AuditRecord) -> str:
    if record.error_type is None:
        return record.error_message or ""
    return f"{record.error_type}: {record.error_message or ''}"


def _table_cells(record: AuditRecord) -> tuple[Text, ...]:
    # Text, not str: rich would interpret "[...]" in owners or error messages as markup.
    seq = "" if record.seq is None else str(record.seq)
    cells = (seq, display_time(record.occurred_at), short_id(record.lifecycle_id), record.kind,
             record.event, _states(record), _refs(record), short_id(record.lease_id),
             record.owner or "", record.correlation_id, record.outcome, _error(record))
    styled = Text(record.outcome, style="green" if record.outcome == "ok" else "bold red")
    return (*(Text(cell) for cell in cells[:-2]), styled, Text(cells[-1]))


def render_table(records: Iterable[AuditRecord], console: Console, *,
                 title: str | None = None) -> int:
    """Print ``records`` to ``console`` as a table; returns how many.

    Ids are shortened to their last :data:`SHORT_ID` characters (the JSON and CSV forms have
    them in full). Values are shown literally: rich markup in them is not interpreted.

    Raises:
        InvalidInputError: if a record's timestamp is naive.

    Thread-safety: as thread-safe as ``console``.
    """
    table = Table(title=title, header_style="bold")
    for header in _TABLE_HEADERS:
        # Short fixed-width columns never wrap; the others wrap when the console is narrow.
        table.add_column(header, justify="right" if header in ("seq", "refs") else "left",
                         no_wrap=header in _NO_WRAP, overflow="fold")
    count = 0
    for record in records:
        table.add_row(*_table_cells(record))
        count += 1
    console.print(table)
    return count


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
