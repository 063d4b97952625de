"""One clock: "now", the stored timestamp format and ISO-week maths."""

from __future__ import annotations

import functools
from datetime import UTC, date, datetime


def now() -> str:
    """The current UTC time as the store writes it: ``2026-05-03T10:22:00.000Z``."""
    return format_ts(datetime.now(UTC))


def format_ts(moment: datetime) -> str:
    """A moment as the store writes every timestamp (UTC, milliseconds, ``Z``), so text order is time order.

    The same shape as SQLite's ``strftime('%Y-%m-%dT%H:%M:%fZ')``; a naive moment is taken as UTC.
    """
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.isoformat(timespec="milliseconds") + "Z"


def iso_week(ts: str) -> str:
    """The ISO 8601 week (``2026-W18``) of a stored timestamp; the one week key of the whole store."""
    return _week_of_day(ts[:10])


@functools.lru_cache(maxsize=4096)
def _week_of_day(day: str) -> str:
    year, week, _ = date.fromisoformat(day).isocalendar()
    return f"{year:04d}-W{week:02d}"


def sql_iso_week(ts: object) -> str | None:
    """``iso_week(ts)`` in SQL (SQLite before 3.46 has no ``%G``/``%V``)."""
    if not isinstance(ts, str) or len(ts) < 10:
        return None
    try:
        return iso_week(ts)
    except ValueError:
        return None
