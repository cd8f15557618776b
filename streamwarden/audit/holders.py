"""Who held which connection at a given time, for a reader: a table (a block per lease on a
narrow console) or JSON.

The leases come from :func:`streamwarden.audit.holdings.holders_at`; the status of each
lease's lifecycle now (``stopped``, ``live``, ``unterminated`` or ``unchecked``) from whether
it has a final record and, if not, from :func:`streamwarden.audit.processes.check_writer`. A
lease held "forever" by a lifecycle whose process died is what ``unterminated`` flags.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, TextIO

from rich.console import Console, Group
from rich.text import Text

from streamwarden.audit._layout import Column, make_block, print_rows
from streamwarden.audit.holdings import Holding
from streamwarden.audit.processes import WriterStatus
from streamwarden.audit.report import display_time, format_time, short_id, table_correlation
from streamwarden.audit.timeline import format_duration
from streamwarden.errors import InvalidInputError

HOLDERS_FORMATS: tuple[str, ...] = ("table", "json")
_COLUMNS = (
    Column("kind"), Column("lifecycle"), Column("fingerprint"), Column("owner", free=True),
    Column("lease"), Column("receives", free=True), Column("acquired at (UTC)"),
    Column("held for", right=True),
    Column("correlation"), Column("lifecycle now"),
)


def lifecycle_status(holding: Holding, unfinished: Mapping[str, WriterStatus]) -> str:
    """The status now of ``holding``'s lifecycle: ``stopped`` unless it is in
    ``unfinished`` (lifecycles without a final record, with their writer's status), else
    ``live``, ``unterminated`` or ``unchecked``. Thread-safety: pure function."""
    writer = unfinished.get(holding.lifecycle_id)
    return "stopped" if writer is None else writer.lifecycle_status


def holding_to_json(holding: Holding, at: datetime,
                    unfinished: Mapping[str, WriterStatus]) -> dict[str, Any]:
    """``holding`` as held at ``at``, JSON-safe (times ISO 8601 UTC, durations in seconds).

    Thread-safety: pure function.
    """
    writer = unfinished.get(holding.lifecycle_id)
    return {
        "lease_id": holding.lease_id,
        "owner": holding.owner,
        "kind": holding.kind,
        "lifecycle_id": holding.lifecycle_id,
        "fingerprint": holding.fingerprint,
        "correlation_id": holding.correlation_id,
        "receives": holding.receives,
        "acquired_at": format_time(holding.acquired_at),
        "held_for_s": (at - holding.acquired_at).total_seconds(),
        "lifecycle_status": lifecycle_status(holding, unfinished),
        "host": holding.host,
        "pid": holding.pid,
        "last_record_at": None if writer is None else format_time(writer.last_record_at),
    }


def _row(holding: Holding, at: datetime, status: str, full_ids: bool) -> tuple[Text, ...]:
    def ident(value: str) -> Text:
        return Text(value if full_ids else short_id(value))

    correlation = (holding.correlation_id if full_ids
                   else table_correlation(holding.correlation_id))
    style = "" if status in ("stopped", "live") else "bold red"
    return (Text(holding.kind), ident(holding.lifecycle_id), Text(holding.fingerprint),
            Text(holding.owner or ""), ident(holding.lease_id), Text(holding.receives),
            Text(display_time(holding.acquired_at)),
            Text(format_duration(at - holding.acquired_at)), Text(correlation),
            Text(status, style=style))


def _block(holding: Holding, at: datetime, writer: WriterStatus | None) -> Group:
    heading = Text("  ").join([
        Text(holding.owner or "(no owner)"), Text(holding.kind),
        Text(f"since {display_time(holding.acquired_at)} UTC"),
        Text(f"for {format_duration(at - holding.acquired_at)}")])
    fields = [("lifecycle", Text(holding.lifecycle_id)),
              ("fingerprint", Text(holding.fingerprint)), ("lease", Text(holding.lease_id)),
              *([("receives", Text(holding.receives))] if holding.receives else []),
              ("correlation", Text(holding.correlation_id)),
              ("lifecycle now", Text("stopped" if writer is None else writer.describe()))]
    return make_block(heading, fields)


def render_holders(holders: Sequence[Holding], at: datetime, fmt: str, out: TextIO, *,
                   unfinished: Mapping[str, WriterStatus], console: Console | None = None,
                   full_ids: bool = False) -> None:
    """Write the leases ``holders`` held at ``at`` to ``out``: JSON (an array of
    :func:`holding_to_json`), or a table with a note for each lifecycle that is unterminated
    or unchecked, or a block per lease on a console too narrow for the table (:mod:`._layout`),
    or ``nobody held a connection at ...`` when there are none.

    Args:
        unfinished: the lifecycles of ``holders`` that have no final record, with the status
            of their writer; the others are ``stopped``.
        console: used for the table (one writing to ``out`` is created when None).
        full_ids: whole lifecycle and lease ids in the table (blocks always have them).

    Raises:
        InvalidInputError: on an unknown format.
        OSError: if ``out`` cannot be written.

    Thread-safety: not thread-safe on a shared ``out``.
    """
    if fmt == "json":
        json.dump([holding_to_json(holding, at, unfinished) for holding in holders], out,
                  indent=2)
        out.write("\n")
        return
    if fmt != "table":
        raise InvalidInputError(f"holders format must be one of {', '.join(HOLDERS_FORMATS)}; "
                                f"got {fmt!r}")
    console = console or Console(file=out)
    when = f"{display_time(at)} UTC"
    if not holders:
        console.print(Text(f"nobody held a connection at {when}"))
        return
    title = f"{len(holders)} leases held at {when}"
    rows = [_row(holding, at, lifecycle_status(holding, unfinished), full_ids)
            for holding in holders]
    blocks = (_block(holding, at, unfinished.get(holding.lifecycle_id)) for holding in holders)
    if not print_rows(console, _COLUMNS, rows, blocks, title=title):
        return  # each block says what became of its lifecycle
    shown = dict.fromkeys(holding.lifecycle_id for holding in holders)
    for lifecycle_id in shown:
        writer = unfinished.get(lifecycle_id)
        if writer is not None and writer.state != "running":
            console.print(Text(f"lifecycle {lifecycle_id}: {writer.describe()}"))
