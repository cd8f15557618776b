"""A log throttle: at most so many lines per window, and a count of the ones held back.

A flood of one kind of warning (malformed market-data messages) must not flood the log. The
throttle lets the first ``per_window`` lines of each ``window`` through and holds back the rest;
the next line let through says how many were held back since the previous one.
"""

from __future__ import annotations

from collections.abc import Callable


class LogThrottle:
    """Decides which lines of a flood are logged.

    Args:
        monotonic: the clock (seconds, never going backwards).
        per_window: lines let through per window (at least 1).
        window: the window's length in seconds.

    Thread-safety: not thread-safe; use it from one thread (the engine loop).
    """

    def __init__(self, monotonic: Callable[[], float], *, per_window: int, window: float) -> None:
        self._monotonic = monotonic
        self._per_window = per_window
        self._window = window
        self._window_start: float | None = None
        self._let_through = 0
        self._held_back = 0

    def admit(self) -> int | None:
        """None when this line is to be held back; otherwise how many lines were held back
        since the previous line let through (0 when none)."""
        now = self._monotonic()
        if self._window_start is None or now - self._window_start >= self._window:
            self._window_start, self._let_through = now, 0
        if self._let_through >= self._per_window:
            self._held_back += 1
            return None
        self._let_through += 1
        held_back, self._held_back = self._held_back, 0
        return held_back
