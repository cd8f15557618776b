"""Exit codes of the reader's options: a misspelt event, an ambiguous id, an id matching
nothing and a bad time, through the real command line (a one-line reason, no traceback)."""

from __future__ import annotations

import pytest

from streamwarden.audit.query import audit_events
from streamwarden.cli import main
from tests.audit.histories import open_log, record
from tests.cli_run import modules_loaded_by

LC_1, LC_2 = "01JEXITAAAAAAAAAAAAAAAAAAA", "01JEXITBBBBBBBBBBBBBBBBBBB"


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('exit') / 'audit.db'}"
    with open_log(url) as log:
        log.append(record(event_id="ev-1", lifecycle_id=LC_1, lease_id="L-1"))
        log.append(record(event_id="ev-2", lifecycle_id=LC_2, lease_id="L-2"))
    return url


EVENTS = ", ".join(audit_events())
ROWS = [
    (["report", "--event", "released"], 2,
     f"error: argument --event: unknown event 'released'; the audit trail holds {EVENTS}"),
    (["export", "--format", "csv", "-o", "-", "--event", "Acquire"], 2,
     "error: argument --event: unknown event 'Acquire'; the audit trail holds acquire, "),
    (["report", "--lifecycle", "01JEXIT"], 2,
     f"error: --lifecycle 01JEXIT is ambiguous: it matches {LC_1}, {LC_2}; give more of it"),
    (["timeline", "--lifecycle", "01JEXIT"], 2, "error: --lifecycle 01JEXIT is ambiguous"),
    (["report", "--lease", "L-"], 2, "error: --lease L- is ambiguous: it matches L-1, L-2"),
    (["report", "--lifecycle", "ZZZZ"], 1, "streamwarden: no audit records for lifecycle ZZZZ"),
    (["export", "--format", "jsonl", "-o", "-", "--correlation-id", "nope"], 1,
     "streamwarden: no audit records for correlation id nope"),
    (["timeline", "--lifecycle", "ZZZZ"], 1, "streamwarden: no audit records for lifecycle"),
    (["holders", "--at", "2026-01-02T10:31:00Z", "--lifecycle", "ZZZZ"], 1,
     "streamwarden: no audit records for lifecycle ZZZZ"),
    (["holders", "--at", "10:31"], 2, "error: argument --at: must be an ISO 8601 timestamp"),
    (["holders", "--at", "2026-01-02T10:31:00"], 2, "has no time zone; add Z for UTC"),
    (["holders"], 2, "error: the following arguments are required: --at"),
    (["timeline", "--lifecycle", "x" * 257], 2, "error: lifecycle_id must be 1..256 characters"),
    (["holders", "--at", "2026-01-02T10:31:00Z", "--lifecycle", "x" * 257], 2,
     "error: lifecycle_id must be 1..256 characters"),
]


@pytest.mark.parametrize(("argv", "status", "line"), ROWS)
def test_exit_status_and_one_line_reason(db, capsys, argv, status, line):
    try:
        returned = main(["audit", argv[0], "--db", db, *argv[1:]])
    except SystemExit as exited:  # argparse's usage errors
        returned = exited.code
    out, err = capsys.readouterr()
    assert (returned, out) == (status, "")
    assert line in err.strip().splitlines()[-1]
    assert "Traceback" not in err


@pytest.mark.parametrize(("argv", "loads_spec"), [
    (["audit", "report", "--help"], False),
    (["audit", "report", "--db", "sqlite:///missing.db", "--kind", "market_data"], False),
    (["audit", "report", "--db", "sqlite:///missing.db", "--event", "acquire"], True),
])
def test_the_spec_is_loaded_only_to_check_an_event(argv, loads_spec):
    """``--help`` stays fast: the event names come from the spec, read only for ``--event``."""
    loaded = modules_loaded_by(argv)
    assert ({"statemachine", "streamwarden.machine.spec"} <= loaded) is loads_spec
    assert ("statemachine" in loaded) is loads_spec
