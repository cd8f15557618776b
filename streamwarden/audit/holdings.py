"""Who held which connection when: leases paired from their audit records.

A lease is held from its ``acquire`` record (outcome ``ok``) until the first record that ends
it: its ``release`` (outcome ``ok``, or ``failed`` when a full delivery queue revoked it), its
``lease_revoked``, or, should neither exist, the ``stopped`` transition of its lifecycle.
Refused acquires and releases (outcome ``rejected``) hold and end nothing. A lease with no
ending record is still held as far as the trail knows: its process may be alive, or may have
died before it could write one (:mod:`streamwarden.audit.processes` tells these apart).

Time bounds are half-open like the filters': a lease is held at ``at`` when
``acquired_at <= at < released_at``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from streamwarden.audit.records import LEASE_REVOKED, AuditRecord
from streamwarden.errors import InvalidInputError

_ENDING_EVENTS = frozenset({"release", LEASE_REVOKED})
_TERMINAL_STATE = "stopped"


@dataclass(frozen=True)
class Holding:
    """One lease from acquire to its end. Immutable.

    Attributes:
        acquired_seq: the ``seq`` of the acquire record (None if it was not yet committed).
        released_at: when the lease ended; None while the trail shows it held.
        ended_by: the event that ended it (``release``, ``lease_revoked``, or the lifecycle's
            final event), None while held.
        end_outcome: that record's outcome (``ok`` for a plain release).
        end_reason: why it ended, when not a plain release: ``error_type: error_message``, or
            the record's ``details["reason"]``.
        details: the acquire record's details (symbols, channels, filters).
    """

    lease_id: str
    owner: str | None
    lifecycle_id: str
    fingerprint: str
    kind: str
    correlation_id: str
    host: str
    pid: int
    acquired_at: datetime
    acquired_seq: int | None
    released_at: datetime | None = None
    ended_by: str | None = None
    end_outcome: str | None = None
    end_reason: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def receives(self) -> str:
        """What the lease asked for when acquired, from its acquire record: its subscriptions
        (``quotes AAPL MSFT; trades AAPL``; later changes are their own records), its
        trade-updates filter (``orders with client_order_id momentum-*``), or, for a
        trade-updates lease without one, ``every order``. Thread-safety: pure."""
        subscriptions = self.details.get("subscriptions")
        if isinstance(subscriptions, Mapping) and subscriptions:
            return "; ".join(f"{channel} {' '.join(map(str, symbols))}"
                             for channel, symbols in subscriptions.items())
        order_filter = self.details.get("filter")
        if isinstance(order_filter, Mapping) and "client_order_id_prefix" in order_filter:
            return f"orders with client_order_id {order_filter['client_order_id_prefix']}*"
        return "every order" if self.kind == "trade_updates" else ""

    def held_at(self, at: datetime) -> bool:
        """Whether the lease was held at ``at`` (``acquired_at <= at < released_at``).

        Raises:
            InvalidInputError: if ``at`` is naive.

        Thread-safety: pure.
        """
        _check_aware(at)
        return self.acquired_at <= at and (self.released_at is None or at < self.released_at)


def _check_aware(at: object) -> None:
    if not isinstance(at, datetime) or at.tzinfo is None or at.utcoffset() is None:
        raise InvalidInputError("the time must be a timezone-aware datetime (for example UTC)")


def _ended(holding: Holding, record: AuditRecord) -> Holding:
    plain = record.event == "release" and record.outcome == "ok"
    return replace(holding, released_at=record.occurred_at, ended_by=record.event,
                   end_outcome=record.outcome, end_reason=None if plain else record.reason)


def _acquired(record: AuditRecord, lease_id: str) -> Holding:
    return Holding(lease_id=lease_id, owner=record.owner, lifecycle_id=record.lifecycle_id,
                   fingerprint=record.fingerprint, kind=record.kind,
                   correlation_id=record.correlation_id, host=record.host, pid=record.pid,
                   acquired_at=record.occurred_at, acquired_seq=record.seq,
                   details=dict(record.details))


def _changes(records: Iterable[AuditRecord]) -> Iterator[Holding]:
    """Each lease when it is acquired, and again when it ends (``released_at`` set), in the
    order of ``records``. Keeps only the leases still open."""
    open_leases: dict[str, Holding] = {}
    open_by_lifecycle: dict[str, set[str]] = {}
    for record in records:
        lease_id = record.lease_id
        if record.outcome == "rejected":
            continue
        if record.event == "acquire" and lease_id is not None and record.outcome == "ok":
            open_leases[lease_id] = _acquired(record, lease_id)
            open_by_lifecycle.setdefault(record.lifecycle_id, set()).add(lease_id)
            yield open_leases[lease_id]
        elif record.event in _ENDING_EVENTS and lease_id in open_leases:
            held = open_leases.pop(lease_id)
            open_by_lifecycle[held.lifecycle_id].discard(lease_id)
            yield _ended(held, record)
        elif record.to_state == _TERMINAL_STATE:
            for orphan in sorted(open_by_lifecycle.pop(record.lifecycle_id, ())):
                yield _ended(open_leases.pop(orphan), record)


def holdings(records: Iterable[AuditRecord]) -> list[Holding]:
    """Every lease acquired in ``records`` (in ``seq`` order), in the order acquired.

    Consumes ``records`` once; memory grows with the number of leases.

    Thread-safety: pure function.
    """
    found: dict[str, Holding] = {}
    for holding in _changes(records):
        found[holding.lease_id] = holding
    return list(found.values())


def holders_at(records: Iterable[AuditRecord], at: datetime) -> list[Holding]:
    """The leases held at ``at``, in the order acquired, each as far as ``records`` tell
    (a lease released after ``at`` has its ``released_at``; given only the records up to
    ``at``, none has).

    Consumes ``records`` once; memory grows with the number of leases open at the same
    time, not with the number of records or of leases.

    Raises:
        InvalidInputError: if ``at`` is naive.

    Thread-safety: pure function.
    """
    _check_aware(at)
    held: dict[str, Holding] = {}
    for holding in _changes(records):
        if holding.held_at(at):
            held[holding.lease_id] = holding  # an update keeps the lease's place
        else:
            held.pop(holding.lease_id, None)
    return list(held.values())
