"""Exact percentiles, computed the way PostgreSQL's percentile_cont does (linear)."""

from __future__ import annotations

import math
from collections.abc import Sequence

# p50, p90, p95, p99: the fractions every report gives.
FRACTIONS = (0.5, 0.9, 0.95, 0.99)


def percentile_cont(sorted_values: Sequence[float], fraction: float) -> float | None:
    """The value at ``fraction`` of the sorted values, interpolating between neighbours:
    position ``fraction * (n - 1)``, like ``percentile_cont(fraction) WITHIN GROUP``."""
    if not sorted_values:
        return None
    pos = fraction * (len(sorted_values) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    if lo == hi:
        return float(sorted_values[lo])
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def summary(values: Sequence[float]) -> dict[str, float | None]:
    """p50/p90/p95/p99 and the mean of ``values`` (any order); all None when empty."""
    ordered = sorted(values)
    out: dict[str, float | None] = {
        f"p{round(f * 100)}": percentile_cont(ordered, f) for f in FRACTIONS
    }
    out["mean"] = math.fsum(ordered) / len(ordered) if ordered else None
    return out
