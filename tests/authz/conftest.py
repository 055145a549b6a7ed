from __future__ import annotations

from pathlib import Path

import pytest

from rolegate.config import load_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def building_safety():
    return load_config(ROOT / "config/examples/building-safety.yaml")


@pytest.fixture(scope="session")
def field_service():
    return load_config(ROOT / "config/examples/field-service.yaml")
