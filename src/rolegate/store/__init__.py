"""Storage behind one Store interface; no SQL outside this package."""

from __future__ import annotations

from pathlib import Path

from rolegate.store.base import Record, Store, StoreUnavailable, VersionConflict


def make_store(storage_config, *, base_dir: Path | None = None) -> Store:
    """The Store named by ``storage.url`` (not yet opened)."""
    url = storage_config.url
    if url.startswith("sqlite:"):
        from rolegate.store.sqlite import SQLiteStore

        return SQLiteStore(url, base_dir=base_dir)
    raise ValueError(f"storage.url {url!r}: PostgreSQL support is not built yet; use sqlite:///path")


async def open_store(storage_config, *, base_dir: Path | None = None) -> Store:
    store = make_store(storage_config, base_dir=base_dir)
    await store.open()
    return store


__all__ = ["Record", "Store", "StoreUnavailable", "VersionConflict", "make_store", "open_store"]
