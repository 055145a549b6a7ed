"""Fixed-window attempt counters for redemption, shared by every worker through the Store.

Backends with a shared counter of their own (PostgreSQL, Redis) answer ``store.hit``; for the
embedded SQLite store, whose ``hit`` counts per process only, the window lives in a namespace
with optimistic concurrency, so N workers cannot multiply the limit by N.
"""

from __future__ import annotations

import time

from rolegate.store import Store, VersionConflict
from rolegate.store.base import Store as _BaseStore

NAMESPACE = "daypass_rate"


def _has_shared_hit(store: Store) -> bool:
    return type(store).hit is not _BaseStore.hit


async def allow_attempt(store: Store, key: str, limit: int, window: float) -> bool:
    """Count one attempt on ``key``; False once it exceeds ``limit`` in the current window."""
    if _has_shared_hit(store):
        return await store.hit(f"daypass:{key}", limit, window)
    now = time.time()
    index = int(now // window)
    doc_key = f"{key}@{window:g}:{index}"
    for _attempt in range(8):
        found = await store.get(NAMESPACE, doc_key)
        hits = int(found.value.get("hits", 0)) if found is not None and isinstance(found.value, dict) else 0
        if hits >= limit:
            return False  # over the limit: no write, so a flood costs reads only
        try:
            await store.put(NAMESPACE, doc_key, {"hits": hits + 1}, expected_version=found.version if found else 0,
                            expires_at=(index + 1) * window + 1)
            return True
        except VersionConflict:
            continue
    return False  # heavy contention on one key is itself a flood: refuse (fail closed)
