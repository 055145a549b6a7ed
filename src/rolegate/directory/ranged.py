"""Active Directory ranged attribute retrieval (``member;range=0-1499``).

AD returns at most MaxValRange values of a multi-valued attribute per answer. The answer
then names the attribute ``member;range=0-1499`` (``member`` itself is empty); the client
asks for ``member;range=1500-*`` and so on until the range ends in ``*``. OpenLDAP never
does this and answers ``member`` in full: both shapes go through ``collect_values``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

_RANGE = re.compile(r"\A([^;]+)((?:;[^;]+)*?);range=(\d+)-(\d+|\*)((?:;[^;]+)*)\Z", re.I)

# Guard against a server that keeps answering the same range: at most this many round trips.
MAX_RANGE_STEPS = 10_000


class RangeError(Exception):
    """The server's ranged answers do not add up (a gap, no progress)."""


def parse_range(attribute: str) -> tuple[str, int, int | None] | None:
    """``member;range=0-1499`` -> ("member", 0, 1499); ``;range=1500-*`` -> end None; else None."""
    match = _RANGE.match(attribute)
    if not match:
        return None
    name = match.group(1) + match.group(2) + match.group(5)
    end = match.group(4)
    return name, int(match.group(3)), None if end == "*" else int(end)


def collect_values(
    attributes: Mapping[str, Sequence[bytes]],
    attribute: str,
    fetch_range: Callable[[str], Mapping[str, Sequence[bytes]]],
) -> list[bytes]:
    """Every value of ``attribute``, following ranged answers with ``fetch_range``.

    ``attributes`` are an entry's raw attributes (any key case). ``fetch_range(request)``
    re-reads the same entry asking for e.g. ``member;range=1500-*`` and returns its raw
    attributes. A plain answer returns at once without a round trip.
    """
    wanted = attribute.lower()
    values: list[bytes] = []
    ranged: tuple[int, int | None, Sequence[bytes]] | None = None
    for key, found in attributes.items():
        parsed = parse_range(key)
        if parsed is not None and parsed[0].lower() == wanted:
            ranged = (parsed[1], parsed[2], found)
        elif key.lower() == wanted:
            values.extend(found)
    if ranged is None:
        return values
    values = []  # the plain key of a ranged answer is empty; the ranges carry everything
    start, end, found = ranged
    for _ in range(MAX_RANGE_STEPS):
        if start != len(values):
            raise RangeError(f"{attribute}: range starts at {start}, expected {len(values)}")
        values.extend(found)
        if end is None:
            return values
        if not found:
            raise RangeError(f"{attribute}: empty range {start}-{end} before the end")
        answer = fetch_range(f"{attribute};range={len(values)}-*")
        nxt = None
        for key, found_next in answer.items():
            parsed = parse_range(key)
            if parsed is not None and parsed[0].lower() == wanted:
                nxt = (parsed[1], parsed[2], found_next)
        if nxt is None:
            raise RangeError(f"{attribute}: the server gave no range after {len(values)} values")
        start, end, found = nxt
    raise RangeError(f"{attribute}: more than {MAX_RANGE_STEPS} ranges")
