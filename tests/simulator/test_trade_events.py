"""The simulator's trade events API (``GET /v2/events/trades``, server-sent events), over real
HTTP on 127.0.0.1: what it keeps, the query rules Alpaca documents, and its authentication."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from streamwarden.simulator import Simulator
from streamwarden.simulator._trade_events import TradeEventLog

KEY_ID, SECRET = "PKEVENTSAPI000000001", "events-api-secret-0001"
HEADERS = {"APCA-API-KEY-ID": KEY_ID, "APCA-API-SECRET-KEY": SECRET}
T0 = datetime(2026, 11, 30, 15, tzinfo=UTC)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(credentials={KEY_ID: SECRET}) as simulator:
        yield simulator


def _get(sim: Simulator, headers: dict[str, str] | None = None,
         **params: str) -> requests.Response:
    return requests.get(f"{sim.trading_api_url}/v2/events/trades", params=params,
                        headers=HEADERS if headers is None else headers, timeout=5)


def _events(response: requests.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "text/event-stream"
    lines = response.text.split("\n\n")
    assert lines[-1] == ""
    return [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]


def test_published_updates_are_served_oldest_first_with_sortable_ids(sim):
    start = datetime.now(UTC) - timedelta(seconds=1)
    for order_id in ("one", "two", "three"):
        sim.publish_trade_update("fill", price="10", client_order_id=order_id)
    events = _events(_get(sim, since=start.isoformat()))
    assert [e["order"]["client_order_id"] for e in events] == ["one", "two", "three"]
    ids = [e["event_id"] for e in events]
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert {e["event"] for e in events} == {"fill"} and all(e["execution_id"] for e in events)
    # since_id / until_id bounds are inclusive
    by_id = _events(_get(sim, since_id=ids[1], until_id=ids[2]))
    assert [e["event_id"] for e in by_id] == ids[1:]
    assert _events(_get(sim, since=(start + timedelta(hours=1)).isoformat())) == []


def test_without_since_no_history_is_sent(sim):
    sim.publish_trade_update("new", client_order_id="one")
    assert _events(_get(sim)) == []


@pytest.mark.parametrize(("params", "message"), [
    ({"until": "2026-11-30T15:00:00Z"}, "until requires since"),
    ({"until_id": "01M8Q9QQ2XCMG8BB2H7PGCCN4T"}, "until_id requires since_id"),
    ({"since": "2026-11-30T15:00:00Z", "since_id": "01M8Q9QQ2XCMG8BB2H7PGCCN4T"},
     "cannot be used together"),
    ({"since": "yesterday"}, "Invalid isoformat"),
    ({"since": "2026-11-30T15:00:00"}, "without a timezone"),
    ({"since_id": "not-a-ulid"}, ""),
])
def test_a_query_breaking_alpacas_rules_is_refused(sim, params, message):
    response = _get(sim, **params)
    assert response.status_code == 400
    assert message in response.json()["message"]


@pytest.mark.parametrize("headers", [{}, {"APCA-API-KEY-ID": KEY_ID},
                                     {**HEADERS, "APCA-API-SECRET-KEY": "wrong"}])
def test_bad_credentials_get_401_and_nothing_else(sim, headers):
    sim.publish_trade_update("new", client_order_id="one")
    response = _get(sim, headers, since="2000-01-01T00:00:00Z")
    assert response.status_code == 401
    assert response.json() == {"code": 40110000, "message": "request is not authorized"}


def test_the_log_keeps_the_newest_and_ids_stay_increasing_within_one_millisecond():
    log = TradeEventLog(capacity=2)
    ids = [log.append({"event": "new", "n": n}, T0) for n in range(3)]
    assert ids == sorted(ids) and len(set(ids)) == 3
    kept = log.window({"since": "2026-11-30T14:00:00Z"})
    assert [e["n"] for e in kept] == [1, 2]
    assert kept[0]["at"] == "2026-11-30T15:00:00.000000Z"
    assert log.window({"since": "2026-11-30T14:00:00Z", "until": "2026-11-30T14:59:59Z"}) == []
