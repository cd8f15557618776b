"""Delivery to a lease that joins a running connection (issue 9, point 5), over alpaca-py."""

from __future__ import annotations

import threading
from collections import defaultdict

import pytest

import streamwarden as sw
from streamwarden.simulator import Simulator
from tests.runtime.conftest import BOUND, account, sim_settings
from tests.waiting import wait_until

SYMBOLS = [f"NEW{letter}" for letter in "ABCDEFGHIJ"]


@pytest.mark.timeout(60)
def test_second_lease_gets_its_first_quote(sim: Simulator) -> None:
    received: defaultdict[str, list[int]] = defaultdict(list)
    guard = threading.Lock()

    def on_quote(quote: sw.Quote) -> None:
        with guard:
            received[quote.symbol].append(int(quote.bid_size))

    creds = account(1)
    reached: dict[str, int] = {}
    with sw.ConnectionManager(settings=sim_settings(sim)) as manager:
        manager.market_data(creds, symbols=["AAPL"], owner="first")  # the running connection
        for symbol in SYMBOLS:  # each a second lease, for a symbol nobody subscribed yet
            manager.market_data(creds, symbols=[symbol], on_quote=on_quote, owner=symbol)
            reached[symbol] = sim.publish_quote(symbol, bid_price="10.00", ask_price="10.01",
                                                bid_size=1)
        # Later quotes do arrive once the wire has caught up: only the first ones are at stake.
        sim.wait_for(lambda stats: set(SYMBOLS) <= stats.wire_subscription("quotes"), BOUND)
        for symbol in SYMBOLS:
            sim.publish_quote(symbol, bid_price="10.00", ask_price="10.01", bid_size=2)
        assert wait_until(lambda: all(2 in received[symbol] for symbol in SYMBOLS), BOUND)
        assert sim.stats().kind("market_data").opened == 1

    lost = [symbol for symbol in SYMBOLS if received[symbol][:1] != [1]]
    assert lost == [], (f"{len(lost)} of {len(SYMBOLS)} leases missed their first quote; "
                        f"connections each first quote reached: {reached}")
