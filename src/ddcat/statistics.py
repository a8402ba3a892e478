"""Statistics over repeated measurements (seeds, substitute models): the mean and the population
standard deviation, as the paper's tables report them. Used by evaluation (transfer summaries) and
reporting alike, so it lives on the ground floor next to the metrics."""

from __future__ import annotations

import math
from typing import Sequence


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and population standard deviation (0 for a single value; ``nan, nan`` for none)."""
    n = len(values)
    if n == 0:
        return float("nan"), float("nan")
    mean = sum(values) / n
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / n)
