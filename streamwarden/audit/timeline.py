"""One connection's lifecycle as a timeline: its states in order, with how long each lasted.

Built from the lifecycle's audit records in ``seq`` order. A record whose ``to_state`` differs
from the current state starts a new period; self-loops (``acquire`` in ``running``), lease
revocations and rejected events (``to_state`` absent) stay in the current period and are
counted as its events. The first period is the first record's ``from_state`` (``idle``),
entered when that record occurred. The last period is open-ended (no ``left_at``) unless the
lifecycle reached ``stopped``, which is terminal. An open-ended lifecycle whose process is gone
never reaches it: rendered with the :class:`~streamwarden.audit.processes.WriterStatus` of its
last record, it is shown as unterminated rather than live.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TextIO

from rich.console import Console
from rich.text import Text

from streamwarden.audit._layout import Column, make_table
from streamwarden.audit.processes import WriterStatus
from streamwarden.audit.records import AuditRecord
from streamwarden.audit.report import display_time, format_time
from streamwarden.errors import InvalidInputError

TERMINAL_STATE = "stopped"
TIMELINE_FORMATS: tuple[str, ...] = ("table", "json")
_MINUTE = 60.0
_HOUR = 3600.0
#: How the table ends the last period, by the lifecycle's :func:`status` (else "(status)").
_OPEN_ENDS = {"stopped": "(terminal)", "live": "(open)"}
# Times may wrap between date and time on a narrow terminal; nothing else does.
_COLUMNS = (Column("#", right=True), Column("state"), Column("entered at (UTC)", free=True),
            Column("left at (UTC)", free=True), Column("duration"), Column("events", right=True))


@dataclass(frozen=True)
class StatePeriod:
    """A period the lifecycle spent in one state.

    ``left_at`` and ``duration`` are None for the last period: open-ended if the lifecycle is
    still live, or ``stopped`` (terminal). ``events`` counts the records in the period, the
    one that entered it included. Immutable.
    """

    state: str
    entered_at: datetime
    left_at: datetime | None
    events: int

    @property
    def duration(self) -> timedelta | None:
        """``left_at - entered_at``, or None for the last period."""
        return None if self.left_at is None else self.left_at - self.entered_at


@dataclass(frozen=True)
class Timeline:
    """The states of one lifecycle in order. Immutable.

    Attributes:
        transitions: how many times the state changed.
        events: how many records the lifecycle has.
        host, pid, last_record_at: the process that wrote the last record, and when.
        stopped: whether it reached the terminal state.
    """

    lifecycle_id: str
    fingerprint: str
    kind: str
    periods: tuple[StatePeriod, ...]
    transitions: int
    events: int
    host: str
    pid: int
    last_record_at: datetime

    @property
    def stopped(self) -> bool:
        """Whether the lifecycle reached ``stopped``."""
        return self.periods[-1].state == TERMINAL_STATE

    @property
    def lifetime(self) -> timedelta | None:
        """From the first record to entering ``stopped``; None while the lifecycle is live."""
        if not self.stopped:
            return None
        return self.periods[-1].entered_at - self.periods[0].entered_at


class TimelineBuilder:
    """Builds the timeline of one lifecycle from its records, fed one at a time in ``seq``
    order (for callers that read several lifecycles' records interleaved, in one pass).

    Memory grows with the number of state changes, not of records.

    Thread-safety: not thread-safe; one builder per lifecycle and thread.
    """

    def __init__(self) -> None:
        self._first: AuditRecord | None = None
        self._last: AuditRecord | None = None
        # (state, entered_at, events) of each period; left_at is the next period's entered_at.
        self._periods: list[tuple[str, datetime, int]] = []
        self._count = 0

    def add(self, record: AuditRecord) -> None:
        """Take the lifecycle's next record.

        Raises:
            InvalidInputError: if ``record`` belongs to another lifecycle than the first one
                added (nothing changes).
        """
        periods = self._periods
        if self._first is None:
            self._first = record
            periods.append((record.from_state or record.to_state or "?", record.occurred_at, 0))
        elif record.lifecycle_id != self._first.lifecycle_id:
            raise InvalidInputError("a timeline is built from the records of one lifecycle")
        self._count += 1
        self._last = record
        state, entered_at, events = periods[-1]
        if record.to_state is not None and record.to_state != state:
            periods.append((record.to_state, record.occurred_at, 1))
        else:
            periods[-1] = (state, entered_at, events + 1)

    def build(self) -> Timeline:
        """The timeline of the records added so far.

        Raises:
            InvalidInputError: if no record was added.
        """
        first, last, periods = self._first, self._last, self._periods
        if first is None or last is None:
            raise InvalidInputError("a timeline needs at least one audit record")
        built = tuple(
            StatePeriod(state, entered_at,
                        periods[index + 1][1] if index + 1 < len(periods) else None, events)
            for index, (state, entered_at, events) in enumerate(periods)
        )
        return Timeline(first.lifecycle_id, first.fingerprint, first.kind, built,
                        transitions=len(built) - 1, events=self._count, host=last.host,
                        pid=last.pid, last_record_at=last.occurred_at)


def build_timeline(records: Iterable[AuditRecord]) -> Timeline:
    """The timeline of the lifecycle whose records (in ``seq`` order) are ``records``.

    Consumes ``records`` once; memory grows with the number of state changes, not of records.

    Raises:
        InvalidInputError: if there are no records, or they belong to several lifecycles.

    Thread-safety: pure function.
    """
    builder = TimelineBuilder()
    for record in records:
        builder.add(record)
    return builder.build()


def format_duration(value: timedelta | None) -> str:
    """``value`` for a reader: ``0.004 s``, ``2 min 3.5 s``, ``1 h 2 min 3 s``; ``""`` for None.

    Thread-safety: pure function.
    """
    if value is None:
        return ""
    seconds = value.total_seconds()
    if seconds < _MINUTE:
        return f"{seconds:.3f} s"
    if seconds < _HOUR:
        minutes, rest = divmod(seconds, _MINUTE)
        return f"{int(minutes)} min {rest:.1f} s"
    hours, rest = divmod(seconds, _HOUR)
    minutes, rest = divmod(rest, _MINUTE)
    return f"{int(hours)} h {int(minutes)} min {int(rest)} s"


def status(timeline: Timeline, writer: WriterStatus | None = None) -> str:
    """``stopped``; else, with the status of the last record's ``writer``, ``live``,
    ``unterminated`` or ``unchecked``; else ``live``. Thread-safety: pure function."""
    if timeline.stopped:
        return "stopped"
    return "live" if writer is None else writer.lifecycle_status


def timeline_to_json(timeline: Timeline, writer: WriterStatus | None = None) -> dict[str, Any]:
    """``timeline`` as JSON-safe values (times ISO 8601 UTC, durations in seconds), its
    :func:`status` judged with ``writer``.

    Thread-safety: pure function.
    """
    lifetime = timeline.lifetime
    return {
        "lifecycle_id": timeline.lifecycle_id,
        "fingerprint": timeline.fingerprint,
        "kind": timeline.kind,
        "stopped": timeline.stopped,
        "status": status(timeline, writer),
        "host": timeline.host,
        "pid": timeline.pid,
        "last_record_at": format_time(timeline.last_record_at),
        "transitions": timeline.transitions,
        "events": timeline.events,
        "lifetime_s": None if lifetime is None else lifetime.total_seconds(),
        "states": [
            {
                "state": period.state,
                "entered_at": format_time(period.entered_at),
                "left_at": None if period.left_at is None else format_time(period.left_at),
                "duration_s": (None if period.duration is None
                               else period.duration.total_seconds()),
                "events": period.events,
            }
            for period in timeline.periods
        ],
    }


def _summary(timeline: Timeline, writer: WriterStatus | None) -> str:
    if timeline.stopped:
        return f"stopped after {format_duration(timeline.lifetime)}"
    return status(timeline, writer)


def render_timeline(timeline: Timeline, fmt: str, out: TextIO, *,
                    console: Console | None = None, writer: WriterStatus | None = None) -> None:
    """Write ``timeline`` to ``out`` as a rich table or JSON.

    ``console`` is used for the table (one writing to ``out`` is created when None).
    ``writer``, the status of the process of a lifecycle that did not stop
    (:func:`~streamwarden.audit.processes.check_writer`), tells live from unterminated; without
    it such a lifecycle is shown live.

    Raises:
        InvalidInputError: on an unknown format.
        OSError: if ``out`` cannot be written.

    Thread-safety: not thread-safe on a shared ``out``.
    """
    if fmt == "json":
        json.dump(timeline_to_json(timeline, writer), out, indent=2)
        out.write("\n")
        return
    if fmt != "table":
        raise InvalidInputError(f"timeline format must be one of {', '.join(TIMELINE_FORMATS)}; "
                                f"got {fmt!r}")
    summary = Text(f"lifecycle {timeline.lifecycle_id} ({timeline.kind}, fingerprint "
                   f"{timeline.fingerprint}): {_summary(timeline, writer)}, "
                   f"{timeline.transitions} transitions, {timeline.events} events")
    open_end = _OPEN_ENDS.get(status(timeline, writer), f"({status(timeline, writer)})")
    rows = []
    for index, period in enumerate(timeline.periods, start=1):
        left = open_end if period.left_at is None else display_time(period.left_at)
        duration = open_end if period.left_at is None else format_duration(period.duration)
        rows.append((Text(str(index)), Text(period.state), Text(display_time(period.entered_at)),
                     Text(left), Text(duration), Text(str(period.events))))
    console = console or Console(file=out)
    console.print(summary)
    if writer is not None and not timeline.stopped:
        console.print(Text(writer.describe()))
    console.print(make_table(_COLUMNS, rows))

