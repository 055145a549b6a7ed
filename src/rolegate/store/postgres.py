"""The scale-out Store: PostgreSQL through an asyncpg pool.

Same semantics as the SQLite store, so every instance (and every worker of it) shares one state:
optimistic versions through conditional upserts, the audit chain extended under a transaction-level
advisory lock (each event once, by its id, however often a batch is retried), leader leases as
session-level advisory locks, and LISTEN/NOTIFY for change notifications when there is no Redis. The
schema comes from ``rolegate migrate``; ``open()`` refuses a database that is behind.
"""

from __future__ import annotations

import asyncio
import builtins  # in annotations after the Store method named `list`, which shadows the builtin there
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import asyncpg  # type: ignore[import-untyped]  # no type information: asyncpg_types describes what we use

from rolegate.store import migrations
from rolegate.store.asyncpg_types import Connection, Pool
from rolegate.store.base import GENESIS, ChainFn, Record, Store, StoreUnavailable, VersionConflict
from rolegate.store.codec import dumps
from rolegate.store.lease import Lease, check_lock_name
from rolegate.store.notify import COUNTERS_CHANNEL, Subscription
from rolegate.store.urls import redact_url

# Errors that mean "the server is not there right now", as opposed to a bug in a statement.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # shutting down, starting up, statement cancelled
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
    asyncpg.InterfaceError,  # the connection closed under us
    # "cannot switch to state 12; another operation is in progress": a connection the server dropped in
    # the middle of an operation (a fast shutdown) leaves its protocol in a state asyncpg reports this way.
    asyncpg.exceptions.InternalClientError,
)


class _OneLine(logging.Filter):
    """asyncpg's pool logs "Failed to restore the pool connection floor" with a traceback at every attempt
    during an outage; the cause fits on the line (rolegate's own readiness and metrics say the rest)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            record.msg = f"{record.getMessage()} ({type(exc).__name__}: {exc or 'no detail'})"
            record.args = None
            record.exc_info = record.exc_text = None
        return True


logging.getLogger("asyncpg.pool").addFilter(_OneLine())

# pg_advisory_xact_lock key serializing audit appenders (the tail is read under it).
AUDIT_LOCK = 0x726F6C65_61756474  # "roleaudt"
# LISTEN/NOTIFY channel names are per database; the prefix keeps ours apart from anything else.
_CHANNEL_PREFIX = "rolegate."
# Dead peers are noticed by the server within ~idle + interval * count seconds, so a lease held
# by a vanished host is released in bounded time.
_LEASE_SESSION = {
    "tcp_keepalives_idle": "10",
    "tcp_keepalives_interval": "5",
    "tcp_keepalives_count": "3",
    "application_name": "rolegate-lease",
}


# pg_advisory_xact_lock(class, hashtext(key)) serializes the rate limiter's hits on one key.
_RATE_LOCK_CLASS = 0x726C  # "rl"


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key for a lease name."""
    digest = hashlib.blake2b(f"rolegate-lease:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


# The live documents of a namespace ($1) whose key starts with a prefix ($2; $3 the prefix + U+10FFFF), $4 now.
_LIVE_BY_PREFIX = (
    "FROM kv WHERE namespace=$1 AND key>=$2 AND key<$3 AND (expires_at IS NULL OR expires_at>$4) ORDER BY key"
)


def _event_ids(entries: list[tuple[float, str, str]]) -> list[str | None]:
    """Each audit entry's event id (its body's ``id``), None when it has none or repeats one earlier in
    the batch (stored without an id rather than lost, or refused by the unique index forever)."""
    ids: list[str | None] = []
    seen: set[str] = set()
    for _ts, _kind, body in entries:
        try:
            event_id = json.loads(body).get("id")
        except (ValueError, AttributeError):
            event_id = None
        if not isinstance(event_id, str) or not event_id or event_id in seen:
            ids.append(None)
            continue
        seen.add(event_id)
        ids.append(event_id)
    return ids


async def _init_connection(conn: Connection) -> None:
    # Values are encoded by the caller (store.codec.dumps) so that a JSON null is text "null", not SQL NULL.
    await conn.set_type_codec("jsonb", encoder=str, decoder=json.loads, schema="pg_catalog")


async def connect(url: str, *, timeout: float = 2.0, **settings: str) -> Connection:
    """One connection outside the pool (migrations, leases, LISTEN); StoreUnavailable when unreachable."""
    try:
        conn: Connection = await asyncio.wait_for(
            asyncpg.connect(url, timeout=timeout, server_settings=settings or None), timeout + 1
        )
    except _UNAVAILABLE as exc:
        raise StoreUnavailable(f"PostgreSQL at {redact_url(url)} is unreachable: {exc or type(exc).__name__}") from exc
    return conn


class PostgresStore(Store):
    shared_notifications = True

    def __init__(
        self, url: str, *, pool_size: int = 10, connect_timeout: float = 2.0, command_timeout: float = 10.0
    ) -> None:
        self.url = url
        self.pool_size = pool_size
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self._pool: Pool | None = None

    # -- connections -------------------------------------------------------------------------------------

    async def open(self) -> None:
        try:
            pool: Pool = await asyncio.wait_for(
                asyncpg.create_pool(
                    self.url,
                    min_size=1,
                    max_size=self.pool_size,
                    timeout=self.connect_timeout,
                    command_timeout=self.command_timeout,
                    init=_init_connection,
                    # A broken connection is replaced on next acquire; idle ones are recycled.
                    max_inactive_connection_lifetime=300,
                ),
                self.connect_timeout * 2,
            )
        except _UNAVAILABLE as exc:
            raise self._unavailable(exc) from exc
        try:
            async with pool.acquire() as conn:
                done = await migrations.applied_versions(conn)
        except _UNAVAILABLE as exc:
            await pool.close()
            raise self._unavailable(exc) from exc
        latest = migrations.latest_version()
        missing = [v for v in range(1, latest + 1) if v not in done]
        if missing:
            pool.terminate()
            have = max(done, default=0)
            raise migrations.MigrationRequired(
                f"the PostgreSQL schema at {redact_url(self.url)} is at version {have}, this rolegate needs "
                f"{latest}: run `rolegate migrate -c <your config>` first"
            )
        self._pool = pool

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), self.connect_timeout)
            except _UNAVAILABLE:  # TimeoutError among them
                pool.terminate()

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        detail = str(exc) or type(exc).__name__
        return StoreUnavailable(f"PostgreSQL at {redact_url(self.url)} is unavailable: {detail}")

    @asynccontextmanager
    async def _conn(self) -> AsyncIterator[Connection]:
        pool = self._pool
        if pool is None:
            raise StoreUnavailable("the store is not open")
        try:
            async with pool.acquire(timeout=self.connect_timeout) as conn:
                yield conn
        except _UNAVAILABLE as exc:
            raise self._unavailable(exc) from exc

    # -- documents ---------------------------------------------------------------------------------------

    async def get(self, namespace: str, key: str) -> Record | None:
        async with self._conn() as conn:
            row = await conn.fetchrow(
                "SELECT value, version, expires_at FROM kv WHERE namespace=$1 AND key=$2 "
                "AND (expires_at IS NULL OR expires_at>$3)",
                namespace,
                key,
                time.time(),
            )
        return None if row is None else Record(key, row[0], row[1], row[2])

    async def put(
        self,
        namespace: str,
        key: str,
        value: Any,
        *,
        expected_version: int | None = None,
        expires_at: float | None = None,
    ) -> int:
        now = time.time()
        value = dumps(value)
        async with self._conn() as conn:
            if expected_version is None:
                version = await conn.fetchval(
                    "INSERT INTO kv VALUES ($1,$2,$3,1,$4) ON CONFLICT (namespace, key) DO UPDATE "
                    "SET value=EXCLUDED.value, version=kv.version+1, expires_at=EXCLUDED.expires_at "
                    "RETURNING version",
                    namespace,
                    key,
                    value,
                    expires_at,
                )
            elif expected_version == 0:
                # Must not exist: only an expired row may be overwritten (its version still counts up).
                version = await conn.fetchval(
                    "INSERT INTO kv VALUES ($1,$2,$3,1,$4) ON CONFLICT (namespace, key) DO UPDATE "
                    "SET value=EXCLUDED.value, version=kv.version+1, expires_at=EXCLUDED.expires_at "
                    "WHERE kv.expires_at IS NOT NULL AND kv.expires_at<=$5 RETURNING version",
                    namespace,
                    key,
                    value,
                    expires_at,
                    now,
                )
            else:
                version = await conn.fetchval(
                    "UPDATE kv SET value=$3, version=version+1, expires_at=$4 WHERE namespace=$1 AND key=$2 "
                    "AND version=$5 AND (expires_at IS NULL OR expires_at>$6) RETURNING version",
                    namespace,
                    key,
                    value,
                    expires_at,
                    expected_version,
                    now,
                )
            if version is None:
                current = await conn.fetchval(
                    "SELECT version FROM kv WHERE namespace=$1 AND key=$2 AND (expires_at IS NULL OR expires_at>$3)",
                    namespace,
                    key,
                    now,
                )
                raise VersionConflict(namespace, key, expected_version, current)
        return int(version)

    async def put_many(self, namespace: str, items: list[tuple[str, Any, int | None]]) -> list[int]:
        """Several ``put``s in one transaction: all or none."""
        now = time.time()
        versions = []
        async with self._conn() as conn, conn.transaction():
            for key, value, expected_version in items:
                value = dumps(value)
                if expected_version is None:
                    version = await conn.fetchval(
                        "INSERT INTO kv VALUES ($1,$2,$3,1,NULL) ON CONFLICT (namespace, key) DO UPDATE "
                        "SET value=EXCLUDED.value, version=kv.version+1, expires_at=NULL RETURNING version",
                        namespace,
                        key,
                        value,
                    )
                elif expected_version == 0:
                    version = await conn.fetchval(
                        "INSERT INTO kv VALUES ($1,$2,$3,1,NULL) ON CONFLICT (namespace, key) DO UPDATE "
                        "SET value=EXCLUDED.value, version=kv.version+1, expires_at=NULL "
                        "WHERE kv.expires_at IS NOT NULL AND kv.expires_at<=$4 RETURNING version",
                        namespace,
                        key,
                        value,
                        now,
                    )
                else:
                    version = await conn.fetchval(
                        "UPDATE kv SET value=$3, version=version+1, expires_at=NULL WHERE namespace=$1 AND key=$2 "
                        "AND version=$4 AND (expires_at IS NULL OR expires_at>$5) RETURNING version",
                        namespace,
                        key,
                        value,
                        expected_version,
                        now,
                    )
                if version is None:  # raising rolls the whole transaction back
                    raise VersionConflict(namespace, key, expected_version, None)
                versions.append(int(version))
        return versions

    async def delete(self, namespace: str, key: str, *, expected_version: int | None = None) -> bool:
        async with self._conn() as conn:
            if expected_version is None:
                status = await conn.execute("DELETE FROM kv WHERE namespace=$1 AND key=$2", namespace, key)
                return status != "DELETE 0"
            status = await conn.execute(
                "DELETE FROM kv WHERE namespace=$1 AND key=$2 AND version=$3", namespace, key, expected_version
            )
            if status == "DELETE 0":
                current = await conn.fetchval("SELECT version FROM kv WHERE namespace=$1 AND key=$2", namespace, key)
                raise VersionConflict(namespace, key, expected_version, current)
            return True

    async def list(self, namespace: str, prefix: str = "") -> list[Record]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT key, value, version, expires_at " + _LIVE_BY_PREFIX,
                namespace,
                prefix,
                prefix + "\U0010ffff",
                time.time(),
            )
        return [Record(r[0], r[1], r[2], r[3]) for r in rows]

    async def keys(self, namespace: str, prefix: str = "") -> builtins.list[str]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT key " + _LIVE_BY_PREFIX,
                namespace,
                prefix,
                prefix + "\U0010ffff",
                time.time(),
            )
        return [r[0] for r in rows]

    async def purge_expired(self, now: float | None = None) -> int:
        cutoff = time.time() if now is None else now
        async with self._conn() as conn:
            status = await conn.execute("DELETE FROM kv WHERE expires_at IS NOT NULL AND expires_at<=$1", cutoff)
            await conn.execute("DELETE FROM rate_windows WHERE window_end<=$1", cutoff)
        return int(status.split()[-1])

    # -- counters ----------------------------------------------------------------------------------------

    async def incr(self, name: str) -> int:
        # The notification is sent on commit, so a watcher that hears it reads the new value.
        async with self._conn() as conn:
            value = await conn.fetchval(
                "WITH c AS (INSERT INTO counters VALUES ($1, 1) ON CONFLICT (name) "
                "DO UPDATE SET value=counters.value+1 RETURNING value) "
                "SELECT value FROM c, pg_notify($2, $1 || '=' || value)",
                name,
                _CHANNEL_PREFIX + COUNTERS_CHANNEL,
            )
        return int(value)

    async def counter(self, name: str) -> int:
        async with self._conn() as conn:
            value = await conn.fetchval("SELECT value FROM counters WHERE name=$1", name)
        return int(value or 0)

    async def counters(self, names: builtins.list[str]) -> dict[str, int]:
        async with self._conn() as conn:
            rows = await conn.fetch("SELECT name, value FROM counters WHERE name = ANY($1::text[])", names)
        found = {r[0]: int(r[1]) for r in rows}
        return {n: found.get(n, 0) for n in names}

    # -- audit chain -------------------------------------------------------------------------------------

    async def append_audit(self, entries: builtins.list[tuple[float, str, str]], chain: ChainFn) -> builtins.list[int]:
        if not entries:
            return []
        ids = _event_ids(entries)
        async with self._conn() as conn, conn.transaction():
            # Every appender, on every instance, queues here; the tail cannot move until we commit.
            await conn.execute("SELECT pg_advisory_xact_lock($1)", AUDIT_LOCK)
            # A retry after an ambiguous commit (the connection dropped after COMMIT was sent) may carry
            # events that are already stored: their id decides, and they keep the seq they got then.
            stored = {
                r[0]: r[1]
                for r in await conn.fetch(
                    "SELECT event_id, seq FROM audit WHERE event_id = ANY($1::text[])", [i for i in ids if i]
                )
            }
            tail = await conn.fetchrow("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")
            seq, prev = (tail[0], tail[1]) if tail else (0, GENESIS)
            rows, seqs = [], []
            for (ts, kind, body), event_id in zip(entries, ids):
                if event_id in stored:
                    seqs.append(stored[event_id])
                    continue
                seq += 1
                digest = chain(prev, seq, ts, kind, body)
                rows.append((seq, ts, kind, body, prev, digest, event_id))
                seqs.append(seq)
                prev = digest
            if rows:
                await conn.copy_records_to_table(
                    "audit", records=rows, columns=["seq", "ts", "kind", "body", "prev_hash", "hash", "event_id"]
                )
        return seqs

    async def audit_tail(self) -> dict[str, Any] | None:
        async with self._conn() as conn:
            row = await conn.fetchrow(
                "SELECT seq, ts, kind, body, prev_hash, hash FROM audit ORDER BY seq DESC LIMIT 1"
            )
        return dict(row) if row else None

    async def audit_rows(
        self,
        *,
        after_seq: int = 0,
        limit: int = 1000,
        kind: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> builtins.list[dict[str, Any]]:
        sql = "SELECT seq, ts, kind, body, prev_hash, hash FROM audit WHERE seq>$1"
        args: list[Any] = [after_seq]
        for clause, value in (("kind=", kind), ("ts>=", since), ("ts<", until)):
            if value is not None:
                args.append(value)
                sql += f" AND {clause}${len(args)}"
        args.append(limit)
        sql += f" ORDER BY seq LIMIT ${len(args)}"
        async with self._conn() as conn:
            rows = await conn.fetch(sql, *args)
        return [dict(r) for r in rows]

    async def audit_delete_before(self, seq: int) -> int:
        async with self._conn() as conn:
            status = await conn.execute("DELETE FROM audit WHERE seq<$1", seq)
        return int(status.split()[-1])

    # -- coordination ------------------------------------------------------------------------------------

    def leader_lock(self, name: str) -> AbstractAsyncContextManager[Lease]:
        return self._leader_lock(check_lock_name(name))

    @asynccontextmanager
    async def _leader_lock(self, name: str) -> AsyncIterator[Lease]:
        # A session-level lock on a connection of its own: it lives exactly as long as that session,
        # so a holder that dies (or loses its network) releases it without anyone's help.
        conn = await connect(self.url, timeout=self.connect_timeout, **_LEASE_SESSION)
        try:
            try:
                held = bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", lock_key(name)))
            except _UNAVAILABLE as exc:
                raise self._unavailable(exc) from exc
            lease = _SessionLease(name, held, conn, self.connect_timeout)
            try:
                yield lease
            finally:
                lease.held = False
        finally:
            # Closing the session releases the lock; no explicit unlock round trip needed.
            try:
                await asyncio.wait_for(conn.close(), self.connect_timeout)
            except _UNAVAILABLE:  # TimeoutError among them
                conn.terminate()

    async def publish(self, channel: str, message: str) -> None:
        async with self._conn() as conn:
            await conn.execute("SELECT pg_notify($1, $2)", _CHANNEL_PREFIX + channel, message)

    def subscribe(self, channel: str) -> Subscription:
        return _ListenSubscription(self, _CHANNEL_PREFIX + channel)

    async def hit(self, key: str, limit: int, window_seconds: float, *, now: float | None = None) -> bool:
        # The sliding log of rolegate.store.ratelimit in rate_windows: one row per moment an allowed
        # hit stops counting (window_end = its time + window), purged with the expired documents.
        now = time.time() if now is None else now
        slot = f"{window_seconds:g}:{key}"
        async with self._conn() as conn, conn.transaction():
            # One hit per key at a time, so two instances cannot both take the last place. The
            # two-key form is a lock space of its own: it never meets a leader lock (lock_key).
            await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", _RATE_LOCK_CLASS, slot)
            hits = await conn.fetchval(
                "SELECT coalesce(sum(hits), 0) FROM rate_windows WHERE key=$1 AND window_end>$2", slot, now
            )
            if hits >= limit:
                return False
            await conn.execute(
                "INSERT INTO rate_windows VALUES ($1, $2, 1) ON CONFLICT (key, window_end) "
                "DO UPDATE SET hits=rate_windows.hits+1",
                slot,
                now + window_seconds,
            )
        return True


class _SessionLease(Lease):
    __slots__ = ("_conn", "_timeout")

    def __init__(self, name: str, held: bool, conn: Connection, timeout: float) -> None:
        super().__init__(name, held)
        self._conn = conn
        self._timeout = timeout

    async def check(self) -> bool:
        if self.held:
            try:
                await self._conn.fetchval("SELECT 1", timeout=self._timeout)
            except _UNAVAILABLE:
                self.held = False  # the session is gone, and the lock with it
        return self.held


class _ListenSubscription(Subscription):
    """LISTEN on a connection of its own; a lost connection ends the subscription with StoreUnavailable."""

    def __init__(self, store: PostgresStore, channel: str) -> None:
        self._store = store
        self._channel = channel
        self._conn: Connection | None = None
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()  # payloads; None once the connection is lost

    async def _start(self) -> None:
        conn = await connect(self._store.url, timeout=self._store.connect_timeout, application_name="rolegate-listen")
        conn.add_termination_listener(lambda _conn: self._queue.put_nowait(None))
        try:
            await conn.add_listener(self._channel, self._on_notify)
        except _UNAVAILABLE as exc:
            conn.terminate()
            raise self._store._unavailable(exc) from exc
        self._conn = conn

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self._queue.put_nowait(payload)

    async def _get(self, timeout: float | None) -> str | None:
        try:
            item = await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            if self._conn is not None and self._conn.is_closed():
                raise StoreUnavailable("the notification connection to PostgreSQL was lost") from None
            return None
        if item is None:
            self._queue.put_nowait(None)  # stay closed for later calls
            raise StoreUnavailable("the notification connection to PostgreSQL was lost")
        return item

    async def _close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                await asyncio.wait_for(conn.close(), self._store.connect_timeout)
            except _UNAVAILABLE:  # TimeoutError among them
                conn.terminate()
