"""The ``store`` fixture: each test runs once per backend (sqlite, postgres, postgres+redis)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from rolegate.config.sections.storage import StorageConfig
from rolegate.store import Store

from .backends import BACKENDS, backend_config, opened


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The backend kind under test."""
    return request.param


@pytest.fixture
async def storage(backend: str, tmp_path: Path) -> AsyncIterator[StorageConfig]:
    """A migrated, empty backend of this test's own; the StorageConfig that opens it."""
    async with backend_config(backend, tmp_path) as config:
        yield config


@pytest.fixture
async def store(storage: StorageConfig) -> AsyncIterator[Store]:
    """An open Store (closed after the test)."""
    async with opened(storage) as opened_store:
        yield opened_store


@pytest.fixture
async def other_instance(storage: StorageConfig) -> AsyncIterator[Store]:
    """A second Store on the same backend, as another rolegate instance would open it."""
    async with opened(storage) as opened_store:
        yield opened_store
