"""Fixed-window hit counting in memory: the rate limiter when the store has no shared one."""

from __future__ import annotations

import time


class WindowCounter:
    """Counts hits per key in fixed windows; forgets windows that have ended."""

    __slots__ = ("_windows", "_max_keys")

    def __init__(self, max_keys: int = 100_000) -> None:
        # (key, window length) -> (end of the current window, hits in it)
        self._windows: dict[tuple[str, float], tuple[float, int]] = {}
        self._max_keys = max_keys

    def hit(self, key: str, limit: int, window_seconds: float, now: float | None = None) -> bool:
        """Count one hit; True while the key stays within ``limit`` hits in the current window."""
        now = time.time() if now is None else now
        slot = (key, window_seconds)
        end, count = self._windows.get(slot, (0.0, 0))
        if now >= end:
            end, count = (now // window_seconds + 1) * window_seconds, 0
        count += 1
        self._windows[slot] = (end, count)
        if len(self._windows) > self._max_keys:
            self._forget(now)
        return count <= limit

    def _forget(self, now: float) -> None:
        for slot in [s for s, (end, _) in self._windows.items() if end <= now]:
            del self._windows[slot]
        # Still full of live windows (a flood of distinct keys): drop the oldest half, bounded memory.
        if len(self._windows) > self._max_keys:
            for slot in list(self._windows)[: len(self._windows) // 2]:
                del self._windows[slot]
