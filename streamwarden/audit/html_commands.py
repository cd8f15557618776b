"""``streamwarden audit report --format html -o FILE``: its options and its run.

The page (:mod:`streamwarden.audit.html_report`) covers the records the report's filters
select, with the hash chain verified over the whole table and, when a checkpoint directory is
given (``--checkpoints DIR``, else ``STREAMWARDEN_CHECKPOINT_DIR``) with a ``--public-key``,
the signed checkpoints verified too. Options that do not go together exit 2 with a one-line
reason; failures raise typed errors (exit 1 in ``streamwarden.cli.main``), or return 1 after
printing why when the file cannot be written.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path

from streamwarden.audit.checkpoint_commands import public_key
from streamwarden.audit.export import check_target
from streamwarden.audit.html_report import (
    CheckpointStatus,
    ReportContext,
    render_html,
    write_html,
)
from streamwarden.audit.log import AuditLog
from streamwarden.audit.query import AuditFilter
from streamwarden.clock import Clock, SystemClock
from streamwarden.config import Settings
from streamwarden.errors import InvalidInputError

HTML_FORMAT = "html"
_HTML_ONLY = "-o, --checkpoints and --public-key go with --format html"


def add_report_arguments(report: argparse.ArgumentParser) -> None:
    """The options of ``audit report`` that only ``--format html`` takes."""
    report.add_argument("-o", "--output", type=Path, metavar="FILE",
                        help="with --format html (required): the file to write (replaced "
                             "whole, mode 0600), or - for standard output")
    group = report.add_argument_group("signed checkpoints (with --format html)")
    group.add_argument("--checkpoints", type=Path, metavar="DIR",
                       help="also verify the signed checkpoints in DIR (default: "
                            "$STREAMWARDEN_CHECKPOINT_DIR)")
    group.add_argument("--public-key", dest="public_keys", type=public_key, action="append",
                       metavar="PUB", help="trusted public key file (repeat after a rotation)")


def check_report_arguments(args: argparse.Namespace) -> None:
    """Exit 2 (``args.usage_error``) for ``audit report`` options that do not go together."""
    if args.format != HTML_FORMAT:
        if args.output is not None or args.checkpoints is not None or args.public_keys:
            args.usage_error(_HTML_ONLY)
        return
    if args.output is None:
        args.usage_error("--format html needs -o FILE (or -o - for standard output)")
    if str(args.output) != "-":
        try:
            check_target(args.output)
        except InvalidInputError as exc:
            args.usage_error(exc.message)
    if args.checkpoints is not None and not args.public_keys:
        args.usage_error("--checkpoints needs --public-key")
    if (args.public_keys and args.checkpoints is None
            and Settings.from_env().checkpoint_dir is None):
        args.usage_error("--public-key needs --checkpoints DIR (or STREAMWARDEN_CHECKPOINT_DIR)")


def _checkpoints(args: argparse.Namespace, log: AuditLog,
                 progress: Callable[[int], None]) -> CheckpointStatus:
    directory = args.checkpoints or Settings.from_env().checkpoint_dir
    if directory is None:
        return CheckpointStatus()
    if not args.public_keys:
        return CheckpointStatus(str(directory), note="no public key given (--public-key PUB)")
    return CheckpointStatus(str(directory), log.verify_checkpoints(
        directory, args.public_keys, progress=progress))


def report_html(args: argparse.Namespace, log: AuditLog, flt: AuditFilter,
                progress: Callable[[int], None], clock: Clock | None = None) -> int:
    """``audit report --format html`` on an open log: verify, then write the page; exit 0
    whatever the verdict (``audit verify`` is the check that fails), which the closing line
    repeats, or 1 if the file cannot be written.

    ``progress`` is called as ``AuditLog.verify`` calls it; the records read are counted on
    stderr every 100,000. ``clock`` gives the generation time (default: the system clock).
    """
    # Imported here: the spec and the diagram machinery would slow every other audit command.
    from streamwarden.machine.diagram import GraphvizMissingError, svg  # noqa: PLC0415
    from streamwarden.machine.spec import default_spec  # noqa: PLC0415

    chain = log.verify(progress=progress)
    spec = default_spec()
    try:
        diagram: str | None = svg(spec)
    except GraphvizMissingError:
        diagram = None
    context = ReportContext(
        source=log.url, filters=flt, generated_at=(clock or SystemClock()).now(), chain=chain,
        checkpoints=_checkpoints(args, log, progress), spec=spec, diagram=diagram)
    records = log.iter_records(**dataclasses.asdict(flt))
    to_stdout = str(args.output) == "-"
    try:
        if to_stdout:
            count = render_html(records, context, sys.stdout, progress=sys.stderr)
        else:
            count = write_html(records, context, args.output, progress=sys.stderr)
    except OSError as exc:
        sys.stderr.write(f"streamwarden: cannot write {args.output}: {exc.strerror or exc}\n")
        return 1
    where = "standard output" if to_stdout else str(args.output)
    verdict = ("hash chain OK" if chain.ok
               else f"hash chain BROKEN at seq {chain.first_bad_seq} ({chain.reason})")
    (sys.stderr if to_stdout else sys.stdout).write(
        f"wrote the HTML report on {count} records to {where}; {verdict}\n")
    return 0
