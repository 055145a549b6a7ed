"""Faults: an unreachable PostgreSQL or Redis fails fast with StoreUnavailable, and the store recovers."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest

from rolegate.config.sections.storage import StorageConfig
from rolegate.store import StoreUnavailable, make_store, migrate
from rolegate.store.postgres import PostgresStore
from rolegate.store.redis_cache import CachedStore
from rolegate.store.sqlite import SQLiteStore
from tests.support.private_services import private_postgres

from .backends import forget_prefix, opened, storage_config


def closed_port() -> int:
    """A local port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_postgres_unreachable_fails_fast() -> None:
    store = PostgresStore(f"postgresql://rolegate:pw@127.0.0.1:{closed_port()}/rolegate", connect_timeout=2)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="PostgreSQL at .* unavailable") as err:
        await store.open()
    print(f"closed port: StoreUnavailable after {(time.monotonic() - started) * 1000:.0f} ms")
    assert "pw" not in str(err.value)


async def test_postgres_blackhole_is_bounded_by_the_connect_timeout() -> None:
    # A listener that accepts TCP but never speaks: the client must give up, not hang.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        store = PostgresStore(f"postgresql://u@127.0.0.1:{silent.getsockname()[1]}/db", connect_timeout=0.5)
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await store.open()
        print(f"silent server: StoreUnavailable after {(time.monotonic() - started) * 1000:.0f} ms")


async def test_redis_unreachable_at_open_is_a_cache_that_is_not_there(tmp_path: Path) -> None:
    """Redis is optional at run time: the store opens without it, reads go to the database, and what
    needs it (a session write, which must drop the cached copy) fails fast with StoreUnavailable."""
    store = CachedStore(SQLiteStore(f"sqlite:///{tmp_path}/rg.db"), f"redis://127.0.0.1:{closed_port()}/0", timeout=2)
    await store.open()
    try:
        assert await store.get("sessions", "s") is None
        with pytest.raises(StoreUnavailable, match="Redis at"):
            await store.put("sessions", "s", "v")
        assert await store.hit("k", 1, 60) and not await store.hit("k", 1, 60)  # counted in the database
    finally:
        await store.close()


async def test_redis_outage_after_open(tmp_path: Path) -> None:
    """Redis going away: sessions still read from the store, session writes say StoreUnavailable, limits
    are counted in the store."""
    proxy = await TcpProxy.start(6379)
    prefix = f"rg_test_fault_{int(time.time() * 1000)}:"
    try:
        config = StorageConfig(
            url=f"sqlite:///{tmp_path}/rg.db",
            cache_url=f"redis://127.0.0.1:{proxy.port}/0",
            cache_prefix=prefix,
            connect_timeout="1s",
        )
        async with opened(config) as store:
            await store.put("sessions", "s", "v")
            assert (await store.get("sessions", "s")).value == "v"
            await proxy.stop()
            assert (await store.get("sessions", "s")).value == "v"  # degraded to the store
            with pytest.raises(StoreUnavailable):
                await store.put("sessions", "s", "w")  # cannot invalidate: refuse rather than serve stale
            assert await store.hit("k", 5, 60)  # counted in the database meanwhile
            assert await store.incr("policy") == 1  # durable; announcing it is best effort
            await proxy.resume()
            for _ in range(50):  # bounded: 5 s
                try:
                    assert await store.hit("k", 5, 60)
                    break
                except StoreUnavailable:
                    await asyncio.sleep(0.1)
            else:
                pytest.fail("Redis came back but the store did not use it again within 5 s")
            await store.put("sessions", "s", "w")
            assert (await store.get("sessions", "s")).value == "w"
    finally:
        await proxy.stop()
        await forget_prefix(prefix)


class TcpProxy:
    """A loopback TCP relay we can cut and restore, to take Redis away without stopping it."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.server: asyncio.Server | None = None
        self.port = 0
        self.writers: set[asyncio.StreamWriter] = set()

    @classmethod
    async def start(cls, target: int) -> "TcpProxy":
        proxy = cls(target)
        await proxy.resume()
        return proxy

    async def resume(self) -> None:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for writer in list(self.writers):
                writer.transport.abort()
            await self.server.wait_closed()
            self.server = None

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        self.writers |= {writer, up_writer}

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        self.writers -= {writer, up_writer}


@pytest.mark.slow
async def test_postgres_restart_fails_fast_then_recovers(tmp_path: Path) -> None:
    """A PostgreSQL of the test's own (never the machine's) stopped and started under an open Store."""
    with private_postgres() as server:
        config = storage_config("postgres", tmp_path, db_url=server.url)
        await migrate(config)
        async with opened(config) as store:
            await store.put("ns", "k", 1)
            async with store.leader_lock("directory-sync") as lease:
                assert lease
                outage_started = time.monotonic()
                try:
                    await asyncio.to_thread(server.stop)
                    started = time.monotonic()
                    with pytest.raises(StoreUnavailable):
                        await store.get("ns", "k")
                    with pytest.raises(StoreUnavailable):
                        await store.put("ns", "k", 2)
                    failed_in = time.monotonic() - started
                    assert not await lease.check()  # the session is gone, and the lease with it
                finally:
                    await asyncio.to_thread(server.start)
                recovered, last_error = None, None
                for _ in range(100):  # bounded: 10 s
                    try:
                        recovered = await store.get("ns", "k")
                        break
                    except StoreUnavailable as exc:
                        last_error = exc
                        await asyncio.sleep(0.1)
                outage = time.monotonic() - outage_started
            assert recovered is not None, f"the store did not come back within 10 s: {last_error}"
            assert recovered.value == 1
            assert await store.put("ns", "k", 2) == 2  # the pool reconnected by itself
            async with store.leader_lock("directory-sync") as lease:
                assert lease
    print(f"PostgreSQL down: calls failed in {failed_in * 1000:.0f} ms; service back {outage:.1f} s after stop")


def test_make_store_never_connects() -> None:
    # Building a store is free; only open() touches the network (so config checks stay offline).
    make_store(
        StorageConfig(
            url=f"postgresql://u@127.0.0.1:{closed_port()}/db", cache_url=f"redis://127.0.0.1:{closed_port()}/0"
        )
    )
