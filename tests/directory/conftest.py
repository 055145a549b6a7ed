"""Fixtures for the directory tests: configs pointing at the lab's slapd, a real SQLite store, LDIF makers."""

from __future__ import annotations

import base64
import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rolegate.config.sections.directory import DirectoryConfig
from rolegate.config.sections.storage import StorageConfig
from rolegate.store import open_store

from .samba import SambaDC, SambaTemplate

AD_SCHEMA = Path(__file__).resolve().parent / "ad-lite.schema"
PEOPLE = "ou=people,dc=example,dc=com"
GROUPS = "ou=groups,dc=example,dc=com"


def make_config(slapd: Any, **changes: Any) -> DirectoryConfig:
    """A directory section for a lab slapd, bound as the read-only service account."""
    data: dict[str, Any] = {
        "url": slapd.url,
        "bind_dn": slapd.service_dn,
        "bind_password": slapd.service_password,
        "users": {"base": PEOPLE, "disabled_filter": "(employeeType=disabled)"},
        "groups": {"base": GROUPS},
        "page_size": 100,
        "timeout": "5s",
        "connect_timeout": "2s",
    }
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return DirectoryConfig.model_validate(data)


@pytest.fixture
def config_for() -> Callable[..., DirectoryConfig]:
    return make_config


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Any]:
    store = await open_store(StorageConfig(url=f"sqlite:///{tmp_path / 'rolegate.db'}"))
    yield store
    await store.close()


class AuditLog:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    async def __call__(self, kind: str, data: dict[str, Any]) -> None:
        self.events.append((kind, data))


@pytest.fixture
def audit() -> AuditLog:
    return AuditLog()


def retiring_fetch(store: Any, fetch: Callable[..., Any], stored: Any, saves: list[tuple[Any, Any]]):
    """``fetch`` (of a snapshot document) that, at its first call, lets the master save each (snapshot, previous)
    of ``saves`` in turn and then delete the documents ``stored`` was saved in: what a worker reading the stored
    snapshot meanwhile meets. Returns the wrapper and the list of keys it flipped at (one, once it has)."""
    from rolegate.directory import persist

    flipped: list[str] = []

    async def slow_fetch(store_: Any, key: Any) -> Any:
        if not flipped:
            flipped.append(key)
            for snapshot, previous in saves:
                await persist.save_snapshot(store, snapshot, previous=previous)
            for k in persist._referenced(stored._stored.pointer):
                await store.delete(persist.NAMESPACE, k)
        return await fetch(store_, key)

    return slow_fetch, flipped


def people_ldif(names: list[str], *, extra: str = "") -> str:
    """inetOrgPerson entries under ou=people."""
    return "".join(
        f"dn: uid={n},{PEOPLE}\nobjectClass: inetOrgPerson\nuid: {n}\ncn: {n.title()}\nsn: {n}\n"
        f"mail: {n}@example.com\n{extra}\n"
        for n in names
    )


def group_ldif(name: str, members: list[str], *, object_class: str = "groupOfNames", attribute: str = "member") -> str:
    lines = [f"dn: cn={name},{GROUPS}", f"objectClass: {object_class}", f"cn: {name}"]
    lines += [f"{attribute}: {m}" for m in members]
    return "\n".join(lines) + "\n\n"


def user_dn(name: str) -> str:
    return f"uid={name},{PEOPLE}"


def group_dn(name: str) -> str:
    return f"cn={name},{GROUPS}"


def guid_b64(seed: str) -> tuple[str, str]:
    """(GUID string, base64 of its 16 AD bytes) for a name."""
    value = uuid.uuid5(uuid.NAMESPACE_DNS, seed)
    return str(value), base64.b64encode(value.bytes_le).decode()


@pytest.fixture
def ad_schema() -> Iterator[Path]:
    yield AD_SCHEMA


def add_in_chunks(slapd: Any, names: list[str], chunk: int = 500) -> None:
    """Add many people with several ldapadd runs: each run stays well inside the lab tool's timeout."""
    for i in range(0, len(names), chunk):
        slapd.ldapadd(people_ldif(names[i : i + chunk]))


@pytest.fixture(scope="session")
def samba_template(tmp_path_factory: pytest.TempPathFactory) -> SambaTemplate:
    """A provisioned and seeded Samba AD DC, never started: each test runs a copy (see samba.py)."""
    return SambaTemplate(tmp_path_factory.mktemp("samba")).provision()


@pytest.fixture
def samba_dc(samba_template: SambaTemplate, tmp_path: Path) -> Iterator[SambaDC]:
    """A running copy of the template DC of this test's own, on its own 127.0.0.N, to modify."""
    dc = SambaDC(samba_template, tmp_path / "samba")
    dc.start()
    yield dc
    dc.stop()
    shutil.rmtree(dc.dir / "private", ignore_errors=True)  # the 35 MB of databases; logs stay
