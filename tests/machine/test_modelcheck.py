"""The exhaustive bounded model check reads the spec files and finds real violations."""

from __future__ import annotations

import json

import pytest

from streamwarden import InvalidInputError
from streamwarden.machine.modelcheck import describe, model_check
from streamwarden.machine.spec import default_spec, load_spec
from tests.machine.test_spec import copy_spec, edit_yaml


def transitions_of(document, state):
    return document["states"][state]["transitions"]


def test_the_packaged_spec_satisfies_every_property():
    result = model_check(default_spec())
    assert result.ok, [v.counterexample() for v in result.violations]
    # idle, starting/running with 1..4 leases, draining, stopped
    assert result.configurations == 11
    assert result.properties_checked == ("INV1", "INV2", "INV3", "INV4", "STOPPABLE", "BOUNDED",
                                         "REACHED", "L2", "L3")
    assert result.transitions > result.configurations
    # The reconnect transitions are explored: a drop, then refused attempts, then either way.
    assert {("running", "connection_lost", "starting"),
            ("starting", "reconnect_failed", "starting"),
            ("starting", "connected", "running"),
            ("starting", "start_failed", "stopped")} <= result.taken
    assert json.loads(json.dumps(describe(result)))["ok"] is True


@pytest.mark.parametrize("max_leases", [1, 2, 6])
def test_bound_on_leases_scales_the_state_space(max_leases):
    result = model_check(default_spec(), max_leases=max_leases)
    assert result.ok
    assert result.configurations == 3 + 2 * max_leases


def test_a_release_that_forgets_to_decrement_breaks_inv4(tmp_path):
    spec_dir = copy_spec(tmp_path)

    def edit(document):
        release = transitions_of(document, "running")[1]
        assert release["event"] == "release" and release["cond"] == "refs > 1"
        release["on"] = []
    edit_yaml(spec_dir / "lifecycle.yaml", edit)
    result = model_check(load_spec(spec_dir))
    assert not result.ok
    first = result.violations[0]
    assert first.property_id == "INV4"
    assert first.counterexample() == "acquire -> acquire -> connected -> release"


def test_a_shutdown_that_keeps_leases_breaks_inv3(tmp_path):
    spec_dir = copy_spec(tmp_path)

    def edit(document):
        shutdown = transitions_of(document, "running")[4]
        assert shutdown["event"] == "shutdown"
        shutdown["on"] = []
    edit_yaml(spec_dir / "lifecycle.yaml", edit)
    result = model_check(load_spec(spec_dir))
    assert {v.property_id for v in result.violations} == {"INV3"}
    assert result.violations[0].counterexample() == "acquire -> connected -> shutdown"


def test_a_draining_state_that_cannot_close_breaks_liveness(tmp_path):
    spec_dir = copy_spec(tmp_path)

    def edit(document):
        document["states"]["draining"]["transitions"] = [
            t for t in transitions_of(document, "draining")
            if t["event"] not in ("closed", "close_timeout")
        ]
    edit_yaml(spec_dir / "lifecycle.yaml", edit)
    result = model_check(load_spec(spec_dir))
    ids = {v.property_id for v in result.violations}
    assert "L2" in ids
    l2 = next(v for v in result.violations if v.property_id == "L2")
    assert l2.counterexample() == "acquire -> release"


def test_an_invariant_edit_is_checked_too(tmp_path):
    spec_dir = copy_spec(tmp_path)
    edit_yaml(spec_dir / "invariants.yaml",
              lambda d: d["invariants"][0].update(expr="refs <= 2"))
    result = model_check(load_spec(spec_dir))
    violation = result.violations[0]
    assert violation.property_id == "INV1"
    assert violation.counterexample() == "acquire -> acquire -> acquire"


@pytest.mark.parametrize("bad", [0, -1, True, 2.5])
def test_max_leases_is_validated(bad):
    with pytest.raises(InvalidInputError):
        model_check(default_spec(), max_leases=bad)


def test_an_unbounded_spec_is_reported_not_explored_forever(tmp_path):
    spec_dir = copy_spec(tmp_path)

    def edit_chart(document):
        transitions_of(document, "running")[1]["on"] = []  # release never decrements

    edit_yaml(spec_dir / "lifecycle.yaml", edit_chart)
    edit_yaml(spec_dir / "invariants.yaml",  # and nothing ties refs to the leases any more
              lambda d: d.update(invariants=[i for i in d["invariants"] if i["id"] != "INV4"]))
    result = model_check(load_spec(spec_dir), max_configurations=40)
    assert "BOUNDED" in {v.property_id for v in result.violations}


def test_went_stale_is_explored_a_stale_socket_that_drains_breaks_inv3(tmp_path):
    spec_dir = copy_spec(tmp_path)

    def edit(document):
        went_stale = transitions_of(document, "running")[5]
        assert went_stale["event"] == "went_stale" and went_stale["target"] == "starting"
        went_stale["target"] = "draining"  # and the leases keep counting
    edit_yaml(spec_dir / "lifecycle.yaml", edit)
    result = model_check(load_spec(spec_dir))
    assert not result.ok
    first = result.violations[0]
    assert first.property_id == "INV3"
    assert first.counterexample() == "acquire -> connected -> went_stale"


def test_a_transition_no_configuration_can_take_is_reported(tmp_path):
    spec_dir = copy_spec(tmp_path)

    def edit(document):
        (retry,) = [t for t in transitions_of(document, "starting")
                    if t["event"] == "reconnect_failed"]
        retry["cond"] = "refs < 0"  # dead: refs is never negative
    edit_yaml(spec_dir / "lifecycle.yaml", edit)
    result = model_check(load_spec(spec_dir))
    assert [(v.property_id, v.message) for v in result.violations] == [
        ("REACHED", "starting --reconnect_failed--> starting is never taken")]


def test_a_reconnect_that_can_only_end_by_a_release_breaks_l3(tmp_path):
    spec_dir = copy_spec(tmp_path)

    def edit(document):
        document["states"]["starting"]["transitions"] = [
            t for t in transitions_of(document, "starting")
            if t["event"] not in ("connected", "start_failed")
        ]
    edit_yaml(spec_dir / "lifecycle.yaml", edit)
    result = model_check(load_spec(spec_dir))
    l3 = next(v for v in result.violations if v.property_id == "L3")
    assert l3.counterexample() == "acquire"
