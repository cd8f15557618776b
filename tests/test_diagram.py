"""Diagrams and the reference page are generated from the spec and cover all of it."""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from streamwarden.cli import main
from streamwarden.machine.diagram import (
    FORMATS,
    DiagramError,
    GraphvizMissingError,
    dot,
    render,
    svg,
)
from streamwarden.machine.spec import default_spec

DOCS = Path(__file__).resolve().parent.parent / "docs" / "lifecycle.md"
SPEC = default_spec()


def label(event: str) -> str:
    """python-statemachine's label for an event id (start_failed -> Start failed)."""
    return event.replace("_", " ").capitalize()


def edges(text: str, arrow: str) -> list[str]:
    return [html.unescape(line) for line in text.splitlines() if arrow in line]


def test_mermaid_has_every_state_and_transition_with_its_guard():
    text = render(SPEC, "mermaid")
    for state in SPEC.states:
        assert f'state "{state.capitalize()}" as {state}' in text
    lines = edges(text, "-->")
    for t in SPEC.transitions:
        expected = f"{t.source} --> {t.target} : {label(t.event)}"
        expected += f" [{t.guard}]" if t.guard else ""
        assert any(line.strip() == expected for line in lines), expected


def test_dot_has_every_state_and_transition_with_its_guard():
    text = render(SPEC, "dot")
    for state in SPEC.states:
        assert re.search(rf"^{state} \[label=", text, flags=re.MULTILINE), state
    lines = edges(text, " -> ")
    for t in SPEC.transitions:
        matching = [line for line in lines if line.startswith(f"{t.source} -> {t.target} ")
                    and f">{label(t.event)}<" in line]
        assert matching, (t.source, t.event, t.target)
        if t.guard:
            assert any(f"[{t.guard}]" in line for line in matching), t.guard


def test_markdown_reference_has_table_invariants_and_bounds():
    text = render(SPEC, "md")
    assert "```mermaid" in text and SPEC.sha256 in text
    for t in SPEC.transitions:
        guard = f"`{t.guard}`" if t.guard else ""
        assert f"| {t.source} | {t.event} | {guard} | {t.target} |" in text
    for inv in SPEC.invariants:
        assert f"| {inv.id} | {inv.scope} | `{inv.expr.source}` | {inv.protects} |" in text
    for bound in SPEC.liveness:
        assert f"| {bound.id} | {bound.bound} |" in text


def test_committed_docs_match_the_spec():
    assert DOCS.read_text() == render(SPEC, "md"), (
        "docs/lifecycle.md is stale: run `streamwarden diagram --format md -o docs/lifecycle.md`")


def require_graphviz() -> None:
    if shutil.which("dot") is None:
        if os.environ.get("STREAMWARDEN_REQUIRE_GRAPHVIZ"):
            pytest.fail("Graphviz is required here (STREAMWARDEN_REQUIRE_GRAPHVIZ) but missing")
        pytest.skip("Graphviz's dot is not installed")


def test_svg_with_graphviz():
    require_graphviz()
    text = svg(SPEC)
    assert text.lstrip().startswith("<?xml") and "<svg" in text
    for state in SPEC.states:
        assert state.capitalize() in text


def test_svg_without_graphviz_says_how_to_install_and_other_formats_still_work(tmp_path):
    script = Path(sys.executable).parent / "streamwarden"
    env = {"PATH": str(tmp_path), "HOME": str(tmp_path)}  # a PATH with no `dot` on it
    missing = subprocess.run([str(script), "diagram", "--format", "svg"], env=env,
                             capture_output=True, text=True, timeout=120, check=False)
    assert missing.returncode == 1
    assert "GraphvizMissingError" in missing.stderr and "apt-get install graphviz" in missing.stderr
    mermaid = subprocess.run([str(script), "diagram", "--format", "mermaid"], env=env,
                             capture_output=True, text=True, timeout=120, check=False)
    assert mermaid.returncode == 0 and "stateDiagram-v2" in mermaid.stdout


def test_graphviz_missing_error_in_process(monkeypatch):
    # Emptying PATH is how a machine without Graphviz looks to shutil.which.
    monkeypatch.setenv("PATH", "")
    with pytest.raises(GraphvizMissingError, match="Graphviz"):
        svg(SPEC)


def test_unknown_format_is_refused():
    with pytest.raises(ValueError, match="unknown format"):
        render(SPEC, "png")


def test_diagram_command_writes_a_file(tmp_path, capsys):
    target = tmp_path / "lifecycle.mmd"
    assert main(["diagram", "--format", "mermaid", "-o", str(target)]) == 0
    assert target.read_text() == render(SPEC, "mermaid")
    assert main(["diagram", "--format", "md"]) == 0
    assert capsys.readouterr().out.endswith(render(SPEC, "md"))
    with pytest.raises(SystemExit) as refused:  # checked before anything is rendered
        main(["diagram", "-o", str(tmp_path / "missing" / "x.mmd")])
    assert refused.value.code == 2 and "does not exist" in capsys.readouterr().err


RUN_DEPENDENT = re.compile(r"datamodel|entry /|__initial_\d")


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_is_byte_identical_across_processes_and_has_no_internal_label(fmt):
    if fmt == "svg":
        require_graphviz()
    script = Path(sys.executable).parent / "streamwarden"
    outputs = [subprocess.run([str(script), "diagram", "--format", fmt], capture_output=True,
                              timeout=120, check=True).stdout for _ in range(2)]
    assert outputs[0] == outputs[1]
    assert outputs[0] == render(SPEC, fmt).encode()  # and equal to this process's rendering
    assert not RUN_DEPENDENT.search(outputs[0].decode()), fmt


def test_the_dot_names_derived_from_object_ids_become_ordinals():
    text = dot(SPEC)
    assert "__initial_g0 -> idle" in text and "subgraph cluster___atomic_g0 {" in text
    assert not re.search(r"(__initial_|cluster___atomic_)\d", text)


def test_a_graphviz_failure_is_a_typed_one_line_error(tmp_path, monkeypatch, capsys):
    # A stand-in `dot` that fails: real Graphviz renders this spec, so its failure cannot be
    # produced otherwise.
    fake = tmp_path / "dot"
    fake.write_text("#!/bin/sh\necho 'Error: <stdin>: syntax error in line 1' >&2\n"
                    "echo 'more detail' >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DiagramError, match=r"failed with exit code 3\. Error: <stdin>: syntax"):
        svg(SPEC)
    assert main(["diagram", "--format", "svg"]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("streamwarden: DiagramError: dot -Tsvg failed with exit code 3.")
