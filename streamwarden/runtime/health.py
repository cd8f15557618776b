"""The health report: a typed, JSON-serialisable, redacted view of every lifecycle.

It names accounts only by fingerprint; it never holds a key id, a secret, or a callback.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class LeaseHealth:
    """A live lease, as shown in health: its symbols (market data) or the ``client_order_id``
    prefix it is limited to (trade updates; None: every order), its delivery queue's depth, the
    age in seconds of its oldest undelivered message, what it was delivered and dropped (quotes
    conflated, trades and bars past the queue's size), and how long its running callback has
    been running."""

    lease_id: str
    owner: str | None
    correlation_id: str
    symbols: tuple[str, ...]
    client_order_id_prefix: str | None
    queue_depth: int
    oldest_undelivered_age: float | None
    delivered: int
    dropped: int
    callback_errors: int
    callback_running_for: float | None


@dataclass(frozen=True)
class LifecycleHealth:
    """One lifecycle (physical connection). Timestamps are ISO 8601 UTC, or None.
    ``message_ages``: seconds since the last message of each channel the wire carries or
    that carried a message, by channel (None: no message yet); the staleness watchdog
    reconnects a channel whose silence reaches ``stale_after`` while its market is open.
    ``malformed_messages`` counts the messages dropped because they could not be read (a
    missing, non-numeric, non-finite or negative price, size or volume; an unreadable symbol or
    timestamp)."""

    lifecycle_id: str
    fingerprint: str
    kind: str
    paper: bool
    feed: str | None
    state: str
    refs: int
    leases: tuple[LeaseHealth, ...]
    created_at: str
    started_at: str | None
    last_transition_at: str
    messages: int
    reconnects: int
    callback_errors: int
    stop_abandoned: bool
    message_ages: Mapping[str, float | None] = field(default_factory=dict)
    malformed_messages: int = 0


@dataclass(frozen=True)
class HealthReport:
    """The manager's state at one instant: whether its audit sink is durable, transports
    abandoned after a stop timeout, final records lost to an audit outage, the threads the
    manager runs (engine, audit writer, callback workers), and every live lifecycle."""

    generated_at: str
    closed: bool
    durable_audit: bool
    abandoned_transports: int
    final_records_lost: int
    threads: int
    lifecycles: tuple[LifecycleHealth, ...]

    def to_dict(self) -> dict[str, Any]:
        """The report as plain dicts and lists."""
        return asdict(self)

    def to_json(self) -> str:
        """The report as a JSON document."""
        return json.dumps(self.to_dict(), sort_keys=True)
