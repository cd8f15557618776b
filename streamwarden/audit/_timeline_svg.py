"""Connections drawn over time, as inline SVG for the HTML report.

A chart is 1000 units wide (it scales to the page): owner and connection labels in a gutter
on the left, time running left to right over the plot, a UTC time axis below. A connection's
row shows its states as coloured bands; a lease is a bar from its acquire to what ended it
(an open lease runs to the end of the window, dashed, with an arrow); a reconnect
(``connection_lost`` or ``went_stale``) is an orange triangle and a failure (outcome ``failed``
or ``forced``) a red cross, each with a line down through the rows. Every mark carries a
``<title>`` (the details on hover, no script needed); :func:`legend` explains the colours.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

from streamwarden.audit._markup import escape, shorten, utc
from streamwarden.audit._trail_summary import ConnectionDetail, Marker
from streamwarden.audit.holdings import Holding
from streamwarden.audit.report import short_id
from streamwarden.audit.timeline import TERMINAL_STATE, StatePeriod, format_duration

WIDTH = 1000
PLOT_START = 200
PLOT_END = 985
#: Fill and text colour of each state's band; a state the spec gains later gets _OTHER.
STATE_COLOURS: dict[str, tuple[str, str]] = {
    "idle": ("#cfd4da", "#1d2329"),
    "starting": ("#f6c85f", "#1d2329"),
    "running": ("#3c9a50", "#ffffff"),
    "draining": ("#9c7dc9", "#ffffff"),
    TERMINAL_STATE: ("#5f6b76", "#ffffff"),
}
_OTHER = ("#b0b0b0", "#1d2329")
LEASE_COLOUR = "#3b73b9"
RECONNECT_COLOUR = "#e8780c"
FAILURE_COLOUR = "#d62828"
_MICRO = timedelta(microseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CHAR_WIDTH = 6.3  # of an 11-unit sans-serif character, on average
_LABEL_CHARS = 29
_TOP = 20  # above the first row: room for the marks
_STATE_HEIGHT = 22
_LEASE_PITCH = 19
_LEASE_HEIGHT = 14
_OVERVIEW_PITCH = 24
_AXIS_HEIGHT = 44
_MAX_TICKS = 10
_SECOND = 1_000_000
_DAY = 86_400 * _SECOND
#: Tick spacings, in microseconds, from a microsecond to a year.
_STEPS = tuple(
    [mantissa * 10**power for power in range(6) for mantissa in (1, 2, 5)]
    + [s * _SECOND for s in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200,
                             10_800, 21_600, 43_200)]
    + [d * _DAY for d in (1, 2, 7, 14, 30, 91, 365)]
)


class Scale:
    """Maps times in ``[start, end]`` to x between :data:`PLOT_START` and :data:`PLOT_END`.

    A window shorter than a millisecond is widened to one, so that a single record still
    gets a visible place. Thread-safety: immutable.
    """

    def __init__(self, start: datetime, end: datetime) -> None:
        self.start = start
        self.end = max(end, start + timedelta(milliseconds=1))
        self._span = (self.end - start) / _MICRO

    def x(self, at: datetime) -> float:
        """The x of ``at``, clamped to the plot."""
        offset = (at - self.start) / _MICRO / self._span
        return round(PLOT_START + min(max(offset, 0.0), 1.0) * (PLOT_END - PLOT_START), 2)

    def ticks(self) -> list[tuple[float, str]]:
        """Axis ticks at round times: (x, label), as many as fit without overlapping."""
        multi_day = self.start.date() != self.end.date()
        for step in _STEPS:
            width = len(_tick_label(self.start, step, multi_day)) * _CHAR_WIDTH + 24
            if self._span / step + 1 <= min((PLOT_END - PLOT_START) / width, _MAX_TICKS):
                break
        else:  # more than a decade: multiples of 365 days
            step *= math.ceil(self._span / step / (_MAX_TICKS - 1))
        start_us = (self.start - _EPOCH) // _MICRO
        first = -(-start_us // step) * step
        count = int((self._span - (first - start_us)) // step) + 1
        times = [_EPOCH + (first + index * step) * _MICRO for index in range(count)]
        return [(self.x(at), _tick_label(at, step, multi_day)) for at in times]


def _tick_label(at: datetime, step: int, multi_day: bool) -> str:
    if step >= _DAY:
        return at.strftime("%Y-%m-%d")
    if step >= 60 * _SECOND:
        text = at.strftime("%H:%M")
    elif step >= _SECOND:
        text = at.strftime("%H:%M:%S")
    elif step >= 1000:
        text = at.strftime("%H:%M:%S.") + f"{at.microsecond // 1000:03d}"
    else:
        text = at.strftime("%H:%M:%S.%f")
    return at.strftime("%m-%d ") + text if multi_day else text


def _title(*lines: str) -> str:
    return "<title>" + escape("\n".join(line for line in lines if line)) + "</title>"


def _axis(scale: Scale, top: float, bottom: float) -> list[str]:
    parts = [f'<g class="axis"><line x1="{PLOT_START}" y1="{bottom}" x2="{PLOT_END}" '
             f'y2="{bottom}" class="axis-line"/>']
    for x, label in scale.ticks():
        parts.append(f'<line x1="{x}" y1="{top}" x2="{x}" y2="{bottom + 4}" class="grid"/>')
        if x + len(label) * _CHAR_WIDTH / 2 <= WIDTH:  # a label the edge would cut is left out
            parts.append(f'<text x="{x}" y="{bottom + 16}" class="tick">{escape(label)}</text>')
    span = format_duration(scale.end - scale.start)
    parts.append(f'<text x="{PLOT_START}" y="{bottom + 34}" class="range range-start">'
                 f'{escape(utc(scale.start))}</text>'
                 f'<text x="{(PLOT_START + PLOT_END) / 2}" y="{bottom + 34}" class="range">'
                 f'span {escape(span)}</text>'
                 f'<text x="{PLOT_END}" y="{bottom + 34}" class="range range-end">'
                 f'{escape(utc(scale.end))}</text></g>')
    return parts


def _band(period: StatePeriod, scale: Scale, y: float, height: float, *,
          labelled: bool) -> str:
    """One state period's band (or, for ``stopped``, a tick where the lifecycle ended)."""
    fill, ink = STATE_COLOURS.get(period.state, _OTHER)
    start = scale.x(period.entered_at)
    if period.state == TERMINAL_STATE:
        return (f'<g class="band state-{escape(period.state)}"><rect x="{start - 1.5}" y="{y}" '
                f'width="3" height="{height}" fill="{fill}"/>'
                + _title(f"stopped at {utc(period.entered_at)}") + "</g>")
    end = scale.x(period.left_at or scale.end)
    width = max(end - start, 0.6)
    left = "still in it at the end of the selection" if period.left_at is None else (
        f"left {utc(period.left_at)} after {format_duration(period.duration)}")
    label = ""
    if labelled and width > len(period.state) * _CHAR_WIDTH + 8:
        label = (f'<text x="{start + width / 2}" y="{y + height / 2 + 4}" class="band-label" '
                 f'fill="{ink}">{escape(period.state)}</text>')
    return (f'<g class="band state-{escape(period.state)}"><rect x="{start}" y="{y}" '
            f'width="{round(width, 2)}" height="{height}" fill="{fill}"/>{label}'
            + _title(f"{period.state}: entered {utc(period.entered_at)}", left,
                     f"{period.events} records") + "</g>")


def _marker(marker: Marker, scale: Scale, top: float, bottom: float) -> str:
    x = scale.x(marker.at)
    seq = "" if marker.seq is None else f" (seq {marker.seq})"
    title = _title(f"{marker.event} at {utc(marker.at)}{seq}", f"outcome {marker.outcome}",
                   marker.why)
    if marker.reconnect:
        return (f'<g class="marker reconnect"><line x1="{x}" y1="{top}" x2="{x}" '
                f'y2="{bottom}" stroke="{RECONNECT_COLOUR}" class="mark-line"/>'
                f'<path d="M{x - 6},{top - 12} L{x + 6},{top - 12} L{x},{top - 1} Z" '
                f'fill="{RECONNECT_COLOUR}"/>{title}</g>')
    return (f'<g class="marker failure"><line x1="{x}" y1="{top}" x2="{x}" y2="{bottom}" '
            f'stroke="{FAILURE_COLOUR}" class="mark-line"/>'
            f'<path d="M{x - 5},{top - 12} L{x + 5},{top - 2} M{x + 5},{top - 12} '
            f'L{x - 5},{top - 2}" stroke="{FAILURE_COLOUR}" class="cross"/>{title}</g>')


def owner_label(holding: Holding) -> str:
    """How a lease's owner is shown: the owner, or ``(no owner)``."""
    return "(no owner)" if holding.owner is None else holding.owner


def _lease(holding: Holding, scale: Scale, y: float) -> str:
    start = scale.x(holding.acquired_at)
    is_open = holding.released_at is None
    end = scale.x(holding.released_at or scale.end)
    width = max(end - start, 2.0)
    owner = owner_label(holding)
    label = shorten(owner, _LABEL_CHARS - (7 if is_open else 0)) + (" (open)" if is_open else "")
    if holding.released_at is None:
        ended = "still held at the end of the selection"
    else:
        held = format_duration(holding.released_at - holding.acquired_at)
        ended = (f"ended {utc(holding.released_at)} by {holding.ended_by} "
                 f"({holding.end_outcome}), held {held}")
    classes = "lease open" if is_open else (
        "lease ended-badly" if holding.ended_by != "release" or holding.end_outcome != "ok"
        else "lease")
    bar = (f'<rect x="{start}" y="{y}" width="{round(width, 2)}" height="{_LEASE_HEIGHT}" '
           f'rx="2" class="lease-bar"/>')
    if is_open:
        bar += (f'<path d="M{PLOT_END - 1},{y - 2} L{PLOT_END + 7},{y + _LEASE_HEIGHT / 2} '
                f'L{PLOT_END - 1},{y + _LEASE_HEIGHT + 2} Z" class="open-arrow"/>')
    return (f'<g class="{classes}"><text x="{PLOT_START - 8}" y="{y + _LEASE_HEIGHT - 3}" '
            f'class="lease-label">{escape(label)}</text>{bar}'
            + _title(f"owner: {owner}", f"lease {holding.lease_id}",
                     f"acquired {utc(holding.acquired_at)}", ended,
                     f"reason: {holding.end_reason}" if holding.end_reason else "",
                     f"correlation id {holding.correlation_id}",
                     f"host {holding.host}, pid {holding.pid}") + "</g>")


def _svg(height: float, label: str, parts: Iterable[str]) -> str:
    return (f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" '
            f'aria-label="{escape(label)}" xmlns="http://www.w3.org/2000/svg">'
            + "".join(parts) + "</svg>")


def connection_chart(detail: ConnectionDetail, scale: Scale) -> str:
    """One connection over ``scale``'s window: its states, its leases (one row each) and its
    reconnects and failures.

    Thread-safety: pure function.
    """
    rows_bottom = _TOP + _STATE_HEIGHT + 6 + len(detail.leases) * _LEASE_PITCH
    parts = _axis(scale, _TOP, rows_bottom + 4)
    parts.append(f'<text x="{PLOT_START - 8}" y="{_TOP + _STATE_HEIGHT / 2 + 4}" '
                 f'class="row-label strong">state</text>')
    parts += [_band(period, scale, _TOP, _STATE_HEIGHT, labelled=True)
              for period in detail.timeline.periods]
    for index, holding in enumerate(detail.leases):
        parts.append(_lease(holding, scale, _TOP + _STATE_HEIGHT + 8 + index * _LEASE_PITCH))
    parts += [_marker(marker, scale, _TOP, rows_bottom) for marker in detail.markers]
    stats = detail.stats
    return _svg(rows_bottom + 4 + _AXIS_HEIGHT,
                f"{stats.kind} connection {stats.lifecycle_id} over time", parts)


def overview_chart(details: Sequence[ConnectionDetail], scale: Scale) -> str:
    """Every drawn connection on one shared time axis, one row each, labelled with its kind
    and short id and linked to its own chart (``#conn-<n>``, n from 1 in order).

    Thread-safety: pure function.
    """
    rows_bottom = _TOP + len(details) * _OVERVIEW_PITCH
    parts = _axis(scale, _TOP, rows_bottom + 2)
    for index, detail in enumerate(details):
        y = _TOP + index * _OVERVIEW_PITCH + 3
        stats = detail.stats
        label = f"{stats.kind} \u2026{short_id(stats.lifecycle_id)}"
        parts.append(f'<a href="#conn-{index + 1}"><text x="{PLOT_START - 8}" '
                     f'y="{y + _STATE_HEIGHT / 2 + 3}" class="row-label link">'
                     f'{escape(label)}</text>' + _title(stats.lifecycle_id) + "</a>")
        parts += [_band(period, scale, y, _STATE_HEIGHT - 4, labelled=True)
                  for period in detail.timeline.periods]
        parts += [_marker(marker, scale, y + 1, y + _STATE_HEIGHT - 4)
                  for marker in detail.markers]
    return _svg(rows_bottom + 2 + _AXIS_HEIGHT, "connections over time", parts)


def _swatch(content: str) -> str:
    return (f'<svg class="swatch" viewBox="0 0 24 14" width="24" height="14" '
            f'aria-hidden="true">{content}</svg>')


def legend(states: Sequence[str]) -> str:
    """The legend of the charts, as an HTML list: each of ``states`` with its colour, then
    lease bars, open leases, reconnects and failures.

    Thread-safety: pure function.
    """
    items = []
    for state in states:
        fill, _ = STATE_COLOURS.get(state, _OTHER)
        shape = (f'<rect x="10" y="0" width="4" height="14" fill="{fill}"/>'
                 if state == TERMINAL_STATE else
                 f'<rect x="0" y="0" width="24" height="14" fill="{fill}"/>')
        suffix = " (where it ended)" if state == TERMINAL_STATE else ""
        items.append(f"{_swatch(shape)} {escape(state)}{suffix}")
    items += [
        _swatch(f'<rect x="0" y="2" width="24" height="10" rx="2" fill="{LEASE_COLOUR}"/>')
        + " lease, labelled by owner",
        _swatch('<rect x="0" y="2" width="17" height="10" rx="2" class="legend-open"/>'
                '<path d="M16,0 L24,7 L16,14 Z" class="open-arrow"/>')
        + " lease still held at the end of the selection",
        _swatch(f'<rect x="0" y="2" width="24" height="10" rx="2" fill="{LEASE_COLOUR}" '
                f'stroke="{FAILURE_COLOUR}" stroke-width="2"/>')
        + " lease revoked or released with an error",
        _swatch(f'<path d="M6,1 L18,1 L12,12 Z" fill="{RECONNECT_COLOUR}"/>')
        + " reconnect (connection_lost or went_stale)",
        _swatch(f'<path d="M7,2 L17,12 M17,2 L7,12" stroke="{FAILURE_COLOUR}" '
                'stroke-width="2.5"/>')
        + " failure (outcome failed or forced)",
    ]
    return ('<ul class="legend">' + "".join(f"<li>{item}</li>" for item in items) + "</ul>")
