"""A clock for tests of time-dependent behaviour: a chosen wall time that runs at real speed,
and a jump forward on demand.

``now()`` starts at the ``wall`` given and moves with real time; ``monotonic()`` is the real
monotonic clock. :meth:`ShiftedClock.advance` moves both forward at once, as if that much time
had passed: deadlines counted on the clock (start, drain, staleness) come due at the next
wake-up of the lifecycle that counts them.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta

from streamwarden.errors import InvalidInputError
from streamwarden.validation import check_seconds


class ShiftedClock:
    """A :class:`~streamwarden.clock.Clock` whose wall time starts at ``wall``.

    Raises (on construction):
        InvalidInputError: ``wall`` is naive.

    Thread-safety: thread-safe.
    """

    def __init__(self, wall: datetime) -> None:
        if wall.tzinfo is None or wall.utcoffset() is None:
            raise InvalidInputError("the clock's wall time needs a timezone")
        self._wall = wall
        self._start = time.monotonic()
        self._offset = 0.0
        self._lock = threading.Lock()

    def now(self) -> datetime:
        """``wall`` plus the real time elapsed and the advances since construction."""
        return self._wall + timedelta(seconds=self.monotonic() - self._start)

    def monotonic(self) -> float:
        """The real monotonic clock plus every advance."""
        with self._lock:
            return time.monotonic() + self._offset

    def advance(self, seconds: float) -> None:
        """Move both clocks ``seconds`` forward.

        Raises:
            InvalidInputError: ``seconds`` negative or not finite.
        """
        step = check_seconds("seconds", seconds)
        with self._lock:
            self._offset += step
