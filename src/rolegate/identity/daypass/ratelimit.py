"""Attempt counters for redemption, shared by every worker through the Store.

A sliding window (``rolegate.store.ratelimit``): no stretch of ``window`` seconds holds more than
``limit`` allowed attempts per key, wherever it starts, so a guesser cannot spend the limit at the
end of one minute and again at the start of the next. Every backend shares the count between
workers (SQLite through a document in the database file; PostgreSQL and Redis server-side).
"""

from __future__ import annotations

from rolegate.store import Store


async def allow_attempt(store: Store, key: str, limit: int, window: float, *, now: float | None = None) -> bool:
    """Count one attempt on ``key``; False once it would exceed ``limit`` in the last ``window`` seconds."""
    return await store.hit(f"daypass:{key}", limit, window, now=now)
