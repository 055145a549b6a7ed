"""Which of rolegate's access tokens were revoked before they expired (RFC 7009), known to every worker.

Entries live in the Store only as long as a token they name could still be presented, so the list
stays small; each worker holds it in memory and reloads it when the ``sessions`` counter moves
(every revocation bumps it), so checking a token costs two set lookups and no I/O.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from rolegate.store import Store, StoreUnavailable
from rolegate.store.version_board import VersionBoard, bump

NAMESPACE = "token_revocations"
COUNTER = "sessions"
# Without a version board, poll the Store counter at most this often.
_POLL_SECONDS = 0.25


class RevocationList:
    """``revoke_*`` record a revocation fleet-wide; ``await is_revoked(jti, family)`` checks one."""

    __slots__ = ("store", "board", "_clock", "_jtis", "_families", "_seen", "_checked_at", "_lock")

    def __init__(
        self, store: Store, *, board: VersionBoard | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.board = board
        self._clock = clock
        self._jtis: dict[str, float] = {}
        self._families: dict[str, float] = {}
        self._seen = -2
        self._checked_at = -1e18
        self._lock = asyncio.Lock()

    async def revoke_token(self, jti: str, until: float) -> None:
        """Refuse the access token ``jti`` from now until ``until`` (its expiry)."""
        await self._record(f"jti:{jti}", until)
        self._jtis[jti] = until

    async def revoke_family(self, family: str, until: float) -> None:
        """Refuse every access token of a refresh-token family until ``until`` (its last token's expiry)."""
        await self._record(f"fam:{family}", until)
        self._families[family] = until

    async def _record(self, key: str, until: float) -> None:
        await self.store.put(NAMESPACE, key, {"until": until}, expires_at=until)
        await bump(self.store, self.board, COUNTER)

    async def is_revoked(self, jti: str, family: str) -> bool:
        await self._refresh()
        now = self._clock()
        until = self._jtis.get(jti)
        if until is not None and now < until:
            return True
        until = self._families.get(family)
        return until is not None and now < until

    async def _refresh(self) -> None:
        if self.board is not None:
            version = self.board.get(COUNTER)
        else:
            mono = time.monotonic()
            if mono - self._checked_at < _POLL_SECONDS:
                return
            version = await self.store.counter(COUNTER)
            self._checked_at = mono
        if version == self._seen:
            return
        async with self._lock:
            if version == self._seen:
                return
            try:
                records = await self.store.list(NAMESPACE)
            except StoreUnavailable:
                # Fail closed for the caller: the store answers or the request fails loudly.
                self._seen = -2
                raise
            jtis: dict[str, float] = {}
            families: dict[str, float] = {}
            for record in records:
                kind, _, name = record.key.partition(":")
                until = float(record.value.get("until", 0))
                (jtis if kind == "jti" else families)[name] = until
            self._jtis, self._families, self._seen = jtis, families, version
