"""The bounded model of fleet ownership: INV5 per fleet holds for the protocol streamwarden.fleet
implements, and fails, with a counterexample, for protocols that drop its step-down."""

from __future__ import annotations

import json

import pytest

from streamwarden.cli import main
from streamwarden.fleet import FleetTiming
from streamwarden.machine.fleetcheck import Protocol, fleet_check


def test_the_fleet_protocol_keeps_one_upstream_and_increasing_epochs():
    result = fleet_check()
    assert result.ok, (result.violation, result.trace)
    assert result.states > 1000  # crashes, cuts and three takeovers were explored


def test_more_faults_and_takeovers_still_hold():
    assert fleet_check(Protocol(max_crashes=2, max_cuts=3, max_epoch=4)).ok


def test_an_owner_that_never_steps_down_breaks_inv5():
    result = fleet_check(Protocol(steps_down=False))
    assert result.violation == "INV5: two upstream connections open for one stream key"
    assert "cut(0)" in result.trace and result.trace[-1].startswith("takeover(1")


@pytest.mark.parametrize("takeover_wait", [0, 1, 2])
def test_a_takeover_wait_shorter_than_the_step_down_bound_breaks_inv5(takeover_wait):
    result = fleet_check(Protocol(step_down=3, takeover_wait=takeover_wait))
    assert not result.ok and result.violation is not None
    assert result.violation.startswith("INV5")


def test_epochs_counted_by_each_member_instead_of_the_row_do_not_increase():
    result = fleet_check(Protocol(epoch_from_row=False))
    assert result.violation == "epochs: a takeover did not increase the epoch"
    assert result.trace[-1].startswith("takeover(1, epoch 1)")


def test_the_implementation_refuses_the_timing_the_model_rejects():
    with pytest.raises(ValueError, match="takeover_wait must be at least"):
        FleetTiming(heartbeat_interval=1.0, heartbeat_timeout=1.0, step_down_grace=1.0,
                    takeover_wait=2.5)


def test_streamwarden_check_runs_the_fleet_model(capsys):
    assert main(["check", "--json", "--max-leases", "1", "--examples", "2"]) == 0
    evidence = json.loads(capsys.readouterr().out)
    assert evidence["fleet_check"]["ok"] is True
    assert evidence["fleet_check"]["states"] == fleet_check().states
