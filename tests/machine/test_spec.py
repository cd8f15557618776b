"""The spec files: loaded with python-statemachine's validation, strict, and the only table."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from statemachine.io.yaml.reader import YAMLReader

from streamwarden import InvalidTransitionError
from streamwarden.machine.lifecycle import (
    RECONNECT_TRANSPORT,
    REVOKE_LEASES,
    START_TRANSPORT,
    LifecycleMachine,
)
from streamwarden.machine.spec import SpecError, default_spec, load_spec

SPEC_DIR = Path(default_spec().directory)


def copy_spec(tmp_path: Path) -> Path:
    target = tmp_path / "spec"
    shutil.copytree(SPEC_DIR, target)
    return target


def edit_yaml(path: Path, edit) -> None:
    # Parsed like python-statemachine does, so a transition's ``on`` key stays a string.
    document = YAMLReader().parse_document(path.read_text())
    edit(document)
    path.write_text(yaml.safe_dump(document, sort_keys=False))


def test_exactly_the_five_states_and_the_events_of_the_contract():
    spec = default_spec()
    assert spec.states == ("idle", "starting", "running", "draining", "stopped")
    assert spec.initial_state == "idle" and spec.final_states == ("stopped",)
    assert set(spec.events) == {"acquire", "release", "connected", "start_failed", "shutdown",
                                "connection_lost", "closed", "close_timeout", "went_stale",
                                "reconnect_failed"}
    assert [inv.id for inv in spec.invariants] == [f"INV{n}" for n in range(1, 8)]
    assert [bound.id for bound in spec.liveness] == ["L1", "L2", "L3"]


@pytest.mark.parametrize(("path", "expected"), [
    ([("acquire", {})], ("starting", 1, (START_TRANSPORT,))),
    ([("acquire", {}), ("acquire", {}), ("release", {})], ("starting", 1, ())),
    ([("acquire", {}), ("release", {})], ("draining", 0, ())),
    ([("acquire", {}), ("start_failed", {})], ("stopped", 0, (REVOKE_LEASES,))),
    ([("acquire", {}), ("connected", {}), ("shutdown", {})], ("draining", 0, (REVOKE_LEASES,))),
    ([("acquire", {}), ("connected", {}), ("connection_lost", {})], ("starting", 1, ())),
    ([("acquire", {}), ("connected", {}), ("went_stale", {})],
     ("starting", 1, (RECONNECT_TRANSPORT,))),
    ([("acquire", {}), ("release", {}), ("connected", {})], ("draining", 0, ())),
    ([("acquire", {}), ("release", {}), ("acquire", {"reusable": True})], ("running", 1, ())),
    ([("acquire", {}), ("release", {}), ("close_timeout", {})], ("stopped", 0, ())),
])
def test_transitions_follow_the_table(path, expected):
    machine = LifecycleMachine(default_spec())
    transition = None
    for event, inputs in path:
        transition = machine.fire(event, **inputs)
    assert transition is not None
    assert (transition.to_state, transition.refs_after, transition.effects) == expected


@pytest.mark.parametrize(("path", "event", "inputs"), [
    ([], "release", {}),
    ([], "connected", {}),
    (["acquire", "connected"], "connected", {}),
    (["acquire", "connected"], "closed", {}),
    (["acquire", "release"], "acquire", {"reusable": False}),
    (["acquire", "release", "closed"], "acquire", {}),
    (["acquire", "release", "closed"], "closed", {}),
    ([], "no_such_event", {}),
])
def test_events_the_spec_does_not_allow_raise_and_change_nothing(path, event, inputs):
    machine = LifecycleMachine(default_spec())
    for step in path:
        machine.fire(step)
    before = (machine.state, machine.refs)
    with pytest.raises(InvalidTransitionError) as caught:
        machine.fire(event, **inputs)
    assert caught.value.state == before[0]
    assert (machine.state, machine.refs) == before


def test_rollback_restores_even_from_the_final_state():
    machine = LifecycleMachine(default_spec())
    machine.fire("acquire")
    machine.fire("release")
    taken = machine.fire("closed")
    machine.rollback(taken)
    assert (machine.state, machine.refs) == ("draining", 0)
    assert machine.fire("closed").to_state == "stopped"


def test_each_lifecycle_starts_with_the_declared_datamodel():
    # python-statemachine initialises a loaded class's datamodel on its first instance only.
    spec = default_spec()
    for _ in range(3):
        machine = LifecycleMachine(spec)
        assert (machine.state, machine.refs) == ("idle", 0)


def test_schema_validation_rejects_unknown_keys(tmp_path):
    spec_dir = copy_spec(tmp_path)
    edit_yaml(spec_dir / "lifecycle.yaml", lambda d: d["states"]["idle"].update(timeout=3))
    with pytest.raises(SpecError, match="invalid"):
        load_spec(spec_dir)


@pytest.mark.parametrize(("filename", "edit", "match"), [
    ("invariants.yaml", lambda d: d["invariants"][0].update(expr="__import__('os')"),
     "not allowed"),
    ("invariants.yaml", lambda d: d["invariants"][0].update(scope="galaxy"), "unknown scope"),
    ("invariants.yaml", lambda d: d["environment"]["events"].update(teleport={}),
     "unknown event"),
    ("invariants.yaml", lambda d: d["invariants"][0].pop("expr"), "missing key"),
    ("lifecycle.yaml", lambda d: d["datamodel"].update(refs="refs + 1"), "must be a literal"),
])
def test_malformed_spec_files_are_refused(tmp_path, filename, edit, match):
    spec_dir = copy_spec(tmp_path)
    edit_yaml(spec_dir / filename, edit)
    with pytest.raises(SpecError, match=match):
        load_spec(spec_dir)


def test_missing_or_unparsable_files(tmp_path):
    with pytest.raises(SpecError, match="cannot read"):
        load_spec(tmp_path)
    spec_dir = copy_spec(tmp_path)
    (spec_dir / "invariants.yaml").write_text("invariants: [unclosed")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(spec_dir)
    (spec_dir / "invariants.yaml").write_text("- a list")
    with pytest.raises(SpecError, match="must each hold a mapping"):
        load_spec(spec_dir)


def test_spec_hash_changes_with_the_files(tmp_path):
    spec_dir = copy_spec(tmp_path)
    before = load_spec(spec_dir).sha256
    assert before == default_spec().sha256
    with (spec_dir / "invariants.yaml").open("a") as handle:
        handle.write("\n# edited\n")
    assert load_spec(spec_dir).sha256 != before
