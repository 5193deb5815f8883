"""Durations as people read them, for alert texts and urgency reasons alike."""

from __future__ import annotations


def duration_text(seconds: float) -> str:
    """Coarse on purpose: a person triaging needs "4 min 10 s", not "250.3 s"."""
    total = round(abs(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        parts = [(days, "d"), (hours, "h")]
    elif hours:
        parts = [(hours, "h"), (minutes, "min")]
    else:
        parts = [(minutes, "min"), (secs, "s")]
    shown = [f"{n} {unit}" for n, unit in parts if n]
    return " ".join(shown) or "0 s"
