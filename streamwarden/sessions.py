"""Market sessions: when the market of a stream kind is open, so that silence means something.

Pure functions of an aware ``datetime`` (the caller passes its injected clock's ``now()``); no
clock is read here.

Rules, keyed on the stream kind's name:

* ``market_data`` (US equities): open Monday to Friday from 04:00 to 20:00
  America/New_York, pre-market and after-hours included, closed on weekends and on the NYSE's
  full-day holidays of :data:`NYSE_HOLIDAYS` (2025-2027, from the NYSE's published calendar,
  the national day of mourning of 2025-01-09 included). For other years only weekends are
  known: a holiday outside 2025-2027 counts as an open day. Early closes (13:00 regular
  close, 17:00 end of after-hours on the day after Thanksgiving, some Christmas and
  Independence Day eves) are not modelled: the session is taken to run to 20:00. Times are
  converted with :mod:`zoneinfo`, so daylight saving time moves the session's UTC times
  (04:00 New York is 09:00 UTC in winter, 08:00 UTC in summer).
* ``crypto_data``: always open.
* any other kind (``trade_updates``, ``news``, ``option_data``, ...): no session is known, and
  :func:`open_for` answers None (closed): the staleness watchdog never acts on silence it
  cannot tell from a closed market.

Thread-safety: pure; safe from any thread.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

from streamwarden.errors import InvalidInputError

NEW_YORK = ZoneInfo("America/New_York")
#: Start and end of the US equities session, extended hours included (New York time).
EQUITIES_OPEN = time(4, 0)
EQUITIES_CLOSE = time(20, 0)
#: The kinds whose market never closes.
ALWAYS_OPEN_KINDS = frozenset({"crypto_data"})
#: The kinds that follow the US equities session.
EQUITIES_KINDS = frozenset({"market_data"})
#: The years :data:`NYSE_HOLIDAYS` covers in full.
HOLIDAY_YEARS = range(2025, 2028)
#: NYSE full-day closures, 2025-2027 (a Saturday holiday is observed on the Friday before, a
#: Sunday holiday on the Monday after; New Year's Day 2028 falls on a Saturday and is not
#: observed on 2027-12-31).
NYSE_HOLIDAYS = frozenset(date.fromisoformat(day) for day in (
    "2025-01-01", "2025-01-09", "2025-01-20", "2025-02-17", "2025-04-18", "2025-05-26",
    "2025-06-19", "2025-07-04", "2025-09-01", "2025-11-27", "2025-12-25",
    "2026-01-01", "2026-01-19", "2026-02-16", "2026-04-03", "2026-05-25", "2026-06-19",
    "2026-07-03", "2026-09-07", "2026-11-26", "2026-12-25",
    "2027-01-01", "2027-01-18", "2027-02-15", "2027-03-26", "2027-05-31", "2027-06-18",
    "2027-07-05", "2027-09-06", "2027-11-25", "2027-12-24",
))


def open_for(kind: str, at: datetime) -> float | None:
    """How many seconds the market of ``kind`` has been open without a break at ``at``:
    ``math.inf`` for a market that never closes, None when it is closed (or ``kind`` has no
    known session).

    >>> from datetime import datetime, UTC
    >>> open_for("market_data", datetime(2026, 11, 25, 9, 30, tzinfo=UTC))  # 04:30 in New York
    1800.0
    >>> open_for("market_data", datetime(2026, 11, 28, 15, 0, tzinfo=UTC)) is None  # Saturday
    True

    Raises:
        InvalidInputError: ``at`` is naive (without a timezone).
    """
    if at.tzinfo is None or at.utcoffset() is None:
        raise InvalidInputError("market sessions need an aware datetime (with a timezone)")
    if kind in ALWAYS_OPEN_KINDS:
        return math.inf
    if kind not in EQUITIES_KINDS:
        return None
    local = at.astimezone(NEW_YORK)
    day = local.date()
    if day.weekday() >= 5 or day in NYSE_HOLIDAYS:
        return None
    if not EQUITIES_OPEN <= local.time() < EQUITIES_CLOSE:
        return None
    opened = datetime.combine(day, EQUITIES_OPEN, tzinfo=NEW_YORK)
    return (at.astimezone(UTC) - opened.astimezone(UTC)).total_seconds()


def is_open(kind: str, at: datetime) -> bool:
    """Whether the market of ``kind`` is open at ``at``.

    Raises:
        InvalidInputError: ``at`` is naive.
    """
    return open_for(kind, at) is not None
