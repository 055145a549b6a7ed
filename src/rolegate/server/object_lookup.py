"""Asking the app where an object lies when the object directory does not know it (``scopes.<type>.lookup``).

A route ``scope: "of workorder:{id}"`` is decided at the object where the directory places it. On a miss, for a
type with a ``lookup``, the worker asks ``GET <upstream><path>`` (``{id}`` filled in, percent-encoded) and
expects ``{"parent": "customer:c100"}``: a scope of the type config declares as the type's parent. The answer
places the object for decisions in this worker only (it is not written to the Store), kept ``ttl``; a 404 is a
"no such object" kept ``negative_ttl``. Anything else - the upstream down, a timeout, another status, a body
that is not that JSON, a parent of the wrong type - places nothing and the request is refused with the reason
(never an allow, never a decision at a broader scope). Every lookup counts in
``rolegate_object_lookup_total{type,result}`` (result: found, not_found, error, cached_found, cached_not_found).

Bounded: at most ``max_entries`` answers per type (the oldest half dropped when full), ``concurrency`` lookups
of a type at a time (a request waits for a slot within its ``timeout``, then is refused), concurrent misses on
one object share one lookup, and each lookup (slot included) is given ``timeout``. A failed lookup is not kept:
the next request asks again, within those bounds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from itertools import islice
from typing import Any
from urllib.parse import quote

import aiohttp
from prometheus_client import Counter

from rolegate.authz.scopes import is_scope
from rolegate.proxy.upstream_pool import tls_context
from rolegate.server import metrics  # noqa: F401  (metric files first, see rolegate.server.metrics)

log = logging.getLogger("rolegate.objects")

OBJECT_LOOKUPS = Counter(
    "rolegate_object_lookup_total", "Object directory misses answered by the app's lookup", ["type", "result"]
)
MAX_BODY = 4096


class _Type:
    __slots__ = (
        "name",
        "parent_type",
        "url",
        "path",
        "ttl",
        "negative_ttl",
        "timeout",
        "max_entries",
        "slots",
        "cache",
        "inflight",
        "ssl",
    )

    def __init__(self, name: str, parent_type: str, upstream_name: str, upstream: Any, lookup: Any) -> None:
        self.name = name
        self.parent_type = parent_type
        self.url = upstream.url.rstrip("/")
        self.path = lookup.path
        self.ttl = lookup.ttl.total_seconds()
        self.negative_ttl = lookup.negative_ttl.total_seconds()
        self.timeout = lookup.timeout.total_seconds()
        self.max_entries = lookup.max_entries
        self.slots = asyncio.Semaphore(lookup.concurrency)
        # object -> (parent or None for "no such object", expires at, monotonic)
        self.cache: dict[str, tuple[str | None, float]] = {}
        self.inflight: dict[str, asyncio.Future[tuple[str | None, str | None]]] = {}
        self.ssl: ssl.SSLContext | None = None
        if self.url.startswith("https:"):
            self.ssl = tls_context(upstream_name, getattr(upstream, "ca_file", None))


class ObjectLookups:
    """The lookups of one worker's runtime, by object type."""

    def __init__(self, types: dict[str, _Type]) -> None:
        self.types = types
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_config(cls, config: Any) -> "ObjectLookups | None":
        types = {
            name: _Type(name, t.parent, t.lookup.upstream, config.upstreams[t.lookup.upstream], t.lookup)
            for name, t in config.scopes.items()
            if getattr(t, "lookup", None) is not None and t.parent is not None and t.lookup.upstream in config.upstreams
        }
        return cls(types) if types else None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def place(self, requirement: Any) -> Any:
        """``requirement`` with ``parent`` set (the object lies there, for this request), or with ``problem``
        set (refused, saying why); unchanged when its type has no lookup (the decision refuses it)."""
        obj = requirement.scope
        kind = self.types.get(obj.split(":", 1)[0]) if isinstance(obj, str) and is_scope(obj) else None
        if kind is None:
            return requirement
        parent, problem = await self._resolve(kind, obj)
        if parent is not None:
            return requirement._replace(parent=parent)
        return requirement._replace(problem=problem)

    async def _resolve(self, kind: _Type, obj: str) -> tuple[str | None, str | None]:
        now = time.monotonic()
        cached = kind.cache.get(obj)
        if cached is not None and now < cached[1]:
            parent = cached[0]
            OBJECT_LOOKUPS.labels(kind.name, "cached_found" if parent else "cached_not_found").inc()
            return (parent, None) if parent else (None, _not_found(obj, kind))
        pending = kind.inflight.get(obj)
        if pending is not None:  # one lookup per object at a time: wait for its answer
            return await asyncio.shield(pending)
        future: asyncio.Future[tuple[str | None, str | None]] = asyncio.get_running_loop().create_future()
        kind.inflight[obj] = future
        try:
            answer = await self._ask(kind, obj)
            future.set_result(answer)
            return answer
        except BaseException as exc:  # cancelled: the waiters get a refusal, never a hang
            if not future.done():
                future.set_result(
                    (
                        None,
                        f"{obj} is not registered in the object directory, and its lookup was "
                        f"interrupted ({type(exc).__name__})",
                    )
                )
            raise
        finally:
            kind.inflight.pop(obj, None)

    async def _ask(self, kind: _Type, obj: str) -> tuple[str | None, str | None]:
        object_id = obj.split(":", 1)[1]
        url = kind.url + kind.path.replace("{id}", quote(object_id, safe=""))
        where = f"{kind.url}{kind.path}"
        try:
            async with asyncio.timeout(kind.timeout):
                async with kind.slots:
                    status, body = await self._get(kind, url)
        except (TimeoutError, asyncio.TimeoutError):
            return self._failed(kind, obj, f"the lookup at {where} gave no answer within {kind.timeout:g}s")
        except (aiohttp.ClientError, OSError) as exc:
            return self._failed(kind, obj, f"the lookup at {where} failed: {type(exc).__name__}")
        if status == 404:
            self._keep(kind, obj, None, kind.negative_ttl)
            OBJECT_LOOKUPS.labels(kind.name, "not_found").inc()
            return None, _not_found(obj, kind)
        if status != 200:
            return self._failed(kind, obj, f"the lookup at {where} answered {status}")
        try:
            parent = json.loads(body).get("parent")
        except (ValueError, UnicodeDecodeError, AttributeError, RecursionError):
            parent = None
        if not (is_scope(parent) and parent.split(":", 1)[0] == kind.parent_type):
            return self._failed(
                kind, obj, f'the lookup at {where} did not answer {{"parent": "{kind.parent_type}:<id>"}}'
            )
        self._keep(kind, obj, parent, kind.ttl)
        OBJECT_LOOKUPS.labels(kind.name, "found").inc()
        return parent, None

    async def _get(self, kind: _Type, url: str) -> tuple[int, bytes]:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=sum(t.slots._value for t in self.types.values()) or 16),
                auto_decompress=False,
            )
        async with self._session.get(
            url,
            headers={"Accept": "application/json"},
            allow_redirects=False,
            ssl=kind.ssl if kind.ssl is not None else True,
        ) as resp:
            body = await resp.content.read(MAX_BODY + 1)
            if len(body) > MAX_BODY:
                return 0, b""
            return resp.status, body

    def _failed(self, kind: _Type, obj: str, why: str) -> tuple[None, str]:
        OBJECT_LOOKUPS.labels(kind.name, "error").inc()
        log.warning("object lookup for %s: %s", obj, why)
        return None, f"{obj} is not registered in the object directory, and {why}"

    @staticmethod
    def _keep(kind: _Type, obj: str, parent: str | None, ttl: float) -> None:
        cache = kind.cache
        if len(cache) >= kind.max_entries:
            for old in list(islice(cache, len(cache) // 2 + 1)):
                cache.pop(old, None)
        cache[obj] = (parent, time.monotonic() + ttl)


def _not_found(obj: str, kind: _Type) -> str:
    return f"{obj} is not registered in the object directory, and the app's lookup does not know it (404)"
