"""Market sessions: US equities with extended hours, weekends, NYSE holidays, DST; crypto."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from streamwarden.errors import InvalidInputError
from streamwarden.sessions import HOLIDAY_YEARS, NYSE_HOLIDAYS, is_open, open_for


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


@pytest.mark.parametrize(("at", "expected"), [
    # Winter (EST, UTC-5): 04:00 New York is 09:00 UTC, 20:00 is 01:00 UTC the next day.
    (utc(2026, 11, 25, 8, 59), None),
    (utc(2026, 11, 25, 9, 0), 0.0),
    (utc(2026, 11, 25, 14, 30), 5.5 * 3600),  # the regular open, 09:30
    (utc(2026, 11, 26, 0, 59), 15 * 3600 + 59 * 60),  # 19:59 New York, Wednesday
    (utc(2026, 11, 26, 1, 0), None),  # 20:00 New York: the extended session is over
    # Summer (EDT, UTC-4): 04:00 New York is 08:00 UTC.
    (utc(2026, 7, 8, 8, 0), 0.0),
    (utc(2026, 7, 8, 7, 59), None),
    (utc(2026, 7, 9, 0, 0), None),  # 20:00 New York
])
def test_equities_extended_session_in_winter_and_summer(at, expected):
    assert open_for("market_data", at) == expected


def test_the_session_follows_daylight_saving_time_across_the_switch():
    # Clocks go forward on Sunday 2026-03-08: Friday opens at 09:00 UTC, Monday at 08:00 UTC.
    assert not is_open("market_data", utc(2026, 3, 6, 8, 30))  # 03:30 EST
    assert is_open("market_data", utc(2026, 3, 9, 8, 30))  # 04:30 EDT
    # And back on Sunday 2026-11-01: Friday opens at 08:00 UTC, Monday at 09:00 UTC.
    assert is_open("market_data", utc(2026, 10, 30, 8, 30))  # 04:30 EDT
    assert not is_open("market_data", utc(2026, 11, 2, 8, 30))  # 03:30 EST
    # A session counted across no switch: 08:00 EDT -> 12:00 UTC is 4 h after 04:00.
    assert open_for("market_data", utc(2026, 3, 9, 12, 0)) == 4 * 3600


def test_weekends_are_closed_and_a_non_utc_time_is_converted():
    assert not is_open("market_data", utc(2026, 11, 28, 15, 0))  # Saturday
    assert not is_open("market_data", utc(2026, 11, 29, 15, 0))  # Sunday
    tokyo = timezone(timedelta(hours=9))
    # Thursday 00:30 in Tokyo is Wednesday 10:30 in New York.
    assert open_for("market_data", datetime(2026, 11, 26, 0, 30, tzinfo=tokyo)) == 6.5 * 3600


@pytest.mark.parametrize("day", [
    date(2025, 1, 9),  # national day of mourning
    date(2025, 4, 18),  # Good Friday
    date(2026, 7, 3),  # Independence Day (a Saturday) observed on Friday
    date(2026, 11, 26),  # Thanksgiving
    date(2027, 6, 18),  # Juneteenth (a Saturday) observed on Friday
    date(2027, 7, 5),  # Independence Day (a Sunday) observed on Monday
    date(2027, 12, 24),  # Christmas (a Saturday) observed on Friday
])
def test_nyse_holidays_are_closed_all_day(day):
    for hour in (9, 15, 23):  # 04:00/05:00, 10:00/11:00, 18:00/19:00 in New York
        assert not is_open("market_data", datetime(day.year, day.month, day.day, hour,
                                                   tzinfo=UTC)), (day, hour)
    after = day + timedelta(days=3 if day.weekday() == 4 else 1)
    assert is_open("market_data", datetime(after.year, after.month, after.day, 15, tzinfo=UTC))


def test_the_holiday_list_covers_its_years_on_weekdays_only():
    assert {day.year for day in NYSE_HOLIDAYS} == set(HOLIDAY_YEARS)
    assert all(day.weekday() < 5 for day in NYSE_HOLIDAYS)
    assert all(9 <= sum(d.year == y for d in NYSE_HOLIDAYS) <= 11 for y in HOLIDAY_YEARS)
    # New Year's Day 2028 is a Saturday and is not observed on Friday 2027-12-31.
    assert is_open("market_data", utc(2027, 12, 31, 15, 0))


def test_crypto_is_always_open_and_unknown_kinds_never_are():
    for at in (utc(2026, 11, 28, 15, 0), utc(2026, 11, 26, 3, 0), utc(2026, 11, 25, 15, 0)):
        assert open_for("crypto_data", at) == math.inf
        assert open_for("trade_updates", at) is None
        assert open_for("news", at) is None


def test_a_naive_time_is_refused():
    with pytest.raises(InvalidInputError, match="aware datetime"):
        open_for("market_data", datetime(2026, 11, 25, 15, 0))
