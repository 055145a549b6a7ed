"""Redis in front of any Store: cross-instance notifications, a shared rate limiter, a session cache.

``CachedStore(wrapped, redis_url)`` is itself a Store. The wrapped store stays the source of truth;
Redis only carries what is disposable (cached sessions, hit counts) or fleeting (messages), so losing
Redis loses no state. Every key starts with ``prefix``, so deployments (and tests) can share a Redis.
"""

from __future__ import annotations

import asyncio
import builtins  # in annotations after the Store method named `list`, which shadows the builtin there
import json
import logging
import secrets
import time
from contextlib import AbstractAsyncContextManager
from typing import Any, cast

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from rolegate.store.base import ChainFn, Record, Store, StoreUnavailable
from rolegate.store.lease import Lease
from rolegate.store.notify import COUNTERS_CHANNEL, Subscription
from rolegate.store.urls import redact_url

log = logging.getLogger(__name__)

# Namespaces read on every request whose documents are worth caching; others go straight through.
CACHED_NAMESPACES = frozenset({"sessions"})
# The cache stays coherent through versions, which only grow while a document lives:
# - a cached copy is "version|json" and is only ever replaced by a higher version, so a reader that
#   fetched an old document just before a write cannot put it back over the writer's newer copy;
# - a delete leaves a tombstone that nobody overwrites until it expires (longer than any store
#   read can take), because versions restart when a deleted key is created again.
_TOMBSTONE = "-"
_CACHE_IF_NEWER = """
local cur = redis.call('GET', KEYS[1])
if cur == '-' then return 0 end
if cur then
  local v = tonumber(string.match(cur, '^(%d+)|'))
  if v and v >= tonumber(ARGV[1]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. ARGV[2], 'PX', ARGV[3])
return 1
"""
_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError)

# One round trip for the limiter (the sliding log of rolegate.store.ratelimit as a sorted set of
# allowed hits scored by time): forget what left the window, refuse when full, else remember this
# hit. ARGV: now, window (seconds), limit, a unique member, the key's TTL in ms.
_HIT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[1]) - tonumber(ARGV[2]))
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""


class CachedStore(Store):
    """A Store whose notifications, rate limits and session reads go through Redis."""

    shared_notifications = True

    def __init__(
        self,
        wrapped: Store,
        redis_url: str,
        *,
        prefix: str = "rolegate:",
        cache_ttl: float = 30.0,
        timeout: float = 2.0,
        tombstone_ttl: float = 15.0,
        max_connections: int = 50,
    ) -> None:
        self.wrapped = wrapped
        self.url = wrapped.url
        self.redis_url = redis_url
        self.prefix = prefix
        self.cache_ttl = cache_ttl
        self.timeout = timeout
        # Must outlast the slowest store read (connect + command timeout) for the NX guard to hold.
        self.tombstone_ttl = tombstone_ttl
        self.max_connections = max_connections
        self._last_warning = 0.0
        self._redis: aioredis.Redis | None = None

    def _client(self) -> aioredis.Redis:
        if self._redis is None:
            raise StoreUnavailable("the store is not open")
        return self._redis

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        return StoreUnavailable(f"Redis at {redact_url(self.redis_url)} is unavailable: {exc or type(exc).__name__}")

    async def open(self) -> None:
        # Bounded timeouts everywhere: an unreachable Redis fails a call in ~timeout, never hangs it;
        # the client reconnects by itself on the next call once the server is back.
        # A blocking pool: a burst of requests waits (up to timeout) for a connection instead of
        # failing with "Too many connections" while Redis itself is fine.
        pool = aioredis.BlockingConnectionPool.from_url(
            self.redis_url,
            max_connections=self.max_connections,
            timeout=self.timeout,
            socket_connect_timeout=self.timeout,
            socket_timeout=self.timeout,
            health_check_interval=30,
            decode_responses=True,
        )
        self._redis = aioredis.Redis(connection_pool=pool)
        self._hit = self._redis.register_script(_HIT)
        self._cache_if_newer = self._redis.register_script(_CACHE_IF_NEWER)
        try:
            await self._redis.ping()
        except _UNAVAILABLE as exc:
            # Redis is a cache: without it sessions are read from the database, watchers poll, rate
            # limits count in the database, and session writes are refused (a cached copy could not be
            # dropped). The client reconnects by itself once the server is back.
            log.warning(
                "%s; going on without it (sessions read from the database, changes polled, rate "
                "limits counted in the database) until it is back",
                str(self._unavailable(exc)).rstrip("."),
            )
        try:
            await self.wrapped.open()
        except BaseException:
            await self._redis.aclose()
            self._redis = None
            raise

    async def close(self) -> None:
        try:
            await self.wrapped.close()
        finally:
            if self._redis is not None:
                redis_client, self._redis = self._redis, None
                await redis_client.aclose()

    # -- session cache -----------------------------------------------------------------------------------

    def _doc_key(self, namespace: str, key: str) -> str:
        return f"{self.prefix}doc:{namespace}:{key}"

    async def get(self, namespace: str, key: str) -> Record | None:
        if namespace not in CACHED_NAMESPACES:
            return await self.wrapped.get(namespace, key)
        try:
            # str, not bytes: the pool decodes responses (decode_responses=True), which redis' types cannot see.
            cached = cast("str | None", await self._client().get(self._doc_key(namespace, key)))
        except _UNAVAILABLE as exc:
            # A cache outage must not take sessions down: read the source of truth instead.
            self._warn_degraded(exc, "sessions")
            return await self.wrapped.get(namespace, key)
        if cached is not None and cached != _TOMBSTONE:
            version, _, text = cached.partition("|")
            doc = json.loads(text)
            if doc["expires_at"] is None or doc["expires_at"] > time.time():
                return Record(key, doc["value"], int(version), doc["expires_at"])
        record = await self.wrapped.get(namespace, key)
        if record is not None and cached != _TOMBSTONE:
            await self._cache(namespace, record, warn=False)
        return record

    def _warn_degraded(self, exc: BaseException, what: str) -> None:
        # Once per 10 s, not once per request: an outage would otherwise flood the log.
        now = time.monotonic()
        if now - self._last_warning >= 10:
            self._last_warning = now
            log.warning("Redis unavailable, %s go to the database: %s", what, exc)

    async def _cache(self, namespace: str, record: Record, *, warn: bool) -> None:
        ttl = self.cache_ttl
        if record.expires_at is not None:
            # A cached session never outlives the session itself.
            ttl = min(ttl, record.expires_at - time.time())
        if ttl < 0.001:
            return
        text = json.dumps({"value": record.value, "expires_at": record.expires_at}, separators=(",", ":"))
        try:
            await self._cache_if_newer(
                keys=[self._doc_key(namespace, record.key)], args=[record.version, text, max(1, int(ttl * 1000))]
            )
        except _UNAVAILABLE as exc:
            if warn:
                log.warning(
                    "could not refresh cached %s/%s (a stale copy lives at most %ss): %s",
                    namespace,
                    record.key,
                    self.cache_ttl,
                    exc,
                )

    async def put(
        self,
        namespace: str,
        key: str,
        value: Any,
        *,
        expected_version: int | None = None,
        expires_at: float | None = None,
    ) -> int:
        if namespace not in CACHED_NAMESPACES:
            return await self.wrapped.put(
                namespace, key, value, expected_version=expected_version, expires_at=expires_at
            )
        # Drop the cached copy first, and refuse the write when Redis cannot: otherwise a revoked or
        # changed session would keep being served from the cache.
        try:
            await self._client().delete(self._doc_key(namespace, key))
        except _UNAVAILABLE as exc:
            raise self._unavailable(exc) from exc
        version = await self.wrapped.put(
            namespace, key, value, expected_version=expected_version, expires_at=expires_at
        )
        # Write-through: readers that raced the write can only have cached a lower version.
        await self._cache(namespace, Record(key, value, version, expires_at), warn=True)
        return version

    async def put_many(self, namespace: str, items: list[tuple[str, Any, int | None]]) -> list[int]:
        if namespace not in CACHED_NAMESPACES:  # the database's own transaction
            return await self.wrapped.put_many(namespace, items)
        return await super().put_many(namespace, items)

    async def delete(self, namespace: str, key: str, *, expected_version: int | None = None) -> bool:
        if namespace not in CACHED_NAMESPACES:
            return await self.wrapped.delete(namespace, key, expected_version=expected_version)
        await self._tombstone(namespace, key, required=True)
        try:
            return await self.wrapped.delete(namespace, key, expected_version=expected_version)
        finally:
            await self._tombstone(namespace, key, required=False)

    async def _tombstone(self, namespace: str, key: str, *, required: bool) -> None:
        try:
            await self._client().set(self._doc_key(namespace, key), _TOMBSTONE, px=int(self.tombstone_ttl * 1000))
        except _UNAVAILABLE as exc:
            if required:
                raise self._unavailable(exc) from exc
            log.warning("could not mark %s/%s deleted in the cache: %s", namespace, key, exc)

    async def list(self, namespace: str, prefix: str = "") -> list[Record]:
        return await self.wrapped.list(namespace, prefix)

    async def keys(self, namespace: str, prefix: str = "") -> builtins.list[str]:
        return await self.wrapped.keys(namespace, prefix)

    async def purge_expired(self, now: float | None = None) -> int:
        # Cached copies carry a TTL no longer than their document's, so they expire on their own.
        return await self.wrapped.purge_expired(now)

    # -- counters and notifications ----------------------------------------------------------------------

    async def incr(self, name: str) -> int:
        value = await self.wrapped.incr(name)
        try:
            await self.publish(COUNTERS_CHANNEL, f"{name}={value}")
        except StoreUnavailable as exc:
            # The bump is durable; watchers fall back to polling and will see it.
            log.warning("could not announce %s=%s: %s", name, value, exc)
        return value

    async def counter(self, name: str) -> int:
        return await self.wrapped.counter(name)

    async def counters(self, names: builtins.list[str]) -> dict[str, int]:
        return await self.wrapped.counters(names)

    async def publish(self, channel: str, message: str) -> None:
        try:
            await self._client().publish(self.prefix + channel, message)
        except _UNAVAILABLE as exc:
            raise self._unavailable(exc) from exc

    def subscribe(self, channel: str) -> Subscription:
        return _RedisSubscription(self, self.prefix + channel)

    async def hit(self, key: str, limit: int, window_seconds: float, *, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        redis_key = f"{self.prefix}rate:{window_seconds:g}:{key}"
        member = f"{now!r}:{secrets.token_hex(6)}"  # two hits at the same instant are two hits
        try:
            allowed = await self._hit(
                keys=[redis_key],
                args=[repr(now), repr(window_seconds), limit, member, int(window_seconds * 1000) + 1000],
            )
        except _UNAVAILABLE as exc:
            # Count in the database meanwhile (hits split between the two while Redis is away: a limit
            # may let up to twice its number through across the outage, never none).
            self._warn_degraded(exc, "rate limits")
            return await self.wrapped.hit(key, limit, window_seconds, now=now)
        return int(allowed) == 1

    # -- everything else is the wrapped store's ----------------------------------------------------------

    def leader_lock(self, name: str) -> AbstractAsyncContextManager[Lease]:
        return self.wrapped.leader_lock(name)

    async def append_audit(self, entries: builtins.list[tuple[float, str, str]], chain: ChainFn) -> builtins.list[int]:
        return await self.wrapped.append_audit(entries, chain)

    async def audit_tail(self) -> dict[str, Any] | None:
        return await self.wrapped.audit_tail()

    async def audit_rows(self, **kwargs: Any) -> builtins.list[dict[str, Any]]:
        return await self.wrapped.audit_rows(**kwargs)

    async def audit_delete_before(self, seq: int) -> int:
        return await self.wrapped.audit_delete_before(seq)


def _delegate(name: str) -> Any:
    async def method(self: CachedStore, *args: Any, **kwargs: Any) -> Any:
        return await getattr(self.wrapped, name)(*args, **kwargs)

    method.__name__ = name
    method.__doc__ = getattr(Store, name).__doc__
    return method


# Methods other packages add to the Store interface later (e.g. audit queries) pass straight
# through, so the wrapper never blocks a new abstract method from working with Redis on.
for _name in list(getattr(CachedStore, "__abstractmethods__", ())):
    setattr(CachedStore, _name, _delegate(_name))
CachedStore.__abstractmethods__ = frozenset()


class _RedisSubscription(Subscription):
    def __init__(self, store: CachedStore, channel: str) -> None:
        self._store = store
        self._channel = channel
        self._pubsub: aioredis.client.PubSub | None = None

    async def _start(self) -> None:
        pubsub = self._store._client().pubsub(ignore_subscribe_messages=True)
        try:
            # subscribe() returns once Redis confirmed, so later publishes are delivered.
            await pubsub.subscribe(self._channel)
        except _UNAVAILABLE as exc:
            await pubsub.aclose()
            raise self._store._unavailable(exc) from exc
        self._pubsub = pubsub

    async def _get(self, timeout: float | None) -> str | None:
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        while True:
            pubsub = self._pubsub
            if pubsub is None:  # closed, before this call or by another task during it: nothing more will come
                raise StoreUnavailable("the Redis subscription is closed")
            remaining = 1.0 if deadline is None else max(0.0, deadline - asyncio.get_running_loop().time())
            try:
                message: dict[str, Any] | None = await pubsub.get_message(timeout=min(remaining, 1.0))
            except _UNAVAILABLE as exc:
                raise self._store._unavailable(exc) from exc
            except RedisError as exc:  # e.g. "connection closed by server" mid-read
                raise self._store._unavailable(exc) from exc
            if message is not None and message.get("type") == "message":
                data: str = message["data"]  # decoded: see CachedStore.get
                return data
            if deadline is not None and asyncio.get_running_loop().time() >= deadline:
                return None

    async def _close(self) -> None:
        if self._pubsub is not None:
            pubsub, self._pubsub = self._pubsub, None
            try:
                await asyncio.wait_for(pubsub.aclose(), self._store.timeout)
            except (RedisError, *_UNAVAILABLE):
                pass
