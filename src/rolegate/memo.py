"""The one bounded cache every remembering object in rolegate uses.

No rolegate imports (like ``limits.py``): any package may use it without joining an import cycle.
"""

from __future__ import annotations

from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


class BoundedCache(dict[K, V]):
    """A ``dict`` that holds at most ``limit`` entries: ``put`` empties it when full, then stores.

    A hit is the plain C ``dict.get`` / ``[]`` (a subclass with ``__slots__`` and no override of them):
    no Python call, no bookkeeping on the hot path. Clear-when-full is O(1) per write and needs no
    per-entry state (no recency list, no counters): every entry here can be worked out again, so
    dropping them all costs one recomputation each on the next requests, and a flood of distinct keys
    (headers, cookies, paths chosen by clients) can grow memory to ``limit`` entries and no further.
    Invalidation on a version/policy change is the owner's ``clear()``, as with any dict.
    """

    __slots__ = ("limit",)

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def put(self, key: K, value: V) -> V:
        """Store ``value`` under ``key`` (emptying the cache first when it is full); returns ``value``."""
        if len(self) >= self.limit:
            self.clear()
        self[key] = value
        return value


__all__ = ["BoundedCache"]
