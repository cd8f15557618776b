"""Malformed messages as a lifecycle sees them: counted in health, logged with a throttle.

The in-memory transport reports them (the same over alpaca-py and the simulator is in
tests/transports/test_malformed.py); the throttle is checked on its own with a hand-driven clock.
"""

from __future__ import annotations

import logging

import pytest

from streamwarden.logging import LOGGER_NAME, MALFORMED_MESSAGE
from streamwarden.runtime import _supervisor
from streamwarden.runtime._throttle import LogThrottle
from streamwarden.transports import MalformedMessage
from tests.waiting import wait_until

BAD = MalformedMessage("quotes", "AAPL", "bp", "not finite")


def test_each_report_is_counted_and_a_flood_is_logged_throttled(manager, factory, creds, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER_NAME)
    lease = manager.market_data(creds, symbols=["AAPL"])
    flood = _supervisor.MALFORMED_LOG_LINES * 3
    for _ in range(flood):
        assert factory.latest().emit_malformed(BAD)
    assert manager.health().lifecycles[0].malformed_messages == flood
    lines = [r for r in caplog.records if MALFORMED_MESSAGE in r.getMessage()]
    assert len(lines) == _supervisor.MALFORMED_LOG_LINES == 5  # as README and docs promise
    assert _supervisor.MALFORMED_LOG_WINDOW_SECONDS == 10.0
    assert all(r.levelno == logging.WARNING for r in lines)
    assert "channel='quotes'" in lines[0].getMessage() and "field='bp'" in lines[0].getMessage()
    lease.release()


def test_a_report_after_the_lifecycle_ended_changes_nothing(manager, factory, creds):
    lease = manager.market_data(creds, symbols=["AAPL"])
    transport = factory.latest()
    supervisor_events = transport._events  # the lifecycle's TransportEvents
    lease.release()
    assert wait_until(lambda: manager.health().lifecycles == ())
    assert supervisor_events is not None
    supervisor_events.on_malformed(BAD)  # a straggler of the old socket
    assert supervisor_events.malformed_messages == 0  # type: ignore[attr-defined]


class Ticks:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("per_window", [1, 3])
def test_the_throttle_lets_a_few_through_per_window_and_counts_the_rest(per_window):
    clock = Ticks()
    throttle = LogThrottle(clock, per_window=per_window, window=10.0)
    assert [throttle.admit() for _ in range(per_window)] == [0] * per_window
    assert [throttle.admit() for _ in range(7)] == [None] * 7  # held back
    clock.now += 9.9
    assert throttle.admit() is None  # still the same window
    clock.now += 0.1
    assert throttle.admit() == 8  # a new window: the first line says how many were held back
    assert throttle.admit() == (0 if per_window > 1 else None)
