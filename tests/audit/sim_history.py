"""An audit trail written by a real manager over the real alpaca-py SDK and the project's
simulator: several owners (one of them hostile markup), a dropped socket and its reconnect,
and a start refused by the server. The HTML report's tests draw it."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from streamwarden import AuditSink, AuthenticationError, ConnectionManager, Credentials, Settings
from streamwarden.simulator import Faults, Simulator
from tests.waiting import wait_until

HOSTILE_OWNER = "<img src=x onerror=alert(1)>"
OWNERS = ("momentum", "pairs", HOSTILE_OWNER, "executor")


@dataclass(frozen=True)
class SimHistory:
    """The lifecycle ids of the market-data (dropped once) and first trade-updates
    connections."""

    market_data: str
    trade_updates: str


def _ignore(update: object) -> None:
    del update


def run_sim_history(sink: AuditSink, creds: Credentials) -> SimHistory:
    """Three owners share market data, one takes trade updates; the market-data socket is
    dropped and comes back; everyone releases; a second trade-updates start is refused
    (AuthenticationError, ``start_failed``); the manager closes, so every lifecycle stops."""
    with Simulator(port=0, reaper_window=0) as sim:
        settings = Settings(market_data_url=sim.market_data_url,
                            trade_updates_url=sim.trade_updates_url, start_timeout=3.0,
                            stop_timeout=1.0)
        with ConnectionManager(audit=sink, settings=settings) as manager:
            momentum = manager.market_data(creds, symbols=["AAPL"], owner="momentum",
                                           correlation_id="run-1")
            pairs = manager.market_data(creds, symbols=["MSFT"], owner="pairs",
                                        correlation_id="run-2")
            hostile = manager.market_data(creds, symbols=["SPY"], owner=HOSTILE_OWNER,
                                          correlation_id="run-3")
            executor = manager.trade_updates(creds, on_update=_ignore, owner="executor",
                                             client_order_id_prefix="exec-",
                                             correlation_id="run-4")
            assert sim.drop_connections() == 1
            assert wait_until(lambda: manager.health().lifecycles[0].reconnects == 1
                              and manager.health().lifecycles[0].state == "running")
            pairs.release()
            executor.release()
            assert wait_until(lambda: len(manager.health().lifecycles) == 1)
            sim.set_faults(Faults(auth_failure=True))
            with pytest.raises(AuthenticationError):
                manager.trade_updates(creds, on_update=_ignore, owner="late-executor",
                                      correlation_id="run-5")
            sim.set_faults(Faults())
            momentum.release()
            hostile.release()
    return SimHistory(momentum.lifecycle_id, executor.lifecycle_id)
