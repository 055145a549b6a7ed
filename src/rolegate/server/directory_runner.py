"""Runs the directory sync in the master process of exactly one instance (a leader lock in the Store).

When the holder dies its lock is released (PostgreSQL session lock, or the file lock of SQLite) and
another instance's runner takes over at its next attempt.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rolegate.audit import AuditLog, sync_event
from rolegate.config import Config
from rolegate.server import metrics
from rolegate.store import Store, StoreUnavailable, open_store
from rolegate.store.version_board import VersionBoard, board_path_for

if TYPE_CHECKING:
    from rolegate.directory import DirectorySync  # at run time only in the process that runs the directory: ldap3

log = logging.getLogger("rolegate.directory.runner")

TAKEOVER_RETRY_SECONDS = 2.0


class DirectoryRunner:
    """Leader election + the DirectorySync service + its audit and status for /readyz and /metrics."""

    def __init__(self, config: Config, base_dir: Path | None) -> None:
        self.config = config
        self.base_dir = base_dir
        self.sync: DirectorySync | None = None
        self.leader = False
        self.store: Store | None = None
        self.audit: AuditLog | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        if self.audit is not None:
            await self.audit.close()
        if self.store is not None:
            await self.store.close()

    def status(self) -> dict[str, Any]:
        if self.sync is None:
            return {"state": "standby" if not self.leader else "starting", "leader": self.leader}
        s = self.sync.status
        metrics.DIRECTORY_USERS.set(s.users)
        metrics.DIRECTORY_PENDING_DELETIONS.set(s.pending_deletions)
        return {
            "state": s.state,
            "leader": True,
            "users": s.users,
            "groups": s.groups,
            "last_success": s.last_success,
            "last_error": s.last_error,
            "pending_deletions": s.pending_deletions,
            "consecutive_failures": s.consecutive_failures,
        }

    async def _audit_sync(self, kind: str, body: dict[str, Any]) -> None:
        summary = {k: body.get(k) for k in ("kind", "users", "groups", "forced")}
        assert self.audit is not None  # opened before the sync that calls this is made
        await self.audit.emit_durable(
            sync_event(result="applied", mode=body.get("kind", "full"), summary=summary, details=body)
        )

    async def _run(self) -> None:
        from rolegate.directory import DirectorySync  # ldap3: loaded only in the process that runs the directory

        while not self._stopping:
            try:
                if self.store is None:
                    self.store = await open_store(self.config.storage, base_dir=self.base_dir)
                    self.audit = AuditLog.from_config(self.store, self.config, base_dir=self.base_dir)
                    self.audit.start()
                async with self.store.leader_lock("directory-sync") as lease:
                    if not lease:
                        self.leader = False
                        await asyncio.sleep(TAKEOVER_RETRY_SECONDS)
                        continue
                    self.leader = True
                    log.info("this instance now runs the directory sync")
                    sync = DirectorySync(self.config, self.store, audit=self._audit_sync)
                    sync.board = VersionBoard(board_path_for(self.config.storage.url, self.base_dir))
                    await sync.start()
                    self.sync = sync
                    try:
                        while not self._stopping:
                            await asyncio.sleep(1.0)
                            check = getattr(lease, "check", None)
                            if check is not None and not await check():
                                log.warning("lost the directory-sync lock; another instance takes over")
                                break
                            self.status()
                    finally:
                        self.sync = None
                        self.leader = False
                        await sync.stop()
                        sync.board.close()
            except asyncio.CancelledError:
                raise
            except StoreUnavailable as exc:
                log.warning("directory sync waits for the store: %s", exc)
                await asyncio.sleep(TAKEOVER_RETRY_SECONDS)
            except Exception:  # noqa: BLE001 - the runner must outlive any one failure
                log.exception("directory sync runner failed; retrying")
                await asyncio.sleep(TAKEOVER_RETRY_SECONDS)
