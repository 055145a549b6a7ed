"""How a worker learns that some session was ended elsewhere (logout, back-channel, admin).

Ending a session bumps the store counter ``sessions``; every worker re-reads it at most every
``interval`` seconds and drops its session cache when it moved. This is the ONE place that
decides cache staleness, so a shared-memory version board can replace it later.
"""

from __future__ import annotations

import time

from rolegate.store import Store, StoreUnavailable
from rolegate.store.version_board import VersionBoard

COUNTER = "sessions"


class RevocationWatch:
    """``await current()`` -> the latest known revocation version.

    With a version board (the server's workers share one), the board is read at memory speed on
    every call and a revocation on any worker of this machine is seen at the next request; the
    Store counter is still re-read every ``interval`` for changes made by other instances.
    """

    __slots__ = ("_store", "_interval", "_value", "_checked_at", "_board")

    def __init__(self, store: Store, *, interval: float = 0.25, board: VersionBoard | None = None) -> None:
        self._store = store
        self._interval = interval
        self._value = -1
        self._checked_at = 0.0
        self._board = board

    def current_now(self) -> int | None:
        """``current()`` when it needs no Store read; None when the Store is due to be asked."""
        self._from_board()
        if time.monotonic() - self._checked_at >= self._interval:
            return None
        return self._value

    def _from_board(self) -> None:
        board = self._board
        if board is not None:
            seen = board.get(COUNTER)
            if seen > self._value and self._value != -1:
                self._value = seen

    async def current(self) -> int:
        self._from_board()
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
        """Announce that sessions were ended; returns the new version (seen at once by this machine)."""
        self._value = await self._store.incr(COUNTER)
        self._checked_at = time.monotonic()
        if self._board is not None:
            self._board.raise_to(COUNTER, self._value)
        return self._value
