"""Running the real command line in process, for the CLI tests."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from streamwarden.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    """Run ``streamwarden ARGV``; its exit status, standard output and standard error."""
    status = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def usage_error(capsys: pytest.CaptureFixture[str], *argv: object) -> str:
    """Run ``streamwarden ARGV``, which must be refused as a usage error: exit 2 with one line
    on standard error (no usage block, no traceback). Returns that line."""
    with pytest.raises(SystemExit) as exit_info:
        main([str(arg) for arg in argv])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    return lines[0]


def modules_loaded_by(argv: list[str]) -> set[str]:
    """The modules a new interpreter has imported after running ``streamwarden ARGV``."""
    code = ("import json, sys\nfrom streamwarden.cli import main\ntry:\n"
            f"    main({argv!r})\nexcept SystemExit:\n    pass\n"
            "print(json.dumps(sorted(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    return set(json.loads(done.stdout.strip().splitlines()[-1]))
