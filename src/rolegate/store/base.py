"""The Store: every piece of shared state behind one small interface.

State is namespaced JSON documents with a version each (for optimistic concurrency and ETags),
counters (permission and directory versions that every worker watches), and the audit log.
SQLite is the embedded default; PostgreSQL/Redis implement the same interface for scale-out.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Callable

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

    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def get(self, namespace: str, key: str) -> Record | None:
        """The document, or None when absent or expired."""

    @abc.abstractmethod
    async def put(self, namespace: str, key: str, value: Any, *, expected_version: int | None = None,
                  expires_at: float | None = None) -> int:
        """Write a document and return its new version.

        ``expected_version`` = 0 means "must not exist yet"; a positive number must equal the current
        version; None writes unconditionally. Raises VersionConflict otherwise.
        """

    @abc.abstractmethod
    async def delete(self, namespace: str, key: str, *, expected_version: int | None = None) -> bool:
        """Remove a document; True when something was removed."""

    @abc.abstractmethod
    async def list(self, namespace: str, prefix: str = "") -> list[Record]:
        """All live documents of a namespace whose key starts with prefix, by key."""

    @abc.abstractmethod
    async def incr(self, name: str) -> int:
        """Atomically add one to a counter and return the new value."""

    @abc.abstractmethod
    async def counter(self, name: str) -> int:
        """A counter's value (0 when never incremented)."""

    @abc.abstractmethod
    async def purge_expired(self, now: float | None = None) -> int:
        """Delete expired documents; return how many."""

    # The audit log: an append-only hash chain. The store extends it inside one transaction so that
    # concurrent writers (workers, instances) can never fork the chain; the hash function is the
    # audit package's, passed in, so the store knows nothing of the event format.
    @abc.abstractmethod
    async def append_audit(self, entries: list[tuple[float, str, str]], chain: ChainFn) -> list[int]:
        """Append (ts, kind, body) entries durably in one transaction; return their seq numbers.

        For each entry: seq = tail seq + 1, hash = chain(prev_hash, seq, ts, kind, body).
        """

    @abc.abstractmethod
    async def audit_tail(self) -> dict[str, Any] | None:
        """The last audit row (seq, ts, kind, body, prev_hash, hash), or None."""

    @abc.abstractmethod
    async def audit_rows(self, *, after_seq: int = 0, limit: int = 1000, kind: str | None = None,
                         since: float | None = None, until: float | None = None) -> list[dict[str, Any]]:
        """Audit rows in order of seq."""

    @abc.abstractmethod
    async def audit_delete_before(self, seq: int) -> int:
        """Prune rows with a smaller seq; return how many."""
