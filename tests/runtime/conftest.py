"""Fixtures for the runtime tests: the simulator, settings pointing at it, accounts.

These tests drive the real alpaca-py SDK against :class:`streamwarden.simulator.Simulator` on
127.0.0.1 through the public API only (``import streamwarden as sw``). Several were written
before the runtime rebuild of issue 9, failed on the old runtime for the reasons its issue
measured, and pass on the engine.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

import streamwarden as sw
from streamwarden.simulator import MARKET_DATA, Simulator, SimulatorStats

BOUND = 5.0
"""Generous bound for behaviour that normally takes milliseconds."""


def account(number: int) -> sw.Credentials:
    """The credentials of test account ``number`` (the simulator accepts any non-empty pair)."""
    return sw.Credentials(f"PKRUNTIMETEST{number:07d}", f"runtime-secret-{number:04d}-x")


def open_market_data(stats: SimulatorStats, credentials: sw.Credentials) -> int:
    """How many market-data sockets of ``credentials``' account the simulator has open."""
    return sum(1 for connection in stats.open_connections(MARKET_DATA)
               if connection.key_id == credentials.api_key_id)


def sim_settings(sim: Simulator, **overrides: object) -> sw.Settings:
    """Settings pointing both streams and the trade events API at ``sim``, with short bounds
    unless overridden."""
    values: dict[str, object] = {"start_timeout": 3.0, "stop_timeout": 1.0, "drain_grace": 0.0,
                                 "market_data_url": sim.market_data_url,
                                 "trade_updates_url": sim.trade_updates_url,
                                 "trading_api_url": sim.trading_api_url}
    values.update(overrides)
    return sw.Settings(**values)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(reaper_window=0) as simulator:
        yield simulator


@pytest.fixture
def unblock() -> Iterator[threading.Event]:
    """An event that every deliberately blocking callback waits on; set at teardown, so that no
    thread stays blocked and the interpreter can exit."""
    event = threading.Event()
    yield event
    event.set()
