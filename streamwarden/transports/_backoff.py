"""How long a transport waits before its next attempt to connect: jittered exponential backoff.

Attempt ``n`` (1 for the first attempt after the stream was last usable) waits a random time in
``[c/2, c]`` with ``c = min(maximum, initial * 2**(n-1))``: the ceiling doubles from ``initial``
to ``maximum``, and the jitter spreads the reconnects of many clients dropped at once. An HTTP
429 answer to the WebSocket upgrade waits the answer's ``Retry-After`` when it sent one, else
``maximum``: the peer asked us to slow down, so we do not try again sooner.
"""

from __future__ import annotations

import random

from streamwarden.errors import InvalidInputError


class Backoff:
    """The delays of one transport.

    Args:
        initial: ceiling of the first delay, seconds (> 0).
        maximum: largest ceiling, seconds (>= initial).
        rng: the random source (seed it to make the delays reproducible).

    Raises:
        InvalidInputError: ``initial`` not > 0 or ``maximum`` below it.

    Thread-safety: not thread-safe (the random source is shared); one transport's loop uses it.
    """

    def __init__(self, initial: float, maximum: float, rng: random.Random) -> None:
        if not initial > 0 or not maximum >= initial:
            raise InvalidInputError(
                f"backoff needs 0 < initial <= maximum; got {initial!r} and {maximum!r}")
        self.initial = initial
        self.maximum = maximum
        self._rng = rng

    def ceiling(self, attempt: int) -> float:
        """The largest delay of attempt number ``attempt`` (>= 1).

        >>> backoff = Backoff(1.0, 30.0, random.Random(0))
        >>> backoff.ceiling(1), backoff.ceiling(3), backoff.ceiling(9)
        (1.0, 4.0, 30.0)
        """
        exponent = min(max(attempt, 1) - 1, 64)  # 2**64 is far past any maximum
        return float(min(self.maximum, self.initial * 2 ** exponent))

    def delay(self, attempt: int) -> float:
        """A random delay in ``[ceiling/2, ceiling]`` for attempt number ``attempt``."""
        ceiling = self.ceiling(attempt)
        return self._rng.uniform(ceiling / 2, ceiling)

    def rate_limited(self, retry_after: float | None) -> float:
        """The delay after an HTTP 429: ``retry_after`` when the peer sent one, else the
        maximum."""
        return self.maximum if retry_after is None else max(retry_after, 0.0)
