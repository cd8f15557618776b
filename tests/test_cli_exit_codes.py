"""Every command's exit status on bad input, through the real command line: 2 and one line for
bad arguments, 1 and one typed line for failures, never a traceback.

The table runs ``streamwarden.cli.main`` in-process (``{tmp}`` in an argument is a directory
holding the files below); the rest runs ``python -m streamwarden`` as a subprocess, for what
only a process shows: Ctrl-C, a closed standard output, an unexpected error's single line.
"""

from __future__ import annotations

import os
import runpy
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streamwarden.cli import INTERRUPTED, OUTPUT_CLOSED, TRACEBACK_ENV, main
from tests.conftest import CANARY_SECRET

USAGE, FAILURE = 2, 1
BOUND = 60.0
"""Seconds a subprocess may take (the interpreter and the subcommand's imports)."""


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


CLOSED_PG = (f"postgresql+psycopg://postgres:pw-CANARY-42@127.0.0.1:{_closed_port()}/test"
             "?connect_timeout=2")

ROWS: list[tuple[list[str], int, str]] = [
    ([], USAGE, "the following arguments are required: COMMAND"),
    (["frobnicate"], USAGE, "invalid choice: 'frobnicate'"),
    (["check", "--examples", "0"], USAGE, "must be at least 1"),
    (["check", "--max-leases", "many"], USAGE, "expected a whole number"),
    (["check", "--spec-dir", "{tmp}/missing"], FAILURE, "SpecError: cannot read spec file"),
    (["check", "--spec-dir", "{tmp}/not-yaml"], FAILURE, "is not valid YAML: "),
    (["check", "--spec-dir", "{tmp}/binary"], FAILURE, "is not UTF-8 text"),
    (["check", "--spec-dir", "{tmp}/bad-shape"], FAILURE, "unexpected structure"),
    (["diagram", "--format", "png"], USAGE, "invalid choice: 'png'"),
    (["diagram", "-o", "{tmp}/missing/lifecycle.mmd"], USAGE, "missing' does not exist"),
    (["diagram", "-o", "{tmp}"], USAGE, "is a directory, not a file"),
    (["diagram", "-o", "/dev/full"], FAILURE, "cannot write /dev/full"),
    (["diagram", "--spec-dir", "{tmp}/missing"], FAILURE, "SpecError: cannot read spec file"),
    (["diagram", "--spec-dir", "{tmp}/notes.txt"], FAILURE, "Not a directory"),
    (["diagram", "--spec-dir", "{tmp}/not-yaml"], FAILURE, "is not valid YAML: "),
    (["db"], USAGE, "the following arguments are required: COMMAND"),
    (["db", "current", "--db", "notaurl"], USAGE, "malformed database URL 'notaurl'"),
    (["db", "current", "--db", "mysql://u:hunter2@db/x"], USAGE, "unsupported database URL"),
    (["db", "current", "--db", "sqlite:///{tmp}/missing.db"], FAILURE, "does not exist"),
    (["db", "current", "--db", "sqlite:///{tmp}"], FAILURE, "is not a regular file"),
    (["db", "current", "--db", "sqlite:///{tmp}/notes.txt"], FAILURE,
     "AuditError: audit database"),
    (["db", "current", "--db", CLOSED_PG], FAILURE, "AuditUnavailableError"),
    (["db", "upgrade", "--db", "sqlite:///{tmp}/notes.txt"], FAILURE,
     "file is not a database"),
    (["db", "upgrade", "--db", "sqlite:///{tmp}/missing/audit.db"], FAILURE,
     "AuditUnavailableError"),
    (["db", "upgrade", "--db", CLOSED_PG], FAILURE, "AuditUnavailableError"),
    (["audit"], USAGE, "the following arguments are required: COMMAND"),
    (["audit", "report", "--db", "notaurl"], USAGE, "malformed database URL"),
    (["audit", "report", "--db", "sqlite:///{tmp}/notes.txt"], FAILURE, "AuditError"),
    (["audit", "report", "--db", "sqlite:///{tmp}"], FAILURE, "is not a regular file"),
    (["audit", "report", "--db", CLOSED_PG], FAILURE, "AuditUnavailableError"),
    (["audit", "verify", "--db", "sqlite:///{tmp}/missing.db"], FAILURE, "does not exist"),
    (["audit", "verify", "--db", "sqlite:///{tmp}/notes.txt"], FAILURE, "AuditError"),
    (["audit", "verify", "--file", "{tmp}/notes.txt"], USAGE, "--file needs --public-key"),
    (["audit", "export", "--format", "jsonl", "-o", "{tmp}/out.jsonl", "--db",
      "sqlite:///{tmp}/notes.txt"], FAILURE, "AuditError"),
    (["audit", "export", "--format", "jsonl", "-o", "{tmp}"], USAGE, "it is a directory"),
    (["audit", "export", "-o", "{tmp}/out.jsonl"], USAGE, "--format (or --bundle)"),
    (["audit", "timeline"], USAGE, "the following arguments are required: --lifecycle"),
    (["audit", "timeline", "--lifecycle", "x", "--db", "sqlite:///{tmp}/missing.db"],
     FAILURE, "does not exist"),
    (["audit", "checkpoint", "--dir", "{tmp}", "--key", "{tmp}/missing.key"], USAGE,
     "cannot read the private key"),
    (["audit", "checkpoint", "--dir", "{tmp}", "--key", "{tmp}/notes.txt"], USAGE,
     "--key"),
    (["audit", "keygen"], USAGE, "the following arguments are required: -o/--output"),
    (["audit", "keygen", "-o", "{tmp}/missing/audit.key"], FAILURE, "cannot write"),
    (["simulator"], USAGE, "the following arguments are required: --port"),
    (["simulator", "--port", "99999"], USAGE, "must be in 0..65535"),
    (["simulator", "--port", "0", "--fault", "nope"], USAGE, "unknown fault 'nope'"),
    (["simulator", "--port", "0", "--quote-rate", "-1"], USAGE, "--quote-rate"),
]


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with a text file, broken spec directories, and nothing else."""
    base = tmp_path_factory.mktemp("cli")
    (base / "notes.txt").write_text("not a database, not a directory\n")
    packaged = (Path(__file__).parent.parent / "streamwarden" / "spec" /
                "lifecycle.yaml").read_bytes()
    for name, chart, invariants in (("not-yaml", b"states: {{{\n", b"{}\n"),
                                    ("binary", b"\xff\xfe\x00", b"\xff\xfe\x00"),
                                    ("bad-shape", packaged, b"invariants: 5\n")):
        spec_dir = base / name
        spec_dir.mkdir()
        (spec_dir / "lifecycle.yaml").write_bytes(chart)
        (spec_dir / "invariants.yaml").write_bytes(invariants)
    return base


def run_in_process(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        status = main(argv)
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else 1
    return status, capsys.readouterr().err


@pytest.mark.parametrize(("argv", "status", "reason"), ROWS,
                         ids=[" ".join(argv) or "(nothing)" for argv, _, _ in ROWS])
def test_exit_status_and_one_line_reason(argv, status, reason, tmp, capsys):
    before = sorted(tmp.rglob("*"))
    got, err = run_in_process([arg.replace("{tmp}", str(tmp)) for arg in argv], capsys)
    assert got == status, err
    assert "Traceback" not in err
    (line,) = err.splitlines()  # one line, usage errors too
    assert reason in line
    assert line.startswith("streamwarden")
    assert "pw-CANARY-42" not in line and "hunter2" not in line
    assert sorted(tmp.rglob("*")) == before  # bad input changes nothing


def test_a_usage_error_names_the_subcommand_and_the_help(capsys):
    status, err = run_in_process(["db", "current", "--db", "notaurl"], capsys)
    assert status == USAGE
    assert err.startswith("streamwarden db current: error: argument --db: malformed")
    assert err.rstrip().endswith("(see streamwarden db current --help)")


# Subprocesses: the real interpreter, its signals and its standard streams.


def streamwarden(*argv: str, env: dict[str, str] | None = None,
                 **popen: object) -> subprocess.Popen[str]:
    """``python -m streamwarden ARGV`` with SIGINT handled the default way (a test run in the
    background of a non-interactive shell would otherwise pass it on ignored)."""
    code = ("import signal, sys\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n"
            "import runpy\nsys.argv[0] = 'streamwarden'\n"
            "runpy.run_module('streamwarden', run_name='__main__')\n")
    return subprocess.Popen([sys.executable, "-c", code, *argv], text=True,
                            env={**os.environ, **(env or {})}, **popen)  # type: ignore[call-overload]


def test_the_package_runs_as_the_command(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["streamwarden", "db", "current", "--db", "x"])
    with pytest.raises(SystemExit) as exited:
        runpy.run_module("streamwarden", run_name="__main__")
    assert exited.value.code == USAGE
    assert "malformed database URL 'x'" in capsys.readouterr().err


def test_python_dash_m_is_the_same_command():
    done = subprocess.run([sys.executable, "-m", "streamwarden", "db", "current", "--db", "x"],
                          capture_output=True, text=True, timeout=BOUND, check=False)
    assert done.returncode == USAGE
    assert done.stderr.count("\n") == 1 and "malformed database URL 'x'" in done.stderr


def test_ctrl_c_ends_with_one_line_and_status_130():
    process = streamwarden("check", "--examples", "100000", stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE)
    assert process.stderr is not None
    started = process.stderr.readline()  # the property run has begun: interrupt it
    assert started.startswith("property run")
    interrupted = time.monotonic()
    process.send_signal(signal.SIGINT)
    rest = process.stderr.read()
    assert process.wait(timeout=BOUND) == INTERRUPTED
    assert rest == "streamwarden: interrupted\n"
    assert time.monotonic() - interrupted < 10  # at once, not at the end of the run


def test_a_closed_standard_output_ends_quietly():
    process = streamwarden("diagram", "--format", "md", stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # the reader is gone before the command writes (| head -0)
    err = process.stderr.read()
    assert process.wait(timeout=BOUND) == OUTPUT_CLOSED == 128 + signal.SIGPIPE
    assert err == ""


@pytest.fixture
def broken_dependency(tmp_path: Path) -> Path:
    """A directory shadowing ``rich`` (which the audit commands import) with a module that
    fails to import, quoting a secret and a database password: a broken installation, the one
    kind of unexpected error left to provoke for real."""
    shadow = tmp_path / "rich"
    shadow.mkdir()
    (shadow / "__init__.py").write_text(
        "import os\nraise RuntimeError('rich is broken:\\n key '"
        " + os.environ['APCA_API_SECRET_KEY'] + ' at postgresql://audit:pw-CANARY-42@db/x')\n")
    return tmp_path


def test_an_unexpected_error_is_one_redacted_line(broken_dependency):
    env = {"PYTHONPATH": str(broken_dependency), "APCA_API_SECRET_KEY": CANARY_SECRET,
           TRACEBACK_ENV: ""}
    process = streamwarden("audit", "report", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           env=env)
    out, err = process.communicate(timeout=BOUND)
    assert process.returncode == FAILURE and out == ""
    (line,) = err.splitlines()
    assert line.startswith("streamwarden: unexpected RuntimeError: rich is broken: key ")
    assert f"set {TRACEBACK_ENV}=1 for the traceback" in line
    assert CANARY_SECRET not in line and "pw-CANARY-42" not in line
    assert "<redacted>" in line and "postgresql://audit:***@db/x" in line


def test_the_traceback_is_there_for_developers_who_ask(broken_dependency):
    env = {"PYTHONPATH": str(broken_dependency), "APCA_API_SECRET_KEY": CANARY_SECRET,
           TRACEBACK_ENV: "1"}
    process = streamwarden("audit", "report", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           env=env)
    _, err = process.communicate(timeout=BOUND)
    assert process.returncode == FAILURE
    assert "Traceback (most recent call last)" in err and "RuntimeError: rich is broken" in err

