"""Replaying the trade updates a trading-stream reconnect missed, from Alpaca's trade events API.

Alpaca does not resend what a trading stream missed while it was down: fills sent during the
gap are simply absent after a reconnect. Alpaca's trade events API (``GET /v2/events/trades``,
server-sent events) serves them, so after each reconnect :class:`GapReplay`

1. fetches the events from the last update it delivered (or, when none was, from the first
   time the stream connected) to now plus :data:`SKEW_SECONDS` (so that a server clock ahead of
   ours loses nothing; the overlap is removed below);
2. holds back the live updates that arrive meanwhile;
3. delivers the fetched events oldest first, each once: an event already delivered (live, or by
   an earlier replay) is skipped, by :func:`~streamwarden.tradeupdates.identity`;
4. delivers the held-back live updates, again each once, then reports a
   :class:`ReplayReport` (which the lifecycle audits).

A fetch that fails (the API unreachable, refused, too slow) is reported with its error; live
delivery goes on either way.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from streamwarden.clock import Clock
from streamwarden.errors import ReplayError
from streamwarden.tradeupdates import Identity, identity, replayed
from streamwarden.transports._contract import ReplayReport, iso

#: Seconds added to the end of the fetched window, for a server clock ahead of ours.
SKEW_SECONDS = 5.0
#: Identities of delivered updates kept to skip duplicates (the newest are kept).
REMEMBERED = 4096
#: Most events one replay fetches; a longer gap is reported as truncated.
MAX_EVENTS = 10_000
EVENTS_PATH = "/v2/events/trades"

Fetch = Callable[[datetime, datetime], Awaitable[list[Mapping[str, Any]]]]
"""Fetches the trade events of [since, until] (both inclusive), oldest first.
Raises ReplayError."""


class GapReplay:
    """Delivers a trading stream's updates each once, and replays the gap after a reconnect.

    ``deliver`` hands one update on (it must not block); ``report`` receives each replay's
    :class:`ReplayReport`.

    Thread-safety: not thread-safe; every method is called on the engine loop.
    """

    def __init__(self, fetch: Fetch, deliver: Callable[[Any], None],
                 report: Callable[[ReplayReport], None], clock: Clock) -> None:
        self._fetch = fetch
        self._deliver = deliver
        self._report = report
        self._clock = clock
        self._since: datetime | None = None
        self._seen: OrderedDict[Identity, None] = OrderedDict()
        self._held: list[Any] = []
        self._task: asyncio.Task[None] | None = None

    @property
    def replaying(self) -> bool:
        """Whether a replay is fetching or delivering now."""
        return self._task is not None and not self._task.done()

    def connected(self) -> None:
        """The stream is listening: the first time, the replay window starts now; after a
        reconnect, replay the gap (unless a replay is still running: it goes on, and the
        updates of this gap are held back behind it and fetched by the next)."""
        now = self._clock.now()
        if self._since is None:
            self._since = now
            return
        if self.replaying:
            return
        self._task = asyncio.create_task(
            self._replay(self._since, now + timedelta(seconds=SKEW_SECONDS)),
            name="streamwarden-trade-replay")

    def live(self, update: Any) -> None:
        """A live update arrived: delivered now, or held back behind a running replay."""
        if self.replaying:
            self._held.append(update)
        else:
            self._pass(update)

    async def stop(self) -> None:
        """Cancel a running replay (the held-back updates are dropped with the stream)."""
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task})

    def _pass(self, update: Any) -> bool:
        key = identity(update)
        if key in self._seen:
            return False
        self._seen[key] = None
        if len(self._seen) > REMEMBERED:
            self._seen.popitem(last=False)
        if self._since is None or update.timestamp > self._since:
            self._since = update.timestamp
        self._deliver(update)
        return True

    async def _replay(self, since: datetime, until: datetime) -> None:
        try:
            events = await self._fetch(since, until)
        except ReplayError as exc:
            report = ReplayReport(since, until, error=exc)
        else:
            report = self._deliver_replayed(ReplayReport(since, until), events)
        held, self._held = self._held, []
        for update in held:
            self._pass(update)
        self._report(report)

    def _deliver_replayed(self, report: ReplayReport,
                          events: list[Mapping[str, Any]]) -> ReplayReport:
        delivered = duplicates = unreadable = 0
        first = last = None
        for event in events[:MAX_EVENTS]:
            try:
                update = replayed(event)
            except ValueError:
                unreadable += 1
                continue
            if self._pass(update):
                delivered += 1
                first = first or update.event_id
                last = update.event_id
            else:
                duplicates += 1
        return ReplayReport(report.since, report.until, delivered, duplicates, unreadable,
                            first, last, truncated=len(events) > MAX_EVENTS)


def events_fetcher(base_url: str, headers: Mapping[str, str], timeout: float) -> Fetch:
    """A :data:`Fetch` from the trade events API at ``base_url``, authenticated with
    ``headers``; each fetch takes at most about ``timeout`` seconds.

    The HTTP request runs on a worker thread (``requests``, which alpaca-py brings); a fetch
    that outlives ``timeout`` is given up (its thread ends within requests' own timeout).
    """
    url = base_url.rstrip("/") + EVENTS_PATH

    async def fetch(since: datetime, until: datetime) -> list[Mapping[str, Any]]:
        params = {"since": iso(since), "until": iso(until)}
        work = asyncio.to_thread(_get_events, url, dict(headers), params, timeout)
        try:
            return await asyncio.wait_for(work, timeout + 1.0)
        except TimeoutError:
            raise ReplayError(f"the trade events API at {url} did not answer within "
                              f"{timeout}s", operation="replay") from None

    return fetch


def _get_events(url: str, headers: dict[str, str], params: dict[str, str],
                timeout: float) -> list[Mapping[str, Any]]:
    import requests  # noqa: PLC0415 (alpaca-py's dependency; loaded when a replay runs)

    events: list[Mapping[str, Any]] = []
    try:
        with requests.get(url, params=params, headers=headers, timeout=timeout,
                          stream=True) as response:
            if response.status_code != 200:
                raise ReplayError(f"the trade events API at {url} answered HTTP "
                                  f"{response.status_code}", operation="replay")
            for line in response.iter_lines(decode_unicode=True):
                if isinstance(line, str) and line.startswith("data:"):
                    events.append(_event(line[5:]))
                    if len(events) > MAX_EVENTS:
                        break
    except requests.RequestException as exc:
        raise ReplayError(f"the trade events API at {url} is unreachable: "
                          f"{type(exc).__name__}", operation="replay") from None
    return events


def _event(text: str) -> Mapping[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
