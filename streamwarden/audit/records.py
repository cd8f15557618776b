"""The audit record and the sink protocol every audit backend implements."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

Outcome = Literal["ok", "rejected", "failed", "forced"]
OUTCOMES: tuple[str, ...] = ("ok", "rejected", "failed", "forced")
#: Version of the record's canonical encoding (:mod:`streamwarden.audit.chain`); rows keep
#: the version they were written with.
SCHEMA_VERSION = 2

# Lease events recorded besides the transitions of the spec.
LEASE_REVOKED = "lease_revoked"
LEASE_SUBSCRIBED = "lease_subscribed"
LEASE_UNSUBSCRIBED = "lease_unsubscribed"
#: Every lease event, in the order a reader meets them.
LEASE_EVENTS: tuple[str, ...] = (LEASE_SUBSCRIBED, LEASE_UNSUBSCRIBED, LEASE_REVOKED)
# Stream events recorded besides the transitions of the spec: they change no state.
TRADE_UPDATES_REPLAYED = "trade_updates_replayed"
#: A relay refused a client's credentials (``streamwarden relay``): no lease, no state change.
RELAY_AUTH_REFUSED = "relay_auth_refused"
#: Every stream event.
STREAM_EVENTS: tuple[str, ...] = (TRADE_UPDATES_REPLAYED, RELAY_AUTH_REFUSED)


@dataclass(frozen=True)
class AuditRecord:
    """One row of the ``lifecycle_audit`` table.

    ``seq``, ``prev_hash`` and ``row_hash`` are assigned by the sink when the record is appended;
    the manager builds records without them. ``causation_id`` is the ``event_id`` of the record
    that caused this one. ``error_message`` is already redacted. Immutable.
    """

    event_id: str
    occurred_at: datetime
    lifecycle_id: str
    fingerprint: str
    kind: str
    event: str
    from_state: str | None
    to_state: str | None
    refs_before: int | None
    refs_after: int | None
    correlation_id: str
    host: str
    pid: int
    outcome: Outcome = "ok"
    lease_id: str | None = None
    owner: str | None = None
    causation_id: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    seq: int | None = None
    prev_hash: str | None = None
    row_hash: str | None = None

    @property
    def reason(self) -> str | None:
        """Why this happened, when the record says: ``error_type: error_message`` for a failure
        or a refusal (either alone when the other is absent), else ``details["reason"]`` (why a
        connection was lost, why a lease was revoked); None for a plain record."""
        if self.error_type is not None:
            if self.error_message:
                return f"{self.error_type}: {self.error_message}"
            return self.error_type
        if self.error_message:
            return self.error_message
        reason = self.details.get("reason")
        return None if reason is None else str(reason)


class AuditSink(Protocol):
    """Where lifecycle and lease events are recorded.

    ``append`` must be thread-safe and must keep the order of calls: the manager calls it from
    its audit writer thread, or for a sink that declares ``nonblocking = True`` (and never
    blocks) from its engine loop and from callers' threads, each lifecycle's records one at a
    time in the order its events happened.
    """

    def append(self, record: AuditRecord) -> AuditRecord:
        """Store ``record`` and return it.

        A sink that commits before returning (the in-memory sink, ``AuditLog`` in ``sync``
        durability) returns it with ``seq``, ``prev_hash`` and ``row_hash`` set. A sink that
        commits later (``AuditLog`` in ``batched`` durability, or a record spooled while the
        database is unreachable) returns it with those three None: they are assigned when the
        record is committed, after the chain's tail at that moment.

        Raises:
            AuditError: if the record could not be stored; nothing was stored.
        """
        ...

    def close(self) -> None:
        """Flush and release resources. Idempotent."""
        ...
