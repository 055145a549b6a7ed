"""Fixtures for the token tests: a real SQLite Store, a version board, a movable clock, key rings."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from rolegate.store.sqlite import SQLiteStore
from rolegate.store.version_board import VersionBoard
from rolegate.tokens import AssertionMinter, KeyRing, TokenService

ISSUER = "https://safety.example.com"
SECRET = "s" * 48


class Clock:
    """A clock tests move by hand (rotation, expiry) without sleeping."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock(time.time())


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/rolegate.db"


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(db_url)
    await s.open()
    yield s
    await s.close()


@pytest.fixture
def board(tmp_path: Path) -> Iterator[VersionBoard]:
    b = VersionBoard(tmp_path / "rolegate.db.board")
    yield b
    b.close()


def make_ring(store, clock, board=None, **kw) -> KeyRing:
    kw.setdefault("rotate_every", 7 * 86400)
    kw.setdefault("max_token_lifetime", 12 * 3600)
    return KeyRing(store, secret=kw.pop("secret", SECRET), board=board, clock=clock, **kw)


@pytest.fixture
async def keyring(store, clock, board) -> KeyRing:
    ring = make_ring(store, clock, board)
    await ring.sync()
    return ring


@pytest.fixture
def minter(keyring, clock) -> AssertionMinter:
    return AssertionMinter(keyring, ISSUER, 300, clock=clock)


class Version:
    """The permission version the service compares ``ver`` with (a callable, like board.get)."""

    def __init__(self) -> None:
        self.value = 1

    def __call__(self) -> int:
        return self.value


@pytest.fixture
def version() -> Version:
    return Version()


@pytest.fixture
def service(keyring, store, board, clock, version) -> TokenService:
    return TokenService(
        keyring=keyring,
        store=store,
        issuer=ISSUER,
        current_version=version,
        lifetime=300,
        refresh_lifetime=12 * 3600,
        board=board,
        clock=clock,
        grants=lambda p: (["user"], ["dashboard:view", "documents:view"]),
    )
