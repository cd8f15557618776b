"""The ``streamwarden db`` and ``streamwarden audit`` commands.

The database URL comes from ``--db``, else ``STREAMWARDEN_DB_URL``, else the default SQLite file
(``AuditLog.open`` and the migration functions resolve it). Bad arguments exit 2 with a one-line
reason; failures raise typed errors, which ``streamwarden.cli.main`` prints and turns into exit 1.
Only password-redacted URLs are printed.

``--lifecycle``, ``--lease`` and ``--correlation-id`` take a whole id, a unique prefix of one, or
the short form tables show (its last characters); they are resolved in the database before
reading (:meth:`AuditLog.find_ids`): an ambiguous one exits 2 naming candidates, one matching
nothing exits 1.

Tables take the terminal's width; written to a file or a pipe they are :data:`PIPE_WIDTH`
characters wide, unless ``COLUMNS`` says otherwise.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console

from streamwarden.arguments import positive_int
from streamwarden.audit import checkpoint_commands, html_commands, migrate
from streamwarden.audit.database import (
    parse_url,
    redact_url,
    require_file,
    resolve_url,
    upgrade_command,
    url_argument,
)
from streamwarden.audit.export import EXPORT_FORMATS, check_target, export_records, write_records
from streamwarden.audit.holders import HOLDERS_FORMATS, render_holders
from streamwarden.audit.holdings import Holding, holders_at
from streamwarden.audit.log import AuditLog
from streamwarden.audit.processes import WriterStatus, check_writer
from streamwarden.audit.query import KINDS, AuditFilter, check_event, parse_time
from streamwarden.audit.report import REPORT_FORMATS, render, render_table
from streamwarden.audit.timeline import (
    TERMINAL_STATE,
    TIMELINE_FORMATS,
    build_timeline,
    render_timeline,
)
from streamwarden.config import Settings
from streamwarden.errors import InvalidInputError

#: Width of tables written to a file or a pipe (a terminal's own width is used otherwise).
PIPE_WIDTH = 200
#: Rows between two progress lines of ``audit verify`` on stderr.
VERIFY_PROGRESS_EVERY = 100_000
#: Candidates named when an id prefix matches several ids.
AMBIGUOUS_SHOWN = 5
#: The id options resolved from a prefix or short form: attribute, option, what it names.
_ID_OPTIONS = (("lifecycle_id", "--lifecycle", "lifecycle"), ("lease_id", "--lease", "lease"),
               ("correlation_id", "--correlation-id", "correlation id"))
_ID_HELP = "a whole id, a unique prefix, or the short form tables show"
_DB_HELP = "database URL (default: $STREAMWARDEN_DB_URL, else sqlite:///./streamwarden-audit.db)"


def _timestamp(text: str) -> datetime:
    try:
        return parse_time("time", text)
    except InvalidInputError as exc:
        raise argparse.ArgumentTypeError(exc.message.removeprefix("time ")) from None


def _identifier(text: str) -> str:
    if not text or not text.isprintable():
        raise argparse.ArgumentTypeError("expected a non-empty, printable value")
    return text


def _event(text: str) -> str:
    try:
        return check_event(_identifier(text))
    except InvalidInputError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def _console(out: TextIO) -> Console:
    # Console(width=None) takes COLUMNS when set, else the terminal's width, else 80.
    sized = out.isatty() or os.environ.get("COLUMNS", "").isdigit()
    return Console(file=out, width=None if sized else PIPE_WIDTH)


def _add_db(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", type=url_argument, default=None, metavar="URL", help=_DB_HELP)


def _add_filters(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("filters (combined with AND)")
    group.add_argument("--correlation-id", type=_identifier, metavar="ID", help=_ID_HELP)
    group.add_argument("--lifecycle", dest="lifecycle_id", type=_identifier, metavar="ID",
                       help=_ID_HELP)
    group.add_argument("--lease", dest="lease_id", type=_identifier, metavar="ID",
                       help=_ID_HELP)
    group.add_argument("--owner", type=_identifier, metavar="O", help="the lease owner, exactly")
    group.add_argument("--fingerprint", type=_identifier, metavar="F")
    group.add_argument("--kind", choices=KINDS)
    group.add_argument("--event", type=_event, metavar="E",
                       help="acquire, release, connected, connection_lost, closed, "
                            "lease_revoked, ... (an unknown name is refused with the list)")
    group.add_argument("--since", type=_timestamp, metavar="ISO",
                       help="records at or after this time (ISO 8601 with offset, e.g. ...Z)")
    group.add_argument("--until", type=_timestamp, metavar="ISO",
                       help="records before this time (ISO 8601 with offset)")
    group.add_argument("--limit", type=positive_int, metavar="N",
                       help="at most N records (the first in sequence order)")
    parser.set_defaults(usage_error=parser.error)


def _checked_filter(args: argparse.Namespace, **fields: Any) -> AuditFilter:
    try:
        return AuditFilter(**fields)
    except InvalidInputError as exc:  # e.g. --since not before --until: a usage error, exit 2
        args.usage_error(exc.message)
        raise  # pragma: no cover  (usage_error exits)


def _filter(args: argparse.Namespace) -> AuditFilter:
    return _checked_filter(
        args, correlation_id=args.correlation_id, lifecycle_id=args.lifecycle_id,
        fingerprint=args.fingerprint, kind=args.kind, event=args.event, since=args.since,
        until=args.until, limit=args.limit, owner=args.owner, lease_id=args.lease_id,
    )


def _resolve_ids(flt: AuditFilter, log: AuditLog, args: argparse.Namespace
                 ) -> AuditFilter | None:
    """``flt`` with each id option replaced by the whole id it names (:meth:`AuditLog.find_ids`);
    None, after saying so on stderr, if one names none. Exits 2 if one names several."""
    resolved: dict[str, Any] = {}
    for attribute, option, name in _ID_OPTIONS:
        text = getattr(flt, attribute)
        if text is None:
            continue
        found = log.find_ids(attribute, text, limit=AMBIGUOUS_SHOWN + 1)
        if not found:
            sys.stderr.write(f"streamwarden: no audit records for {name} {text} in "
                             f"{log.url}\n")
            return None
        if len(found) > 1:
            more = ", ..." if len(found) > AMBIGUOUS_SHOWN else ""
            args.usage_error(f"{option} {text} is ambiguous: it matches "
                             f"{', '.join(found[:AMBIGUOUS_SHOWN])}{more}; give more of it")
        resolved[attribute] = found[0]
    return dataclasses.replace(flt, **resolved)


def _open_for_reading(url: str | None) -> AuditLog:
    """The audit log at ``url`` for a read command, opened read-only (nothing is written, so
    an auditor's read-only access is enough): a missing SQLite file is an error (rather than
    a new, empty database), and an unreachable database fails whatever the policy."""
    settings = Settings.from_env().replace(audit_failure_policy="raise")
    require_file(parse_url(resolve_url(url, settings)), "audit.open")
    return AuditLog.open(url, settings=settings, read_only=True)


def _db_upgrade(args: argparse.Namespace) -> int:
    before, after = migrate.upgrade(args.db)
    where = redact_url(resolve_url(args.db))
    if before == after:
        sys.stdout.write(f"{where}: already at the newest revision {after}\n")
    else:
        sys.stdout.write(f"{where}: upgraded from {before or '(empty)'} to {after}\n")
    return 0


def _db_current(args: argparse.Namespace) -> int:
    current = migrate.current_revision(args.db)
    head = migrate.head_revision()
    url = resolve_url(args.db)
    state = migrate.schema_state(current)
    verdict = {
        "current": "up to date",
        "empty": f"no audit schema yet: run `{upgrade_command(parse_url(url))}`",
        "behind": f"behind: run `{upgrade_command(parse_url(url))}`",
        "unknown": "unknown to this version of streamwarden (a newer one migrated it): "
                   "upgrade streamwarden",
    }[state]
    sys.stdout.write(f"{redact_url(url)}: revision {current or '(empty)'}, newest {head}: "
                     f"{verdict}\n")
    return 0 if state == "current" else 1


def _audit_report(args: argparse.Namespace) -> int:
    html_commands.check_report_arguments(args)
    flt = _filter(args)
    with _open_for_reading(args.db) as log:
        resolved = _resolve_ids(flt, log, args)
        if resolved is None:
            return 1
        if args.format == html_commands.HTML_FORMAT:
            return html_commands.report_html(args, log, resolved, _verify_progress)
        records = log.query(**dataclasses.asdict(resolved))
    if args.format == "table":
        render_table(records, _console(sys.stdout), full_ids=args.full_ids,
                     title=f"{len(records)} audit records in {log.url}")
    else:
        render(records, args.format, sys.stdout)
    return 0


def _verify_progress(rows: int) -> None:
    if rows % VERIFY_PROGRESS_EVERY == 0:
        sys.stderr.write(f"verified {rows:,} rows ...\n")
        sys.stderr.flush()


def _audit_verify(args: argparse.Namespace) -> int:
    checkpoint_commands.check_verify_arguments(args)
    if args.file is not None:
        return checkpoint_commands.verify_bundle_command(args)
    with _open_for_reading(args.db) as log:
        return checkpoint_commands.verify_database(args, log, _verify_progress)


def _audit_checkpoint(args: argparse.Namespace) -> int:
    with _open_for_reading(args.db) as log:
        return checkpoint_commands.write_checkpoint(args, log)


def _audit_export(args: argparse.Namespace) -> int:
    checkpoint_commands.check_export_arguments(args)
    flt = _filter(args)
    to_stdout = str(args.output) == "-"
    if not to_stdout and not args.bundle:
        try:
            check_target(args.output)
        except InvalidInputError as exc:
            args.usage_error(exc.message)
    with _open_for_reading(args.db) as log:
        resolved = _resolve_ids(flt, log, args)
        if resolved is None:
            return 1
        flt = resolved
        if args.bundle:
            return checkpoint_commands.export_bundle(args, log, flt)
        records = log.iter_records(**dataclasses.asdict(flt))
        try:
            if to_stdout:
                count = write_records(records, args.format, sys.stdout, progress=sys.stderr)
            else:
                count = export_records(records, args.format, args.output, progress=sys.stderr)
        except OSError as exc:
            sys.stderr.write(f"streamwarden: cannot write {args.output}: "
                             f"{exc.strerror or exc}\n")
            return 1
    where = "standard output" if to_stdout else str(args.output)
    (sys.stderr if to_stdout else sys.stdout).write(
        f"exported {count} records to {where} ({args.format})\n")
    return 0


def _audit_timeline(args: argparse.Namespace) -> int:
    flt = _checked_filter(args, lifecycle_id=args.lifecycle_id)
    with _open_for_reading(args.db) as log:
        resolved = _resolve_ids(flt, log, args)
        if resolved is None:
            return 1
        timeline = build_timeline(log.iter_records(lifecycle_id=resolved.lifecycle_id))
    writer = None if timeline.stopped else check_writer(timeline.host, timeline.pid,
                                                         timeline.last_record_at)
    render_timeline(timeline, args.format, sys.stdout, console=_console(sys.stdout),
                    writer=writer)
    return 0


def _unfinished(log: AuditLog, holders: list[Holding]) -> dict[str, WriterStatus]:
    """The lifecycles of ``holders`` with no final record anywhere in the trail, with the
    status of the process that wrote their newest record."""
    unfinished: dict[str, WriterStatus] = {}
    for lifecycle_id in dict.fromkeys(holding.lifecycle_id for holding in holders):
        newest = log.newest(lifecycle_id)
        if newest is None or log.newest(lifecycle_id, to_state=TERMINAL_STATE) is not None:
            continue
        unfinished[lifecycle_id] = check_writer(newest.host, newest.pid, newest.occurred_at)
    return unfinished


def _just_after(at: datetime) -> datetime | None:
    """The bound that selects the records up to ``at`` inclusive (timestamps have
    microseconds); None at the end of time."""
    try:
        return at + timedelta(microseconds=1)
    except OverflowError:
        return None


def _audit_holders(args: argparse.Namespace) -> int:
    flt = _checked_filter(args, lifecycle_id=args.lifecycle_id, fingerprint=args.fingerprint,
                          kind=args.kind, until=_just_after(args.at))
    with _open_for_reading(args.db) as log:
        resolved = _resolve_ids(flt, log, args)
        if resolved is None:
            return 1
        holders = [holding for holding in holders_at(
            log.iter_records(**dataclasses.asdict(resolved)), args.at)
            if args.owner is None or holding.owner == args.owner]
        unfinished = _unfinished(log, holders)
    render_holders(holders, args.at, args.format, sys.stdout, unfinished=unfinished,
                   console=_console(sys.stdout), full_ids=args.full_ids)
    return 0


def _add_db_commands(commands: argparse._SubParsersAction[Any]) -> None:
    db = commands.add_parser("db", help="audit database schema (Alembic migrations)",
                             description="Manage the audit database's schema.")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    upgrade = db_commands.add_parser(
        "upgrade", help="apply the packaged migrations up to head",
        description="Apply streamwarden's Alembic migrations to the audit database.")
    current = db_commands.add_parser(
        "current", help="show the database's revision; exit 0 only if it is the newest",
        description="Show the audit database's migration revision and the newest one, "
                    "without creating or changing anything. Exit status, for scripts: 0 the "
                    "database is at the newest revision; 1 it is not (behind, empty, or at a "
                    "revision this version does not know; the line says what to run), or it "
                    "cannot be read (a SQLite file that does not exist, an unreachable "
                    "server); 2 bad arguments.")
    for sub, handler in ((upgrade, _db_upgrade), (current, _db_current)):
        _add_db(sub)
        sub.set_defaults(handler=handler)


def _add_audit_commands(commands: argparse._SubParsersAction[Any]) -> None:
    audit = commands.add_parser("audit", help="query, verify and export the audit trail",
                                description="Read the hash-chained lifecycle audit trail.")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True,
                                          metavar="COMMAND")
    report = audit_commands.add_parser(
        "report", help="records matching filters, as a table, JSON, CSV or an HTML page",
        description="Print the audit records matching the filters, in sequence order; with "
                    "--format html -o FILE, write one self-contained page with the summary, "
                    "a timeline per connection, the state diagram and the verification.")
    report.add_argument("--format", choices=(*REPORT_FORMATS, html_commands.HTML_FORMAT),
                        default="table")
    html_commands.add_report_arguments(report)
    report.add_argument("--full-ids", action="store_true",
                        help="whole ids in the table (a narrow terminal shows records as "
                             "blocks, with whole ids, anyway)")
    verify = audit_commands.add_parser(
        "verify", help="walk the hash chain; exit 1 at the first break",
        description="Recompute the hash chain over every row. Prints OK with the row count "
                    "and the head (SEQ:HASH), or the first broken sequence number and why "
                    "(edited, deleted, inserted, reordered) and exits 1. With --checkpoints, "
                    "also checks the signed checkpoints, that the table still has every "
                    "signed head, and the append-only triggers; with --file, a bundle alone.")
    verify.add_argument("--json", action="store_true", help="print the result as JSON")
    verify.add_argument("--workers", type=positive_int, metavar="N",
                        help="processes that walk a large SQLite file (default: one per CPU; "
                             "1: this process only)")
    checkpoint_commands.add_verify_arguments(verify)
    export = audit_commands.add_parser(
        "export", help="stream records to a JSON Lines or CSV file",
        description="Write the matching records, every column, to FILE in constant memory. "
                    "The file appears complete or not at all.")
    export.add_argument("--format", choices=EXPORT_FORMATS, default=None)
    export.add_argument("-o", "--output", type=Path, required=True, metavar="FILE",
                        help="a regular file (replaced whole), or - for standard output")
    checkpoint_commands.add_export_arguments(export)
    timeline = audit_commands.add_parser(
        "timeline", help="one connection's states in order, with durations",
        description="Show the states of one lifecycle in order with when each was entered "
                    "and left and how long it lasted.")
    timeline.add_argument("--lifecycle", dest="lifecycle_id", type=_identifier, required=True,
                          metavar="ID", help=_ID_HELP)
    timeline.add_argument("--format", choices=TIMELINE_FORMATS, default="table")
    timeline.set_defaults(usage_error=timeline.error)
    _add_filters(report)
    _add_filters(export)
    for sub, handler in ((report, _audit_report), (verify, _audit_verify),
                         (export, _audit_export), (timeline, _audit_timeline),
                         (_add_holders(audit_commands), _audit_holders)):
        _add_db(sub)
        sub.set_defaults(handler=handler)
    checkpoint_commands.add_commands(audit_commands, _add_db, _audit_checkpoint)


def _add_holders(audit_commands: argparse._SubParsersAction[Any]) -> argparse.ArgumentParser:
    holders: argparse.ArgumentParser = audit_commands.add_parser(
        "holders", help="who held which connection at a given time",
        description="List the leases held at TIME (acquired at or before it, not ended at or "
                    "before it): connection, owner, lease, since when and for how long, and "
                    "whether the connection's lifecycle is unterminated (no final record, "
                    "its process gone). Reads the records up to TIME only.")
    holders.add_argument("--at", type=_timestamp, required=True, metavar="ISO",
                         help="the time (ISO 8601 with offset, e.g. 2026-01-02T10:31:00Z)")
    holders.add_argument("--lifecycle", dest="lifecycle_id", type=_identifier, metavar="ID",
                         help=_ID_HELP)
    holders.add_argument("--fingerprint", type=_identifier, metavar="F")
    holders.add_argument("--kind", choices=KINDS)
    holders.add_argument("--owner", type=_identifier, metavar="O", help="the lease owner, exactly")
    holders.add_argument("--format", choices=HOLDERS_FORMATS, default="table")
    holders.add_argument("--full-ids", action="store_true", help="whole ids in the table")
    holders.set_defaults(usage_error=holders.error)
    return holders


def add_commands(commands: argparse._SubParsersAction[Any]) -> None:
    """Add ``db`` and ``audit`` to the command line's subcommands.

    Each subparser sets ``handler`` (``Callable[[argparse.Namespace], int]``) as its default.
    """
    _add_db_commands(commands)
    _add_audit_commands(commands)
