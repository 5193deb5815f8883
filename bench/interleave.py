"""Time several encoders on the same texts, interleaved run by run.

Interleaving means a load elsewhere on the machine (or the host's own drift) hits each
encoder alike, so their rates compare even when the absolute numbers move.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from rich.console import Console

from services.classify.model.encoder import Encoder


def interleaved_rates(
    encoders: Mapping[str, Encoder], texts: Sequence[str], runs: int, console: Console
) -> dict[str, list[float]]:
    """texts/s per run for each encoder (each warmed up first), runs interleaved."""
    for enc in encoders.values():
        enc.warm_up()
    rates: dict[str, list[float]] = {name: [] for name in encoders}
    for run in range(runs):
        for name, enc in encoders.items():
            with console.status(f"run {run + 1}: {name}"):
                started = time.perf_counter()
                enc.encode(texts)
                rates[name].append(round(len(texts) / (time.perf_counter() - started), 1))
    return rates
