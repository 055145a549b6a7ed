"""Fixtures for the scale-out tests: a fresh PostgreSQL database and Redis prefix per test, a fleet."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.scale.fleet import Fleet
from tests.store.backends import forget_prefix, fresh_database


@pytest.fixture
async def shared_backend() -> AsyncIterator[tuple[str, str]]:
    """(database URL, Redis key prefix) of this test's own; dropped / forgotten afterwards."""
    prefix = f"rg_scale_{secrets.token_hex(5)}:"
    async with fresh_database() as db_url:
        try:
            yield db_url, prefix
        finally:
            await forget_prefix(prefix)


@pytest.fixture
def make_fleet(tmp_path: Path, shared_backend: tuple[str, str]):
    """Factory: ``make_fleet(count, workers=1)``; every instance is stopped after the test."""
    fleets: list[Fleet] = []

    def make(count: int, **kwargs) -> Fleet:
        db_url, prefix = shared_backend
        fleet = Fleet(tmp_path / f"fleet{len(fleets)}", db_url, prefix, count, **kwargs)
        fleets.append(fleet)
        return fleet

    yield make
    for fleet in fleets:
        fleet.stop()
