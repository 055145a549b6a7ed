"""Every Store backend, ready for a test: a fresh PostgreSQL database or Redis key prefix per use.

Importable from any test (``from store.backends import open_backend``); the ``store`` fixture in
``conftest.py`` is built on it. Nothing here imports pytest, so spawned processes can use it too.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from rolegate.config.sections.storage import StorageConfig
from rolegate.store import Store, make_store, migrate

PG_ADMIN_URL = os.environ.get("ROLEGATE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("ROLEGATE_TEST_REDIS", "redis://127.0.0.1:6379/0")
BACKENDS = ("sqlite", "postgres", "postgres+redis")


def database_url(name: str) -> str:
    return urlunsplit(urlsplit(PG_ADMIN_URL)._replace(path=f"/{name}"))


@asynccontextmanager
async def fresh_database() -> AsyncIterator[str]:
    """A PostgreSQL database of this test's own (dropped afterwards); yields its URL."""
    import asyncpg

    name = f"rg_test_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(PG_ADMIN_URL, timeout=5)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield database_url(name)
    finally:
        # A fresh admin connection: the test may have restarted the server meanwhile.
        for _attempt in range(20):
            try:
                admin = await asyncpg.connect(PG_ADMIN_URL, timeout=5)
                break
            except (OSError, asyncpg.PostgresError):
                await asyncio.sleep(0.5)
        else:
            raise RuntimeError(f"could not reconnect to drop test database {name}")
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def forget_prefix(prefix: str) -> None:
    """Delete every Redis key under a test's prefix."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=5)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=500)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


def storage_config(
    kind: str, tmp_path: Path, *, db_url: str | None = None, prefix: str | None = None, **extra: object
) -> StorageConfig:
    """The config a person would write for this backend."""
    if kind == "sqlite":
        return StorageConfig(url=f"sqlite:///{tmp_path / 'rolegate.db'}", **extra)
    if kind == "postgres":
        return StorageConfig(url=db_url, **extra)
    if kind == "postgres+redis":
        return StorageConfig(url=db_url, cache_url=REDIS_URL, cache_prefix=prefix, **extra)
    raise ValueError(kind)


@asynccontextmanager
async def backend_config(kind: str, tmp_path: Path) -> AsyncIterator[StorageConfig]:
    """A migrated, empty backend of ``kind``; yields the StorageConfig that opens it (as often as wanted)."""
    if kind == "sqlite":
        yield storage_config(kind, tmp_path)
        return
    async with fresh_database() as db_url:
        prefix = f"rg_test_{hashlib.sha1(db_url.encode()).hexdigest()[:10]}:"
        config = storage_config(kind, tmp_path, db_url=db_url, prefix=prefix)
        await migrate(config)
        try:
            yield config
        finally:
            if kind == "postgres+redis":
                await forget_prefix(prefix)


@asynccontextmanager
async def open_backend(kind: str, tmp_path: Path) -> AsyncIterator[Store]:
    """An open Store of ``kind`` on a fresh database / prefix, closed and dropped afterwards."""
    async with backend_config(kind, tmp_path) as config, opened(config) as store:
        yield store


@asynccontextmanager
async def opened(config: StorageConfig) -> AsyncIterator[Store]:
    """One more instance on the same backend (what a second rolegate instance would open)."""
    store = make_store(config)
    await store.open()
    try:
        yield store
    finally:
        await store.close()
