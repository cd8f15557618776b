"""Faults: validation, the --fault syntax, and the description."""

from __future__ import annotations

import pytest

from streamwarden.simulator import Faults


def test_default_injects_nothing() -> None:
    assert Faults().active == ()
    assert Faults().describe() == "none"


def test_parse_every_fault() -> None:
    faults = Faults.parse(["auth_failure", "connection-limit", "symbol_limit",
                           "insufficient_subscription", "hang_on_close", "drop_once=3",
                           "slow_start=0.25"])
    assert faults == Faults(auth_failure=True, connection_limit=True, symbol_limit=True,
                            insufficient_subscription=True, hang_on_close=True, drop_after=3,
                            drop_once=True, slow_start=0.25)
    assert faults.describe() == ("auth_failure, connection_limit, symbol_limit, "
                                 "insufficient_subscription, hang_on_close, drop_once=3, "
                                 "slow_start=0.25")
    assert Faults.parse(["drop_after=2"]).active == ("drop_after=2",)


@pytest.mark.parametrize(("specs", "message"), [
    (["teleport"], "unknown fault 'teleport'"),
    (["auth_failure=1"], "takes no value"),
    (["auth_failure", "auth_failure"], "given twice"),
    (["drop_after"], "needs a value"),
    (["drop_after="], "needs a value"),
    (["drop_after=x"], "needs a whole number"),
    (["drop_after=0"], "at least 1"),
    (["drop_after=1", "drop_once=2"], "given twice"),
    (["slow_start=soon"], "needs seconds"),
    (["slow_start=-1"], ">= 0"),
    (["slow_start=nan"], ">= 0"),
    (["slow_start=1", "slow_start=2"], "given twice"),
])
def test_bad_specs_are_one_line_errors(specs: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message) as raised:
        Faults.parse(specs)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("kwargs", [
    {"drop_after": 0}, {"drop_after": True}, {"drop_once": True},
    {"slow_start": -0.1}, {"slow_start": float("inf")},
])
def test_invalid_construction(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Faults(**kwargs)  # type: ignore[arg-type]
