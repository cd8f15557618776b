"""The figures the runtime keeps for metrics: plain numbers, each written by one owner.

No locks: every figure has exactly one writer (the engine loop, one callback worker, or the
audit writer), and a scrape reads it from another thread. A read may miss the latest update
(the next scrape sees it) but never sees a torn or lost count, because nobody else writes it.
The engine loop's figures are read on the engine loop itself (see ``Engine.stats``).
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from streamwarden.runtime.health import HealthReport

#: Upper bounds, in seconds, of the duration histograms' buckets (then ``+Inf``).
DURATION_BUCKETS: tuple[float, ...] = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                       0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    """A duration histogram at one instant: ``counts[i]`` observations fell at or below
    ``bounds[i]`` and above the bound before it; the last count is above every bound."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    total: float

    @property
    def count(self) -> int:
        """How many observations."""
        return sum(self.counts)

    @staticmethod
    def merge(parts: Iterable[HistogramSnapshot]) -> HistogramSnapshot:
        """The sum of histograms over :data:`DURATION_BUCKETS`."""
        counts = [0] * (len(DURATION_BUCKETS) + 1)
        total = 0.0
        for part in parts:
            for index, count in enumerate(part.counts):
                counts[index] += count
            total += part.total
        return HistogramSnapshot(DURATION_BUCKETS, tuple(counts), total)


class Histogram:
    """Durations over :data:`DURATION_BUCKETS`.

    Thread-safety: one writer thread (:meth:`observe`); :meth:`snapshot` from any thread.
    """

    __slots__ = ("_counts", "_total")

    def __init__(self) -> None:
        self._counts = [0] * (len(DURATION_BUCKETS) + 1)
        self._total = 0.0

    def observe(self, seconds: float) -> None:
        """Count one duration."""
        self._counts[bisect_left(DURATION_BUCKETS, seconds)] += 1
        self._total += seconds

    def snapshot(self) -> HistogramSnapshot:
        """The counts so far."""
        return HistogramSnapshot(DURATION_BUCKETS, tuple(self._counts), self._total)


class StreamCounters:
    """Cumulative counts of one stream key, across its successive lifecycles.

    ``messages`` by channel, spec ``transitions`` by event, ``reconnects`` (``connection_lost``
    and ``went_stale`` taken), failed connection attempts by cause (``connect_failures``),
    audited errors by error type (``errors``), messages ``dropped`` by the leases' queues
    (conflated quotes, the oldest bars and trades), ``malformed`` messages; and whether the
    key's upstream is ``connected``: True since its latest ``connected``, False since a
    ``connection_lost``, ``went_stale``, ``reconnect_failed`` or ``start_failed``, None (idle,
    nothing wanted) before the first and since a lifecycle ``closed``.

    Thread-safety: written on the engine loop (mailboxes count drops in ``put``, which runs
    there), except :meth:`entered`, which may be called from any thread (a lease operation may
    run on its caller's thread); read from any thread.
    """

    __slots__ = ("_lock", "connect_failures", "connected", "dropped", "errors", "malformed",
                 "messages", "reconnects", "transitions")

    def __init__(self) -> None:
        self.messages: dict[str, int] = {}
        self.transitions: dict[str, int] = {}
        self.connect_failures: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.reconnects = 0
        self.dropped = 0
        self.malformed = 0
        self.connected: bool | None = None
        self._lock = threading.Lock()

    def entered(self, event: str) -> None:
        """Count a spec transition taken on ``event``, and note what it says of the upstream."""
        with self._lock:
            bump(self.transitions, event)
            if event in _UPSTREAM:
                self.connected = _UPSTREAM[event]


#: What taking each of these events says of a stream key's upstream connection.
_UPSTREAM: dict[str, bool | None] = {
    "connected": True, "connection_lost": False, "went_stale": False,
    "reconnect_failed": False, "start_failed": False, "closed": None, "close_timeout": None,
}


def bump(counts: dict[str, int], name: str) -> None:
    """Add one to ``counts[name]``."""
    counts[name] = counts.get(name, 0) + 1


class CallbackStats:
    """One callback worker's figures: how long callbacks ran, and how many raised.

    Thread-safety: written by its worker thread only; read from any thread.
    """

    __slots__ = ("durations", "errors")

    def __init__(self) -> None:
        self.durations = Histogram()
        self.errors = 0


@dataclass(frozen=True, slots=True)
class StreamTotals:
    """A copy of one stream key's :class:`StreamCounters` (the key's account by fingerprint)."""

    fingerprint: str
    kind: str
    feed: str | None
    messages: Mapping[str, int]
    transitions: Mapping[str, int]
    connect_failures: Mapping[str, int]
    errors: Mapping[str, int]
    reconnects: int
    dropped: int
    malformed: int
    connected: bool | None


@dataclass(frozen=True, slots=True)
class RuntimeStats:
    """What a metrics scrape reads from a manager at one instant: its health report, the
    cumulative counts of every stream key it has served, the callback workers' durations and
    failures, the audit appends' durations and whether the latest one failed, and the states
    of the manager's lifecycle spec."""

    health: HealthReport
    states: tuple[str, ...]
    streams: tuple[StreamTotals, ...]
    callback_durations: HistogramSnapshot
    callback_errors: int
    audit_append_durations: HistogramSnapshot
    audit_append_failed: bool
