"""The checkpoint side of ``streamwarden audit``: ``keygen``, ``checkpoint``, ``verify``
against checkpoints or a bundle, and ``export --bundle``.

Bad arguments (a missing or malformed key file, options that do not go together) exit 2 with
a one-line reason; failures raise typed errors (exit 1 in ``streamwarden.cli.main``) or return
1 after printing why. Private key bytes are never printed.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from streamwarden.audit.anchoring import AnchorReport
from streamwarden.audit.bundle import verify_bundle
from streamwarden.audit.checkpoints import CheckpointWriter
from streamwarden.audit.log import AuditLog
from streamwarden.audit.notes import (
    Signer,
    Verifier,
    check_key_name,
    load_signer,
    load_verifier,
    write_key_pair,
)
from streamwarden.audit.query import AuditFilter
from streamwarden.errors import InvalidInputError

_EXPECT_HEAD = re.compile(r"^([1-9]\d{0,18}):([0-9a-f]{64})$")


def public_key(text: str) -> Verifier:
    """argparse type: the public key file at ``text``."""
    try:
        return load_verifier(text)
    except InvalidInputError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def private_key(text: str) -> Signer:
    """argparse type: the private key file at ``text`` (its content is never echoed)."""
    try:
        return load_signer(text)
    except InvalidInputError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def expected_head(text: str) -> tuple[int, str]:
    """argparse type: ``SEQ:HASH`` (as ``verify`` prints the head)."""
    match = _EXPECT_HEAD.match(text.strip().lower())
    if match is None:
        raise argparse.ArgumentTypeError("expected SEQ:HASH, e.g. 1200:<64 hex digits>")
    return int(match.group(1)), match.group(2)


def key_name(text: str) -> str:
    """argparse type: a signed-note key name."""
    try:
        return check_key_name(text)
    except InvalidInputError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def seconds(text: str) -> float:
    """argparse type: a number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds > 0, got {text}")
    return value


def default_key_name() -> str:
    """``<host>/streamwarden-audit``, with characters a key name cannot hold replaced."""
    host = re.sub(r"[\s+]", "-", socket.gethostname()) or "localhost"
    return f"{host}/streamwarden-audit"


def add_verify_arguments(verify: argparse.ArgumentParser) -> None:
    """The checkpoint options of ``audit verify``."""
    group = verify.add_argument_group("signed checkpoints")
    group.add_argument("--checkpoints", type=Path, metavar="DIR",
                       help="verify against the signed checkpoints in DIR")
    group.add_argument("--public-key", dest="public_keys", type=public_key, action="append",
                       metavar="PUB", help="trusted public key file (repeat after a rotation)")
    group.add_argument("--max-age", type=seconds, metavar="S",
                       help="fail if the newest checkpoint is older than S seconds")
    group.add_argument("--expect-head", type=expected_head, metavar="SEQ:HASH",
                       help="fail unless row SEQ still has HASH (a head printed earlier)")
    group.add_argument("--file", type=Path, metavar="BUNDLE",
                       help="verify an export bundle offline, without the database")
    verify.set_defaults(usage_error=verify.error)


def add_export_arguments(export: argparse.ArgumentParser) -> None:
    """The bundle options of ``audit export``."""
    group = export.add_argument_group("bundle verifiable offline")
    group.add_argument("--bundle", action="store_true",
                       help="write the records with the signed checkpoints that prove them")
    group.add_argument("--checkpoints", type=Path, metavar="DIR",
                       help="the checkpoint directory (with --bundle)")
    group.add_argument("--public-key", dest="public_keys", type=public_key, action="append",
                       metavar="PUB", help="key the checkpoints are checked with (--bundle)")


def add_commands(audit_commands: argparse._SubParsersAction[Any],
                 add_db: Callable[[argparse.ArgumentParser], None],
                 checkpoint_handler: Callable[[argparse.Namespace], int]) -> None:
    """Add ``keygen`` and ``checkpoint`` (whose handler, opening the database, the caller
    supplies) to ``streamwarden audit``."""
    keygen = audit_commands.add_parser(
        "keygen", help="create an Ed25519 key pair for signed checkpoints",
        description="Write a new private key to KEY (mode 0600) and its public key to "
                    "KEY.pub. Neither may exist. Keep KEY away from the database and its hosts.")
    keygen.add_argument("-o", "--output", type=Path, required=True, metavar="KEY")
    keygen.add_argument("--name", type=key_name, default=None, metavar="NAME",
                        help="key name, e.g. audit.example.com/trading (default: "
                             "<host>/streamwarden-audit)")
    keygen.set_defaults(handler=keygen_command)
    checkpoint = audit_commands.add_parser(
        "checkpoint", help="sign the trail's current head into a checkpoint directory now",
        description="Check that the table extends the directory's newest checkpoint, then "
                    "sign its head into a new checkpoint file. Several --key sign one "
                    "checkpoint together (key rotation).")
    checkpoint.add_argument("--dir", dest="directory", type=Path, required=True, metavar="DIR")
    checkpoint.add_argument("--key", dest="keys", type=private_key, action="append",
                            required=True, metavar="KEY", help="private key file (repeatable)")
    add_db(checkpoint)
    checkpoint.set_defaults(handler=checkpoint_handler)


def keygen_command(args: argparse.Namespace) -> int:
    """``audit keygen``: exit 0, or 1 if a file exists or cannot be written."""
    try:
        private, public, verifier = write_key_pair(args.output,
                                                   args.name or default_key_name())
    except InvalidInputError as exc:
        sys.stderr.write(f"streamwarden: {exc.message}\n")
        return 1
    except OSError as exc:
        sys.stderr.write(f"streamwarden: cannot write {args.output}: {exc.strerror or exc}\n")
        return 1
    sys.stdout.write(f"wrote private key {private} (mode 0600) and public key {public}\n"
                     f"public key: {verifier.encode()}\n")
    return 0


def write_checkpoint(args: argparse.Namespace, log: AuditLog) -> int:
    """``audit checkpoint`` on an open log."""
    signed = log.write_checkpoint(CheckpointWriter(args.directory, args.keys))
    checkpoint = signed.checkpoint
    sys.stdout.write(f"wrote {args.directory / checkpoint.file_name}: {checkpoint.origin} "
                     f"size {checkpoint.size} head {checkpoint.head}\n")
    return 0


def check_verify_arguments(args: argparse.Namespace) -> None:
    """Exit 2 (``args.usage_error``) for options of ``audit verify`` that do not go
    together."""
    if args.file is not None:
        if args.db is not None or args.checkpoints is not None or args.expect_head is not None:
            args.usage_error("--file verifies a bundle alone: no --db, --checkpoints or "
                             "--expect-head")
        if not args.public_keys:
            args.usage_error("--file needs --public-key")
    elif args.checkpoints is not None and not args.public_keys:
        args.usage_error("--checkpoints needs --public-key")
    elif args.checkpoints is None and (args.public_keys or args.max_age is not None):
        args.usage_error("--public-key and --max-age need --checkpoints or --file")


def check_export_arguments(args: argparse.Namespace) -> None:
    """Exit 2 for ``audit export`` options that do not go together."""
    if args.bundle:
        if args.format is not None:
            args.usage_error("--bundle writes its own format: leave out --format")
        if args.checkpoints is None or not args.public_keys:
            args.usage_error("--bundle needs --checkpoints and --public-key")
    elif args.format is None:
        args.usage_error("the following arguments are required: --format (or --bundle)")
    elif args.checkpoints is not None or args.public_keys:
        args.usage_error("--checkpoints and --public-key go with --bundle")


def verify_bundle_command(args: argparse.Namespace) -> int:
    """``audit verify --file``."""
    report = verify_bundle(args.file, args.public_keys)
    return _print_report(report, args.json, {"file": str(args.file)})


def verify_database(args: argparse.Namespace, log: AuditLog,
                    progress: Callable[[int], None]) -> int:
    """``audit verify`` on an open log, with or without checkpoints."""
    report = log.verify_checkpoints(args.checkpoints, args.public_keys or [],
                                    expect_head=args.expect_head, max_age=args.max_age,
                                    progress=progress, workers=args.workers)
    return _print_report(report, args.json, {"db": log.url})


def export_bundle(args: argparse.Namespace, log: AuditLog, flt: AuditFilter) -> int:
    """``audit export --bundle`` on an open log."""
    try:
        summary = log.export_bundle(args.output, args.checkpoints, args.public_keys, flt)
    except OSError as exc:
        sys.stderr.write(f"streamwarden: cannot write {args.output}: {exc.strerror or exc}\n")
        return 1
    sys.stdout.write(f"exported records {summary.first_seq}..{summary.last_seq} "
                     f"({summary.records}) with {summary.checkpoints} checkpoints to "
                     f"{summary.path} (bundle)\n")
    return 0


def _print_report(report: AnchorReport, as_json: bool, where: dict[str, str]) -> int:
    if as_json:
        sys.stdout.write(json.dumps({**report.to_json(), **where}, indent=2) + "\n")
    elif report.ok:
        sys.stdout.write(f"OK: {report.message}\n")
        if report.checkpoints:
            sys.stdout.write(
                f"checkpoints: {report.checkpoints} of {report.origin} verified; the newest "
                f"covers seq {report.newest_size}, signed "
                f"{report.newest_time.isoformat() if report.newest_time else '?'} "
                f"({report.newest_age_seconds:.0f} s ago)\n")
        sys.stdout.write(f"head: {report.head_seq}:{report.head_hash}\n")
    else:
        where_seq = "" if report.first_bad_seq is None else f" at seq {report.first_bad_seq}"
        sys.stdout.write(f"BROKEN{where_seq} ({report.reason}): {report.message}\n")
    return 0 if report.ok else 1
