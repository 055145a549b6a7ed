"""Times as people read them: in the configured time zone, in words, with the zone named.

Machine-facing output (the admin API, audit JSON, tokens) keeps ISO 8601 in UTC; every page a person
reads (admin UI, day-pass pages) renders through here, e.g. ``Sun 06 Dec 2026, 24:00 (Europe/Amsterdam)``.
Day and month names are English and fixed, whatever the process locale.
"""

from __future__ import annotations

import html
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

__all__ = ["display_zone", "duration_text", "local_text", "time_html", "to_timestamp"]

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def display_zone(config: Any) -> str:
    """The zone people read times in: ``server.timezone``; else the one zone every day-pass template
    names (a site configures its zone once); else UTC."""
    zone = getattr(config.server, "timezone", None)
    if zone:
        return zone
    daypass = getattr(config, "daypass", None)
    zones = {t.timezone for t in daypass.templates.values()} if daypass is not None else set()
    return zones.pop() if len(zones) == 1 else "UTC"


def to_timestamp(value: float | int | datetime | str | None) -> float | None:
    """A Unix time from a number, an aware datetime or an ISO 8601 string; None when there is none."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp()
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).timestamp()


def local_text(
    value: float | int | datetime | str | None,
    zone: str,
    *,
    until: bool = False,
    seconds: bool = False,
    named: bool = True,
) -> str:
    """``Sun 06 Dec 2026, 18:00 (Europe/Amsterdam)``; "" for no time (an unreadable string is shown as is).

    ``until``: an end time; local midnight is written as 24:00 of the day that ends (a pass "until
    Mon 00:00" reads as if Monday counted). ``seconds`` adds them (the audit trail's order).
    """
    ts = to_timestamp(value)
    if ts is None:
        return "" if value is None else str(value)
    local = datetime.fromtimestamp(ts, ZoneInfo(zone))
    clock = f"{local:%H:%M:%S}" if seconds else f"{local:%H:%M}"
    if until and (local.hour, local.minute, local.second) == (0, 0, 0):
        local -= timedelta(days=1)
        clock = "24:00:00" if seconds else "24:00"
    text = f"{_DAYS[local.weekday()]} {local.day:02d} {_MONTHS[local.month - 1]} {local.year}, {clock}"
    return f"{text} ({zone})" if named else text


def time_html(
    value: float | int | datetime | str | None,
    zone: str,
    *,
    until: bool = False,
    seconds: bool = False,
    named: bool = True,
    empty: str = "",
) -> str:
    """``<time datetime="2026-12-06T23:00:00Z">Sun 06 Dec 2026, 24:00 (Europe/Amsterdam)</time>``, escaped."""
    ts = to_timestamp(value)
    if ts is None:
        return html.escape(empty if value in (None, "") else str(value))
    iso = datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    text = local_text(ts, zone, until=until, seconds=seconds, named=named)
    return f'<time datetime="{iso}">{html.escape(text)}</time>'


def duration_text(seconds: float) -> str:
    """What is left, rounded down: ``2 d 3 h``, ``3 h 12 min``, ``12 min``, ``less than a minute``."""
    minutes = int(max(0.0, seconds) // 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min"
    return "less than a minute"
