"""Datetimes from outside: with a time zone and within a range every part can convert and store.

`0001-01-01T00:00:00+05:00` and `9999-12-31T23:00:00-05:00` parse, but converting them to UTC
overflows Python's datetime; they and everything else outside [MIN_DATETIME, MAX_DATETIME) are
refused before anything computes with them.
"""

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator

MIN_DATETIME = datetime(1970, 1, 1, tzinfo=UTC)
MAX_DATETIME = datetime(3000, 1, 1, tzinfo=UTC)


def datetime_problem(value: datetime) -> str | None:
    """Why `value` is not an acceptable input datetime, or None."""
    offset = value.utcoffset()
    if offset is None:
        return "needs a time zone (for example 2030-01-01T00:00:00Z)"
    # Compared as naive wall time minus offset, which cannot overflow the way astimezone can.
    naive_utc = value.replace(tzinfo=None)
    low = MIN_DATETIME.replace(tzinfo=None) + offset
    high = MAX_DATETIME.replace(tzinfo=None) + offset
    if not low <= naive_utc < high:
        return (
            f"must lie between {MIN_DATETIME.date().isoformat()} and "
            f"{MAX_DATETIME.date().isoformat()} (UTC)"
        )
    return None


def _bounded(value: datetime) -> datetime:
    if problem := datetime_problem(value):
        raise ValueError(problem)
    return value.astimezone(UTC)


# A datetime field of a wire model: refused unless datetime_problem is None; held in UTC.
BoundedDateTime = Annotated[datetime, AfterValidator(_bounded)]
