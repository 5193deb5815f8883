"""Business-hours calendars: SLA clocks that only run while the team is at work.

Opening hours are wall-clock windows per weekday in the calendar's own time zone, so a
"09:00-18:00" window stays 09:00-18:00 local across DST changes. Each local date's windows
are turned into UTC intervals with zoneinfo, and the clocks step a whole day at a time:
no per-second or per-minute loops.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, PrivateAttr, field_validator, model_validator

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

DAY_SECONDS = 86_400
# How far ahead add_business_seconds may look before it gives up: a year and a bit covers
# any sane SLA target, and bounds the work for calendars that are closed for a long stretch.
MAX_SEARCH_DAYS = 400

_WINDOW = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")

Interval = tuple[datetime, datetime]


def _parse_time(hours: str, minutes: str, *, is_end: bool) -> int:
    """Seconds after local midnight; only an end may be 24:00 (the next midnight)."""
    h, m = int(hours), int(minutes)
    if is_end and (h, m) == (24, 0):
        return DAY_SECONDS
    if h > 23 or m > 59:
        raise ValueError(f"{hours}:{minutes} is not a time of day")
    return h * 3600 + m * 60


def parse_window(text: str) -> tuple[int, int]:
    """``"HH:MM-HH:MM"`` as (start, end) seconds after local midnight, start < end."""
    match = _WINDOW.match(text)
    if match is None:
        raise ValueError(f"window {text!r} is not 'HH:MM-HH:MM'")
    start = _parse_time(match[1], match[2], is_end=False)
    end = _parse_time(match[3], match[4], is_end=True)
    if start >= end:
        raise ValueError(f"window {text!r} must start before it ends")
    return start, end


def parse_day(windows: list[str]) -> tuple[tuple[int, int], ...]:
    """One weekday's windows, which must be sorted and must not overlap (touching is fine)."""
    parsed = tuple(parse_window(w) for w in windows)
    for (_, prev_end), (start, _), text in zip(parsed, parsed[1:], windows[1:], strict=False):
        if start < prev_end:
            raise ValueError(f"window {text!r} overlaps or precedes the one before it")
    return parsed


def _require_aware(value: datetime, name: str) -> None:
    """Naive datetimes are ambiguous across zones, so every entry point refuses them."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got {value!r}")


def _require_duration(seconds: float) -> None:
    """A target is a finite, non-negative span; anything else is a caller bug."""
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"seconds must be finite and >= 0, got {seconds!r}")


def _gap_end(naive: datetime, zone: ZoneInfo) -> datetime:
    """The first instant after the DST gap that swallows ``naive`` (binary search on seconds).

    fold=1 maps a skipped time before the transition and fold=0 after it, so the
    transition lies between the two; wall time is monotonic there, hence the bisection.
    """
    lo = int(naive.replace(tzinfo=zone, fold=1).timestamp())
    hi = int(naive.replace(tzinfo=zone, fold=0).timestamp())
    while hi - lo > 1:
        mid = (lo + hi) // 2
        wall = datetime.fromtimestamp(mid, zone).replace(tzinfo=None)
        if wall > naive:
            hi = mid
        else:
            lo = mid
    return datetime.fromtimestamp(hi, UTC)


def local_to_utc(day: date, second: int, zone: ZoneInfo) -> datetime:
    """A wall-clock time on ``day`` as a UTC instant.

    A time repeated by a DST fall-back means its first occurrence (fold=0); a time skipped
    by a spring-forward means the end of the gap, so a window never opens before it exists.
    """
    naive = datetime(day.year, day.month, day.day) + timedelta(seconds=second)
    utc = naive.replace(tzinfo=zone).astimezone(UTC)
    if utc.astimezone(zone).replace(tzinfo=None) == naive:
        return utc
    return _gap_end(naive, zone)


class Calendar(BaseModel):
    """Weekly opening hours in one IANA time zone, minus whole-day holidays."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    timezone: str
    windows: dict[Weekday, list[str]]
    holidays: list[date] = []

    _zone: ZoneInfo = PrivateAttr()
    _week: tuple[tuple[tuple[int, int], ...], ...] = PrivateAttr()
    _days_off: frozenset[date] = PrivateAttr()

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("windows")
    @classmethod
    def _valid_windows(cls, value: dict[Weekday, list[str]]) -> dict[Weekday, list[str]]:
        for day, windows in value.items():
            try:
                parse_day(windows)
            except ValueError as exc:
                raise ValueError(f"{day}: {exc}") from exc
        return value

    @model_validator(mode="after")
    def _some_hours(self) -> Calendar:
        """A calendar that is never open would make every deadline search run forever."""
        if not any(self.windows.values()):
            raise ValueError(f"calendar {self.name!r} has no opening hours")
        return self

    def model_post_init(self, context: object, /) -> None:
        """Parse once, so the clocks only do arithmetic."""
        self._zone = ZoneInfo(self.timezone)
        self._week = tuple(parse_day(self.windows.get(day, [])) for day in WEEKDAYS)
        self._days_off = frozenset(self.holidays)

    def day_intervals(self, day: date) -> list[Interval]:
        """The UTC intervals during which the calendar is open on local date ``day``."""
        if day in self._days_off:
            return []
        out: list[Interval] = []
        for start, end in self._week[day.weekday()]:
            opens = local_to_utc(day, start, self._zone)
            closes = local_to_utc(day, end, self._zone)
            if opens < closes:  # a window inside a DST gap is empty
                out.append((opens, closes))
        return out

    def _intervals_from(self, start: datetime, days: int) -> Iterator[Interval]:
        """Open intervals ending after ``start``, clipped to it, over ``days`` local dates.

        Begins one local date early: a fall-back around midnight can make the previous
        date's hours reach past ``start``.
        """
        first = start.astimezone(self._zone).date() - timedelta(days=1)
        for offset in range(days + 1):
            for opens, closes in self.day_intervals(first + timedelta(days=offset)):
                if closes > start:
                    yield max(opens, start), closes

    def is_open(self, at: datetime) -> bool:
        """Whether ``at`` falls inside opening hours (windows are half-open: [start, end))."""
        _require_aware(at, "at")
        at = at.astimezone(UTC)
        return any(opens <= at for opens, _ in self._intervals_from(at, 2))

    def add_business_seconds(self, start: datetime, seconds: float) -> datetime:
        """The UTC instant when ``seconds`` of open time have elapsed after ``start``.

        Outside hours the clock starts at the next opening; ``seconds == 0`` gives the next
        open instant at or after ``start``. Raises ValueError past MAX_SEARCH_DAYS.
        """
        _require_aware(start, "start")
        _require_duration(seconds)
        start = start.astimezone(UTC)
        remaining = timedelta(seconds=seconds)
        for opens, closes in self._intervals_from(start, MAX_SEARCH_DAYS + 1):
            if remaining <= closes - opens:
                result = opens + remaining
                if result - start > timedelta(days=MAX_SEARCH_DAYS):
                    break
                return result
            remaining -= closes - opens
        raise ValueError(
            f"calendar {self.name!r}: {seconds} business seconds after {start.isoformat()} "
            f"lie more than {MAX_SEARCH_DAYS} days ahead"
        )

    def open_intervals(self, start: datetime, end: datetime) -> Iterator[Interval]:
        """Open UTC intervals within [start, end), clipped, with touching ones merged."""
        _require_aware(start, "start")
        _require_aware(end, "end")
        start, end = start.astimezone(UTC), end.astimezone(UTC)
        if end <= start:
            return
        days = (end - start).days + 3
        pending: Interval | None = None
        for opens, closes in self._intervals_from(start, days):
            if opens >= end:
                break
            closes = min(closes, end)
            if pending is not None and opens <= pending[1]:
                pending = (pending[0], max(pending[1], closes))
                continue
            if pending is not None:
                yield pending
            pending = (opens, closes)
        if pending is not None:
            yield pending

    def business_seconds_between(self, start: datetime, end: datetime) -> float:
        """Open time in [start, end) in seconds; 0 when ``end <= start``."""
        total = sum(
            (closes - opens for opens, closes in self.open_intervals(start, end)), timedelta()
        )
        return total.total_seconds()


def add_seconds(calendar: Calendar | None, start: datetime, seconds: float) -> datetime:
    """``start`` plus ``seconds`` of SLA time: business time, or wall-clock time for None."""
    if calendar is not None:
        return calendar.add_business_seconds(start, seconds)
    _require_aware(start, "start")
    _require_duration(seconds)
    # In UTC: adding to a zoneinfo datetime would be wall-clock arithmetic, off by DST.
    return start.astimezone(UTC) + timedelta(seconds=seconds)


def seconds_between(calendar: Calendar | None, start: datetime, end: datetime) -> float:
    """SLA time elapsed from ``start`` to ``end``; 0 when ``end <= start``."""
    if calendar is not None:
        return calendar.business_seconds_between(start, end)
    _require_aware(start, "start")
    _require_aware(end, "end")
    # In UTC: datetimes sharing a zoneinfo tzinfo subtract as wall-clock times.
    return max(0.0, (end.astimezone(UTC) - start.astimezone(UTC)).total_seconds())
