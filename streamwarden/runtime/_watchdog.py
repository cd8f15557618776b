"""The staleness watchdog of one lifecycle: how long each channel on the wire has been silent.

A socket can stay open, answer pings and carry nothing (alpaca-py issue 740). The watchdog
counts, per channel the wire carries, the seconds since the later of its last message and the
moment the current connection acknowledged it, and clips that count to how long the market of
the stream's kind has been open (:func:`streamwarden.sessions.open_for`): silence while the
market is closed, or before it opened, never counts. A channel whose count reaches its
``Settings.stale_after_of`` (0: never, the default for the sparse channels of
:data:`~streamwarden.config.STALE_EXEMPT_CHANNELS`) is stale; the supervisor then sends the
spec event ``went_stale``.

Sans-I/O: times are passed in (the injected clock's ``monotonic()`` and ``now()``). The watchdog
names the monotonic time of its next check, so that the supervisor bounds its wait by it
instead of running a thread or a timer of its own; while the market is closed (or a check found
the count clipped by the session's opening), it checks again every ``stale_after`` seconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from streamwarden.config import Settings
from streamwarden.sessions import open_for


@dataclass(frozen=True, slots=True)
class Stale:
    """A channel found stale, and for how many seconds it was silent while its market was open."""

    channel: str
    silent_for: float


class Watchdog:
    """Per-channel silence of one lifecycle's connection.

    Thread-safety: not thread-safe; the lifecycle's supervisor task uses it (and the transport
    records messages through the supervisor, on the same loop).
    """

    def __init__(self, kind: str, settings: Settings) -> None:
        self._kind = kind
        self._settings = settings
        self._limits: dict[str, float] = {}
        self._last: dict[str, float] = {}
        self._since: dict[str, float] = {}
        self._not_before = 0.0

    def message(self, channel: str, now: float) -> None:
        """A message of ``channel`` arrived at monotonic time ``now``."""
        self._last[channel] = now

    def acknowledged(self, channels: Iterable[str], now: float) -> None:
        """The connection now carries ``channels``: a channel new on it starts counting now."""
        wanted = set(channels)
        for channel in [c for c in self._since if c not in wanted]:
            del self._since[channel]
        for channel in wanted:
            self._since.setdefault(channel, now)

    def lost(self) -> None:
        """The connection went down: nothing is watched until the next acknowledgement."""
        self._since.clear()

    def deadline(self) -> float | None:
        """The monotonic time of the next check, or None while no channel is watched."""
        earliest: float | None = None
        for channel, since in self._since.items():
            limit = self._limit(channel)
            if limit:
                due = max(since, self._last.get(channel, since)) + limit
                earliest = due if earliest is None else min(earliest, due)
        return None if earliest is None else max(earliest, self._not_before)

    def check(self, now: float, wall: datetime) -> Stale | None:
        """The stalest channel whose silence while the market was open reached its limit, if
        any. Cheap before :meth:`deadline`.

        Raises:
            InvalidInputError: ``wall`` is naive.
        """
        deadline = self.deadline()
        if deadline is None or now < deadline:
            return None
        watched = {channel: limit for channel in self._since
                   if (limit := self._limit(channel))}
        self._not_before = now + min(watched.values())  # a deadline implies one is watched
        opened = open_for(self._kind, wall)
        if opened is None:
            return None
        found: Stale | None = None
        for channel, limit in watched.items():
            since = self._since[channel]
            silent = min(now - max(since, self._last.get(channel, since)), opened)
            if silent >= limit and (found is None or silent > found.silent_for):
                found = Stale(channel, silent)
        return found

    def ages(self, channels: Iterable[str], now: float) -> Mapping[str, float | None]:
        """Seconds since the last message of each of ``channels`` and of every channel that
        had one, by channel (None: no message yet)."""
        names = sorted({*channels, *self._last})
        return {name: (round(now - self._last[name], 3) if name in self._last else None)
                for name in names}

    def _limit(self, channel: str) -> float:
        limit = self._limits.get(channel)
        if limit is None:
            limit = self._limits[channel] = self._settings.stale_after_of(channel)
        return limit
