"""Storage behind one Store interface; no SQL outside this package.

``storage.url`` picks the backend (SQLite by default, PostgreSQL for scale-out); ``storage.cache_url``
puts Redis in front of it for cross-instance notifications, rate limits and the session cache.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Protocol

from rolegate.store import migrations
from rolegate.store.base import Record, Store, StoreUnavailable, VersionConflict
from rolegate.store.lease import Lease
from rolegate.store.migrations import MigrationRequired
from rolegate.store.notify import Subscription, watch_counters
from rolegate.store.sqlite import SQLiteStore


class StorageSettings(Protocol):
    """The ``storage`` section as the store reads it (rolegate.config's StorageConfig; store imports no config)."""

    @property
    def url(self) -> str: ...
    @property
    def cache_url(self) -> str | None: ...
    @property
    def cache_prefix(self) -> str: ...
    @property
    def cache_ttl(self) -> timedelta: ...
    @property
    def pool_size(self) -> int: ...
    @property
    def connect_timeout(self) -> timedelta: ...
    @property
    def command_timeout(self) -> timedelta: ...


def make_store(storage_config: StorageSettings, *, base_dir: Path | None = None) -> Store:
    """The Store named by ``storage.url`` (+ ``cache_url``), not yet opened."""
    url = storage_config.url
    store: Store
    if url.startswith("sqlite:"):
        store = SQLiteStore(url, base_dir=base_dir)
    elif url.startswith(("postgresql:", "postgres:")):
        from rolegate.store.postgres import PostgresStore  # lazily: asyncpg is only needed for PostgreSQL

        store = PostgresStore(
            url,
            pool_size=storage_config.pool_size,
            connect_timeout=storage_config.connect_timeout.total_seconds(),
            command_timeout=storage_config.command_timeout.total_seconds(),
        )
    else:
        raise ValueError(f"storage.url {url!r}: use sqlite:///path or postgresql://user@host/db")
    if storage_config.cache_url:
        from rolegate.store.redis_cache import CachedStore  # lazily: redis is only needed with a cache_url

        timeouts = storage_config.connect_timeout + storage_config.command_timeout
        store = CachedStore(
            store,
            storage_config.cache_url,
            prefix=storage_config.cache_prefix,
            cache_ttl=storage_config.cache_ttl.total_seconds(),
            timeout=storage_config.connect_timeout.total_seconds(),
            tombstone_ttl=timeouts.total_seconds() + 1,
        )
    return store


async def open_store(storage_config: StorageSettings, *, base_dir: Path | None = None) -> Store:
    store = make_store(storage_config, base_dir=base_dir)
    await store.open()
    return store


async def migrate(storage_config: StorageSettings, *, base_dir: Path | None = None) -> list[str]:
    """Bring the database schema up to this rolegate's; return the labels of what was applied now.

    PostgreSQL: versioned migrations under one advisory lock (safe to run from several hosts).
    SQLite: the store creates its schema when opened, so this only opens it once.
    """
    url = storage_config.url
    if url.startswith(("postgresql:", "postgres:")):
        from rolegate.store.postgres import connect  # lazily: asyncpg is only needed for PostgreSQL

        conn = await connect(
            url, timeout=storage_config.connect_timeout.total_seconds(), application_name="rolegate-migrate"
        )
        try:
            return [m.label for m in await migrations.apply(conn)]
        finally:
            await conn.close()
    store = SQLiteStore(url, base_dir=base_dir)
    await store.open()
    await store.close()
    return []


__all__ = [
    "Lease",
    "MigrationRequired",
    "Record",
    "Store",
    "StoreUnavailable",
    "Subscription",
    "VersionConflict",
    "make_store",
    "migrate",
    "open_store",
    "watch_counters",
]
