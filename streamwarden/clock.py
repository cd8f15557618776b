"""Time, injected: a wall clock for timestamps and a monotonic clock for deadlines."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    """Where streamwarden reads the time. Implementations must be thread-safe."""

    def now(self) -> datetime:
        """The current UTC time, timezone-aware, with microseconds."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards, for deadlines."""
        ...


class SystemClock:
    """The real clocks: ``datetime.now(UTC)`` and ``time.monotonic()``. Thread-safe."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()
