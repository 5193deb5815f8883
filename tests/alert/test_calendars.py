"""Business-hours calendars, checked against instants worked out by hand.

Rome is CET (UTC+1) in winter and CEST (UTC+2) in summer; in 2026 it springs forward on
Sunday 29 March (02:00 -> 03:00) and falls back on Sunday 25 October (03:00 -> 02:00).
Tallinn is one hour ahead of Rome all year. January 2026: Mon 12, Fri 16, Mon 19.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.alert.sla.calendars import Calendar, add_seconds, seconds_between

ROME = ZoneInfo("Europe/Rome")
TALLINN = ZoneInfo("Europe/Tallinn")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri")
HOUR = 3600


def office(*windows: str, tz: str = "Europe/Rome", holidays: list[date] | None = None) -> Calendar:
    """Mon-Fri with the same windows every day (09:00-18:00 unless given)."""
    day = list(windows) or ["09:00-18:00"]
    return Calendar(
        name="office", timezone=tz, windows={d: day for d in WEEKDAYS}, holidays=holidays or []
    )


def always(tz: str = "Europe/Rome") -> Calendar:
    """Open round the clock, so business time equals elapsed time."""
    days = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    return Calendar(name="24x7", timezone=tz, windows={d: ["00:00-24:00"] for d in days})


def rome(*args: int) -> datetime:
    return datetime(*args, tzinfo=ROME)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# --- adding business time ---------------------------------------------------------------


def test_friday_evening_plus_one_hour_lands_monday_morning() -> None:
    due = office().add_business_seconds(rome(2026, 1, 16, 17, 30), HOUR)
    assert due == rome(2026, 1, 19, 9, 30)
    assert due == utc(2026, 1, 19, 8, 30)
    assert due.tzinfo is UTC


def test_lunch_break_is_skipped() -> None:
    cal = office("09:00-12:00", "13:00-18:00")
    assert cal.add_business_seconds(rome(2026, 1, 14, 11, 30), HOUR) == rome(2026, 1, 14, 13, 30)


def test_holiday_monday_pushes_to_tuesday() -> None:
    cal = office(holidays=[date(2026, 1, 19)])
    assert cal.add_business_seconds(rome(2026, 1, 16, 17, 30), HOUR) == rome(2026, 1, 20, 9, 30)


def test_start_before_opening_counts_from_opening() -> None:
    assert office().add_business_seconds(rome(2026, 1, 13, 7, 0), 1800) == rome(2026, 1, 13, 9, 30)


def test_start_during_weekend_counts_from_monday() -> None:
    assert office().add_business_seconds(rome(2026, 1, 17, 12, 0), 2 * HOUR) == rome(
        2026, 1, 19, 11, 0
    )


def test_zero_seconds_is_next_open_instant() -> None:
    cal = office()
    assert cal.add_business_seconds(rome(2026, 1, 17, 12, 0), 0) == rome(2026, 1, 19, 9, 0)
    assert cal.add_business_seconds(rome(2026, 1, 14, 10, 15), 0) == rome(2026, 1, 14, 10, 15)
    # Windows are half-open: closing time is already closed.
    assert cal.add_business_seconds(rome(2026, 1, 14, 18, 0), 0) == rome(2026, 1, 15, 9, 0)


def test_target_ending_exactly_at_closing_time_is_closing_time() -> None:
    assert office().add_business_seconds(rome(2026, 1, 16, 17, 0), HOUR) == rome(2026, 1, 16, 18)


def test_fractional_seconds_are_kept() -> None:
    due = office().add_business_seconds(rome(2026, 1, 16, 17, 59, 59), 1.5)
    assert due == rome(2026, 1, 19, 9, 0, 0, 500_000)


def test_window_ending_at_midnight_runs_into_the_next_day() -> None:
    cal = office("00:00-02:00", "20:00-24:00")
    assert cal.add_business_seconds(rome(2026, 1, 12, 23, 0), 2 * HOUR) == rome(2026, 1, 13, 1)
    # Friday night runs out at midnight; Saturday and Sunday are closed.
    assert cal.add_business_seconds(rome(2026, 1, 16, 23, 0), 2 * HOUR) == rome(2026, 1, 19, 1)
    assert cal.is_open(rome(2026, 1, 13, 0, 0))
    assert not cal.is_open(rome(2026, 1, 17, 0, 0))


def test_thirty_business_days() -> None:
    # Speed is measured in bench/, not asserted here.
    due = office().add_business_seconds(rome(2026, 1, 5, 9, 0), 30 * 9 * HOUR)
    assert due == rome(2026, 2, 13, 18, 0)  # the sixth Friday, at closing


def test_search_too_far_ahead_raises() -> None:
    mondays = [date(2026, 1, 5) + timedelta(weeks=w) for w in range(60)]
    closed = Calendar(
        name="c", timezone="Europe/Rome", windows={"mon": ["09:00-10:00"]}, holidays=mondays
    )
    with pytest.raises(ValueError, match="400 days"):
        closed.add_business_seconds(rome(2026, 1, 1, 0, 0), 1)
    with pytest.raises(ValueError, match="400 days"):
        office().add_business_seconds(rome(2026, 1, 1, 0, 0), 1e9)


# --- time zones and DST -----------------------------------------------------------------


def test_same_instant_in_tallinn_and_rome() -> None:
    instant = utc(2026, 1, 16, 7, 30)  # 09:30 in Tallinn, 08:30 in Rome
    tallinn, rome_cal = office(tz="Europe/Tallinn"), office()
    assert tallinn.is_open(instant)
    assert not rome_cal.is_open(instant)
    assert tallinn.add_business_seconds(instant, HOUR) == utc(2026, 1, 16, 8, 30)
    assert rome_cal.add_business_seconds(instant, HOUR) == utc(2026, 1, 16, 9, 0)
    evening = utc(2026, 1, 16, 16, 0)  # Tallinn closes now; Rome has two hours to go
    assert tallinn.business_seconds_between(instant, evening) == 8.5 * HOUR
    assert rome_cal.business_seconds_between(instant, evening) == 8 * HOUR
    assert datetime(2026, 1, 16, 18, 0, tzinfo=TALLINN) == evening


def test_spring_forward_night_is_one_hour_short() -> None:
    cal = always()
    start, end = rome(2026, 3, 28, 22, 0), rome(2026, 3, 29, 7, 0)  # 9 h on the wall clock
    assert cal.business_seconds_between(start, end) == 8 * HOUR
    assert cal.add_business_seconds(start, 8 * HOUR) == end == utc(2026, 3, 29, 5, 0)
    assert list(cal.open_intervals(start, end)) == [(utc(2026, 3, 28, 21), utc(2026, 3, 29, 5))]


def test_fall_back_night_is_one_hour_long() -> None:
    cal = always()
    start, end = rome(2026, 10, 24, 22, 0), rome(2026, 10, 25, 5, 0)  # 7 h on the wall clock
    assert cal.business_seconds_between(start, end) == 8 * HOUR
    assert cal.add_business_seconds(start, 8 * HOUR) == end == utc(2026, 10, 25, 4, 0)


def test_office_hours_keep_local_times_across_dst_weekends() -> None:
    cal = office()
    # 4 h on Friday (CET) + 4 h on Monday (CEST): 13:00 Rome is 11:00 UTC after the change.
    assert cal.add_business_seconds(rome(2026, 3, 27, 14), 8 * HOUR) == utc(2026, 3, 30, 11)
    assert cal.add_business_seconds(rome(2026, 10, 23, 14), 8 * HOUR) == utc(2026, 10, 26, 12)
    assert cal.business_seconds_between(rome(2026, 3, 27, 9), rome(2026, 3, 30, 18)) == 18 * HOUR


def test_night_window_spanning_dst_change_has_real_length() -> None:
    cal = Calendar(name="night", timezone="Europe/Rome", windows={"sun": ["01:00-05:00"]})
    spring = cal.business_seconds_between(rome(2026, 3, 29, 0), rome(2026, 3, 29, 12))
    autumn = cal.business_seconds_between(rome(2026, 10, 25, 0), rome(2026, 10, 25, 12))
    assert (spring, autumn) == (3 * HOUR, 5 * HOUR)


def test_windows_in_the_dst_gap_and_overlap() -> None:
    windows = {"sun": ["02:00-03:00", "09:00-10:00"]}
    cal = Calendar(name="gap", timezone="Europe/Rome", windows=windows)
    # 02:00-03:00 does not exist on 29 March: the first opening that day is 09:00 CEST.
    assert cal.add_business_seconds(rome(2026, 3, 29, 0), 0) == utc(2026, 3, 29, 7)
    # On 25 October it happens once in CEST and once in CET, from 00:00 to 02:00 UTC.
    day = (rome(2026, 10, 25, 0), rome(2026, 10, 25, 5))
    assert list(cal.open_intervals(*day)) == [(utc(2026, 10, 25, 0), utc(2026, 10, 25, 2))]
    # A window starting inside the gap opens when the gap ends (03:00 CEST, 01:00 UTC).
    late = Calendar(name="late", timezone="Europe/Rome", windows={"sun": ["02:30-04:00"]})
    assert late.add_business_seconds(rome(2026, 3, 29, 0), 0) == utc(2026, 3, 29, 1)
    assert late.business_seconds_between(rome(2026, 3, 29, 0), rome(2026, 3, 29, 6)) == HOUR


# --- measuring business time ------------------------------------------------------------


def test_between_over_weekend_and_holiday() -> None:
    cal = office(holidays=[date(2026, 1, 19)])
    # Friday 16:00-18:00, Monday off, Tuesday 09:00-10:00.
    assert cal.business_seconds_between(rome(2026, 1, 16, 16), rome(2026, 1, 20, 10)) == 3 * HOUR


def test_between_is_zero_when_end_not_after_start() -> None:
    cal, t = office(), rome(2026, 1, 14, 10)
    assert cal.business_seconds_between(t, t) == 0
    assert cal.business_seconds_between(t, t - timedelta(hours=1)) == 0
    assert list(cal.open_intervals(t, t)) == []


def test_open_intervals_are_utc_clipped_and_merged() -> None:
    lunch = office("09:00-12:00", "13:00-18:00")
    got = list(lunch.open_intervals(rome(2026, 1, 12, 8), rome(2026, 1, 12, 14)))
    assert got == [
        (utc(2026, 1, 12, 8), utc(2026, 1, 12, 11)),
        (utc(2026, 1, 12, 12), utc(2026, 1, 12, 13)),
    ]
    assert all(a.tzinfo is UTC and b.tzinfo is UTC for a, b in got)
    night = office("00:00-02:00", "20:00-24:00")
    merged = list(night.open_intervals(rome(2026, 1, 12, 12), rome(2026, 1, 13, 12)))
    assert merged == [(rome(2026, 1, 12, 20), rome(2026, 1, 13, 2))]


def test_is_open_boundaries_and_holidays() -> None:
    cal = office(holidays=[date(2026, 1, 19)])
    assert cal.is_open(rome(2026, 1, 16, 9, 0))
    assert cal.is_open(rome(2026, 1, 16, 17, 59, 59))
    assert not cal.is_open(rome(2026, 1, 16, 18, 0))
    assert not cal.is_open(rome(2026, 1, 17, 12, 0))
    assert not cal.is_open(rome(2026, 1, 19, 12, 0))
    assert cal.is_open(utc(2026, 1, 20, 8, 0))  # 09:00 in Rome


ROUND_TRIPS = [
    (rome(2026, 1, 16, 17, 30), rome(2026, 1, 20, 10, 15)),  # over weekend and holiday
    (rome(2026, 1, 17, 10, 0), rome(2026, 1, 20, 9, 0, 1)),  # start on Saturday
    (rome(2026, 1, 14, 11, 59), rome(2026, 1, 14, 13, 0, 30)),  # across lunch
    (rome(2026, 3, 27, 16, 0), rome(2026, 3, 30, 11, 0)),  # across spring forward
    (rome(2026, 1, 12, 9, 0, 0, 250_000), rome(2026, 1, 15, 17, 59, 59, 999_999)),
]


@pytest.mark.parametrize(("start", "end"), ROUND_TRIPS)
def test_add_undoes_between_when_end_is_open(start: datetime, end: datetime) -> None:
    cal = office("09:00-12:00", "13:00-18:00", holidays=[date(2026, 1, 19)])
    assert cal.is_open(end)
    assert cal.add_business_seconds(start, cal.business_seconds_between(start, end)) == end


def test_round_trip_to_an_opening_lands_at_the_previous_closing() -> None:
    # The earliest instant with that much open time elapsed is the previous closing time.
    cal, start = office(), rome(2026, 1, 14, 10)
    elapsed = cal.business_seconds_between(start, rome(2026, 1, 15, 9))
    assert cal.add_business_seconds(start, elapsed) == rome(2026, 1, 14, 18)


# --- validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("windows", "message"),
    [
        (["09:00-13:00", "12:00-18:00"], "overlaps"),
        (["13:00-18:00", "09:00-12:00"], "overlaps"),
        (["9:00-17:00"], "HH:MM-HH:MM"),
        (["09:00 - 17:00"], "HH:MM-HH:MM"),
        (["09:00-25:00"], "not a time of day"),
        (["09:60-10:00"], "not a time of day"),
        (["24:00-24:00"], "not a time of day"),
        (["18:00-09:00"], "start before"),
        (["09:00-09:00"], "start before"),
    ],
)
def test_bad_windows_are_rejected(windows: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Calendar(name="bad", timezone="Europe/Rome", windows={"mon": windows})


def test_touching_windows_are_allowed() -> None:
    cal = office("09:00-12:00", "12:00-18:00")
    assert cal.business_seconds_between(rome(2026, 1, 12, 0), rome(2026, 1, 13, 0)) == 9 * HOUR


@pytest.mark.parametrize("tz", ["Europe/Atlantis", "Not/A/Zone", "../etc/passwd", "", "Europe"])
def test_unknown_time_zone_is_rejected(tz: str) -> None:
    with pytest.raises(ValueError, match="unknown time zone"):
        Calendar(name="bad", timezone=tz, windows={"mon": ["09:00-18:00"]})


@pytest.mark.parametrize("windows", [{}, {"mon": [], "sat": []}])
def test_calendar_without_hours_is_rejected(windows: dict[str, list[str]]) -> None:
    with pytest.raises(ValueError, match="no opening hours"):
        Calendar(name="never", timezone="Europe/Rome", windows=windows)


def test_unknown_weekday_is_rejected() -> None:
    with pytest.raises(ValueError, match="monday"):
        Calendar(name="bad", timezone="Europe/Rome", windows={"monday": ["09:00-18:00"]})


def test_naive_datetimes_and_bad_durations_are_rejected() -> None:
    cal = office()
    with pytest.raises(ValueError, match="timezone-aware"):
        cal.add_business_seconds(datetime(2026, 1, 14, 10), 60)
    with pytest.raises(ValueError, match="timezone-aware"):
        cal.is_open(datetime(2026, 1, 14, 10))
    for seconds in (-1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="seconds"):
            add_seconds(cal, rome(2026, 1, 14, 10), seconds)
        with pytest.raises(ValueError, match="seconds"):
            add_seconds(None, rome(2026, 1, 14, 10), seconds)


# --- helpers that take an optional calendar ---------------------------------------------


def test_wall_clock_helpers_ignore_business_hours() -> None:
    start = rome(2026, 3, 28, 22, 0)
    due = add_seconds(None, start, 8 * HOUR)
    assert due == utc(2026, 3, 29, 5, 0) and due.tzinfo is UTC  # 07:00 CEST
    assert seconds_between(None, start, rome(2026, 3, 29, 7, 0)) == 8 * HOUR
    assert seconds_between(None, start, start - timedelta(seconds=1)) == 0


def test_helpers_delegate_to_a_calendar() -> None:
    cal, friday = office(), rome(2026, 1, 16, 17, 30)
    assert add_seconds(cal, friday, HOUR) == rome(2026, 1, 19, 9, 30)
    assert seconds_between(cal, friday, rome(2026, 1, 19, 9, 30)) == HOUR
    assert seconds_between(None, friday, rome(2026, 1, 19, 9, 30)) == 64 * HOUR
