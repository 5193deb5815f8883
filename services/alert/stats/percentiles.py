"""Exact percentiles, computed the way PostgreSQL's percentile_cont does (linear)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile_cont(sorted_values: Sequence[float], fraction: float) -> float | None:
    if not sorted_values:
        return None
    pos = fraction * (len(sorted_values) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    if lo == hi:
        return float(sorted_values[lo])
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)
