"""What the benchmark scripts share: the nearest-rank percentile of their samples."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(samples: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile: the smallest sample at or above ``fraction`` of them."""
    ordered = sorted(samples)
    return ordered[min(max(math.ceil(fraction * len(ordered)), 1), len(ordered)) - 1]
