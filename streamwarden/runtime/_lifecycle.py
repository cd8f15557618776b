"""The sans-I/O lifecycle core: one physical connection's state and every change to it.

A :class:`Lifecycle` owns the spec's state machine of one connection, its leases, the
subscriptions the wire must carry, what the wire has acknowledged, and the start and drain
deadlines. Every operation returns a :class:`Pending` change: the audit record to write
(:class:`Draft`) and, once the caller has written it, :meth:`Lifecycle.commit` applies the change
and returns the :class:`Effects` to carry out (start the transport, revoke leases, change the
wire); if the write failed, :meth:`Lifecycle.rollback` undoes it and nothing changed. Record
before effect, on every path, acquire and release included.

Nothing here does I/O, takes a lock, reads a clock or knows about threads: the caller passes
the time in and runs one operation at a time (the lifecycle's supervisor task).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

from streamwarden._keys import DATA_KINDS, StreamKey
from streamwarden.audit.records import AuditRecord, Outcome
from streamwarden.errors import (
    InvalidTransitionError,
    LeaseError,
    StreamwardenError,
)
from streamwarden.machine.lifecycle import (
    RECONNECT_TRANSPORT,
    REVOKE_LEASES,
    START_TRANSPORT,
    LifecycleMachine,
    Transition,
)
from streamwarden.machine.spec import LifecycleSpec
from streamwarden.marketdata import NEWS_CHANNEL, TRADE_UPDATES_CHANNEL, Subscription
from streamwarden.runtime._arrivals import Arrivals
from streamwarden.transports._contract import StreamMessage

if TYPE_CHECKING:
    from streamwarden.runtime._delivery import Waiters

IDLE, STARTING, RUNNING, DRAINING, STOPPED = "idle", "starting", "running", "draining", "stopped"


class Delivery(Protocol):
    """Where a lease's messages go (its delivery queue). ``put`` must never block."""

    def put(self, arrivals: Arrivals) -> Waiters | None:
        """Queue a group of messages (one channel and symbol) for the lease's consumer;
        returns the readers to wake once the turn's groups are all queued (or None)."""
        ...


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    """The identity of a lease, fixed when it is granted; a trade-updates lease's
    ``client_order_id_prefix`` limits it to the updates of its own orders."""

    lease_id: str
    lifecycle_id: str
    key: StreamKey
    owner: str | None
    correlation_id: str
    client_order_id_prefix: str | None = None


@dataclass(frozen=True, slots=True)
class LeaseEntry:
    """A live lease as the lifecycle counts it: identity, subscriptions, delivery queue."""

    info: LeaseInfo
    subscriptions: frozenset[Subscription]
    delivery: Delivery


@dataclass(frozen=True, slots=True)
class Draft:
    """The audit record of a pending change, before it has an id, a time, a seq or a hash."""

    event: str
    from_state: str | None
    to_state: str | None
    refs_before: int | None
    refs_after: int | None
    correlation_id: str
    causation_id: str | None
    lease_id: str | None = None
    owner: str | None = None
    outcome: Outcome = "ok"
    error: BaseException | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Pending:
    """A change the lifecycle proposes; it takes effect only through :meth:`Lifecycle.commit`."""

    draft: Draft
    transition: Transition | None = None
    add: LeaseEntry | None = None
    remove: LeaseEntry | None = None
    resubscribe: LeaseEntry | None = None
    revoke_error: StreamwardenError | None = None


@dataclass(frozen=True, slots=True)
class Effects:
    """What the caller must carry out after a commit, in this order."""

    start_transport: bool = False
    revoked: tuple[LeaseEntry, ...] = ()
    revoke_error: StreamwardenError | None = None
    ended: LeaseEntry | None = None
    wire: frozenset[Subscription] | None = None
    reconnect_transport: bool = False


@dataclass(frozen=True, slots=True)
class Routes:
    """An immutable snapshot of who receives what; replaced, never changed, on each commit.

    Market-data routing reads it on the engine loop without any lock. A trade update goes to
    every lease without a filter (``everyone``) and to each filtered lease whose
    ``client_order_id`` prefix its order's id starts with (``by_prefix``); while no lease has
    a filter, routing one costs what it did before filters existed.
    """

    by_pair: Mapping[Subscription, tuple[Delivery, ...]]
    everyone: tuple[Delivery, ...]
    by_prefix: tuple[tuple[str, Delivery], ...] = ()

    def targets(self, message: StreamMessage) -> tuple[Delivery, ...]:
        """The delivery queues ``message`` goes to."""
        channel = message.channel
        if channel == TRADE_UPDATES_CHANNEL:
            if not self.by_prefix:
                return self.everyone
            order_id = _client_order_id(message.payload)
            if order_id is None:
                return self.everyone
            return self.everyone + tuple(delivery for prefix, delivery in self.by_prefix
                                         if order_id.startswith(prefix))
        if channel == NEWS_CHANNEL:
            return self._news_targets(message.payload)
        targets = self.by_pair.get((channel, message.symbol or ""), ())
        everything = self.by_pair.get((channel, "*"))  # "*": every symbol of the channel
        if everything is None:
            return targets
        return targets + tuple(delivery for delivery in everything if delivery not in targets)

    def _news_targets(self, article: Any) -> tuple[Delivery, ...]:
        targets: dict[int, Delivery] = {}
        for symbol in ("*", *getattr(article, "symbols", ())):
            for delivery in self.by_pair.get((NEWS_CHANNEL, symbol), ()):
                targets.setdefault(id(delivery), delivery)
        return tuple(targets.values())


_NO_ROUTES = Routes({}, ())


def _client_order_id(update: object) -> str | None:
    """The ``client_order_id`` of a trade update's order (alpaca-py's ``TradeUpdate``), or
    None when it has none."""
    value = getattr(getattr(update, "order", None), "client_order_id", None)
    return value if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class Timing:
    """The lifecycle's time bounds, in seconds: a first start is bounded by ``start_timeout``,
    a reconnect after a drop by ``reconnect_grace``, and a reconnect refused with 406 by
    ``connection_limit_grace`` (from the drop)."""

    start_timeout: float
    drain_grace: float
    reconnect_grace: float
    connection_limit_grace: float


class Lifecycle:
    """One lifecycle of one stream key.

    Thread-safety: not thread-safe and not re-entrant: one caller (the supervisor task) runs
    one operation at a time, and at most one change is pending.
    """

    def __init__(
        self,
        *,
        lifecycle_id: str,
        key: StreamKey,
        spec: LifecycleSpec,
        timing: Timing,
        origin_correlation_id: str,
    ) -> None:
        self.lifecycle_id = lifecycle_id
        self.key = key
        self.origin_correlation_id = origin_correlation_id
        self._spec = spec
        self._timing = timing
        self._machine = LifecycleMachine(spec)
        self._leases: dict[str, LeaseEntry] = {}
        self._wire_counts: dict[Subscription, int] = {}
        self._routes = _NO_ROUTES
        self._pending: Pending | None = None
        self._acked: frozenset[Subscription] = frozenset()
        self._transport_connected = False
        self._close_issued = False
        self._close_now = False
        self._failure: StreamwardenError | None = None
        self._cause_id: str | None = None
        self._start_deadline = 0.0
        self._drain_deadline = 0.0
        self._reconnecting = False
        self._reconnect_started = 0.0
        self._limit_deadline: float | None = None  # set while the latest attempt got a 406
        self.reconnects = 0

    # Views (read by the supervisor, health and invariant checks).

    @property
    def state(self) -> str:
        """The current state (of the pending change, while one is pending)."""
        return self._machine.state

    @property
    def refs(self) -> int:
        """The spec's reference count."""
        return self._machine.refs

    @property
    def leases(self) -> Mapping[str, LeaseEntry]:
        """The live leases, by id (read-only view)."""
        return self._leases

    @property
    def routes(self) -> Routes:
        """The current routing snapshot."""
        return self._routes

    @property
    def wire(self) -> frozenset[Subscription]:
        """The (channel, symbol) pairs the wire must carry: the union of the leases' pairs."""
        return frozenset(self._wire_counts)

    @property
    def failure(self) -> StreamwardenError | None:
        """The fatal error the transport reported, if any."""
        return self._failure

    @property
    def cause_id(self) -> str | None:
        """The event id of the record of the last state change (the causation of what follows)."""
        return self._cause_id

    @property
    def acknowledged(self) -> frozenset[Subscription]:
        """The pairs the wire acknowledged carrying since the last connect."""
        return self._acked

    @property
    def transport_connected(self) -> bool:
        """Whether the transport reported ``connected`` and no loss since."""
        return self._transport_connected

    @property
    def reconnecting(self) -> bool:
        """The spec's ``reconnecting`` input: starting again after a drop, not connected since."""
        return self._reconnecting and self.state == STARTING

    @property
    def connection_limited(self) -> bool:
        """Whether the latest attempt of this reconnect was refused with 406."""
        return self._limit_deadline is not None

    def reusable(self, now: float) -> bool:
        """The spec's ``reusable`` input: socket up, no close issued, within the drain grace."""
        return self._transport_connected and not self._close_issued and now <= self._drain_deadline

    def ready(self, lease_id: str) -> bool:
        """Whether the lease is live on a running connection with its pairs acknowledged."""
        entry = self._leases.get(lease_id)
        return (entry is not None and self.state == RUNNING
                and entry.subscriptions <= self._acked)

    def carries(self, subscriptions: frozenset[Subscription]) -> bool:
        """Whether a lease asking for ``subscriptions`` would add nothing to the wire and be
        ready at once: every pair is wanted by a live lease already and acknowledged."""
        counts = self._wire_counts
        return subscriptions <= self._acked and all(pair in counts for pair in subscriptions)

    def shared(self, lease_id: str) -> bool:
        """Whether counting the lease out would leave the wire as it is: another live lease
        wants every one of its pairs (False if it is not live)."""
        entry = self._leases.get(lease_id)
        counts = self._wire_counts
        return entry is not None and all(counts[pair] > 1 for pair in entry.subscriptions)

    def quiet(self, pending: Pending) -> bool:
        """Whether committing ``pending`` would only count one lease in or out: the spec keeps
        the state and attaches no effect, and the wire keeps every pair it carries.

        Such a change needs nothing from a transport or a deadline, so a caller may commit it
        on any thread that holds the lifecycle exclusively.
        """
        transition = pending.transition
        if (transition is None or transition.effects
                or transition.from_state != transition.to_state):
            return False
        counts = self._wire_counts
        if pending.add is not None:
            return all(pair in counts for pair in pending.add.subscriptions)
        if pending.remove is not None:
            return all(counts[pair] > 1 for pair in pending.remove.subscriptions)
        return False

    # Operations. Each returns a pending change (or None when there is nothing to record).

    def acquire(self, info: LeaseInfo, subscriptions: frozenset[Subscription],
                delivery: Delivery, now: float) -> Pending:
        """Count a new lease in.

        Raises:
            InvalidTransitionError: the spec allows no acquire now (stopped, or draining and not
                reusable); nothing changed.
        """
        inputs = {"reusable": self.reusable(now)} if self.state == DRAINING else None
        entry = LeaseEntry(info, subscriptions, delivery)
        details: dict[str, Any] = {}
        if subscriptions:
            details["subscriptions"] = describe(subscriptions)
        if info.client_order_id_prefix is not None:
            details["filter"] = {"client_order_id_prefix": info.client_order_id_prefix}
        if inputs:
            details["inputs"] = dict(inputs)
        draft, transition = self._fire("acquire", info.correlation_id, info, inputs=inputs,
                                       details=details)
        return self._propose(Pending(draft, transition, add=entry))

    def release(self, lease_id: str, correlation_id: str, *, outcome: Outcome = "ok",
                error: StreamwardenError | None = None,
                details: Mapping[str, Any] | None = None) -> Pending | None:
        """Count a lease out; None if it is not live (a second release)."""
        entry = self._leases.get(lease_id)
        if entry is None:
            return None
        draft, transition = self._fire("release", correlation_id, entry.info, outcome=outcome,
                                       error=error, details=details)
        return self._propose(Pending(draft, transition, remove=entry, revoke_error=error))

    def change_subscriptions(self, lease_id: str, pairs: Collection[Subscription], *,
                             subscribe: bool, correlation_id: str) -> Pending | None:
        """Add ``pairs`` to a lease's subscriptions, or remove them; None if nothing changes.

        Raises:
            LeaseError: the lease is not live on this lifecycle.
        """
        entry = self._leases.get(lease_id)
        if entry is None:
            raise LeaseError(f"lease {lease_id} is not live", operation="subscribe",
                             correlation_id=correlation_id)
        current = entry.subscriptions
        changed = (frozenset(pairs) - current) if subscribe else (frozenset(pairs) & current)
        if not changed:
            return None
        updated = replace(entry, subscriptions=current | changed if subscribe
                          else current - changed)
        state, refs = self.state, self.refs
        draft = Draft(
            event="lease_subscribed" if subscribe else "lease_unsubscribed",
            from_state=state, to_state=state, refs_before=refs, refs_after=refs,
            correlation_id=correlation_id, causation_id=self._cause_id,
            lease_id=lease_id, owner=entry.info.owner,
            details={"subscriptions": describe(changed)},
        )
        return self._propose(Pending(draft, resubscribe=updated))

    def signal(self, event: str, *, correlation_id: str | None = None, outcome: Outcome = "ok",
               error: StreamwardenError | None = None, details: Mapping[str, Any] | None = None,
               revoke_error: StreamwardenError | None = None) -> Pending:
        """A spec event that is not about one lease (connected, shutdown, closed, ...).

        Raises:
            InvalidTransitionError: the spec allows no ``event`` now; nothing changed.
        """
        draft, transition = self._fire(event, correlation_id or self.origin_correlation_id,
                                       None, outcome=outcome, error=error, details=details)
        return self._propose(Pending(draft, transition, revoke_error=revoke_error))

    def reconnect_failed(self, attempt: int, delay: float, cause: str,
                         detail: str) -> Pending:
        """Record one failed attempt of a reconnect (``starting -> starting``), with its number,
        the delay before the next one and its cause. Once committed, a 406 (cause
        ``connection_limit``) arms the ``connection_limit_grace`` deadline (counted from the
        drop) and any other cause disarms it.

        Raises:
            InvalidTransitionError: not reconnecting (a first start, or not starting); nothing
                changed.
        """
        inputs = {"reconnecting": self.reconnecting}
        details = {"attempt": attempt, "delay": round(delay, 3), "cause": cause,
                   "cause_detail": detail, "inputs": dict(inputs)}
        draft, transition = self._fire("reconnect_failed", self.origin_correlation_id, None,
                                       inputs=inputs, outcome="failed", details=details)
        return self._propose(Pending(draft, transition))

    def rejection(self, event: str, error: InvalidTransitionError,
                  correlation_id: str | None = None) -> Draft:
        """The record of an event the spec refused (it changed nothing)."""
        return Draft(event=event, from_state=self.state, to_state=None, refs_before=self.refs,
                     refs_after=self.refs,
                     correlation_id=correlation_id or self.origin_correlation_id,
                     causation_id=self._cause_id, outcome="rejected", error=error)

    def revocation(self, entry: LeaseEntry, error: StreamwardenError,
                   cause_id: str | None) -> Draft:
        """The ``lease_revoked`` record of a lease revoked by a committed change."""
        return Draft(event="lease_revoked", from_state=self.state, to_state=self.state,
                     refs_before=self.refs, refs_after=self.refs,
                     correlation_id=entry.info.correlation_id,
                     causation_id=cause_id or self._cause_id, lease_id=entry.info.lease_id,
                     owner=entry.info.owner, outcome="failed", error=error)

    def notice(self, event: str, details: Mapping[str, Any], *, outcome: Outcome = "ok",
               error: StreamwardenError | None = None) -> Draft:
        """The record of something about the stream that changes nothing (a trade-updates
        replay)."""
        return Draft(event=event, from_state=self.state, to_state=self.state,
                     refs_before=self.refs, refs_after=self.refs,
                     correlation_id=self.origin_correlation_id, causation_id=self._cause_id,
                     outcome=outcome, error=error, details=dict(details))

    # Facts the supervisor reports that are not audited events.

    def acknowledge(self, pairs: frozenset[Subscription]) -> None:
        """The wire acknowledged that it carries ``pairs``."""
        self._acked = pairs

    def disconnected(self) -> None:
        """The transport's socket went down (the ``connection_lost`` event may follow)."""
        self._transport_connected = False
        self._acked = frozenset()

    def fail(self, error: StreamwardenError) -> None:
        """The transport reported an error retrying cannot fix."""
        self._failure = error
        self._transport_connected = False
        self._acked = frozenset()

    def close_now(self) -> None:
        """End the drain grace: the manager is closing."""
        self._close_now = True

    def issue_close(self) -> None:
        """The supervisor is stopping the transport: the socket can no longer be reused."""
        self._close_issued = True

    # Deadlines.

    def due(self, now: float) -> bool:
        """Whether the transport must be stopped now (start failed or timed out, drain over)."""
        state = self.state
        if state == STARTING:
            limit = self._limit_deadline
            return (self._failure is not None or now >= self._start_deadline
                    or (limit is not None and now >= limit))
        if state == DRAINING:
            return (self._close_now or not self._transport_connected
                    or now >= self._drain_deadline)
        return False

    def next_deadline(self) -> float | None:
        """The monotonic time at which :meth:`due` may become true by itself, if any."""
        if self.state == STARTING:
            limit = self._limit_deadline
            return self._start_deadline if limit is None else min(limit, self._start_deadline)
        if self.state == DRAINING:
            return self._drain_deadline
        return None

    # Commit and rollback.

    def commit(self, pending: Pending, record: AuditRecord | None, now: float) -> Effects:
        """Apply ``pending`` once its record is written (None: recorded elsewhere or lost).

        Returns:
            The effects to carry out.
        """
        assert pending is self._pending, "commit of a change that is not pending"
        self._pending = None
        transition = pending.transition
        if transition is not None:
            self._entered(transition, record, now)
            if transition.event == "reconnect_failed":
                self._refused(pending.draft.details.get("cause"))
        wire_before = self.wire
        ended = pending.remove
        if pending.add is not None:
            self._count_in(pending.add)
        if pending.remove is not None:
            self._count_out(pending.remove)
        if pending.resubscribe is not None:
            ended = None
            self._count_out(self._leases[pending.resubscribe.info.lease_id])
            self._count_in(pending.resubscribe)
        revoked: tuple[LeaseEntry, ...] = ()
        if transition is not None and REVOKE_LEASES in transition.effects:
            revoked = tuple(self._leases.values())
            for entry in revoked:
                self._count_out(entry)
        self._routes = self._build_routes()
        wire = self.wire
        return Effects(
            start_transport=transition is not None and START_TRANSPORT in transition.effects,
            revoked=revoked,
            revoke_error=pending.revoke_error,
            ended=ended,
            wire=wire if wire != wire_before else None,
            reconnect_transport=(transition is not None
                                 and RECONNECT_TRANSPORT in transition.effects),
        )

    def rollback(self, pending: Pending) -> None:
        """Undo ``pending``: its record could not be written, so nothing takes effect."""
        assert pending is self._pending, "rollback of a change that is not pending"
        self._pending = None
        if pending.transition is not None:
            self._machine.rollback(pending.transition)

    # Internals.

    def _propose(self, pending: Pending) -> Pending:
        assert self._pending is None, "a change is already pending"
        self._pending = pending
        return pending

    def _fire(self, event: str, correlation_id: str, info: LeaseInfo | None, *,
              inputs: Mapping[str, Any] | None = None, outcome: Outcome = "ok",
              error: BaseException | None = None,
              details: Mapping[str, Any] | None = None) -> tuple[Draft, Transition]:
        assert self._pending is None, "a change is already pending"
        transition = self._machine.fire(event, **(inputs or {}))
        draft = Draft(
            event=event, from_state=transition.from_state, to_state=transition.to_state,
            refs_before=transition.refs_before, refs_after=transition.refs_after,
            correlation_id=correlation_id, causation_id=self._cause_id,
            lease_id=info.lease_id if info is not None else None,
            owner=info.owner if info is not None else None,
            outcome=outcome, error=error, details=dict(details or {}),
        )
        return draft, transition

    def _entered(self, transition: Transition, record: AuditRecord | None, now: float) -> None:
        changed = transition.to_state != transition.from_state
        if changed and record is not None:
            self._cause_id = record.event_id
        event = transition.event
        if event == "connected":
            self._transport_connected = True
            self._reconnecting = False
            self._limit_deadline = None
        elif event in ("connection_lost", "went_stale"):
            self._transport_connected = False
            self._acked = frozenset()
            self.reconnects += 1
            self._reconnecting = True
            self._reconnect_started = now
        if changed and transition.to_state == STARTING:
            timing = self._timing
            bound = timing.reconnect_grace if self._reconnecting else timing.start_timeout
            self._start_deadline = now + bound
        if changed and transition.to_state == DRAINING:
            self._drain_deadline = now + self._timing.drain_grace

    def _refused(self, cause: object) -> None:
        if cause != "connection_limit":
            self._limit_deadline = None
        elif self._limit_deadline is None:  # Alpaca's reaper counts from the drop
            self._limit_deadline = self._reconnect_started + self._timing.connection_limit_grace

    def _count_in(self, entry: LeaseEntry) -> None:
        self._leases[entry.info.lease_id] = entry
        counts = self._wire_counts
        for pair in entry.subscriptions:
            counts[pair] = counts.get(pair, 0) + 1

    def _count_out(self, entry: LeaseEntry) -> None:
        if self._leases.pop(entry.info.lease_id, None) is None:
            return
        counts = self._wire_counts
        for pair in entry.subscriptions:
            left = counts[pair] - 1
            if left:
                counts[pair] = left
            else:
                del counts[pair]

    def _build_routes(self) -> Routes:
        if not self._leases:
            return _NO_ROUTES
        everyone = tuple(entry.delivery for entry in self._leases.values()
                         if entry.info.client_order_id_prefix is None)
        if self.key.kind not in DATA_KINDS:
            by_prefix = tuple((entry.info.client_order_id_prefix, entry.delivery)
                              for entry in self._leases.values()
                              if entry.info.client_order_id_prefix is not None)
            return Routes({}, everyone, by_prefix)
        by_pair: dict[Subscription, list[Delivery]] = {}
        for entry in self._leases.values():
            for pair in entry.subscriptions:
                by_pair.setdefault(pair, []).append(entry.delivery)
        return Routes({pair: tuple(targets) for pair, targets in by_pair.items()}, everyone)

    def invariant_env(self, *, socket_open: bool, transport_done: bool,
                      wire: frozenset[Subscription]) -> dict[str, Any]:
        """The variables of the ``machine`` and ``connection`` invariants (invariants.yaml)."""
        lease_pairs: set[Subscription] = set()
        for entry in self._leases.values():
            lease_pairs.update(entry.subscriptions)
        # Invariants are about committed configurations. While a change's record is being
        # written the machine has already moved but the leases have not: report the state and
        # count the change started from.
        transition = self._pending.transition if self._pending is not None else None
        state, refs = ((transition.from_state, transition.refs_before) if transition is not None
                       else (self.state, self.refs))
        return {
            "state": state,
            "refs": refs,
            "live_leases": len(self._leases),
            "kind": self.key.kind,
            "wire_symbols": wire,
            "lease_symbols": frozenset(lease_pairs),
            "socket_open": socket_open,
            "transport_done": transport_done,
        }


def describe(subscriptions: Collection[Subscription]) -> dict[str, list[str]]:
    """``{channel: [symbols]}``, sorted: how subscriptions are shown in audit details.

    >>> describe({("trades", "MSFT"), ("quotes", "MSFT"), ("quotes", "AAPL")})
    {'quotes': ['AAPL', 'MSFT'], 'trades': ['MSFT']}
    """
    by_channel: dict[str, list[str]] = {}
    for channel, symbol in sorted(subscriptions):
        by_channel.setdefault(channel, []).append(symbol)
    return by_channel
