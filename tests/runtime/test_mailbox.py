"""The delivery queue on its own: conflation, ages, latest values and wake-ups (no network)."""

from __future__ import annotations

import threading
import time

import structlog

from streamwarden.runtime._delivery import Mailbox
from streamwarden.runtime._stats import CallbackStats, StreamCounters
from streamwarden.transports._contract import StreamMessage


def mailbox(callbacks: dict[str, object] | None = None) -> Mailbox:
    return Mailbox(lease_id="L1", owner=None, capacity=4, callbacks=callbacks or {}, pool=None,
                   on_overflow=lambda _: None, log=structlog.get_logger(),
                   counters=StreamCounters())


def quote(symbol: str, value: int) -> StreamMessage:
    return StreamMessage("quotes", symbol, (symbol, value))


def test_a_newer_quote_replaces_the_queued_one_in_its_place_and_keeps_its_age():
    box = mailbox()
    box.put(quote("AAPL", 1), now=100.0)
    box.put(StreamMessage("trades", "AAPL", "t1"), now=101.0)
    box.put(quote("MSFT", 1), now=102.0)
    box.put(quote("AAPL", 2), now=103.0)
    assert box.stats().depth == 3
    assert box.dropped == 1
    assert box._take_oldest() == ("quotes", ("AAPL", 2))
    assert box._take_oldest() == ("trades", "t1")
    assert box._take_oldest() == ("quotes", ("MSFT", 1))
    assert box._take_oldest() is None


def test_the_oldest_age_counts_from_the_arrival_time_given():
    box = mailbox()
    box.put(quote("AAPL", 1), now=time.monotonic() - 5.0)
    box.put(quote("AAPL", 2))
    stats = box.stats()
    assert stats.oldest_age is not None and stats.oldest_age >= 5.0


def test_latest_values_are_kept_per_pair_and_forgotten_on_unsubscribe():
    box = mailbox({"quotes": lambda _: None})
    box.put(quote("AAPL", 1))
    box.put(StreamMessage("trades", "AAPL", "t1"))  # not for a callback: latest only
    box.put(StreamMessage("bars", "AAPL", "b1"))
    assert box.latest(("quotes", "AAPL")) == ("AAPL", 1)
    assert box.latest(("trades", "AAPL")) == "t1"
    assert box.latest(("bars", "AAPL")) is None
    assert box.stats().depth == 1
    box.forget(frozenset({("quotes", "AAPL"), ("bars", "AAPL")}))
    assert box.latest(("quotes", "AAPL")) is None
    assert box.latest(("trades", "AAPL")) == "t1"


def test_a_conflated_quote_wakes_a_waiter_for_the_latest_value():
    box = mailbox()
    box.put(quote("AAPL", 1))
    box.forget(frozenset({("quotes", "AAPL")}))  # the queued quote stays, the latest is gone
    got: list[object] = []
    waiter = threading.Thread(target=lambda: got.append(box.wait_latest(("quotes", "AAPL"), 5)))
    waiter.start()
    time.sleep(0.05)
    box.put(quote("AAPL", 2))
    waiter.join(5)
    assert got == [("AAPL", 2)]


def test_callbacks_run_in_order_and_a_closed_mailbox_takes_nothing():
    seen: list[object] = []
    box = mailbox({"quotes": seen.append, "trades": seen.append})
    box.put(quote("AAPL", 1))
    box.put(StreamMessage("trades", "AAPL", "t1"))
    box.put(quote("MSFT", 1))
    stats = CallbackStats()
    assert box.run_callbacks(stats) is False
    assert seen == [("AAPL", 1), "t1", ("MSFT", 1)]
    assert stats.durations.snapshot().count == 3
    assert box.delivered == 3
    box.close(None)
    box.put(quote("AAPL", 2))
    assert box.stats().depth == 0
