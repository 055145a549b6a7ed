"""``DirectorySync``: the master process's sync loop, one run at a time, fail closed.

Full sync at start and every ``full_interval``, incremental every ``interval`` in between.
A run reads everything first and applies nothing until it has read all of it, checked the
deletion threshold and written the snapshot: a directory that fails mid-run, or answers
with a broken filter, leaves the last good snapshot serving.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from rolegate.config.sections.directory import DirectoryConfig
from rolegate.directory.builder import apply_changes, build_snapshot, drain
from rolegate.directory.connection import connection
from rolegate.directory.diff import RolesHook, SyncDiff, diff
from rolegate.directory.errors import DirectoryUnavailable
from rolegate.directory.gcpause import paused_gc, settle, thaw
from rolegate.directory.model import EMPTY_SNAPSHOT, DirectorySnapshot
from rolegate.directory.persist import adopt, compact_snapshot, load_snapshot, needs_compaction, save_snapshot
from rolegate.directory.presets import DirectorySchema, resolve_schema
from rolegate.directory.reader import Progress, ReadResult, highest_committed_usn, read_directory
from rolegate.directory.safety import check_deletions
from rolegate.directory.status import SyncResult, SyncStatus
from rolegate.directory.values import format_change_time

log = logging.getLogger("rolegate.directory")

# audit(kind, data): writes one audit event (the serve wiring passes rolegate's audit writer).
AuditSink = Callable[[str, dict[str, Any]], Awaitable[Any]]

# Entries per diff list written to the audit trail; counts are always complete.
AUDIT_LIST_LIMIT = 1000
# The first retry after a failed sync; later ones double from here (see retry_delay).
RETRY_FIRST = 1.0


def retry_delay(failures: int, interval: float, retry_max: float) -> float:
    """Seconds before the next attempt after ``failures`` failed syncs in a row (before jitter).

    Doubles from RETRY_FIRST and is capped at ``interval`` (or ``retry_max`` when that is shorter): a
    directory that comes back is synced again within one interval, however long it was away.
    """
    cap = max(0.0, min(interval, retry_max))
    return min(min(RETRY_FIRST, cap) * 2 ** min(max(failures - 1, 0), 30), cap)


def directory_config(config: Any) -> DirectoryConfig:
    """Accept the whole Config or its ``directory`` section."""
    section = getattr(config, "directory", config)
    if not isinstance(section, DirectoryConfig):
        raise ValueError("no directory section in the config")
    return section


class DirectorySync:
    """Keeps the Store's directory snapshot in step with LDAP / Active Directory."""

    def __init__(
        self,
        config: Any,
        store: Any,
        *,
        clock: Callable[[], float] = time.time,
        describe_roles: RolesHook | None = None,
        progress: Progress | None = None,
        audit: AuditSink | None = None,
    ) -> None:
        self.config = directory_config(config)
        self.schema: DirectorySchema = resolve_schema(self.config)
        self.store = store
        self.clock = clock
        self.describe_roles = describe_roles
        self.progress = progress
        self.audit = audit
        self.board: Any = None  # the serving machine's VersionBoard, set by the server
        self.status = SyncStatus()
        self.snapshot: DirectorySnapshot | None = None  # the last applied (good) snapshot
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        """Serve the stored snapshot at once, then sync in the background (full first)."""
        if self._task is not None:
            return
        try:
            stored = await load_snapshot(self.store)
        except Exception as exc:  # noqa: BLE001 - a store hiccup must not stop the sync from starting
            log.warning("directory: could not read the stored snapshot: %s", exc)
            stored = None
        if stored is not None:
            self.snapshot = stored
            self.status.users, self.status.groups = len(stored.users), len(stored.groups)
        self._task = asyncio.create_task(self._loop(), name="rolegate-directory-sync")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def _loop(self) -> None:
        interval = self.config.interval.total_seconds()
        full_every = self.config.full_interval.total_seconds()
        failures = 0
        while True:
            last_full = self.status.last_full
            full = (
                self.snapshot is None
                or not self.snapshot.incremental_ready
                or last_full is None
                or self.clock() - last_full >= full_every
            )
            result = await self.sync_now(full=full)
            if result.error is not None:
                failures += 1
                # Exponential back-off capped at the interval, with some jitter so a fleet does not
                # stampede a directory that just came back.
                delay = retry_delay(failures, interval, self.config.retry_max.total_seconds())
                delay *= random.uniform(0.8, 1.0)
            else:
                failures = 0
                delay = interval
            self.status.next_attempt = self.clock() + delay
            await asyncio.sleep(delay)

    # -- one run ---------------------------------------------------------------------
    async def sync_now(self, full: bool, force: bool = False, dry_run: bool = False) -> SyncResult:
        """Run one sync; never raises for directory or data problems (see the result and status)."""
        async with self._lock:
            return await self._run(full, force, dry_run)

    async def _run(self, full: bool, force: bool, dry_run: bool) -> SyncResult:
        began, started = self.clock(), time.monotonic()
        self.status.last_attempt = began
        current = self.snapshot
        if current is None:
            try:
                current = await load_snapshot(self.store)
            except Exception as exc:  # noqa: BLE001
                log.warning("directory: could not read the stored snapshot: %s", exc)
        old = current or EMPTY_SNAPSHOT
        if not full and not old.incremental_ready:
            full = True  # the incremental bookkeeping lives only in a snapshot this process built
        result = SyncResult(full=full, dry_run=dry_run, forced=force)
        if full:
            thaw()
        try:
            new, read = await asyncio.to_thread(self._read_and_build, old, full, began)
            result.entries_read = read.entries
            result.issues = new.issues
            result.users, result.groups = len(new.users), len(new.groups)
            changes = await asyncio.to_thread(self._diff, old, new)
            result.diff = changes
            check = check_deletions(changes, len(old.users), self.config.max_deletions)
            result.pending_deletions = check.losing
            if check.refused and not force:
                result.refused = True
                result.refusal = check.explain()
                if not dry_run:
                    self._refused(result, check.losing, check.explain())
                return result
            if dry_run:
                return result
            if check.refused:
                log.warning("directory: %s; applied anyway (--force)", check.explain())
            if current is None or not changes.empty or not adopt(self.store, current, new):
                # Only what differs from the stored snapshot is written (see persist).
                with paused_gc():  # a million users' documents: see _diff
                    version = await save_snapshot(self.store, new, previous=current)
                if self.board is not None:
                    # Workers on this machine see the new snapshot at their very next request.
                    self.board.raise_to("directory", version)
                if current is None or not changes.empty:
                    await self._audit(result, changes)
                if needs_compaction(self.store, new):
                    # The change is visible already; folding the grown delta into a new base is housekeeping.
                    try:
                        with paused_gc():
                            await compact_snapshot(self.store, new)
                    except Exception as exc:  # noqa: BLE001 - the delta keeps serving; the next run tries again
                        log.warning("directory: could not rewrite the stored snapshot: %s", exc)
            self.snapshot = new
            settle()  # the new snapshot's objects: out of the collector's sight (see gcpause.settle)
            result.applied = True
            result.duration = time.monotonic() - started
            self._succeeded(result, new, began)
            return result
        except DirectoryUnavailable as exc:
            result.error = exc.detail or str(exc)
        except Exception as exc:  # noqa: BLE001 - fail closed: the last good snapshot keeps serving
            log.exception("directory: sync failed unexpectedly")
            result.error = f"{type(exc).__name__}: {exc}"[:300]
        finally:
            result.duration = time.monotonic() - started
        if not dry_run:
            self._failed(result.error or "unknown error")
        return result

    def _read_and_build(self, old: DirectorySnapshot, full: bool, began: float) -> tuple[DirectorySnapshot, ReadResult]:
        since = None if full else old.since
        started = time.monotonic()
        with paused_gc(), connection(self.config) as conn:
            start_usn = highest_committed_usn(conn) if self.schema.change_is_integer else None
            read = read_directory(
                conn, self.schema, self.config.page_size, since=since, progress=self.progress, known=old.users
            )
        next_since = self._next_since(since, read, start_usn, time.monotonic() - started)
        with paused_gc():
            if full:
                new = build_snapshot(
                    drain(read.users),
                    drain(read.groups),
                    issues=read.issues,
                    taken_at=began,
                    since=next_since,
                    reuse=old,
                    dns=read.dns,
                )
            else:
                new = apply_changes(
                    old,
                    read.users,
                    read.groups,
                    issues=read.issues,
                    taken_at=began,
                    since=next_since,
                    departures=read.departures,
                    dns=read.dns,
                )
        for issue in read.issues.items[:20]:
            log.info("directory: %s", issue)
        read.entries = len(read.users) + len(read.groups)
        read.users, read.groups, read.dns = [], [], {}  # the raw entries are in ``new`` now: free them first
        return new, read

    def _diff(self, old: DirectorySnapshot, new: DirectorySnapshot) -> SyncDiff:
        # With the collector on, every pass over the oldest generation walks both snapshots' objects: a first
        # sync of 1,000,000 users (a million changes) spent most of its diff collecting nothing.
        with paused_gc():
            return diff(old, new, describe_roles=self.describe_roles)

    def _next_since(self, since: str | None, read: ReadResult, start_usn: int | None, elapsed: float) -> str | None:
        """The watermark for the next incremental run, chosen so no change made during this run is missed."""
        mark = read.watermark
        if self.schema.change_is_integer:
            if start_usn is not None:
                return str(start_usn + 1)  # AD: everything committed after this run began
            if mark is None or mark.highest is None:
                return since
            return str(int(mark.highest) + 1)  # a directory without a rootDSE USN: best effort
        if mark is None or mark.highest is None:
            return since
        # An entry changed while we paged may carry an older stamp than one we read later; going
        # back by the run's duration (plus the stamps' one-second grain) re-reads rather than misses it.
        candidate = format_change_time(mark.highest - elapsed - 1)
        return max(candidate, since) if since else candidate

    # -- bookkeeping -------------------------------------------------------------------
    def _succeeded(self, result: SyncResult, new: DirectorySnapshot, began: float) -> None:
        s = self.status
        s.state, s.last_success, s.last_error, s.consecutive_failures = "ok", began, None, 0
        if result.full:
            s.last_full = began
        s.users, s.groups, s.pending_deletions, s.issues = len(new.users), len(new.groups), 0, len(new.issues)
        counts = result.diff.counts()
        log.info(
            "directory: %s sync applied: %d users, %d groups (%s) in %.2fs",
            "full" if result.full else "incremental",
            s.users,
            s.groups,
            ", ".join(f"{k} {v}" for k, v in counts.items() if v) or "no changes",
            result.duration,
        )

    def _refused(self, result: SyncResult, losing: int, why: str) -> None:
        s = self.status
        s.state, s.pending_deletions, s.last_error = "refused", losing, f"refused: {why}"
        log.error(
            "directory: sync refused, nothing applied: %s. Fix the directory or filters, "
            "or run `rolegate sync --force` to apply it.",
            why,
        )

    def _failed(self, error: str) -> None:
        s = self.status
        s.state, s.last_error = "degraded", error
        s.consecutive_failures += 1
        log.warning("directory: sync failed, the last good snapshot keeps serving: %s", error)

    async def _audit(self, result: SyncResult, changes: SyncDiff) -> None:
        # A first sync of a million users is a million changes: only the first AUDIT_LIST_LIMIT of each list
        # are written out (and only those turned into dicts), the counts are whole.
        body = changes.as_dict(limit=AUDIT_LIST_LIMIT)
        body.update(
            kind="full" if result.full else "incremental",
            forced=result.forced,
            users=result.users,
            groups=result.groups,
        )
        try:
            if self.audit is not None:
                await self.audit("directory.sync", body)
        except Exception as exc:  # noqa: BLE001 - access changes (a disabled user) must not wait on audit
            log.error("directory: could not write the sync to the audit trail: %s", exc)
