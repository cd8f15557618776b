"""The ``streamwarden`` command.

Bad arguments exit 2 with a one-line reason (argparse); failures exit 1 with a typed, readable
message; success exits 0.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import statemachine

from streamwarden import __version__, demo
from streamwarden.arguments import positive_int
from streamwarden.audit import commands as audit_commands
from streamwarden.errors import StreamwardenError
from streamwarden.logging import LOGGER_NAME
from streamwarden.machine.diagram import FORMATS, render
from streamwarden.machine.modelcheck import ModelCheckResult, describe, model_check
from streamwarden.machine.spec import LifecycleSpec, load_spec
from streamwarden.simulator import command as simulator_command

Handler = Callable[[argparse.Namespace], int]
"""A subcommand: takes the parsed arguments, returns the exit status (0 ok, 1 failure)."""

DEFAULT_EXAMPLES = 200
CHECK_EXTRA_HINT = "the property-based run needs hypothesis: pip install 'streamwarden[check]'"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamwarden",
        description="Shared, audited Alpaca WebSocket connections with a formal lifecycle.",
    )
    parser.add_argument("--version", action="version", version=f"streamwarden {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check = commands.add_parser(
        "check", help="model check + property-based evidence run",
        description="Exhaustively explore every reachable configuration of the lifecycle spec, "
                    "then drive a real manager through random histories (hypothesis). Exit 1 "
                    "with the shortest counterexample on any violation.",
    )
    check.add_argument("--examples", type=positive_int, default=DEFAULT_EXAMPLES, metavar="N",
                       help=f"property-based examples (default {DEFAULT_EXAMPLES})")
    check.add_argument("--max-leases", type=positive_int, default=None, metavar="K",
                       help="model-check bound on live leases (default: the spec's, 4)")
    check.add_argument("--json", action="store_true", help="print the evidence as JSON")
    diagram = commands.add_parser(
        "diagram", help="state diagram or reference page generated from the spec",
        description="Render the lifecycle spec: mermaid, dot, svg (needs Graphviz) or md "
                    "(the docs/lifecycle.md reference page).",
    )
    diagram.add_argument("--format", choices=FORMATS, default="mermaid")
    diagram.add_argument("-o", "--output", type=Path, default=None, metavar="FILE",
                         help="write to FILE instead of standard output")
    for sub in (check, diagram):
        sub.add_argument("--spec-dir", type=Path, default=None, metavar="DIR",
                         help="use the spec files in DIR instead of the packaged ones")
    check.set_defaults(handler=_check)
    diagram.set_defaults(handler=_diagram)
    audit_commands.add_commands(commands)
    simulator_command.add_commands(commands)
    demo.add_commands(commands)
    return parser


def _versions() -> dict[str, str]:
    return {"streamwarden": __version__, "python-statemachine": statemachine.__version__,
            "python": platform.python_version()}


def _print_model_check(spec: LifecycleSpec, result: ModelCheckResult) -> None:
    print(f"spec          {spec.directory} (sha256 {result.spec_sha256[:16]})")
    print(f"model check   {'OK' if result.ok else 'VIOLATED'}: {result.configurations} "
          f"configurations, {result.transitions} transitions, {result.rejected_events} "
          f"rejected events, up to {result.max_leases} leases")
    print(f"  properties  {', '.join(result.properties_checked)}")
    for violation in result.violations:
        print(f"  {violation.property_id}: {violation.message}")
        print(f"    counterexample: {violation.counterexample()}")


def _property_run(spec: LifecycleSpec, examples: int) -> dict[str, Any]:
    try:
        # Optional extra: hypothesis is imported only when the property run is asked for.
        from streamwarden.testing._stateful import (  # noqa: PLC0415
            STEPS_PER_EXAMPLE,
            run_properties,
        )
    except ImportError:
        return {"ok": False, "failure": CHECK_EXTRA_HINT, "examples": 0}
    invariants = [inv.id for inv in spec.invariants]
    print(f"property run  {examples} examples x up to {STEPS_PER_EXAMPLE} steps, checking "
          f"{', '.join(invariants)} and audit conformance after every step ...",
          file=sys.stderr, flush=True)
    # The run provokes failures on purpose; their log lines are expected noise here.
    library_log = logging.getLogger(LOGGER_NAME)
    saved = library_log.propagate, library_log.handlers[:]
    library_log.propagate, library_log.handlers = False, [logging.NullHandler()]
    try:
        result = run_properties(spec, examples)
    finally:
        library_log.propagate, library_log.handlers = saved
    return {"ok": result.ok, "failure": result.failure, "examples": result.examples,
            "steps_per_example": result.steps_per_example, "invariants": invariants}


def _check(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec_dir)
    result = model_check(spec, max_leases=args.max_leases)
    if not args.json:
        _print_model_check(spec, result)
    if result.ok:
        properties = _property_run(spec, args.examples)
    else:
        properties = {"ok": False, "failure": "skipped: the spec failed the model check"}
    ok = result.ok and properties["ok"]
    if args.json:
        print(json.dumps({"ok": ok, "model_check": describe(result), "properties": properties,
                          "versions": _versions()}, indent=2))
    else:
        if result.ok:
            verdict = "OK" if properties["ok"] else "VIOLATED"
            print(f"property run  {verdict}: {properties['examples']} examples run")
            if properties["failure"]:
                print(properties["failure"])
        versions = ", ".join(f"{name} {version}" for name, version in _versions().items())
        print(f"result        {'OK' if ok else 'FAILED'} ({versions})")
    return 0 if ok else 1


def _diagram(args: argparse.Namespace) -> int:
    text = render(load_spec(args.spec_dir), args.format)
    if args.output is None:
        sys.stdout.write(text)
    else:
        try:
            args.output.write_text(text, encoding="utf-8")
        except OSError as exc:
            print(f"streamwarden: cannot write {args.output}: {exc.strerror}", file=sys.stderr)
            return 1
        print(f"wrote {args.output} ({args.format})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except StreamwardenError as exc:
        print(f"streamwarden: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
