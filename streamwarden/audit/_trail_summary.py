"""What a reviewer's report says about a selection of audit records, gathered in one pass.

:func:`summarise` reads the records once, in ``seq`` order, and keeps: counts over every
record (outcomes, reconnects, accounts by fingerprint, connections), one
:class:`ConnectionStats` per lifecycle, the leases paired by
:func:`~streamwarden.audit.holdings.holdings`, and, for the first
:attr:`ReportLimits.connections` lifecycles only, their state periods
(:class:`~streamwarden.audit.timeline.TimelineBuilder`) and the records to mark on their
timeline. Memory grows with the number of lifecycles, leases and owners (a constant amount
each) and with the state changes of the drawn lifecycles, never with the number of records;
whatever is listed or drawn is capped by :class:`ReportLimits`, and the summary counts what
was left out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

from streamwarden.audit.holdings import Holding, holdings
from streamwarden.audit.records import AuditRecord
from streamwarden.audit.timeline import Timeline, TimelineBuilder
from streamwarden.errors import InvalidInputError

#: The transitions that start a reconnect: a dropped socket, and a silent one closed on purpose.
RECONNECT_EVENTS = frozenset({"connection_lost", "went_stale"})
FAILURE_OUTCOMES = frozenset({"failed", "forced"})


@dataclass(frozen=True)
class ReportLimits:
    """How much a report lists and draws; what is left out is counted and said.

    Attributes:
        connections: lifecycles drawn as timelines (the first ones in the selection).
        leases: lease bars drawn per connection (25 keep a connection's chart on one
            printed page).
        markers: reconnects and failures marked per connection.
        events: rows of the table of records that did not go as planned.
        rows: rows of each other table (accounts, owners, connections not drawn).

    Raises:
        InvalidInputError: on construction, if a limit is not a whole number >= 1.

    Thread-safety: immutable.
    """

    connections: int = 25
    leases: int = 25
    markers: int = 200
    events: int = 200
    rows: int = 100

    def __post_init__(self) -> None:
        for name in ("connections", "leases", "markers", "events", "rows"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"report limit {name} must be a whole number >= 1, "
                                        f"got {value!r}")


@dataclass
class ConnectionStats:
    """Counts over one lifecycle's selected records. Mutable while :func:`summarise` runs.

    ``state`` is the state after its last selected record; ``failures`` counts records with
    outcome ``failed`` or ``forced``, ``refused`` those with ``rejected``.
    """

    lifecycle_id: str
    fingerprint: str
    kind: str
    host: str
    pid: int
    first_at: datetime
    last_at: datetime
    state: str
    records: int = 0
    reconnects: int = 0
    failures: int = 0
    refused: int = 0
    leases: int = 0


@dataclass
class AccountStats:
    """Counts over one account's (fingerprint's) selected records."""

    fingerprint: str
    kinds: set[str] = field(default_factory=set)
    connections: int = 0
    records: int = 0
    leases: int = 0
    reconnects: int = 0
    failures: int = 0


@dataclass
class OwnerStats:
    """One owner's leases: how many, on how many connections, and how they ended."""

    owner: str | None
    leases: int = 0
    kinds: set[str] = field(default_factory=set)
    connections: set[str] = field(default_factory=set)
    open: int = 0
    ended_badly: int = 0


@dataclass(frozen=True)
class Marker:
    """A record marked on a timeline: a reconnect (``connection_lost`` or ``went_stale``) or a
    failure."""

    at: datetime
    seq: int | None
    event: str
    outcome: str
    reconnect: bool
    why: str


@dataclass(frozen=True)
class ConnectionDetail:
    """A drawn connection: its counts, state periods, marks and lease bars.

    ``markers_left_out`` and ``leases_left_out`` count what the limits kept from the drawing.
    """

    stats: ConnectionStats
    timeline: Timeline
    markers: tuple[Marker, ...]
    markers_left_out: int
    leases: tuple[Holding, ...]
    leases_left_out: int


@dataclass(frozen=True)
class TrailSummary:
    """Everything a report shows about the selected records. Immutable.

    Attributes:
        records: how many records were selected.
        first_at, last_at: the earliest and latest ``occurred_at`` (None without records).
        outcomes: records per outcome.
        reconnects: ``connection_lost`` and ``went_stale`` records.
        connections: one entry per lifecycle, in the order of their first record.
        drawn: the first :attr:`ReportLimits.connections` of them, with what to draw.
        accounts: per fingerprint, in the order first seen.
        owners: per owner (None: leases taken without one), most leases first.
        leases: leases acquired in the selection; ``open_leases`` of them still held at its
            end; ``ended_badly`` revoked, or released with an outcome other than ``ok``.
        events: the first :attr:`ReportLimits.events` records whose outcome is not ``ok``;
            ``events_total`` counts all of them.
    """

    records: int
    first_at: datetime | None
    last_at: datetime | None
    outcomes: dict[str, int]
    reconnects: int
    connections: tuple[ConnectionStats, ...]
    drawn: tuple[ConnectionDetail, ...]
    accounts: tuple[AccountStats, ...]
    owners: tuple[OwnerStats, ...]
    leases: int
    open_leases: int
    ended_badly: int
    events: tuple[AuditRecord, ...]
    events_total: int

    @property
    def failures(self) -> int:
        """Records with outcome ``failed`` or ``forced``."""
        return sum(self.outcomes.get(outcome, 0) for outcome in FAILURE_OUTCOMES)


def reason(record: AuditRecord) -> str:
    """Why ``record`` went as it did: ``error_type: error_message`` when it carries an error,
    else its ``details["reason"]`` (a dropped connection's), else ``""``.

    Thread-safety: pure function.
    """
    if record.error_type is not None or record.error_message is not None:
        return ": ".join(part for part in (record.error_type, record.error_message) if part)
    reason = record.details.get("reason")
    return "" if reason is None else str(reason)


def _ended_badly(holding: Holding) -> bool:
    return holding.released_at is not None and (
        holding.ended_by != "release" or holding.end_outcome != "ok")


class _Collector:
    """The running counts of :func:`summarise`."""

    def __init__(self, limits: ReportLimits) -> None:
        self.limits = limits
        self.count = 0
        self.first_at: datetime | None = None
        self.last_at: datetime | None = None
        self.outcomes: Counter[str] = Counter()
        self.reconnects = 0
        self.connections: dict[str, ConnectionStats] = {}
        self.accounts: dict[str, AccountStats] = {}
        self.builders: dict[str, TimelineBuilder] = {}
        self.markers: dict[str, list[Marker]] = {}
        self.events: list[AuditRecord] = []

    def observe(self, records: Iterable[AuditRecord], progress: Callable[[int], None] | None
                ) -> Iterator[AuditRecord]:
        """``records`` unchanged, each counted on its way through."""
        for record in records:
            self._add(record)
            if progress is not None:
                progress(self.count)
            yield record

    def _add(self, record: AuditRecord) -> None:
        self.count += 1
        at = record.occurred_at
        self.first_at = at if self.first_at is None else min(self.first_at, at)
        self.last_at = at if self.last_at is None else max(self.last_at, at)
        self.outcomes[record.outcome] += 1
        reconnect = record.event in RECONNECT_EVENTS and record.outcome == "ok"
        failure = record.outcome in FAILURE_OUTCOMES
        self.reconnects += reconnect
        stats = self._connection(record)
        stats.records += 1
        stats.last_at = max(stats.last_at, at)
        stats.state = record.to_state or stats.state
        stats.reconnects += reconnect
        stats.failures += failure
        stats.refused += record.outcome == "rejected"
        account = self.accounts[record.fingerprint]
        account.records += 1
        account.reconnects += reconnect
        account.failures += failure
        if record.outcome != "ok" and len(self.events) < self.limits.events:
            self.events.append(record)
        builder = self.builders.get(record.lifecycle_id)
        if builder is not None:
            builder.add(record)
            markers = self.markers[record.lifecycle_id]
            if (reconnect or failure) and len(markers) < self.limits.markers:
                markers.append(Marker(at, record.seq, record.event, record.outcome, reconnect,
                                      reason(record)))

    def _connection(self, record: AuditRecord) -> ConnectionStats:
        stats = self.connections.get(record.lifecycle_id)
        if stats is not None:
            return stats
        stats = ConnectionStats(
            record.lifecycle_id, record.fingerprint, record.kind, record.host, record.pid,
            record.occurred_at, record.occurred_at,
            record.from_state or record.to_state or "?")
        self.connections[record.lifecycle_id] = stats
        account = self.accounts.setdefault(record.fingerprint, AccountStats(record.fingerprint))
        account.kinds.add(record.kind)
        account.connections += 1
        if len(self.builders) < self.limits.connections:
            self.builders[record.lifecycle_id] = TimelineBuilder()
            self.markers[record.lifecycle_id] = []
        return stats

    def summary(self, leases: list[Holding]) -> TrailSummary:
        owners: dict[str | None, OwnerStats] = {}
        by_lifecycle: dict[str, list[Holding]] = {}
        for holding in leases:
            self.connections[holding.lifecycle_id].leases += 1
            self.accounts[holding.fingerprint].leases += 1
            owner = owners.setdefault(holding.owner, OwnerStats(holding.owner))
            owner.leases += 1
            owner.kinds.add(holding.kind)
            owner.connections.add(holding.lifecycle_id)
            owner.open += holding.released_at is None
            owner.ended_badly += _ended_badly(holding)
            if holding.lifecycle_id in self.builders:
                by_lifecycle.setdefault(holding.lifecycle_id, []).append(holding)
        return TrailSummary(
            records=self.count, first_at=self.first_at, last_at=self.last_at,
            outcomes=dict(self.outcomes), reconnects=self.reconnects,
            connections=tuple(self.connections.values()),
            drawn=tuple(self._detail(lifecycle_id, by_lifecycle.get(lifecycle_id, []))
                        for lifecycle_id in self.builders),
            accounts=tuple(self.accounts.values()),
            owners=tuple(sorted(owners.values(), key=lambda o: -o.leases)),
            leases=len(leases), open_leases=sum(h.released_at is None for h in leases),
            ended_badly=sum(_ended_badly(h) for h in leases),
            events=tuple(self.events), events_total=self.count - self.outcomes["ok"],
        )

    def _detail(self, lifecycle_id: str, leases: list[Holding]) -> ConnectionDetail:
        stats = self.connections[lifecycle_id]
        markers = self.markers[lifecycle_id]
        drawn = leases[:self.limits.leases]
        return ConnectionDetail(
            stats, self.builders[lifecycle_id].build(), tuple(markers),
            stats.reconnects + stats.failures - len(markers), tuple(drawn),
            len(leases) - len(drawn))


def summarise(records: Iterable[AuditRecord], limits: ReportLimits | None = None, *,
              progress: Callable[[int], None] | None = None) -> TrailSummary:
    """Read ``records`` (in ``seq`` order) once and gather what a report shows.

    ``progress`` is called with the number of records read after each record.

    Raises:
        Whatever iterating ``records`` raises.

    Thread-safety: pure function (``progress`` runs on the caller's thread).
    """
    collector = _Collector(limits or ReportLimits())
    leases = holdings(collector.observe(records, progress))
    return collector.summary(leases)
