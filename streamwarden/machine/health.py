"""The health report: a typed, JSON-serialisable, redacted view of every lifecycle.

It names accounts only by fingerprint; it never holds a key id, a secret, or a callback.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class LeaseHealth:
    """A live lease, as shown in health."""

    lease_id: str
    owner: str | None
    correlation_id: str
    symbols: tuple[str, ...]


@dataclass(frozen=True)
class LifecycleHealth:
    """One lifecycle (physical connection). Timestamps are ISO 8601 UTC, or None."""

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


@dataclass(frozen=True)
class HealthReport:
    """The manager's state at one instant."""

    generated_at: str
    closed: bool
    abandoned_threads: int
    lifecycles: tuple[LifecycleHealth, ...]

    def to_dict(self) -> dict[str, Any]:
        """The report as plain dicts and lists."""
        return asdict(self)

    def to_json(self) -> str:
        """The report as a JSON document."""
        return json.dumps(self.to_dict(), sort_keys=True)
