"""The Redis layer: the session read-through cache and its invalidation across instances."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from rolegate.config.sections.storage import StorageConfig
from rolegate.store import StoreUnavailable
from rolegate.store.redis_cache import CachedStore

from .backends import backend_config, opened


@pytest.fixture
async def cached(tmp_path: Path) -> AsyncIterator[StorageConfig]:
    async with backend_config("postgres+redis", tmp_path) as config:
        yield config


async def test_session_reads_are_cached_and_writes_invalidate(cached: StorageConfig) -> None:
    async with opened(cached) as a, opened(cached) as b:
        assert isinstance(a, CachedStore)
        await a.put("sessions", "s1", {"user": "alice"}, expires_at=time.time() + 3600)
        assert (await a.get("sessions", "s1")).value == {"user": "alice"}
        # Behind the cache's back (a direct write to the database): the cached copy is still served,
        # which shows reads are coming from Redis.
        await a.wrapped.put("sessions", "s1", {"user": "mallory"})
        assert (await b.get("sessions", "s1")).value == {"user": "alice"}
        # Through the store, on the other instance: invalidated for everyone.
        await b.put("sessions", "s1", {"user": "alice", "mfa": True})
        record = await a.get("sessions", "s1")
        assert record.value == {"user": "alice", "mfa": True} and record.version == 3
        await b.delete("sessions", "s1")
        assert await a.get("sessions", "s1") is None


async def test_a_cached_session_never_outlives_its_expiry(cached: StorageConfig) -> None:
    async with opened(cached) as store:
        await store.put("sessions", "short", "x", expires_at=time.time() + 0.3)
        assert (await store.get("sessions", "short")).value == "x"
        for _ in range(100):
            if await store.get("sessions", "short") is None:
                break
            time.sleep(0.02)
        assert await store.get("sessions", "short") is None


async def test_other_namespaces_are_not_cached(cached: StorageConfig) -> None:
    async with opened(cached) as store:
        await store.put("bindings", "b1", 1)
        assert (await store.get("bindings", "b1")).value == 1
        await store.wrapped.put("bindings", "b1", 2)
        assert (await store.get("bindings", "b1")).value == 2


async def test_a_reader_that_raced_a_write_cannot_cache_the_old_document(cached: StorageConfig) -> None:
    from rolegate.store.base import Record

    async with opened(cached) as store:
        await store.put("sessions", "s", "v1")
        old = await store.wrapped.get("sessions", "s")  # a reader fetched v1 from the database ...
        await store.put("sessions", "s", "v2")  # ... a write landed ...
        await store._cache("sessions", old, warn=False)  # ... and the reader tries to cache what it read
        assert (await store.get("sessions", "s")).value == "v2"
        await store.delete("sessions", "s")
        await store._cache("sessions", Record("s", "v2", 2), warn=False)  # same race against a delete
        assert await store.get("sessions", "s") is None


async def test_a_closed_subscription_ends_with_store_unavailable(cached: StorageConfig) -> None:
    # What a watcher handles (it falls back to polling), as for a lost connection; it was an AttributeError.
    async with opened(cached) as store:
        sub = await store.subscribe("policy").start()
        await sub.close()
        with pytest.raises(StoreUnavailable):
            await sub.get(timeout=0.1)
