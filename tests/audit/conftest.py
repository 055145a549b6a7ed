"""Fixtures for the audit tests: a real Store (SQLite today; parametrize ``store`` for PostgreSQL)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from rolegate.store.base import Store
from rolegate.store.sqlite import SQLiteStore

KEY = b"k" * 32


class RawDB:
    """Plain SQL on the store's database, behind rolegate's back: how an attacker would tamper."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def execute(self, sql: str, args: tuple = ()) -> list[tuple]:
        db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        try:
            return db.execute(sql, args).fetchall()
        finally:
            db.close()

    def row(self, seq: int) -> tuple:
        return self.execute("SELECT seq, ts, kind, body, prev_hash, hash FROM audit WHERE seq=?", (seq,))[0]


@pytest.fixture(params=["sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    backend = SQLiteStore(f"sqlite:///{tmp_path / 'rolegate.db'}")
    await backend.open()
    yield backend
    await backend.close()


@pytest.fixture
def raw(store: Store) -> RawDB:
    return RawDB(store.path)  # type: ignore[attr-defined]
