"""Fixtures for the scale-out tests: a database and a Redis prefix per test, a fleet on them.

Tests that only use PostgreSQL and Redis share the machine's (a fresh database and key prefix each); a test
that stops or restarts them overrides ``fleet_backend`` with ``private_backend``: a cluster and a
redis-server of its own (tests/support/private_services.py), so the machine's are never touched.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.scale.fleet import REDIS_URL, Backend, Fleet
from tests.store.backends import forget_prefix, fresh_database
from tests.support.private_services import missing, private_postgres, private_redis

HERE = Path(__file__).resolve().parent


@pytest.fixture
async def shared_backend() -> AsyncIterator[Backend]:
    """A database of this test's own on the machine's PostgreSQL, a key prefix on its Redis; dropped /
    forgotten afterwards. For tests that leave both servers running."""
    prefix = f"rg_scale_{secrets.token_hex(5)}:"
    async with fresh_database() as db_url:
        try:
            yield Backend(db_url, REDIS_URL, prefix)
        finally:
            await forget_prefix(prefix)


@pytest.fixture
def private_backend() -> Iterator[Backend]:
    """A PostgreSQL cluster and a Redis server of this test's own, to stop and start at will."""
    reason = missing()
    if reason:
        if os.environ.get("CI") == "true":  # scripts/setup.sh installs them: on CI their absence is a failure
            pytest.fail(f"private PostgreSQL/Redis cannot run on CI: {reason}")
        pytest.skip(f"private PostgreSQL/Redis: {reason}")
    with private_postgres() as postgres, private_redis() as redis:
        yield Backend(postgres.url, redis.url, "rg_scale:", postgres=postgres, redis=redis)


@pytest.fixture
def fleet_backend(shared_backend: Backend) -> Backend:
    """What ``make_fleet`` runs on; a module whose tests stop the servers overrides it with private_backend."""
    return shared_backend


@pytest.fixture
def make_fleet(tmp_path: Path, fleet_backend: Backend):
    """Factory: ``make_fleet(count, workers=1)``; every instance is stopped after the test."""
    fleets: list[Fleet] = []

    def make(count: int, **kwargs) -> Fleet:
        fleet = Fleet(tmp_path / f"fleet{len(fleets)}", fleet_backend, count, **kwargs)
        fleets.append(fleet)
        return fleet

    yield make
    for fleet in fleets:
        fleet.stop()


def _files_here() -> set[Path]:
    # Python sources are people's work (someone may add a test module while a run is going): data is not.
    return {p for p in HERE.rglob("*") if "__pycache__" not in p.parts and p.suffix != ".py"}


@pytest.fixture(autouse=True)
def writes_nothing_into_the_repository() -> Iterator[None]:
    """Figures go to stdout and state to tmp dirs: a test that leaves a file in tests/scale fails."""
    before = _files_here()
    yield
    left = sorted(str(p.relative_to(HERE)) for p in _files_here() - before)
    assert not left, f"a scale test wrote into the repository: tests/scale/{left}"
