"""The command line: exit codes and output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from streamwarden.cli import main
from tests.cli_run import modules_loaded_by
from tests.machine.test_spec import copy_spec, edit_yaml


def test_check_passes_on_the_packaged_spec_with_200_examples(capsys):
    assert main(["check", "--examples", "200"]) == 0
    out = capsys.readouterr().out
    assert "model check   OK: 11 configurations" in out
    assert "property run  OK: " in out and "result        OK" in out


def test_check_json_evidence(capsys):
    assert main(["check", "--json", "--max-leases", "2", "--examples", "5"]) == 0
    evidence = json.loads(capsys.readouterr().out)
    assert evidence["ok"] is True and evidence["model_check"]["max_leases"] == 2
    assert evidence["model_check"]["configurations"] == 7
    assert evidence["properties"]["ok"] and evidence["properties"]["examples"] >= 5
    assert set(evidence["versions"]) == {"streamwarden", "python-statemachine", "python"}


def test_check_fails_with_a_counterexample_on_a_broken_spec(tmp_path, capsys):
    spec_dir = copy_spec(tmp_path)
    edit_yaml(spec_dir / "lifecycle.yaml",
              lambda d: d["states"]["starting"]["transitions"][2].update(on=[]))
    assert main(["check", "--spec-dir", str(spec_dir)]) == 1
    out = capsys.readouterr().out
    assert "VIOLATED" in out and "counterexample: acquire -> release" in out
    assert "result        FAILED" in out


def test_missing_spec_is_a_typed_failure(tmp_path, capsys):
    assert main(["check", "--spec-dir", str(tmp_path)]) == 1
    assert "SpecError" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [[], ["check", "--max-leases", "0"],
                                  ["check", "--max-leases", "many"], ["frobnicate"]])
def test_bad_arguments_exit_2(argv):
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "streamwarden"
    completed = subprocess.run([str(script), "--version"],
                               capture_output=True, text=True, timeout=60, check=False)
    assert completed.returncode == 0 and completed.stdout.startswith("streamwarden ")


def _subcommand_helps(parser):
    import argparse  # noqa: PLC0415

    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return {choice.dest: choice.help for choice in commands._choices_actions}


def test_lazy_subcommands_keep_their_modules_help_lines():
    import argparse  # noqa: PLC0415
    import importlib  # noqa: PLC0415

    from streamwarden import cli  # noqa: PLC0415
    from streamwarden.machine.diagram import FORMATS  # noqa: PLC0415

    real = argparse.ArgumentParser()
    commands = real.add_subparsers()
    for module in dict.fromkeys(module for module, _ in cli.LAZY_COMMANDS.values()):
        importlib.import_module(module).add_commands(commands)
    assert _subcommand_helps(real) == {name: help_text for name, (_, help_text)
                                       in cli.LAZY_COMMANDS.items()}
    listed = _subcommand_helps(cli._parser())
    assert list(listed) == ["check", "diagram", *cli.LAZY_COMMANDS]
    for name in cli.LAZY_COMMANDS:  # the real subparsers when the command is named
        assert _subcommand_helps(cli._parser([name])) == listed
    assert cli.DIAGRAM_FORMATS == FORMATS


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["demo", "--help"]])
def test_version_and_help_import_no_subcommand_module(argv):
    loaded = modules_loaded_by(argv)
    if argv[0] == "demo":  # the demo's own module, not the other subcommands'
        assert "streamwarden.demo" in loaded
        assert "streamwarden.audit.commands" not in loaded
        return
    heavy = {"alpaca", "sqlalchemy", "alembic", "pandas", "statemachine", "structlog",
             "streamwarden.demo", "streamwarden.audit.commands",
             "streamwarden.simulator.command", "streamwarden.machine.modelcheck",
             "streamwarden.machine.diagram"}
    assert not heavy & loaded
