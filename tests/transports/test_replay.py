"""The gap replay on its own: each update delivered once, replayed ones oldest first and before
the live ones held back meanwhile, failures reported. Fetches are plain coroutines handed in
(the end-to-end path over HTTP is tests/runtime/test_trade_replay.py)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from alpaca.trading.models import TradeUpdate

from streamwarden.errors import ReplayError
from streamwarden.simulator import orders
from streamwarden.tradeupdates import ReplayedTradeUpdate, identity, replayed
from streamwarden.transports import ReplayReport
from streamwarden.transports._replay import MAX_EVENTS, SKEW_SECONDS, GapReplay, events_fetcher

T0 = datetime(2026, 11, 30, 15, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.moment = T0

    def now(self) -> datetime:
        return self.moment

    def monotonic(self) -> float:
        return 0.0


def data(order_id: str, seconds: int) -> dict[str, Any]:
    """One fill of order ``order_id`` at T0 + ``seconds``: the same event on every call."""
    return dict(_fill(order_id, seconds))


@functools.cache
def _fill(order_id: str, seconds: int) -> Mapping[str, Any]:
    fill = orders.OrderFill(symbol="AAPL", side="buy", qty=Decimal(1), price=Decimal("10"),
                            client_order_id=order_id)
    return orders.trade_update("fill", fill, now=T0 + timedelta(seconds=seconds))["data"]


def event(update: Mapping[str, Any], event_id: str) -> dict[str, Any]:
    return {**update, "event_id": event_id}


class Harness:
    """A GapReplay whose fetch answers from ``events`` (or raises ``error``), once ``gate`` is
    set, recording what it is asked for."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.events: list[Mapping[str, Any]] = []
        self.error: ReplayError | None = None
        self.gate = asyncio.Event()
        self.gate.set()
        self.asked: list[tuple[datetime, datetime]] = []
        self.delivered: list[Any] = []
        self.reports: list[ReplayReport] = []
        self.replay = GapReplay(self.fetch, self.delivered.append, self.reports.append,
                                self.clock)

    async def fetch(self, since: datetime, until: datetime) -> list[Mapping[str, Any]]:
        self.asked.append((since, until))
        await self.gate.wait()
        if self.error is not None:
            raise self.error
        return self.events

    def ids(self) -> list[tuple[str, bool]]:
        return [(u.order.client_order_id, isinstance(u, ReplayedTradeUpdate))
                for u in self.delivered]

    async def finish(self) -> None:
        task = self.replay._task
        assert task is not None
        await asyncio.wait_for(task, 5)


def test_after_a_reconnect_the_gap_is_replayed_once_and_before_the_held_live_updates():
    async def scenario() -> Harness:
        h = Harness()
        h.replay.connected()  # first connect: nothing to replay, the window starts now
        assert h.asked == [] and not h.replay.replaying
        first = TradeUpdate(**data("live-1", 1))
        h.replay.live(first)
        h.clock.moment = T0 + timedelta(seconds=30)
        h.events = [event(data("live-1", 1), "01A"), event(data("gap-1", 5), "01B"),
                    event(data("gap-2", 6), "01C"), {"event": "fill"}]  # last: unreadable
        h.gate.clear()
        h.replay.connected()
        assert h.replay.replaying
        h.replay.connected()  # a second reconnect while replaying starts no second fetch
        h.replay.live(TradeUpdate(**data("live-2", 31)))  # held back behind the replay
        h.replay.live(TradeUpdate(**data("gap-2", 6)))  # also replayed: delivered once
        assert h.ids() == [("live-1", False)]
        h.gate.set()
        await h.finish()
        return h

    h = asyncio.run(scenario())
    assert h.asked == [(T0 + timedelta(seconds=1), T0 + timedelta(seconds=30 + SKEW_SECONDS))]
    assert h.ids() == [("live-1", False), ("gap-1", True), ("gap-2", True), ("live-2", False)]
    (report,) = h.reports
    assert (report.replayed, report.duplicates, report.unreadable, report.error) == (
        2, 1, 1, None)
    assert report.details() == {
        "since": "2026-11-30T15:00:01.000000Z", "until": "2026-11-30T15:00:35.000000Z",
        "replayed": 2, "duplicates": 1, "unreadable": 1, "first_event_id": "01B",
        "last_event_id": "01C"}


def test_without_a_delivered_update_the_window_starts_at_the_first_connect():
    async def scenario() -> Harness:
        h = Harness()
        h.replay.connected()
        h.clock.moment = T0 + timedelta(seconds=10)
        h.replay.connected()
        await h.finish()
        return h

    h = asyncio.run(scenario())
    assert h.asked == [(T0, T0 + timedelta(seconds=10 + SKEW_SECONDS))]
    assert h.reports[0].details() == {"since": "2026-11-30T15:00:00.000000Z",
                                      "until": "2026-11-30T15:00:15.000000Z", "replayed": 0,
                                      "duplicates": 0}


def test_a_failed_fetch_is_reported_and_the_held_updates_still_delivered():
    async def scenario() -> Harness:
        h = Harness()
        h.error = ReplayError("the trade events API answered HTTP 403")
        h.replay.connected()
        h.gate.clear()
        h.replay.connected()
        h.replay.live(TradeUpdate(**data("live-1", 1)))
        h.gate.set()
        await h.finish()
        return h

    h = asyncio.run(scenario())
    assert h.ids() == [("live-1", False)]
    assert h.reports[0].error is not None and "403" in h.reports[0].error.message


def test_a_long_gap_is_cut_and_reported_as_truncated():
    async def scenario() -> Harness:
        h = Harness()
        h.events = [event(data(f"o-{n}", 1), f"{n:026d}") for n in range(MAX_EVENTS + 1)]
        h.replay.connected()
        h.replay.connected()
        await h.finish()
        return h

    h = asyncio.run(scenario())
    (report,) = h.reports
    assert report.replayed == MAX_EVENTS and report.details()["truncated"] is True


def test_stop_cancels_a_running_replay_and_reports_nothing():
    async def scenario() -> Harness:
        h = Harness()
        h.replay.connected()
        h.gate.clear()
        h.replay.connected()
        await asyncio.sleep(0)
        await h.replay.stop()
        await h.replay.stop()  # idempotent
        return h

    h = asyncio.run(scenario())
    assert h.reports == [] and not h.replay.replaying


def test_identity_ignores_the_event_id_and_replayed_refuses_what_is_not_an_event():
    update = TradeUpdate(**data("o-1", 1))
    again = replayed(event(data("o-1", 1), "01A"))
    assert identity(update) == identity(again) and again.event_id == "01A"
    with pytest.raises(ValueError, match="without an event_id"):
        replayed(data("o-1", 1))
    with pytest.raises(ValueError, match="unreadable trade event"):
        replayed({"event_id": "01A", "event": "fill"})


def test_the_fetcher_reports_an_unreachable_api_as_a_replay_error():
    fetch = events_fetcher("http://127.0.0.1:9", {"APCA-API-KEY-ID": "k"}, timeout=2.0)
    with pytest.raises(ReplayError, match="unreachable: ConnectionError"):
        asyncio.run(fetch(T0, T0))
