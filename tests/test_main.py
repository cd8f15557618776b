"""``python -m streamwarden`` is the ``streamwarden`` command."""

from __future__ import annotations

import runpy
import sys

import pytest


def test_python_m_streamwarden_runs_the_command_line(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["streamwarden", "--version"])
    with pytest.raises(SystemExit) as exited:
        runpy.run_module("streamwarden", run_name="__main__")
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith("streamwarden ")
