"""When a pass stops working: a duration, or the end of the local day, never beyond max_lifetime."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from rolegate.config.sections.features import DaypassTemplate
from rolegate.config.types import parse_duration
from rolegate.display_time import local_text


def end_of_local_day(now: float, zone: str) -> float:
    """The next local midnight after ``now`` in ``zone``, as a Unix time.

    Computed on the wall clock and converted back through the zone, so a day that is 23 or 25 hours
    long (daylight-saving change) still ends at midnight, not 24 hours after the last one.
    """
    tz = ZoneInfo(zone)
    local = datetime.fromtimestamp(now, tz)
    midnight = datetime.combine(local.date() + timedelta(days=1), time(0), tzinfo=tz)
    return midnight.timestamp()


def pass_expiry(template: DaypassTemplate, issued_at: float) -> float:
    """The Unix time at which a pass issued at ``issued_at`` from ``template`` expires."""
    if template.expires == "end_of_day":
        end = end_of_local_day(issued_at, template.timezone)
    else:
        end = issued_at + parse_duration(template.expires).total_seconds()
    return min(end, issued_at + template.max_lifetime.total_seconds())


def format_local(ts: float, zone: str) -> str:
    """A time as a pass holder reads it: 'Sun 30 Mar 2025, 18:00 (Europe/Amsterdam)'.

    Midnight is written as 24:00 of the day that ends (a pass "until Wed 00:00" reads as if Wednesday counted).
    """
    return local_text(ts, zone, until=True)
