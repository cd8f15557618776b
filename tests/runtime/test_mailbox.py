"""The delivery queue on its own: conflation, ages, latest values and wake-ups (no network)."""

from __future__ import annotations

import itertools
import threading
import time
from datetime import UTC, datetime
from decimal import Decimal

import structlog

from streamwarden.marketdata import TradeCorrection
from streamwarden.runtime._arrivals import group
from streamwarden.runtime._delivery import Mailbox, wake
from streamwarden.runtime._stats import CallbackStats, StreamCounters
from streamwarden.transports._contract import StreamMessage


def mailbox(callbacks: dict[str, object] | None = None) -> Mailbox:
    return Mailbox(lease_id="L1", owner=None, capacity=4, callbacks=callbacks or {}, pool=None,
                   on_overflow=lambda _: None, log=structlog.get_logger(),
                   counters=StreamCounters())


_SEQUENCE = itertools.count()


def put(box: Mailbox, message: StreamMessage, now: float | None = None) -> None:
    """Put one message, as the supervisor puts a group of one."""
    [(_, arrivals)] = group([message], _SEQUENCE, time.monotonic() if now is None else now)
    waiters = box.put(arrivals)
    if waiters:
        wake(waiters)


def quote(symbol: str, value: int) -> StreamMessage:
    return StreamMessage("quotes", symbol, (symbol, value))


def test_a_newer_quote_replaces_the_queued_one_in_its_place_and_keeps_its_age():
    box = mailbox()
    put(box, quote("AAPL", 1), now=100.0)
    put(box, StreamMessage("trades", "AAPL", "t1"), now=101.0)
    put(box, quote("MSFT", 1), now=102.0)
    put(box, quote("AAPL", 2), now=103.0)
    assert box.stats().depth == 3
    assert box.dropped == 1
    assert box._take_oldest() == ("quotes", ("AAPL", 2))
    assert box._take_oldest() == ("trades", "t1")
    assert box._take_oldest() == ("quotes", ("MSFT", 1))
    assert box._take_oldest() is None


def test_the_oldest_age_counts_from_the_arrival_time_given():
    box = mailbox()
    put(box, quote("AAPL", 1), now=time.monotonic() - 5.0)
    put(box, quote("AAPL", 2))
    stats = box.stats()
    assert stats.oldest_age is not None and stats.oldest_age >= 5.0


def test_latest_values_are_kept_per_pair_and_forgotten_on_unsubscribe():
    box = mailbox({"quotes": lambda _: None})
    put(box, quote("AAPL", 1))
    put(box, StreamMessage("trades", "AAPL", "t1"))  # not for a callback: latest only
    put(box, StreamMessage("bars", "AAPL", "b1"))
    assert box.latest(("quotes", "AAPL")) == ("AAPL", 1)
    assert box.latest(("trades", "AAPL")) == "t1"
    assert box.latest(("bars", "AAPL")) is None
    assert box.stats().depth == 1
    box.forget(frozenset({("quotes", "AAPL"), ("bars", "AAPL")}))
    assert box.latest(("quotes", "AAPL")) is None
    assert box.latest(("trades", "AAPL")) == "t1"


def test_a_conflated_quote_wakes_a_waiter_for_the_latest_value():
    box = mailbox()
    put(box, quote("AAPL", 1))
    box.forget(frozenset({("quotes", "AAPL")}))  # the queued quote stays, the latest is gone
    got: list[object] = []
    waiter = threading.Thread(target=lambda: got.append(box.wait_latest(("quotes", "AAPL"), 5)))
    waiter.start()
    time.sleep(0.05)
    put(box, quote("AAPL", 2))
    waiter.join(5)
    assert got == [("AAPL", 2)]


def test_callbacks_run_in_order_and_a_closed_mailbox_takes_nothing():
    seen: list[object] = []
    box = mailbox({"quotes": seen.append, "trades": seen.append})
    put(box, quote("AAPL", 1))
    put(box, StreamMessage("trades", "AAPL", "t1"))
    put(box, quote("MSFT", 1))
    stats = CallbackStats()
    assert box.run_callbacks(stats) is False
    assert seen == [("AAPL", 1), "t1", ("MSFT", 1)]
    assert stats.durations.snapshot().count == 3
    assert box.delivered == 3
    box.close(None)
    put(box, quote("AAPL", 2))
    assert box.stats().depth == 0


def put_together(box: Mailbox, messages: list[StreamMessage], now: float = 100.0) -> None:
    """Put ``messages`` as the supervisor does with the messages of one loop turn."""
    for _, arrivals in group(messages, _SEQUENCE, now):
        waiters = box.put(arrivals)
        if waiters:
            wake(waiters)


def test_messages_that_arrive_together_are_taken_in_their_arrival_order_across_channels():
    box = mailbox()
    put_together(box, [StreamMessage("trades", "AAPL", "t1"), StreamMessage("bars", "AAPL", "b1"),
                       StreamMessage("trades", "AAPL", "t2"), StreamMessage("bars", "MSFT", "b2")])
    taken = [box._take_oldest() for _ in range(4)]
    assert taken == [("trades", "t1"), ("bars", "b1"), ("trades", "t2"), ("bars", "b2")]


def test_a_group_of_quotes_conflates_to_its_newest_and_counts_the_others_as_dropped():
    box = mailbox()
    put(box, quote("AAPL", 0))  # queued already: every quote of the group replaces a queued one
    put_together(box, [quote("AAPL", 1), quote("MSFT", 1), quote("AAPL", 2), quote("AAPL", 3)])
    assert box.dropped == 3
    assert box._take_oldest() == ("quotes", ("AAPL", 3))
    assert box._take_oldest() == ("quotes", ("MSFT", 1))
    assert box._take_oldest() is None
    put_together(box, [quote("AAPL", 4), quote("AAPL", 5)])  # none queued: one of two dropped
    assert box.dropped == 4
    assert box.latest(("quotes", "AAPL")) == ("AAPL", 5)


def test_a_group_bigger_than_the_capacity_keeps_the_newest_and_counts_the_rest():
    box = mailbox()  # capacity 4
    put(box, StreamMessage("trades", "AAPL", "t0"))
    put_together(box, [StreamMessage("trades", "AAPL", f"t{n}") for n in range(1, 7)])
    assert box.dropped == 3
    assert [box._take_oldest() for _ in range(5)] == [
        ("trades", "t3"), ("trades", "t4"), ("trades", "t5"), ("trades", "t6"), None]


def test_the_latest_trade_of_a_group_is_its_newest_trade_never_a_correction():
    correction = TradeCorrection("AAPL", 1, Decimal(1), Decimal(1), 2, Decimal(2), Decimal(1),
                                 datetime(2026, 1, 2, tzinfo=UTC))
    box = mailbox()
    put_together(box, [StreamMessage("trades", "AAPL", "t1"),
                       StreamMessage("trades", "AAPL", correction)])
    assert box.latest(("trades", "AAPL")) == "t1"
    put_together(box, [StreamMessage("trades", "AAPL", correction)])
    assert box.latest(("trades", "AAPL")) == "t1"


def test_a_group_of_trade_updates_past_the_capacity_queues_what_fits_and_overflows():
    overflowed: list[Mailbox] = []
    box = Mailbox(lease_id="L1", owner=None, capacity=2, callbacks={}, pool=None,
                  on_overflow=overflowed.append, log=structlog.get_logger(),
                  counters=StreamCounters())
    put_together(box, [StreamMessage("trade_updates", None, f"u{n}") for n in range(2)])
    assert overflowed == [] and box.stats().depth == 2
    put_together(box, [StreamMessage("trade_updates", None, "u2")])
    assert overflowed == [box] and box.dropped == 0
    assert [box._take_oldest() for _ in range(3)] == [
        ("trade_updates", "u0"), ("trade_updates", "u1"), None]


def test_poll_takes_the_next_queued_message_without_waiting_and_nothing_once_closed():
    box = mailbox()
    assert box.poll("trades") == (False, None)
    put(box, StreamMessage("trades", "AAPL", "t1"))
    assert box.poll("trades") == (True, "t1")
    assert box.delivered == 1
    put(box, StreamMessage("trades", "AAPL", "t2"))
    box.close(None)
    assert box.poll("trades") == (False, None)


def test_readers_of_many_mailboxes_on_one_loop_are_woken_by_one_call_into_it():
    import asyncio  # noqa: PLC0415

    boxes = [mailbox() for _ in range(3)]

    async def scenario() -> list[object]:
        loop = asyncio.get_running_loop()
        calls: list[object] = []
        original = loop.call_soon_threadsafe

        def counted(callback, *args):  # type: ignore[no-untyped-def]
            calls.append(callback)
            return original(callback, *args)

        loop.call_soon_threadsafe = counted  # type: ignore[method-assign]
        readers = [asyncio.ensure_future(box.aget("trades", 5.0)) for box in boxes]
        await asyncio.sleep(0)  # every reader waits
        woken = []
        for index, box in enumerate(boxes):
            [(_, arrivals)] = group([StreamMessage("trades", "AAPL", f"t{index}")], _SEQUENCE,
                                    time.monotonic())
            woken += box.put(arrivals) or []
        assert len(woken) == 3 and calls == []
        wake(woken)
        results = await asyncio.gather(*readers)
        assert len(calls) == 1
        return results

    assert asyncio.run(scenario()) == ["t0", "t1", "t2"]
