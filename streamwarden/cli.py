"""The ``streamwarden`` command.

Exit statuses: 0 success; 1 failure, with one readable line on stderr (the error's type and
message; an unexpected error too, with its secrets redacted); 2 bad arguments, with a one-line
reason; 130 interrupted (Ctrl-C), with one line; 141 standard output closed by its reader
(``... | head``), silently. No command prints a raw traceback, unless
``STREAMWARDEN_TRACEBACK=1`` asks for one (for developers: a traceback is not redacted).

Start-up stays fast: this module imports only the standard library and light streamwarden
modules. A subcommand's module (the audit commands, the simulator, the demo, the model check,
the diagrams) is imported only when that subcommand runs; ``--help`` and ``--version`` import
none of them. The subcommands defined elsewhere are listed in :data:`LAZY_COMMANDS` with their
one-line help, so that ``streamwarden --help`` shows them all without importing them.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import platform
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from streamwarden._redaction import SecretRedactor, redact_text
from streamwarden._signals import INTERRUPTED
from streamwarden._version import __version__
from streamwarden.arguments import output_file, positive_int
from streamwarden.errors import StreamwardenError

if TYPE_CHECKING:
    from streamwarden.machine.modelcheck import ModelCheckResult
    from streamwarden.machine.spec import LifecycleSpec

Handler = Callable[[argparse.Namespace], int]
"""A subcommand: takes the parsed arguments, returns the exit status (0 ok, 1 failure)."""

DEFAULT_EXAMPLES = 200
#: Exit status when standard output's reader went away (128 + SIGPIPE, like ``cat | head``).
OUTPUT_CLOSED = 141
#: Set to 1 to let an unexpected error end with its (unredacted) traceback, for developers.
TRACEBACK_ENV = "STREAMWARDEN_TRACEBACK"
#: Longest message printed for an unexpected error, in characters (its text is not ours).
MAX_MESSAGE = 500
CHECK_EXTRA_HINT = "the property-based run needs hypothesis: pip install 'streamwarden[check]'"
#: ``streamwarden diagram --format`` choices (``streamwarden.machine.diagram.FORMATS``; a test
#: keeps the two equal).
DIAGRAM_FORMATS = ("mermaid", "dot", "svg", "md")
#: Subcommands defined in other modules, in ``--help`` order: name -> (module, one-line help).
#: The module (its ``add_commands(commands)`` adds the real subparsers) is imported only when
#: one of its subcommands is on the command line; otherwise a placeholder with the same help
#: keeps the name in ``--help``. A test keeps these help lines equal to the modules' own.
LAZY_COMMANDS: dict[str, tuple[str, str]] = {
    "db": ("streamwarden.audit.commands", "audit database schema (Alembic migrations)"),
    "audit": ("streamwarden.audit.commands", "query, verify and export the audit trail"),
    "simulator": ("streamwarden.simulator.command", "the Alpaca protocol simulator, standalone"),
    "demo": ("streamwarden.demo",
             "three strategies sharing connections, on the simulator (no credentials)"),
    "relay": ("streamwarden.relay.command",
              "serve Alpaca's stream protocols to the account's own processes"),
}


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr, exit status 2."""

    def error(self, message: str) -> NoReturn:
        reason = " ".join(message.split())
        self.exit(2, f"{self.prog}: error: {reason} (see {self.prog} --help)\n")


def _selected_command(argv: Sequence[str]) -> str | None:
    """The subcommand named on the command line: its first argument that is not an option (the
    top-level options take no value)."""
    for argument in argv:
        if argument == "--":
            return None
        if not argument.startswith("-"):
            return argument
    return None


def _add_lazy_commands(commands: argparse._SubParsersAction[Any], selected: str | None) -> None:
    """The subcommands of :data:`LAZY_COMMANDS`: real ones for the module of ``selected``,
    placeholders (name and help only) for the others."""
    added: set[str] = set()
    for name, (module, help_text) in LAZY_COMMANDS.items():
        if module in added:
            continue
        if selected in LAZY_COMMANDS and LAZY_COMMANDS[selected][0] == module:
            importlib.import_module(module).add_commands(commands)
            added.add(module)
        else:
            commands.add_parser(name, help=help_text)


def _parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The command line's parser, with the real subparsers of the subcommand ``argv`` names."""
    parser = _Parser(
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
    diagram.add_argument("--format", choices=DIAGRAM_FORMATS, default="mermaid")
    diagram.add_argument("-o", "--output", type=output_file, default=None, metavar="FILE",
                         help="write to FILE instead of standard output (its directory must "
                              "exist)")
    for sub in (check, diagram):
        sub.add_argument("--spec-dir", type=Path, default=None, metavar="DIR",
                         help="use the spec files in DIR instead of the packaged ones")
    check.set_defaults(handler=_check)
    diagram.set_defaults(handler=_diagram)
    _add_lazy_commands(commands, _selected_command(argv))
    return parser


def _versions() -> dict[str, str]:
    import statemachine  # noqa: PLC0415

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
    from streamwarden.logging import LOGGER_NAME  # noqa: PLC0415

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


def _fleet_check(args: argparse.Namespace) -> dict[str, Any]:
    """The bounded model of fleet ownership (INV5 per fleet; see machine.fleetcheck)."""
    from streamwarden.machine.fleetcheck import fleet_check  # noqa: PLC0415

    result = fleet_check()
    if not args.json:
        print(f"fleet check   {'OK' if result.ok else 'VIOLATED'}: {result.states} states of "
              f"two members competing for one key (INV5 per fleet, epochs)")
        if result.violation is not None:
            print(f"  {result.violation}: {' -> '.join(result.trace)}")
    return {"ok": result.ok, "states": result.states, "violation": result.violation,
            "trace": list(result.trace)}


def _check(args: argparse.Namespace) -> int:
    from streamwarden.machine.modelcheck import describe, model_check  # noqa: PLC0415
    from streamwarden.machine.spec import load_spec  # noqa: PLC0415

    spec = load_spec(args.spec_dir)
    result = model_check(spec, max_leases=args.max_leases)
    if not args.json:
        _print_model_check(spec, result)
    if result.ok:
        properties = _property_run(spec, args.examples)
    else:
        properties = {"ok": False, "failure": "skipped: the spec failed the model check"}
    fleet = _fleet_check(args)
    ok = result.ok and properties["ok"] and fleet["ok"]
    if args.json:
        print(json.dumps({"ok": ok, "model_check": describe(result), "properties": properties,
                          "fleet_check": fleet,
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
    from streamwarden.machine.diagram import render  # noqa: PLC0415
    from streamwarden.machine.spec import load_spec  # noqa: PLC0415

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


def _redacted_line(text: str, limit: int | None = None) -> str:
    """``text`` on one line (cut at ``limit`` characters), without database passwords or the
    environment's Alpaca credentials."""
    credentials = SecretRedactor(os.environ.get(name, "")
                                 for name in ("APCA_API_KEY_ID", "APCA_API_SECRET_KEY"))
    line = credentials.redact_text(redact_text(" ".join(text.split())))
    return line if limit is None or len(line) <= limit else line[:limit - 3] + "..."


def _output_closed() -> int:
    """The reader of standard output went away (``... | head``): end quietly, as ``cat`` does
    on SIGPIPE, and keep Python from reporting the failed final flush."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no file descriptor (output captured in-process)
        pass
    return OUTPUT_CLOSED


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (see the module docstring).

    Raises:
        SystemExit: with status 0 after ``--help`` or ``--version``, 2 on bad arguments.

    Thread-safety: run from one thread at a time (it writes to the process's stdout/stderr).
    """
    arguments = sys.argv[1:] if argv is None else list(argv)
    try:
        args = _parser(arguments).parse_args(arguments)
        handler: Handler = args.handler
        status = handler(args)
        sys.stdout.flush()  # here, where a closed pipe can still be handled
        return status
    except StreamwardenError as exc:
        print(f"streamwarden: {type(exc).__name__}: {_redacted_line(str(exc))}",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("streamwarden: interrupted", file=sys.stderr)
        return INTERRUPTED
    except BrokenPipeError:
        return _output_closed()
    except Exception as exc:
        if os.environ.get(TRACEBACK_ENV) == "1":
            raise
        message = _redacted_line(str(exc), MAX_MESSAGE)
        print(f"streamwarden: unexpected {type(exc).__name__}: {message} "
              f"(set {TRACEBACK_ENV}=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
