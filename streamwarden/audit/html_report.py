"""The audit trail as one self-contained HTML page, for a reviewer to look at and attach.

The page covers a selection of records (the filters of ``audit report``) and shows, in order:
the filters, the generation time and the source; the integrity verdict (the hash chain over
the whole table, and the signed checkpoints when there are any); summary numbers (accounts
by fingerprint, connections, leases, owners, reconnects, failures); every connection on one
shared time axis, then each one's own timeline (state bands, one bar per lease labelled by
owner, reconnects and failures marked; details on hover and in a table below it); the
records that did not go as planned; and the lifecycle's state diagram.

Self-contained and inert: no script, no external asset, no network load. A
Content-Security-Policy meta tag forbids any load but inline styles and ``data:`` images,
every value from the database is escaped (:func:`streamwarden.audit._markup.escape`), and
hover details are SVG ``<title>`` and HTML ``title`` attributes. ``@media print`` rules keep
colours, avoid cutting a chart across pages and repeat table headers, so the page prints to
PDF cleanly (A4 landscape).

Records are read once, in constant memory per lifecycle and lease
(:mod:`streamwarden.audit._trail_summary`); what is drawn and listed is capped by
:class:`ReportLimits`, with a note saying how much was left out.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import IO, TYPE_CHECKING, TextIO

from streamwarden._version import __version__
from streamwarden.audit._markup import escape, utc
from streamwarden.audit._timeline_svg import (
    Scale,
    connection_chart,
    legend,
    overview_chart,
    owner_label,
)
from streamwarden.audit._trail_summary import (
    ConnectionDetail,
    ReportLimits,
    TrailSummary,
    reason,
    summarise,
)
from streamwarden.audit.anchoring import AnchorReport
from streamwarden.audit.export import write_atomically
from streamwarden.audit.query import AuditFilter
from streamwarden.audit.records import AuditRecord
from streamwarden.audit.report import format_time, short_id
from streamwarden.audit.timeline import TERMINAL_STATE, format_duration
from streamwarden.audit.verify import VerifyReport
from streamwarden.errors import InvalidInputError

if TYPE_CHECKING:
    from streamwarden.machine.spec import LifecycleSpec

#: Records between two progress lines.
PROGRESS_EVERY = 100_000
CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
       "form-action 'none'")
_SVG_START = re.compile(r"<svg\b")
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)


@dataclass(frozen=True)
class CheckpointStatus:
    """What the report says about signed checkpoints.

    Attributes:
        directory: the checkpoint directory; None when none is configured.
        result: the verification against it; None when it was not verified.
        note: why it was not verified (shown when ``result`` is None).

    Thread-safety: immutable.
    """

    directory: str | None = None
    result: AnchorReport | None = None
    note: str = ""


@dataclass(frozen=True)
class ReportContext:
    """What the page says besides the records. Immutable.

    Attributes:
        source: where the records come from, as shown (a database URL, password redacted).
        filters: the filters that selected the records.
        generated_at: the generation time (timezone-aware).
        chain: the result of verifying the hash chain over the whole table.
        checkpoints: the signed checkpoints' status.
        spec: the lifecycle spec (its states order the legend; its transitions are the
            diagram's fallback).
        diagram: the state diagram as SVG (``streamwarden.machine.diagram.svg``); None shows
            the transitions as a table instead, with a note.
    """

    source: str
    filters: AuditFilter
    generated_at: datetime
    chain: VerifyReport
    checkpoints: CheckpointStatus
    spec: LifecycleSpec
    diagram: str | None = None


def _table(headers: Iterable[str], rows: Sequence[Iterable[str]], *, css: str,
           empty: str = "None in the selection.") -> str:
    """A table of cells already escaped, or the note ``empty`` when there are no rows."""
    if not rows:
        return f'<p class="note">{escape(empty)}</p>'
    head = "".join(f"<th>{escape(header)}</th>" for header in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>"
                   for row in rows)
    return (f'<table class="{css}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table>")


def _left_out(count: int, what: str, hint: str = "") -> str:
    if count <= 0:
        return ""
    return f'<p class="left-out">and {count:,} more {escape(what)} not shown{escape(hint)}</p>'


def _id_cell(value: str | None) -> str:
    """A long id shown in full, breakable anywhere."""
    return "" if value is None else f'<span class="id">{escape(value)}</span>'


def _filters_text(filters: AuditFilter) -> list[tuple[str, str]]:
    shown = []
    for item in dataclasses.fields(filters):
        value = getattr(filters, item.name)
        if value is not None:
            text = format_time(value) if isinstance(value, datetime) else str(value)
            shown.append((item.name, text))
    return shown


def _header(summary: TrailSummary, context: ReportContext) -> str:
    filters = _filters_text(context.filters)
    filters_html = ("".join(f'<li><span class="filter-name">{escape(name)}</span> = '
                            f'<span class="filter-value">{escape(value)}</span></li>'
                            for name, value in filters)
                    if filters else "<li>none: every record</li>")
    window = (f"{escape(utc(summary.first_at))} to {escape(utc(summary.last_at))}"
              if summary.first_at is not None else "no records match the filters")
    return (
        '<header id="report-header">'
        f"<h1>Audit report: {summary.records:,} records</h1>"
        '<dl class="meta">'
        f'<dt>Source</dt><dd id="source">{escape(context.source)}</dd>'
        f'<dt>Filters</dt><dd><ul id="filters">{filters_html}</ul></dd>'
        f'<dt>Records from</dt><dd id="window">{window}</dd>'
        f'<dt>Generated</dt><dd id="generated-at">{escape(utc(context.generated_at))} by '
        f"streamwarden {escape(__version__)}</dd>"
        "</dl></header>"
    )


def _chain(chain: VerifyReport) -> str:
    if chain.ok:
        verdict = "OK"
        text = f"{chain.rows:,} rows, chain intact"
    else:
        verdict = "BROKEN"
        text = f"at seq {chain.first_bad_seq} ({chain.reason}): {chain.message}"
    return (f'<p class="verdict {verdict.lower()}" id="chain-verdict">'
            f'<span class="badge">{verdict}</span> Hash chain: {escape(text)}</p>'
            '<p class="note">Verified over the whole table, not only the selected records.</p>')


def _checkpoint_text(status: CheckpointStatus) -> tuple[str, str]:
    result = status.result
    if status.directory is None:
        return "none", "no checkpoints configured"
    if result is None:
        return "unverified", f"{status.directory}: not verified: {status.note}"
    if not result.ok:
        where = "" if result.first_bad_seq is None else f" at seq {result.first_bad_seq}"
        return "broken", f"{status.directory}: FAILED{where} ({result.reason}): {result.message}"
    newest = ("" if result.newest_time is None
              else f", signed {utc(result.newest_time)}")
    return "ok", (f"{status.directory}: OK: {result.checkpoints} checkpoints of "
                  f"{result.origin} verified; the newest covers seq {result.newest_size}"
                  f"{newest}")


def _integrity(context: ReportContext) -> str:
    css, text = _checkpoint_text(context.checkpoints)
    return ('<section id="integrity"><h2>Integrity</h2>' + _chain(context.chain)
            + f'<p class="verdict {css}" id="checkpoint-status">Signed checkpoints: '
            f"{escape(text)}</p></section>")


def _metric(name: str, label: str, value: int, sub: str = "", *, alarm: bool = False) -> str:
    detail = f'<span class="sub">{escape(sub)}</span>' if sub else ""
    css = "metric alarm" if alarm and value else "metric"
    return (f'<div class="{css}" data-metric="{name}"><span class="value">{value:,}</span>'
            f'<span class="label">{escape(label)}</span>{detail}</div>')


def _metrics(summary: TrailSummary) -> str:
    stopped = sum(c.state == TERMINAL_STATE for c in summary.connections)
    refused = summary.outcomes.get("rejected", 0)
    return '<div class="metrics">' + "".join((
        _metric("records", "records", summary.records),
        _metric("accounts", "accounts (fingerprints)", len(summary.accounts)),
        _metric("connections", "connections (lifecycles)", len(summary.connections),
                f"{stopped:,} stopped"),
        _metric("leases", "leases", summary.leases,
                f"{summary.open_leases:,} open, {summary.ended_badly:,} revoked or failed"),
        _metric("owners", "owners", len(summary.owners)),
        _metric("reconnects", "reconnects", summary.reconnects,
                "connection_lost or went_stale",
                alarm=True),
        _metric("failures", "failures", summary.failures, "outcome failed or forced",
                alarm=True),
        _metric("refused", "refused", refused, "outcome rejected", alarm=True),
    )) + "</div>"


def _accounts(summary: TrailSummary, limit: int) -> str:
    rows = [(_id_cell(a.fingerprint), escape(", ".join(sorted(a.kinds))), f"{a.connections:,}",
             f"{a.leases:,}", f"{a.reconnects:,}", f"{a.failures:,}", f"{a.records:,}")
            for a in summary.accounts[:limit]]
    return ("<h3>Accounts by fingerprint</h3>"
            + _table(("fingerprint", "kinds", "connections", "leases", "reconnects",
                      "failures", "records"), rows, css="accounts numeric")
            + _left_out(len(summary.accounts) - limit, "accounts"))


def _owners(summary: TrailSummary, limit: int) -> str:
    rows = [(escape("(no owner)" if o.owner is None else o.owner), f"{o.leases:,}",
             f"{len(o.connections):,}", escape(", ".join(sorted(o.kinds))), f"{o.open:,}",
             f"{o.ended_badly:,}")
            for o in summary.owners[:limit]]
    return ("<h3>Owners</h3>"
            + _table(("owner", "leases", "connections", "kinds", "open at the end",
                      "revoked or failed"), rows, css="owners numeric")
            + _left_out(len(summary.owners) - limit, "owners"))


def _connections(summary: TrailSummary, limit: int) -> str:
    drawn = {detail.stats.lifecycle_id: index
             for index, detail in enumerate(summary.drawn, start=1)}
    rows = []
    for c in summary.connections[:limit]:
        number = drawn.get(c.lifecycle_id)
        link = f'<a href="#conn-{number}">{number}</a>' if number else "not drawn"
        rows.append((link, escape(c.kind), _id_cell(c.lifecycle_id), _id_cell(c.fingerprint),
                     escape(utc(c.first_at)), escape(utc(c.last_at)), f"{c.records:,}",
                     f"{c.leases:,}", f"{c.reconnects:,}", f"{c.failures:,}",
                     escape(c.state)))
    return ("<h3>Connections</h3>"
            + _table(("chart", "kind", "lifecycle", "fingerprint", "first record",
                      "last record", "records", "leases", "reconnects", "failures",
                      "state at the end"), rows, css="connections numeric")
            + _left_out(len(summary.connections) - limit, "connections"))


def _summary(summary: TrailSummary, limits: ReportLimits) -> str:
    return ('<section id="summary"><h2>Summary</h2>' + _metrics(summary)
            + _accounts(summary, limits.rows) + _owners(summary, limits.rows)
            + _connections(summary, limits.rows) + "</section>")


def _connection_end(detail: ConnectionDetail, summary: TrailSummary) -> datetime:
    """The end of a connection's own window: its stop, else the end of the selection."""
    if detail.timeline.stopped or summary.last_at is None:
        return detail.stats.last_at
    return summary.last_at


def _lease_rows(detail: ConnectionDetail) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for h in detail.leases:
        held = "" if h.released_at is None else format_duration(h.released_at - h.acquired_at)
        ended = ("still held" if h.released_at is None
                 else f"{h.ended_by} ({h.end_outcome}) {utc(h.released_at)}")
        rows.append((escape(owner_label(h)), _id_cell(h.lease_id), escape(h.receives),
                     escape(utc(h.acquired_at)), escape(ended), escape(held),
                     escape(h.end_reason or ""), _id_cell(h.correlation_id)))
    return rows


def _connection(number: int, detail: ConnectionDetail, summary: TrailSummary) -> str:
    stats = detail.stats
    timeline = detail.timeline
    state = (f"stopped after {format_duration(timeline.lifetime)}" if timeline.stopped
             else f"{stats.state} at the end of the selection")
    chart = connection_chart(detail, Scale(stats.first_at, _connection_end(detail, summary)))
    leases = _table(("owner", "lease", "receives", "acquired", "ended", "held for", "reason",
                     "correlation id"), _lease_rows(detail), css="leases",
                    empty="No lease was acquired in the selection.")
    return (
        f'<article class="connection" id="conn-{number}"><div class="keep">'
        f'<h3>{number}. {escape(stats.kind)} <span class="id">{escape(stats.lifecycle_id)}'
        "</span></h3>"
        f'<p class="meta-line">fingerprint <span class="id">{escape(stats.fingerprint)}</span>'
        f" \u00b7 host {escape(stats.host)}, pid {stats.pid} \u00b7 {escape(state)} \u00b7 "
        f"{stats.records:,} records, {stats.leases:,} leases, {stats.reconnects:,} reconnects, "
        f"{stats.failures:,} failures</p>"
        f'<div class="chart-box">{chart}</div></div>'
        + _left_out(detail.leases_left_out, "leases", " in the chart and the table")
        + _left_out(detail.markers_left_out, "reconnects and failures", " in the chart")
        + leases + "</article>"
    )


def _timelines(summary: TrailSummary, context: ReportContext) -> str:
    if summary.first_at is None or summary.last_at is None:
        return ('<section id="timelines"><h2>Connections over time</h2>'
                '<p class="note">No records match the filters.</p></section>')
    overview = overview_chart(summary.drawn, Scale(summary.first_at, summary.last_at))
    articles = "".join(_connection(number, detail, summary)
                       for number, detail in enumerate(summary.drawn, start=1))
    hint = ": narrow the filters (--lifecycle, --since, --until) to draw them"
    return (
        '<section id="timelines"><h2>Connections over time</h2>'
        + legend(context.spec.states)
        + '<p class="note">All times UTC. Hover over a band, bar or mark for its details; '
          "the tables below each chart list the same.</p>"
        + f'<div class="chart-box" id="overview">{overview}</div>'
        + _left_out(len(summary.connections) - len(summary.drawn), "connections", hint)
        + articles + "</section>"
    )


def _events(summary: TrailSummary) -> str:
    rows = []
    for r in summary.events:
        states = f"{r.from_state or '?'} \u2192 {r.to_state or '(none)'}"
        rows.append(("" if r.seq is None else str(r.seq), escape(utc(r.occurred_at)),
                     escape(r.kind), f'<span title="{escape(r.lifecycle_id)}">'
                     f"\u2026{escape(short_id(r.lifecycle_id))}</span>", escape(r.event),
                     escape(states), escape(r.owner or ""),
                     f'<span class="outcome {escape(r.outcome)}">{escape(r.outcome)}</span>',
                     escape(reason(r))))
    body = _table(("seq", "time", "kind", "lifecycle", "event", "from \u2192 to", "owner",
                   "outcome", "error or reason"), rows, css="events",
                  empty="Every selected record has outcome ok.")
    return ('<section id="events"><h2>What did not go as planned</h2>'
            '<p class="note">Records whose outcome is failed, forced or rejected.</p>'
            + body + _left_out(summary.events_total - len(summary.events), "records")
            + "</section>")


def _inline_svg(svg: str) -> str:
    """Graphviz's SVG document without its XML prolog and comments, to sit inside HTML."""
    start = _SVG_START.search(svg)
    return _COMMENT.sub("", svg[start.start():] if start else svg)


def _diagram(context: ReportContext) -> str:
    spec = context.spec
    if context.diagram is not None:
        body = f'<div class="diagram">{_inline_svg(context.diagram)}</div>'
    else:
        rows = [(escape(t.source), escape(t.event), escape(t.guard or ""), escape(t.target))
                for t in spec.transitions]
        body = ('<p class="note">Graphviz (<code>dot</code>) is not installed, so the diagram '
                "is shown as its transitions.</p>"
                + _table(("from", "event", "guard", "to"), rows, css="transitions"))
    return ('<section id="diagram"><h2>The lifecycle\'s states</h2>'
            f'<p class="note">Spec sha256 <span class="id">{escape(spec.sha256)}</span>; any '
            "event not shown is refused in that state.</p>" + body + "</section>")


def _page(summary: TrailSummary, context: ReportContext, limits: ReportLimits) -> str:
    title = f"Audit report: {summary.records:,} records from {context.source}"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="color-scheme" content="light">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>"
        + _header(summary, context) + _integrity(context) + _summary(summary, limits)
        + _timelines(summary, context) + _events(summary) + _diagram(context)
        + "</body></html>\n"
    )


def _progress(out: TextIO | None, every: int) -> Callable[[int], None] | None:
    if out is None:
        return None

    def report(count: int) -> None:
        if count % every == 0:
            out.write(f"read {count:,} records ...\n")
            out.flush()

    return report


def render_html(records: Iterable[AuditRecord], context: ReportContext, out: IO[str], *,
                limits: ReportLimits | None = None, progress: TextIO | None = None,
                progress_every: int = PROGRESS_EVERY) -> int:
    """Write the report on ``records`` (in ``seq`` order) to ``out``; returns how many
    records it covers.

    The records are read to the end before anything is written.

    Args:
        records: consumed once, lazily (pass an iterator to keep memory constant).
        progress: where to write a line every ``progress_every`` records read (None: silent).

    Raises:
        InvalidInputError: a naive ``generated_at`` or record time, or ``progress_every``
            below 1.
        OSError: if ``out`` cannot be written.
        Whatever iterating ``records`` raises (nothing is written then).

    Thread-safety: not thread-safe on a shared ``out``.
    """
    if progress_every < 1:
        raise InvalidInputError(f"progress_every must be at least 1, got {progress_every}")
    if context.generated_at.tzinfo is None:
        raise InvalidInputError("generated_at must be timezone-aware")
    limits = limits or ReportLimits()
    callback = _progress(progress, progress_every)
    summary = summarise(records, limits, progress=callback)
    out.write(_page(summary, context, limits))
    return summary.records


def write_html(records: Iterable[AuditRecord], context: ReportContext,
               path: str | os.PathLike[str], *, limits: ReportLimits | None = None,
               progress: TextIO | None = None, progress_every: int = PROGRESS_EVERY) -> int:
    """:func:`render_html` into the file ``path``, complete or not at all, mode 0600
    (:func:`streamwarden.audit.export.write_atomically`); returns how many records it covers.

    Raises:
        InvalidInputError: as :func:`render_html`, or a target that exists and is not a
            regular file.
        OSError: if the file cannot be written.
        Whatever iterating ``records`` raises (``path`` is left as it was).

    Thread-safety: safe from several threads with different paths.
    """
    return write_atomically(path, lambda out: render_html(
        records, context, out, limits=limits, progress=progress,
        progress_every=progress_every))


_STYLE = """
:root { --ink: #1d2329; --muted: #5b6670; --line: #d5dbe1; --ok: #2e7d32; --bad: #c62828;
  --warn: #a15c00; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
  color: var(--ink); margin: 24px auto; max-width: 1180px; padding: 0 16px; }
h1 { font-size: 24px; margin: 0 0 8px; }
h2 { font-size: 19px; border-bottom: 2px solid var(--line); padding-bottom: 4px;
  margin: 28px 0 12px; }
h3 { font-size: 15px; margin: 20px 0 6px; }
.id { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12px;
  overflow-wrap: anywhere; }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 0; }
dl.meta dt { color: var(--muted); }
dl.meta dd { margin: 0; overflow-wrap: anywhere; }
#filters { list-style: none; margin: 0; padding: 0; }
#filters li { display: inline-block; margin-right: 14px; }
.filter-name { color: var(--muted); }
.note, .meta-line { color: var(--muted); margin: 4px 0; }
.left-out { color: var(--warn); font-style: italic; margin: 4px 0; }
.verdict { font-size: 15px; margin: 6px 0; }
.badge { display: inline-block; min-width: 74px; text-align: center; font-weight: 700;
  color: #fff; background: var(--muted); border-radius: 4px; padding: 1px 8px;
  margin-right: 6px; }
.verdict.ok .badge { background: var(--ok); }
.verdict.broken .badge { background: var(--bad); }
.verdict.broken { color: var(--bad); }
#checkpoint-status.unverified { color: var(--warn); }
.metrics { display: grid; grid-template-columns: repeat(auto-fill, minmax(130px, 1fr));
  gap: 10px; margin: 8px 0 16px; }
.metric { border: 1px solid var(--line); border-radius: 6px; padding: 8px 10px; }
.metric .value { display: block; font-size: 22px; font-weight: 700; }
.metric .label { display: block; color: var(--muted); }
.metric .sub { display: block; color: var(--muted); font-size: 12px; }
.metric.alarm { border-color: #e0b070; background: #fff8ec; }
.metric.alarm .value { color: var(--warn); }
table { border-collapse: collapse; width: 100%; margin: 6px 0 10px; font-size: 12.5px; }
th, td { border: 1px solid var(--line); padding: 3px 6px; text-align: left;
  vertical-align: top; overflow-wrap: anywhere; }
th { background: #f1f4f7; white-space: nowrap; overflow-wrap: normal; }
table.numeric td { font-variant-numeric: tabular-nums; }
table.leases td:first-child, table.owners td:first-child { min-width: 9em; }
table.leases td:nth-child(2) { min-width: 17.5em; }
table.events td:nth-child(2) { min-width: 10em; }
table.events td:nth-child(3), table.events td:nth-child(5) { min-width: 9em; }
.outcome.failed, .outcome.forced { color: var(--bad); font-weight: 700; }
.outcome.rejected { color: var(--warn); font-weight: 700; }
.legend { list-style: none; padding: 0; margin: 6px 0; display: flex; flex-wrap: wrap;
  gap: 4px 18px; }
.legend li { display: flex; align-items: center; gap: 6px; }
.swatch { flex: none; }
.chart-box { margin: 6px 0; }
svg.chart { display: block; width: 100%; height: auto;
  font-family: system-ui, "DejaVu Sans", sans-serif; }
svg.chart text { font-size: 11px; fill: var(--ink); }
svg.chart .tick, svg.chart .band-label { text-anchor: middle; }
svg.chart .band-label { font-size: 10.5px; }
svg.chart .range { font-size: 10px; fill: var(--muted); text-anchor: middle; }
svg.chart .range-start { text-anchor: start; }
svg.chart .range-end { text-anchor: end; }
svg.chart .row-label, svg.chart .lease-label { text-anchor: end; }
svg.chart .strong { font-weight: 700; }
svg.chart .link { fill: #1f5fa8; text-decoration: underline; }
svg.chart .axis-line { stroke: var(--ink); stroke-width: 1; }
svg.chart .grid { stroke: #e4e8ec; stroke-width: 1; }
svg.chart .mark-line { stroke-width: 1.2; stroke-dasharray: 3 2; }
svg.chart .cross { stroke-width: 2.5; fill: none; }
.lease-bar { fill: #3b73b9; }
.lease.open .lease-bar { fill: #9dbbe0; stroke: #3b73b9; stroke-width: 1.2;
  stroke-dasharray: 4 2; }
.lease.ended-badly .lease-bar { stroke: #d62828; stroke-width: 2; }
.open-arrow { fill: #3b73b9; }
.legend-open { fill: #9dbbe0; stroke: #3b73b9; stroke-width: 1.2; stroke-dasharray: 4 2; }
.diagram svg { max-width: 100%; height: auto; }
a { color: #1f5fa8; }
@page { size: A4 landscape; margin: 10mm; }
@media print {
  * { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  body { margin: 0; max-width: none; padding: 0; font-size: 11px; }
  h2 { break-after: avoid; page-break-after: avoid; }
  h3 { break-after: avoid; page-break-after: avoid; }
  .keep, .chart-box, .metrics, #diagram, tr, .verdict { break-inside: avoid;
    page-break-inside: avoid; }
  .metrics { grid-template-columns: repeat(8, 1fr); }
  .diagram svg { max-height: 165mm; }
  thead { display: table-header-group; }
  a { color: inherit; text-decoration: none; }
  table { font-size: 10px; }
}
"""
