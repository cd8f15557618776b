"""Threads per manager stay constant as connections grow, and none outlive close() (issue 9)."""

from __future__ import annotations

import threading

import pytest

import streamwarden as sw
from streamwarden.simulator import MARKET_DATA, TRADE_UPDATES, Simulator
from tests.runtime.conftest import BOUND, account, sim_settings
from tests.waiting import wait_until

ACCOUNTS = 8


def thread_names(threads: set[threading.Thread]) -> list[str]:
    return sorted(thread.name for thread in threads)


@pytest.mark.timeout(60)
def test_threads_do_not_grow_with_connections(sim: Simulator) -> None:
    accounts = [account(number) for number in range(1, ACCOUNTS + 1)]
    delivered = threading.Semaphore(0)

    def streaming(manager: sw.ConnectionManager, creds: sw.Credentials) -> None:
        """A lease on ``creds``' connection, counted once a quote went through its callback
        (so that whatever runs callbacks has started too)."""
        manager.market_data(creds, symbols=["AAPL"], on_quote=lambda quote: delivered.release())
        sim.publish_quote("AAPL", bid_price="100.00", ask_price="100.02")
        assert delivered.acquire(timeout=BOUND)

    with sw.ConnectionManager(settings=sim_settings(sim)) as manager:
        streaming(manager, accounts[0])
        with_one = set(threading.enumerate())
        for creds in accounts[1:]:
            streaming(manager, creds)
        assert len(sim.stats().open_connections(MARKET_DATA)) == ACCOUNTS
        with_all = set(threading.enumerate())
    added = len(with_all) - len(with_one)
    assert added == 0, (
        f"{len(with_one)} threads with 1 connection, {len(with_all)} with {ACCOUNTS}; new: "
        f"{thread_names(with_all - with_one)}")


@pytest.mark.timeout(60)
def test_no_thread_outlives_close(sim: Simulator) -> None:
    before = set(threading.enumerate())
    manager = sw.ConnectionManager(settings=sim_settings(sim))
    for number in range(1, ACCOUNTS + 1):
        creds = account(number)
        manager.market_data(creds, symbols=["AAPL"])
        manager.trade_updates(creds, on_update=lambda update: None)
    manager.close()
    assert wait_until(lambda: set(threading.enumerate()) <= before, timeout=BOUND), (
        f"still running after close(): {thread_names(set(threading.enumerate()) - before)}")
    sim.wait_for(lambda stats: stats.kind(MARKET_DATA).open == stats.kind(TRADE_UPDATES).open == 0,
                 BOUND)
