"""The simulator's trade events API: Alpaca's ``GET /v2/events/trades`` server-sent events.

Every trade update the simulator publishes is kept (the newest ``capacity`` of them) with an
``event_id``, a ULID that sorts in publication order, so that a client that missed updates while
its trading stream was down can fetch them::

    GET /v2/events/trades?since=2026-11-30T14:30:00Z&until=2026-11-30T14:31:00Z
    GET /v2/events/trades?since_id=01J...&until_id=01J...
    APCA-API-KEY-ID: ...
    APCA-API-SECRET-KEY: ...

The answer is ``text/event-stream``: one ``data: {json}`` line per event, oldest first, each the
trade update's fields (``event``, ``order``, ``timestamp``, ...) plus ``event_id`` and ``at``.
Alpaca's rules on the query are kept: ``until`` needs ``since``, ``until_id`` needs ``since_id``,
``since`` and ``since_id`` exclude each other (400 otherwise); bad credentials get 401. Bounds
are inclusive. One difference, documented: without ``until``/``until_id`` Alpaca keeps the
stream open and pushes new events; the simulator ends the answer after the history.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Mapping
from datetime import datetime
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from ulid import ULID

from streamwarden.simulator.accounts import Accounts

if TYPE_CHECKING:
    from websockets.asyncio.server import ServerConnection
    from websockets.http11 import Request, Response

EVENTS_PATH = "/v2/events/trades"
"""Where the trade events are served."""
KEY_HEADER = "APCA-API-KEY-ID"
SECRET_HEADER = "APCA-API-SECRET-KEY"


class TradeEventLog:
    """The trade updates published so far, each with its event id; the oldest are forgotten
    past ``capacity``.

    Thread-safety: thread-safe (the simulator appends from its callers' threads, the server
    reads on its loop).
    """

    def __init__(self, capacity: int) -> None:
        self._events: deque[dict[str, Any]] = deque(maxlen=capacity)
        self._last = ULID.from_int(0)
        self._lock = threading.Lock()

    def append(self, update: Mapping[str, Any], at: datetime) -> str:
        """Keep ``update`` (a trade update's ``data``) as published at ``at``; returns its
        event id."""
        with self._lock:
            candidate = ULID.from_datetime(at)
            event_id = candidate if candidate > self._last else ULID.from_int(int(self._last) + 1)
            self._last = event_id
            self._events.append({**update, "event_id": str(event_id),
                                 "at": at.isoformat(timespec="microseconds")
                                 .replace("+00:00", "Z")})
            return str(event_id)

    def window(self, query: Mapping[str, str]) -> list[dict[str, Any]]:
        """The events ``query`` selects (see the module's rules), oldest first.

        Raises:
            ValueError: the query breaks a rule or holds an unreadable time or id.
        """
        since, until = _moment(query.get("since")), _moment(query.get("until"))
        since_id, until_id = query.get("since_id"), query.get("until_id")
        if until is not None and since is None:
            raise ValueError("until requires since")
        if until_id is not None and since_id is None:
            raise ValueError("until_id requires since_id")
        if since is not None and since_id is not None:
            raise ValueError("since and since_id cannot be used together")
        with self._lock:
            events = list(self._events)
        if since_id is not None:
            low, high = str(ULID.from_str(since_id)), until_id and str(ULID.from_str(until_id))
            return [e for e in events
                    if e["event_id"] >= low and (high is None or e["event_id"] <= high)]
        if since is None:
            return []  # Alpaca sends no history without since or since_id
        return [e for e in events if _within(_moment(e["at"]), since, until)]


def _within(moment: datetime | None, since: datetime, until: datetime | None) -> bool:
    return moment is not None and since <= moment and (until is None or moment <= until)


def _moment(value: str | None) -> datetime | None:
    if value is None:
        return None
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"time without a timezone: {value!r}")
    return moment


def respond(connection: ServerConnection, request: Request, log: TradeEventLog,
            accounts: Accounts) -> Response:
    """The HTTP answer to a trade events request."""
    headers = request.headers
    if not accounts.accepts(headers.get(KEY_HEADER), headers.get(SECRET_HEADER)):
        return _json(connection, HTTPStatus.UNAUTHORIZED,
                     {"code": 40110000, "message": "request is not authorized"})
    query = {name: values[-1] for name, values in
             parse_qs(urlsplit(request.path).query, keep_blank_values=True).items()}
    try:
        events = log.window(query)
    except ValueError as exc:
        return _json(connection, HTTPStatus.BAD_REQUEST, {"code": 40010000, "message": str(exc)})
    body = "".join(f"data: {json.dumps(event, separators=(',', ':'))}\n\n" for event in events)
    response = connection.respond(HTTPStatus.OK, body)
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = "text/event-stream"
    return response


def _json(connection: ServerConnection, status: HTTPStatus, body: Mapping[str, Any]) -> Response:
    response = connection.respond(status, json.dumps(body) + "\n")
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = "application/json"
    return response
