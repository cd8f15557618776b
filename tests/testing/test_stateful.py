"""Property-based test of the managers (the machine lives in streamwarden.testing).

The same rules drive a ConnectionManager and an AsyncConnectionManager; each gets at least 500
examples under CI (STREAMWARDEN_STATEFUL_EXAMPLES overrides).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from streamwarden import InvalidInputError, LeaseStatus
from streamwarden.machine.modelcheck import model_check
from streamwarden.machine.spec import default_spec, load_spec
from streamwarden.testing import manager_machine, run_properties
from streamwarden.testing._stateful import ACCOUNTS, evidence_settings
from tests.machine.test_spec import edit_yaml
from tests.waiting import wait_until

EXAMPLES = int(os.environ.get("STREAMWARDEN_STATEFUL_EXAMPLES",
                              "500" if os.environ.get("CI") else "100"))

TestManagerMachine = manager_machine(default_spec()).TestCase
TestManagerMachine.settings = evidence_settings(EXAMPLES)
TestAsyncManagerMachine = manager_machine(default_spec(), facade="async").TestCase
TestAsyncManagerMachine.settings = evidence_settings(EXAMPLES)


def test_ci_runs_at_least_500_examples():
    assert not os.environ.get("CI") or EXAMPLES >= 500


def test_a_runtime_invariant_the_model_check_cannot_see_fails_the_property_run(tmp_path: Path):
    spec_dir = tmp_path / "spec"
    shutil.copytree(default_spec().directory, spec_dir)

    def edit(document):  # INV6 made unsatisfiable by any market-data lifecycle
        inv6 = document["invariants"][5]
        assert inv6["id"] == "INV6"
        inv6["expr"] = "kind != 'market_data'"

    edit_yaml(spec_dir / "invariants.yaml", edit)
    spec = load_spec(spec_dir)
    assert model_check(spec).ok  # INV6 has connection scope: only the run can check it
    result = run_properties(spec, examples=200)
    assert not result.ok and result.failure is not None
    assert "INV6" in result.failure and "state.acquire(" in result.failure


def test_an_unknown_facade_is_refused():
    with pytest.raises(InvalidInputError, match="facade must be sync or async"):
        manager_machine(default_spec(), facade="threads")


def test_the_connect_failed_rule_records_refused_reconnects_and_the_406_grace():
    # One history, step by step, with the machine's own rules: a drop, then a 406 with a tiny
    # connection_limit_grace fails the lifecycle; the trail conforms throughout.
    machine = manager_machine(default_spec())()
    try:
        machine.start_manager(drain_grace=0.0, limit_grace=0.01)
        account = ACCOUNTS[0]
        lease = machine.acquire(account, market=True, symbols=["AAPL"], auto_connect=True,
                                hang=False)
        machine.connection_lost(0)
        machine.connect_failed(0, "refused", 1)
        machine.connect_failed(0, "connection_limit", 2)
        machine.audit_trail_conforms_to_the_spec()
        assert wait_until(lambda: lease.status is LeaseStatus.REVOKED)
        refused = [r for r in machine.sink.records() if r.event == "reconnect_failed"]
        assert [(r.details["attempt"], r.details["cause"]) for r in refused] == [
            (1, "refused"), (2, "connection_limit")]
        (failed,) = [r for r in machine.sink.records() if r.event == "start_failed"]
        assert failed.error_type == "ConnectionLimitError"
        machine.spec_invariants_hold()
    finally:
        machine.teardown()
