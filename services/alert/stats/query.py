"""What a stats request asks for: range, grouping, filters, cycle kind and clock.

Everything a caller can get wrong raises ``ParamError`` naming the parameter; the API turns
it into a 422. The same fields serve as group keys and as filters:

| field | value | from |
|---|---|---|
| ``source``, ``brand``, ``language`` | text | the case |
| ``team`` | the team's name | the case's team |
| ``assignee`` | the member's handle | the case's assignee |
| ``priority`` | P1-P4 | the cycle (its target's priority, after any raise) |
| ``sentiment`` | negative, neutral, positive | the post that opened the cycle |
| ``complaint`` | true, false (complaint score >= 0.5) | the post that opened the cycle |
| ``day``, ``week`` | local date (the week's Monday) | the cycle's start, in ``tz`` |
| ``hour_of_week`` | 0-167, Monday 00h = 0 | the cycle's start, in ``tz`` |
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MAX_RANGE = timedelta(days=366)
DEFAULT_RANGE = timedelta(days=7)

# The classifier's cut for ``is_complaint`` (services must not import each other).
COMPLAINT_THRESHOLD = 0.5

TEXT_FIELDS = ("source", "brand", "team", "assignee", "priority", "language", "sentiment")
TIME_FIELDS = ("day", "week", "hour_of_week")
FIELDS = (*TEXT_FIELDS, "complaint", *TIME_FIELDS)
PRIORITIES = ("P1", "P2", "P3", "P4")
KINDS = ("first", "next")
CLOCKS = ("wall", "business")
INTERVALS = ("hour", "day", "week")
FORMATS = ("json", "csv")

Kind = Literal["first", "next"]
Clock = Literal["wall", "business"]
Interval = Literal["hour", "day", "week"]
KeyValue = str | int | bool | None


class ParamError(ValueError):
    """A bad request parameter; ``param`` names it."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param


@dataclass(frozen=True)
class StatsQuery:
    since: datetime
    until: datetime
    kind: Kind = "first"
    clock: Clock = "wall"
    group_by: tuple[str, ...] = ()
    # field -> accepted values (any of them), already parsed to the key's type
    filters: dict[str, tuple[KeyValue, ...]] = field(default_factory=dict)
    tz: str = "UTC"

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)


def parse_instant(value: str | None, name: str) -> datetime | None:
    if value is None or value == "":
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace(" ", "+"))
    except ValueError:
        raise ParamError(
            name, f"{value!r} is not an ISO 8601 date-time, e.g. 2026-11-27T10:00:00Z"
        ) from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise ParamError(name, f"{value!r} must include a time zone, e.g. 2026-11-27T10:00Z")
    return parsed.astimezone(UTC)


def parse_range(since: str | None, until: str | None, now: datetime) -> tuple[datetime, datetime]:
    end = parse_instant(until, "until") or now
    start = parse_instant(since, "since") or end - DEFAULT_RANGE
    if start >= end:
        raise ParamError("since", "since must be before until")
    if end - start > MAX_RANGE:
        raise ParamError("since", f"range too large: at most {MAX_RANGE.days} days")
    return start, end


def parse_choice(value: str | None, name: str, choices: tuple[str, ...], default: str) -> str:
    if value is None or value == "":
        return default
    if value not in choices:
        raise ParamError(name, f"must be one of {', '.join(choices)} (got {value!r})")
    return value


def parse_tz(value: str | None) -> str:
    if not value:
        return "UTC"
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ParamError("tz", f"unknown time zone {value!r}, e.g. Europe/Rome") from None
    return value


def parse_group_by(value: str | None, allowed: tuple[str, ...] = FIELDS) -> tuple[str, ...]:
    if not value:
        return ()
    names = [n.strip() for n in value.split(",") if n.strip()]
    for name in names:
        if name not in allowed:
            raise ParamError("group_by", f"unknown field {name!r}: use any of {', '.join(allowed)}")
    if len(set(names)) != len(names):
        raise ParamError("group_by", "a field is given twice")
    return tuple(names)


def _filter_value(name: str, raw: str) -> KeyValue:
    if name == "priority":
        if raw not in PRIORITIES:
            raise ParamError(name, f"must be one of {', '.join(PRIORITIES)} (got {raw!r})")
        return raw
    if name == "complaint":
        if raw.lower() not in ("true", "false"):
            raise ParamError(name, f"must be true or false (got {raw!r})")
        return raw.lower() == "true"
    if name in ("day", "week"):
        try:
            day = date.fromisoformat(raw)
        except ValueError:
            raise ParamError(name, f"{raw!r} is not a date (YYYY-MM-DD)") from None
        if name == "week" and day.weekday() != 0:
            raise ParamError(name, f"{raw!r} is not a Monday (weeks are keyed by their Monday)")
        return day.isoformat()
    if name == "hour_of_week":
        if not raw.isdigit() or not 0 <= int(raw) < 168:
            raise ParamError(name, f"must be an hour of the week, 0-167 (got {raw!r})")
        return int(raw)
    return raw


def parse_filters(
    params: dict[str, str | None], allowed: tuple[str, ...] = FIELDS
) -> dict[str, tuple[KeyValue, ...]]:
    """``{"source": "twitter,facebook"}`` -> ``{"source": ("twitter", "facebook")}``."""
    out: dict[str, tuple[KeyValue, ...]] = {}
    for name, raw in params.items():
        if raw is None or raw == "":
            continue
        if name not in allowed:
            raise ParamError(name, f"not a filter here: use any of {', '.join(allowed)}")
        values = [v.strip() for v in raw.split(",") if v.strip()]
        out[name] = tuple(_filter_value(name, v) for v in values)
    return out


def check_unknown_params(names: list[str], known: set[str]) -> None:
    """A misspelt filter must not silently widen the result."""
    for name in names:
        if name not in known:
            raise ParamError(name, f"unknown parameter; known: {', '.join(sorted(known))}")


# ----- time keys, computed the same way in Python as in PostgreSQL -----------------------


def local_naive(at: datetime, zone: ZoneInfo) -> datetime:
    return at.astimezone(zone).replace(tzinfo=None)


def time_key(name: str, at: datetime, zone: ZoneInfo) -> KeyValue:
    local = local_naive(at, zone)
    if name == "day":
        return local.date().isoformat()
    if name == "week":
        return (local.date() - timedelta(days=local.weekday())).isoformat()
    if name == "hour_of_week":
        return local.weekday() * 24 + local.hour
    raise KeyError(name)


def truncate(local: datetime, interval: str) -> datetime:
    """A naive local time truncated to its interval (like PostgreSQL's date_trunc)."""
    if interval == "hour":
        return local.replace(minute=0, second=0, microsecond=0)
    day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if interval == "day":
        return day
    return day - timedelta(days=day.weekday())


def bucket_starts(
    since: datetime, until: datetime, interval: str, zone: ZoneInfo
) -> list[datetime]:
    """Every interval (naive local start) that [since, until) touches, in order."""
    out: list[datetime] = []
    if interval == "hour":
        # 15-minute steps in UTC catch every local hour, whatever the zone's offset.
        at = since.replace(second=0, microsecond=0)
        step = timedelta(minutes=15)
        while at < until:
            key = truncate(local_naive(at, zone), "hour")
            if not out or out[-1] != key:
                out.append(key)
            at += step
        last = truncate(local_naive(until - timedelta(microseconds=1), zone), "hour")
        if out[-1] != last:
            out.append(last)
        return out
    first = truncate(local_naive(since, zone), interval)
    last = truncate(local_naive(until - timedelta(microseconds=1), zone), interval)
    step = timedelta(days=1 if interval == "day" else 7)
    at = first
    while at <= last:
        out.append(at)
        at += step
    return out


def aware(local: datetime, zone: ZoneInfo) -> datetime:
    """A naive local bucket start as an aware time in the zone (first one if repeated)."""
    return local.replace(tzinfo=zone)
