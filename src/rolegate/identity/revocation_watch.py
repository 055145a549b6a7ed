"""How a worker learns that some session was ended elsewhere (logout, back-channel, admin).

Ending a session bumps the store counter ``sessions``; every worker re-reads it at most every
``interval`` seconds and drops its session cache when it moved. This is the ONE place that
decides cache staleness, so a shared-memory version board can replace it later.
"""

from __future__ import annotations

import time

from rolegate.store import Store, StoreUnavailable

COUNTER = "sessions"


class RevocationWatch:
    """``await current()`` -> the latest known revocation version (re-read at most every ``interval``)."""

    __slots__ = ("_store", "_interval", "_value", "_checked_at")

    def __init__(self, store: Store, *, interval: float = 0.25) -> None:
        self._store = store
        self._interval = interval
        self._value = -1
        self._checked_at = 0.0

    async def current(self) -> int:
        now = time.monotonic()
        if now - self._checked_at >= self._interval:
            try:
                self._value = await self._store.counter(COUNTER)
                self._checked_at = now
            except StoreUnavailable:
                # Fail closed: an unknown version makes every cache entry stale (callers then ask the
                # store itself, which answers or fails loudly).
                self._value = -1
        return self._value

    async def bump(self) -> int:
        """Announce that sessions were ended; returns the new version (seen at once by this worker)."""
        self._value = await self._store.incr(COUNTER)
        self._checked_at = time.monotonic()
        return self._value
