"""Decoding raw directory values: text, GUIDs, DNs, timestamps. Never raises on odd data."""

from __future__ import annotations

import calendar
import re
import time
import uuid

_DN_SEPARATOR_SPACE = re.compile(r"\s*(?<!\\)([,+])\s*")
_UNIQUE_MEMBER_UID = re.compile(r"#'[01]*'B\Z")
_GENERALIZED_TIME = re.compile(r"(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})?(?:[.,]\d+)?(Z|[+-]\d{4})?\Z")


def decode_text(raw: bytes | str | None) -> str | None:
    """UTF-8 text, or None when the value is not valid UTF-8 (the caller reports it)."""
    if raw is None:
        return None
    if isinstance(raw, str):
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def decode_lenient(raw: bytes | str | None) -> str | None:
    """UTF-8 text with undecodable bytes replaced: for display fields (name, email)."""
    if raw is None or isinstance(raw, str):
        return raw
    return raw.decode("utf-8", "replace")


def format_guid(raw: bytes | str) -> str | None:
    """An AD objectGUID (16 little-endian bytes) as its usual string; None when malformed."""
    if isinstance(raw, str):
        try:
            return str(uuid.UUID(raw))
        except ValueError:
            return None
    if len(raw) != 16:
        return None
    return str(uuid.UUID(bytes_le=bytes(raw)))


def normalize_dn(dn: str) -> str:
    """A DN in a form fit for equality: lower case, no blanks around separators.

    Good enough for matching a member value to the DN the same server returns for the
    entry; a full RFC 4514 canonicalisation per value would cost a lot at 100k members.
    """
    dn = dn.strip()
    if "#" in dn:
        dn = _UNIQUE_MEMBER_UID.sub("", dn)  # uniqueMember may carry "#'0101'B"
    if " " in dn:  # most DNs have no blanks at all: skip the regex (it runs per member value)
        dn = _DN_SEPARATOR_SPACE.sub(r"\1", dn)
    return same_if_equal(dn, dn.lower())


def fold_name(username: str) -> str:
    """``username`` casefolded, as every name index keys it (the object itself when already folded)."""
    return same_if_equal(username, username.casefold())


def same_if_equal(text: str, derived: str) -> str:
    """``text`` itself when ``derived`` equals it: a million index keys then cost no second copy of the string."""
    return text if derived == text else derived


def parse_change_time(text: str) -> float | None:
    """Generalized time (modifyTimestamp, whenChanged) as epoch seconds; None when malformed."""
    match = _GENERALIZED_TIME.match(text.strip())
    if not match:
        return None
    year, month, day, hour, minute, second, zone = match.groups()
    try:
        stamp = calendar.timegm((int(year), int(month), int(day), int(hour), int(minute), int(second or 0)))
    except (ValueError, OverflowError):
        return None
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        stamp -= sign * (int(zone[1:3]) * 3600 + int(zone[3:5]) * 60)
    return float(stamp)


def format_change_time(epoch: float) -> str:
    """Epoch seconds as generalized time for a ``(modifyTimestamp>=…)`` filter."""
    return time.strftime("%Y%m%d%H%M%SZ", time.gmtime(max(0.0, epoch)))


def parse_int(text: str | None) -> int | None:
    """An integer attribute (userAccountControl, uSNChanged), or None."""
    if text is None:
        return None
    try:
        return int(text.strip())
    except ValueError:
        return None
