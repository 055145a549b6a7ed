"""The embedded Store: SQLite in WAL mode, driven from one dedicated thread."""

from __future__ import annotations

import asyncio
import builtins  # in annotations after the Store method named `list`, which shadows the builtin there
import json
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, Callable, TypeVar

from rolegate.store.base import GENESIS, ChainFn, Record, Store, StoreUnavailable, VersionConflict
from rolegate.store.codec import dumps
from rolegate.store.lease import Lease, file_lease
from rolegate.store.ratelimit import NAMESPACE as RATE_NAMESPACE, admit

T = TypeVar("T")

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS kv (
    namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    version INTEGER NOT NULL,
    expires_at REAL,
    PRIMARY KEY (namespace, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS kv_expiry ON kv (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_ts ON audit (ts);
"""


def sqlite_path(url: str) -> Path:
    """sqlite:///relative/path or sqlite:////absolute/path -> Path."""
    if not url.startswith("sqlite:///"):
        raise ValueError("expected sqlite:///path")
    return Path(url[len("sqlite:///") :])


# The live documents of a namespace whose key starts with a prefix: (namespace, prefix, prefix + U+10FFFF, now).
_LIVE_BY_PREFIX = "FROM kv WHERE namespace=? AND key>=? AND key<? AND (expires_at IS NULL OR expires_at>?) ORDER BY key"


class SQLiteStore(Store):
    def __init__(self, url: str, *, base_dir: Path | None = None) -> None:
        self.url = url
        path = sqlite_path(url)
        self.path = path if path.is_absolute() or base_dir is None else base_dir / path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rolegate-sqlite")
        self._db: sqlite3.Connection | None = None
        # The audit writer commits (and fsyncs) on its own connection and thread, so session and
        # policy reads never queue behind it.
        self._audit_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rolegate-sqlite-audit")
        self._audit_db: sqlite3.Connection | None = None

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._db is None:
            raise StoreUnavailable("the store is not open")
        db = self._db
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, db)
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(str(exc)) from exc

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)

        def setup(db: sqlite3.Connection) -> None:
            db.execute("PRAGMA busy_timeout=30000")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
            db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

        def connect() -> sqlite3.Connection:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            # Switching a new file to WAL takes an exclusive lock and SQLite answers "locked" at once,
            # without its busy handler, when another process (a sibling worker starting at the same
            # moment) is doing the same: retry for a bounded while.
            deadline = time.monotonic() + 30
            delay = 0.01
            while True:
                try:
                    setup(db)
                    return db
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) and "busy" not in str(exc) or time.monotonic() > deadline:
                        db.close()
                        raise
                    time.sleep(delay)
                    delay = min(delay * 2, 0.25)

        loop = asyncio.get_running_loop()
        self._db = await loop.run_in_executor(self._executor, connect)
        self._connect = connect

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        if self._db is not None:
            db, self._db = self._db, None
            await loop.run_in_executor(self._executor, db.close)
        if self._audit_db is not None:
            audit_db, self._audit_db = self._audit_db, None
            await loop.run_in_executor(self._audit_executor, audit_db.close)
        self._executor.shutdown(wait=False)
        self._audit_executor.shutdown(wait=False)

    async def _run_audit(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._db is None:
            raise StoreUnavailable("the store is not open")
        loop = asyncio.get_running_loop()
        if self._audit_db is None:
            self._audit_db = await loop.run_in_executor(self._audit_executor, self._connect)
        db = self._audit_db
        try:
            return await loop.run_in_executor(self._audit_executor, fn, db)
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(str(exc)) from exc

    async def get(self, namespace: str, key: str) -> Record | None:
        now = time.time()

        def q(db: sqlite3.Connection) -> Record | None:
            row = db.execute(
                "SELECT value, version, expires_at FROM kv WHERE namespace=? AND key=?", (namespace, key)
            ).fetchone()
            if row is None or (row[2] is not None and row[2] <= now):
                return None
            return Record(key, json.loads(row[0]), row[1], row[2])

        return await self._run(q)

    async def put(
        self,
        namespace: str,
        key: str,
        value: Any,
        *,
        expected_version: int | None = None,
        expires_at: float | None = None,
    ) -> int:
        text = dumps(value)
        now = time.time()

        def q(db: sqlite3.Connection) -> int:
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute(
                    "SELECT version, expires_at FROM kv WHERE namespace=? AND key=?", (namespace, key)
                ).fetchone()
                live = row is not None and (row[1] is None or row[1] > now)
                current = row[0] if live else None
                if expected_version is not None:
                    if expected_version == 0 and live:
                        raise VersionConflict(namespace, key, 0, current)
                    if expected_version > 0 and current != expected_version:
                        raise VersionConflict(namespace, key, expected_version, current)
                version = (row[0] + 1) if row is not None else 1
                db.execute("INSERT OR REPLACE INTO kv VALUES (?,?,?,?,?)", (namespace, key, text, version, expires_at))
                db.execute("COMMIT")
                return version
            except BaseException:
                _rollback(db)
                raise

        return await self._run(q)

    async def put_many(self, namespace: str, items: list[tuple[str, Any, int | None]]) -> list[int]:
        """Several ``put``s in one transaction: all or none."""
        texts = [(key, dumps(value), expected) for key, value, expected in items]
        now = time.time()

        def q(db: sqlite3.Connection) -> list[int]:
            db.execute("BEGIN IMMEDIATE")
            try:
                versions = []
                for key, text, expected_version in texts:
                    row = db.execute(
                        "SELECT version, expires_at FROM kv WHERE namespace=? AND key=?", (namespace, key)
                    ).fetchone()
                    live = row is not None and (row[1] is None or row[1] > now)
                    current = row[0] if live else None
                    if expected_version is not None and (
                        (expected_version == 0 and live) or (expected_version > 0 and current != expected_version)
                    ):
                        raise VersionConflict(namespace, key, expected_version, current)
                    version = (row[0] + 1) if row is not None else 1
                    db.execute("INSERT OR REPLACE INTO kv VALUES (?,?,?,?,?)", (namespace, key, text, version, None))
                    versions.append(version)
                db.execute("COMMIT")
                return versions
            except BaseException:
                _rollback(db)
                raise

        return await self._run(q)

    async def delete(self, namespace: str, key: str, *, expected_version: int | None = None) -> bool:
        def q(db: sqlite3.Connection) -> bool:
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute("SELECT version FROM kv WHERE namespace=? AND key=?", (namespace, key)).fetchone()
                if expected_version is not None and (row is None or row[0] != expected_version):
                    raise VersionConflict(namespace, key, expected_version, row[0] if row else None)
                cur = db.execute("DELETE FROM kv WHERE namespace=? AND key=?", (namespace, key))
                db.execute("COMMIT")
                return cur.rowcount > 0
            except BaseException:
                _rollback(db)
                raise

        return await self._run(q)

    async def list(self, namespace: str, prefix: str = "") -> list[Record]:
        now = time.time()
        upper = prefix + "\U0010ffff"

        def q(db: sqlite3.Connection) -> list[Record]:
            rows = db.execute(
                "SELECT key, value, version, expires_at " + _LIVE_BY_PREFIX,
                (namespace, prefix, upper, now),
            ).fetchall()
            return [Record(k, json.loads(v), ver, exp) for k, v, ver, exp in rows]

        return await self._run(q)

    async def keys(self, namespace: str, prefix: str = "") -> builtins.list[str]:
        now = time.time()

        def q(db: sqlite3.Connection) -> builtins.list[str]:
            rows = db.execute(
                "SELECT key " + _LIVE_BY_PREFIX,
                (namespace, prefix, prefix + "\U0010ffff", now),
            ).fetchall()
            return [row[0] for row in rows]

        return await self._run(q)

    async def incr(self, name: str) -> int:
        def q(db: sqlite3.Connection) -> int:
            row = db.execute(
                "INSERT INTO counters VALUES (?, 1) ON CONFLICT(name) DO UPDATE SET value=value+1 RETURNING value",
                (name,),
            ).fetchone()
            return int(row[0])

        return await self._run(q)

    async def counter(self, name: str) -> int:
        def q(db: sqlite3.Connection) -> int:
            row = db.execute("SELECT value FROM counters WHERE name=?", (name,)).fetchone()
            return int(row[0]) if row else 0

        return await self._run(q)

    async def counters(self, names: builtins.list[str]) -> dict[str, int]:
        """Several counters in one round trip (workers poll these)."""

        def q(db: sqlite3.Connection) -> dict[str, int]:
            marks = ",".join("?" * len(names))
            found = dict(db.execute(f"SELECT name, value FROM counters WHERE name IN ({marks})", names).fetchall())
            return {n: int(found.get(n, 0)) for n in names}

        return await self._run(q)

    async def purge_expired(self, now: float | None = None) -> int:
        cutoff = time.time() if now is None else now
        return await self._run(
            lambda db: db.execute("DELETE FROM kv WHERE expires_at IS NOT NULL AND expires_at<=?", (cutoff,)).rowcount
        )

    async def hit(self, key: str, limit: int, window_seconds: float, *, now: float | None = None) -> bool:
        # The sliding log as a document in the database file, read and written in one IMMEDIATE
        # transaction: every worker on the machine shares the limit and no two take the last place.
        now = time.time() if now is None else now
        doc_key = f"{window_seconds:g}:{key}"

        def q(db: sqlite3.Connection) -> bool:
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute(
                    "SELECT value, version FROM kv WHERE namespace=? AND key=?", (RATE_NAMESPACE, doc_key)
                ).fetchone()
                times = admit(json.loads(row[0]) if row else None, limit, window_seconds, now)
                if times is not None:
                    # The Store forgets in real time; the log itself decides on ``now``.
                    db.execute(
                        "INSERT OR REPLACE INTO kv VALUES (?,?,?,?,?)",
                        (
                            RATE_NAMESPACE,
                            doc_key,
                            json.dumps({"t": times}),
                            (row[1] + 1) if row else 1,
                            time.time() + window_seconds + 1,
                        ),
                    )
                db.execute("COMMIT")
                return times is not None
            except BaseException:
                _rollback(db)
                raise

        return await self._run(q)

    async def append_audit(self, entries: builtins.list[tuple[float, str, str]], chain: ChainFn) -> builtins.list[int]:
        def q(db: sqlite3.Connection) -> list[int]:
            db.execute("BEGIN IMMEDIATE")
            try:
                tail = db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
                seq, prev = (tail[0], tail[1]) if tail else (0, GENESIS)
                rows, seqs = [], []
                for ts, kind, body in entries:
                    seq += 1
                    digest = chain(prev, seq, ts, kind, body)
                    rows.append((seq, ts, kind, body, prev, digest))
                    seqs.append(seq)
                    prev = digest
                db.executemany("INSERT INTO audit (seq, ts, kind, body, prev_hash, hash) VALUES (?,?,?,?,?,?)", rows)
                db.execute("COMMIT")
                return seqs
            except BaseException:
                _rollback(db)
                raise

        return await self._run_audit(q)

    async def audit_tail(self) -> dict[str, Any] | None:
        def q(db: sqlite3.Connection) -> dict[str, Any] | None:
            row = db.execute(
                "SELECT seq, ts, kind, body, prev_hash, hash FROM audit ORDER BY seq DESC LIMIT 1"
            ).fetchone()
            return _audit_row(row) if row else None

        return await self._run(q)

    async def audit_rows(
        self,
        *,
        after_seq: int = 0,
        limit: int = 1000,
        kind: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> builtins.list[dict[str, Any]]:
        sql = "SELECT seq, ts, kind, body, prev_hash, hash FROM audit WHERE seq>?"
        args: list[Any] = [after_seq]
        if kind is not None:
            sql += " AND kind=?"
            args.append(kind)
        if since is not None:
            sql += " AND ts>=?"
            args.append(since)
        if until is not None:
            sql += " AND ts<?"
            args.append(until)
        sql += " ORDER BY seq LIMIT ?"
        args.append(limit)
        return await self._run(lambda db: [_audit_row(r) for r in db.execute(sql, args).fetchall()])

    def leader_lock(self, name: str) -> AbstractAsyncContextManager[Lease]:
        # Every process sharing this database file shares its directory, so a flock there is exclusive.
        return file_lease(self.path.parent, f"{self.path.name}.{name}")

    async def audit_delete_before(self, seq: int) -> int:
        return await self._run(lambda db: db.execute("DELETE FROM audit WHERE seq<?", (seq,)).rowcount)

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
        sql = "SELECT seq, ts, kind, body, prev_hash, hash FROM audit WHERE seq>?"
        args: list[Any] = [after_seq]
        if kinds:
            sql += f" AND kind IN ({','.join('?' * len(kinds))})"
            args.extend(kinds)
        if since is not None:
            sql += " AND ts>=?"
            args.append(since)
        if until is not None:
            sql += " AND ts<?"
            args.append(until)
        # Field names are bound as JSON paths (never spliced into SQL); json_valid guards edited rows.
        for name, value in (equals or {}).items():
            _audit_field(name)
            sql += " AND json_valid(body) AND json_extract(body, ?) = ?"
            args.extend((f"$.{name}", value))
        for name, value in (prefixes or {}).items():
            _audit_field(name)
            # substr, not LIKE: a prefix holding % or _ must match literally.
            sql += " AND json_valid(body) AND substr(json_extract(body, ?), 1, ?) = ?"
            args.extend((f"$.{name}", len(value), value))
        sql += f" ORDER BY seq {'DESC' if newest_first else 'ASC'} LIMIT ?"
        args.append(limit)
        return await self._run(lambda db: [_audit_row(r) for r in db.execute(sql, args).fetchall()])


def _rollback(db: sqlite3.Connection) -> None:
    """Undo an open transaction without hiding why it failed.

    On some errors (SQLITE_FULL, SQLITE_IOERR, SQLITE_NOMEM) SQLite has already rolled back by itself;
    a second ROLLBACK then fails with "cannot rollback - no transaction is active" and would replace
    the real error ("database or disk is full") in every log line after it.
    """
    if db.in_transaction:
        try:
            db.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # the original error is what the caller needs to see


def _audit_field(name: str) -> None:
    if not name or not all(c.isascii() and (c.islower() or c == "_") for c in name):
        raise ValueError(f"audit field {name!r}: expected [a-z_]+")


def _audit_row(row: tuple[Any, ...]) -> dict[str, Any]:
    seq, ts, kind, body, prev_hash, hash_ = row
    return {"seq": seq, "ts": ts, "kind": kind, "body": body, "prev_hash": prev_hash, "hash": hash_}
