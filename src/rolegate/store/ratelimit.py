"""Sliding-window rate limiting: at most ``limit`` allowed hits per key in ANY ``window`` seconds.

A fixed window (count per calendar minute) lets a caller spend its limit at the end of one window
and again at the start of the next: twice the limit within a second. Here every allowed hit is
remembered with its time and counts until ``window`` seconds after it, so no stretch of ``window``
seconds ever holds more than ``limit`` allowed hits, wherever it starts. A refused hit is not
remembered: a flood writes nothing and cannot lock a key out beyond ``window`` after its last
allowed hit.

Every backend keeps the same log: in memory (``WindowCounter``, one process), as one document per
key in the SQLite file (``admit``; shared by every worker on the machine), in a PostgreSQL table
and in a Redis sorted set. ``now`` is injectable (tests); it is wall-clock seconds, since several
processes and instances share one log. A hit at ``t`` counts while ``now < t + window``.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

# The documents namespace of the logs kept in a Store's documents (SQLite).
NAMESPACE = "rate"


def recent(times: Any, now: float, window_seconds: float) -> list[float]:
    """The hit times from a stored log that still count at ``now``; anything malformed is dropped."""
    if not isinstance(times, list):
        return []
    start = now - window_seconds
    return [t for t in times if isinstance(t, (int, float)) and not isinstance(t, bool) and t > start]


class WindowCounter:
    """Allowed hits per key over a sliding window, in this process only; memory is bounded."""

    __slots__ = ("_hits", "_max_keys")

    def __init__(self, max_keys: int = 100_000) -> None:
        # (key, window length) -> times of the allowed hits still in the window, oldest first
        self._hits: dict[tuple[str, float], deque[float]] = {}
        self._max_keys = max_keys

    def hit(self, key: str, limit: int, window_seconds: float, now: float | None = None) -> bool:
        """Count one hit; True while the key has fewer than ``limit`` allowed hits in the last window."""
        now = time.time() if now is None else now
        slot = (key, window_seconds)
        times = self._hits.get(slot)
        if times is None:
            times = self._hits[slot] = deque()
            if len(self._hits) > self._max_keys:
                self._forget(now)
        start = now - window_seconds
        while times and times[0] <= start:
            times.popleft()
        if len(times) >= limit:
            return False
        times.append(now)
        return True

    def _forget(self, now: float) -> None:
        for slot in [s for s, times in self._hits.items() if not times or times[-1] <= now - s[1]]:
            del self._hits[slot]
        # Still full of live keys (a flood of distinct keys): drop the oldest half, bounded memory.
        if len(self._hits) > self._max_keys:
            for slot in list(self._hits)[: len(self._hits) // 2]:
                del self._hits[slot]


def admit(stored: Any, limit: int, window_seconds: float, now: float) -> list[float] | None:
    """One hit against a stored log (a document's ``{"t": [...]}``, or None): the log to store
    when the hit is allowed, None when it is refused (nothing to write)."""
    times = recent(stored.get("t") if isinstance(stored, dict) else None, now, window_seconds)
    if len(times) >= limit:
        return None
    times.append(now)
    return times
