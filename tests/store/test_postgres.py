"""PostgreSQL specifics: migrations, the schema check at open, `rolegate migrate`, dispatch by URL."""

from __future__ import annotations

from pathlib import Path

import pytest

from rolegate.cli import main
from rolegate.config.sections.storage import StorageConfig
from rolegate.store import MigrationRequired, make_store, migrate
from rolegate.store import migrations
from rolegate.store.postgres import PostgresStore, connect
from rolegate.store.redis_cache import CachedStore
from rolegate.store.sqlite import SQLiteStore

from .backends import REDIS_URL, fresh_database

CONFIG = """\
server:
  listen: 127.0.0.1:0
  public_url: https://rolegate.example.com
storage:
  url: {url}
upstreams:
  app: {{url: "http://127.0.0.1:9"}}
routes:
  - {{path: /static/**, mode: public, upstream: app}}
"""


async def test_open_refuses_an_unmigrated_database() -> None:
    async with fresh_database() as url:
        store = PostgresStore(url)
        with pytest.raises(MigrationRequired, match="rolegate migrate"):
            await store.open()
        assert await migrate(StorageConfig(url=url)) == ["0001_initial", "0002_rate_windows", "0003_audit_event_id"]
        await store.open()
        await store.close()


async def test_open_refuses_a_database_that_is_behind() -> None:
    async with fresh_database() as url:
        conn = await connect(url)
        try:
            await migrations.apply(conn)
            await conn.execute("DELETE FROM schema_migrations WHERE version=3")  # as if built by an older rolegate
        finally:
            await conn.close()
        with pytest.raises(MigrationRequired, match="at version 2, this rolegate needs 3"):
            await PostgresStore(url).open()


async def test_migrate_is_idempotent_and_safe_to_run_twice_at_once() -> None:
    import asyncio

    async with fresh_database() as url:
        config = StorageConfig(url=url)
        first, second = await asyncio.gather(migrate(config), migrate(config))
        assert sorted(first + second) == [
            "0001_initial",
            "0002_rate_windows",
            "0003_audit_event_id",
        ]  # each applied exactly once
        assert await migrate(config) == []


def test_migrate_command_prints_what_it_applied(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import asyncio

    async def run_with_database() -> None:
        async with fresh_database() as url:
            config_file = tmp_path / "rolegate.yaml"
            config_file.write_text(CONFIG.format(url=url))
            assert await asyncio.to_thread(main, ["migrate", "-c", str(config_file), "--check"]) == 1
            assert "pending 0001_initial" in capsys.readouterr().out
            assert await asyncio.to_thread(main, ["migrate", "-c", str(config_file)]) == 0
            out = capsys.readouterr().out
            assert "applied 0001_initial" in out and "applied 0002_rate_windows" in out
            assert await asyncio.to_thread(main, ["migrate", "-c", str(config_file)]) == 0
            assert "nothing to apply" in capsys.readouterr().out
            assert await asyncio.to_thread(main, ["migrate", "-c", str(config_file), "--check"]) == 0

    asyncio.run(run_with_database())


def test_migrate_command_on_sqlite_and_on_an_unreachable_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_file = tmp_path / "rolegate.yaml"
    config_file.write_text(CONFIG.format(url=f"sqlite:///{tmp_path}/rg.db"))
    assert main(["migrate", "-c", str(config_file)]) == 0
    assert "nothing to migrate" in capsys.readouterr().out
    assert (tmp_path / "rg.db").exists()
    config_file.write_text(CONFIG.format(url="postgresql://rolegate:s3cret@127.0.0.1:1/rolegate"))
    assert main(["migrate", "-c", str(config_file)]) == 4
    out = capsys.readouterr().out
    assert "unreachable" in out and "s3cret" not in out


def test_make_store_picks_the_backend_by_url() -> None:
    assert isinstance(make_store(StorageConfig()), SQLiteStore)
    for url in ("postgresql://u@db/rolegate", "postgres://u@db/rolegate"):
        store = make_store(StorageConfig(url=url, pool_size=3))
        assert isinstance(store, PostgresStore) and store.pool_size == 3
    cached = make_store(StorageConfig(url="postgresql://u@db/rolegate", cache_url=REDIS_URL, cache_prefix="x:"))
    assert isinstance(cached, CachedStore) and isinstance(cached.wrapped, PostgresStore)
    assert cached.prefix == "x:"


def test_every_migration_is_numbered_and_recorded() -> None:
    shipped = migrations.available()
    assert [m.version for m in shipped] == list(range(1, len(shipped) + 1))
    assert migrations.latest_version() == len(shipped)
