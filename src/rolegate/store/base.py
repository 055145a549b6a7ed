"""The Store: every piece of shared state behind one small interface.

State is namespaced JSON documents with a version each (for optimistic concurrency and ETags),
counters (permission and directory versions that every worker watches), and the audit log.
SQLite is the embedded default; PostgreSQL/Redis implement the same interface for scale-out.
"""

from __future__ import annotations

import abc
import builtins  # in annotations after the Store method named `list`, which shadows the builtin there
import json
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from rolegate.store.lease import Lease
from rolegate.store.ratelimit import WindowCounter

if TYPE_CHECKING:  # notify imports this module (StoreUnavailable): a run-time import here would be a cycle
    from rolegate.store.notify import LocalBroker, Subscription

ChainFn = Callable[[str, int, float, str, str], str]
# prev_hash of the very first event.
GENESIS = "0" * 64


@dataclass(frozen=True, slots=True)
class Record:
    key: str
    value: Any
    version: int
    expires_at: float | None = None


class VersionConflict(Exception):
    """The document changed since the caller read it (If-Match failed)."""

    def __init__(self, namespace: str, key: str, expected: int | None, actual: int | None) -> None:
        super().__init__(f"{namespace}/{key}: expected version {expected}, found {actual}")
        self.expected = expected
        self.actual = actual


class StoreUnavailable(Exception):
    """The backing database cannot be reached."""


class Store(abc.ABC):
    """Async interface every backend implements."""

    url: str
    # True when publish() reaches every instance (Redis); else it reaches this process only and
    # watchers poll the counters instead.
    shared_notifications: bool = False
    _broker: "LocalBroker | None" = None
    _window_counter: WindowCounter | None = None

    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def get(self, namespace: str, key: str) -> Record | None:
        """The document, or None when absent or expired."""

    @abc.abstractmethod
    async def put(
        self,
        namespace: str,
        key: str,
        value: Any,
        *,
        expected_version: int | None = None,
        expires_at: float | None = None,
    ) -> int:
        """Write a document and return its new version.

        ``expected_version`` = 0 means "must not exist yet"; a positive number must equal the current
        version; None writes unconditionally. Raises VersionConflict otherwise.
        """

    @abc.abstractmethod
    async def delete(self, namespace: str, key: str, *, expected_version: int | None = None) -> bool:
        """Remove a document; True when something was removed."""

    async def put_many(self, namespace: str, items: list[tuple[str, Any, int | None]]) -> list[int]:
        """Write several documents (no expiry) of one namespace, all or none: (key, value, expected_version) each, as
        ``put``; their new versions, in order. A VersionConflict (or an outage) on any writes none of them.

        The SQL backends do it in one transaction; this default, for others, writes one by one and, when
        one fails, puts back what it had written (best effort: an outage in between can leave some).
        """
        done: list[tuple[str, Record | None]] = []
        versions: list[int] = []
        try:
            for key, value, expected in items:
                before = await self.get(namespace, key)
                versions.append(await self.put(namespace, key, value, expected_version=expected))
                done.append((key, before))
        except BaseException:
            for key, before in reversed(done):
                try:
                    if before is None:
                        await self.delete(namespace, key)
                    else:
                        await self.put(namespace, key, before.value, expires_at=before.expires_at)
                except Exception:  # the original error is what the caller must see
                    pass
            raise
        return versions

    @abc.abstractmethod
    async def list(self, namespace: str, prefix: str = "") -> list[Record]:
        """All live documents of a namespace whose key starts with prefix, by key."""

    async def keys(self, namespace: str, prefix: str = "") -> builtins.list[str]:
        """The keys ``list`` would answer, without reading the documents (stores answer this from their index)."""
        return [record.key for record in await self.list(namespace, prefix)]

    @abc.abstractmethod
    async def incr(self, name: str) -> int:
        """Atomically add one to a counter and return the new value."""

    @abc.abstractmethod
    async def counter(self, name: str) -> int:
        """A counter's value (0 when never incremented)."""

    async def counters(self, names: builtins.list[str]) -> dict[str, int]:
        """Several counters at once (backends answer in one round trip)."""
        return {name: await self.counter(name) for name in names}

    @abc.abstractmethod
    async def purge_expired(self, now: float | None = None) -> int:
        """Delete expired documents; return how many."""

    # The audit log: an append-only hash chain. The store extends it inside one transaction so that
    # concurrent writers (workers, instances) can never fork the chain; the hash function is the
    # audit package's, passed in, so the store knows nothing of the event format.
    @abc.abstractmethod
    async def append_audit(self, entries: builtins.list[tuple[float, str, str]], chain: ChainFn) -> builtins.list[int]:
        """Append (ts, kind, body) entries durably in one transaction; return their seq numbers.

        For each entry: seq = tail seq + 1, hash = chain(prev_hash, seq, ts, kind, body).
        """

    @abc.abstractmethod
    async def audit_tail(self) -> dict[str, Any] | None:
        """The last audit row (seq, ts, kind, body, prev_hash, hash), or None."""

    @abc.abstractmethod
    async def audit_rows(
        self,
        *,
        after_seq: int = 0,
        limit: int = 1000,
        kind: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> builtins.list[dict[str, Any]]:
        """Audit rows in order of seq."""

    @abc.abstractmethod
    async def audit_delete_before(self, seq: int) -> int:
        """Prune rows with a smaller seq; return how many."""

    async def audit_find(
        self,
        *,
        after_seq: int = 0,
        limit: int = 1000,
        kinds: tuple[str, ...] = (),
        since: float | None = None,
        until: float | None = None,
        equals: dict[str, str] | None = None,
        prefixes: dict[str, str] | None = None,
        newest_first: bool = False,
    ) -> builtins.list[dict[str, Any]]:
        """Audit rows filtered on top-level body fields: ``equals`` {field: value}, ``prefixes``
        {field: text the value starts with}; field names match ``[a-z_]+``. Ordered by seq (or newest first).

        This default scans ``audit_rows`` and filters in Python; backends override it with a query.
        """
        equals, prefixes = equals or {}, prefixes or {}
        found: list[dict[str, Any]] = []
        after = after_seq
        while True:
            page = await self.audit_rows(after_seq=after, limit=5000, since=since, until=until)
            for row in page:
                if kinds and row["kind"] not in kinds:
                    continue
                try:
                    body = json.loads(row["body"])
                except ValueError:
                    continue
                if not isinstance(body, dict):
                    continue
                if all(body.get(k) == v for k, v in equals.items()) and all(
                    isinstance(body.get(k), str) and body[k].startswith(v) for k, v in prefixes.items()
                ):
                    found.append(row)
            if len(page) < 5000:
                break
            after = page[-1]["seq"]
        if newest_first:
            found.reverse()
        return found[:limit]

    # Coordination between instances. Every backend has its own leader lock (SQLite: a file lock,
    # PostgreSQL: a session advisory lock); the other defaults below serve one process.
    @abc.abstractmethod
    def leader_lock(self, name: str) -> AbstractAsyncContextManager[Lease]:
        """Try, without waiting, to become the single holder of ``name``: ``async with ... as lease``.

        ``lease`` is truthy when held; the lock is released on exit or when the holder dies.
        """

    async def publish(self, channel: str, message: str) -> None:
        """Announce ``message`` to every subscriber of ``channel`` (see shared_notifications)."""
        self._local_broker().publish(channel, message)

    def subscribe(self, channel: str) -> "Subscription":
        """The messages published on ``channel`` from now on, as an async iterator."""
        return self._local_broker().subscribe(channel)

    async def hit(self, key: str, limit: int, window_seconds: float, *, now: float | None = None) -> bool:
        """Count a hit on ``key``; True while it has had fewer than ``limit`` allowed hits in the last
        ``window_seconds`` (a sliding window: see ``rolegate.store.ratelimit``). ``now``: wall-clock
        seconds, for tests. This default counts in this process only; backends share it."""
        if self._window_counter is None:
            self._window_counter = WindowCounter()
        return self._window_counter.hit(key, limit, window_seconds, now)

    def _local_broker(self) -> "LocalBroker":
        if self._broker is None:
            from rolegate.store.notify import LocalBroker  # here, not at the top: notify imports this module

            self._broker = LocalBroker()
        return self._broker
