"""One clock: "now", the stored timestamp format and ISO-week maths.

Every moment the product stores or compares goes through here. Tests freeze time with the ``clock``
fixture, which sets ``_frozen``: read at each call, so it reaches every module however it imported us.
"""

from __future__ import annotations

import functools
import re
from datetime import UTC, date, datetime, timedelta

_frozen: datetime | None = None  # the moment tests hold time at; None: the wall clock

# Any ISO 8601 shape a store has held: a space or T, seconds optional, any fraction, Z or an offset.
_ANY_SHAPE = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?(Z|[+-][0-9:]+)?"
)


def now_utc() -> datetime:
    """The current moment, UTC (the frozen one under test)."""
    return _frozen if _frozen is not None else datetime.now(UTC)


def now() -> str:
    """The current UTC time as the store writes it: ``2026-05-03T10:22:00.000Z``."""
    return format_ts(now_utc())


def format_ts(moment: datetime) -> str:
    """A moment as the store writes every timestamp (UTC, milliseconds, ``Z``), so text order is time order.

    The same shape as SQLite's ``strftime('%Y-%m-%dT%H:%M:%fZ')``; a naive moment is taken as UTC.
    """
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.isoformat(timespec="milliseconds") + "Z"


def parse_ts(text: str) -> datetime:
    """A stored timestamp (any shape ISO 8601 allows; naive is UTC) as an aware UTC moment."""
    moment = datetime.fromisoformat(text.strip())
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def stored_ts(value: str | bytes | int | float | None) -> str | bytes | int | float | None:
    """A timestamp rewritten in the one stored format; anything that is not a timestamp, unchanged."""
    if not isinstance(value, str) or not _ANY_SHAPE.fullmatch(value.strip()):
        return value
    try:
        return format_ts(parse_ts(value))
    except ValueError:
        return value


def days_ago(days: float, moment: datetime | None = None) -> str:
    """The stored timestamp ``days`` before ``moment`` (default now)."""
    return format_ts((moment or now_utc()) - timedelta(days=days))


def iso_week(ts: str) -> str:
    """The ISO 8601 week (``2026-W18``) of a stored timestamp; the one week key of the whole store."""
    return _week_of_day(ts[:10])


@functools.lru_cache(maxsize=4096)
def _week_of_day(day: str) -> str:
    year, week, _ = date.fromisoformat(day).isocalendar()
    return f"{year:04d}-W{week:02d}"


def week_monday(week: str) -> date:
    """The Monday an ISO week (``2026-W18``) starts on."""
    return date.fromisocalendar(int(week[:4]), int(week[6:8]), 1)


def sql_iso_week(ts: object) -> str | None:
    """``iso_week(ts)`` in SQL (SQLite before 3.46 has no ``%G``/``%V``)."""
    if not isinstance(ts, str) or len(ts) < 10:
        return None
    try:
        return iso_week(ts)
    except ValueError:
        return None
