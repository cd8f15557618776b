"""The ``streamwarden`` command.

Bad arguments exit 2 with a one-line reason (argparse); failures exit 1 with a typed, readable
message; success exits 0.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from collections.abc import Sequence
from pathlib import Path

import statemachine

from streamwarden import __version__
from streamwarden.errors import StreamwardenError
from streamwarden.machine.modelcheck import describe, model_check
from streamwarden.machine.spec import load_spec


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamwarden",
        description="Shared, audited Alpaca WebSocket connections with a formal lifecycle.",
    )
    parser.add_argument("--version", action="version", version=f"streamwarden {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check = commands.add_parser(
        "check", help="bounded model check of the lifecycle spec",
        description="Exhaustively explore every reachable configuration of the lifecycle spec "
                    "and check its invariants and liveness; exit 1 with the shortest "
                    "counterexample on a violation.",
    )
    check.add_argument("--max-leases", type=_positive_int, default=None, metavar="K",
                       help="bound on live leases (default: the spec's, 4)")
    check.add_argument("--spec-dir", type=Path, default=None, metavar="DIR",
                       help="check the spec files in DIR instead of the packaged ones")
    check.add_argument("--json", action="store_true", help="print the evidence as JSON")
    return parser


def _check(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec_dir)
    result = model_check(spec, max_leases=args.max_leases)
    evidence = {
        **describe(result),
        "spec_dir": str(spec.directory),
        "versions": {"streamwarden": __version__,
                     "python-statemachine": statemachine.__version__,
                     "python": platform.python_version()},
    }
    if args.json:
        print(json.dumps(evidence, indent=2))
    else:
        verdict = "OK" if result.ok else "VIOLATED"
        print(f"model check: {verdict}")
        print(f"  spec        {spec.directory} (sha256 {result.spec_sha256[:16]})")
        print(f"  explored    {result.configurations} configurations, "
              f"{result.transitions} transitions, {result.rejected_events} rejected events, "
              f"up to {result.max_leases} leases")
        print(f"  properties  {', '.join(result.properties_checked)}")
        for violation in result.violations:
            print(f"  {violation.property_id}: {violation.message}")
            print(f"    counterexample: {violation.counterexample()}")
    return 0 if result.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        return _check(args)
    except StreamwardenError as exc:
        print(f"streamwarden: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
