"""Deterministic, realistic quote values: a one-cent-tick random walk per symbol.

Each symbol has its own generator seeded by ``(seed, symbol)``, so the n-th quote of a symbol is
the same in every run with the same seed, whatever other symbols are subscribed and whatever the
timing. Prices are whole cents (``187.23``), the spread one to five cents, sizes whole lots.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

_SPREADS_CENTS = (1, 1, 1, 2, 2, 3, 5)
_STEPS_CENTS = (-3, -2, -1, -1, 0, 0, 0, 1, 1, 2, 3)
_SIZES = (1, 1, 2, 3, 4, 5, 8, 10)
_MIN_CENTS = 100


@dataclass(frozen=True)
class QuoteValues:
    """One quote's prices (two decimals, bid below ask) and sizes."""

    bid_price: float
    ask_price: float
    bid_size: int
    ask_size: int


class _Walk:
    def __init__(self, seed: int, symbol: str) -> None:
        self.rng = random.Random(f"{seed}/{symbol}")
        self.cents = self.rng.randrange(2_000, 50_000)


class QuoteSource:
    """Quote values per symbol, reproducible from ``seed``.

    Thread-safety: not thread-safe; the simulator uses it from its event loop only.
    """

    def __init__(self, seed: int) -> None:
        self._seed = seed
        self._walks: dict[str, _Walk] = {}

    def next(self, symbol: str) -> QuoteValues:
        """The next quote of ``symbol``'s walk."""
        walk = self._walks.get(symbol)
        if walk is None:
            walk = self._walks[symbol] = _Walk(self._seed, symbol)
        rng = walk.rng
        walk.cents = max(_MIN_CENTS, walk.cents + rng.choice(_STEPS_CENTS))
        spread = rng.choice(_SPREADS_CENTS)
        return QuoteValues(
            bid_price=walk.cents / 100,
            ask_price=(walk.cents + spread) / 100,
            bid_size=rng.choice(_SIZES),
            ask_size=rng.choice(_SIZES),
        )
