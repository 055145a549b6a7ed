"""What the sync reports: the state for ``/readyz`` and metrics, and the outcome of one run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from rolegate.directory.diff import SyncDiff

SyncState = Literal["never", "ok", "degraded", "refused"]


@dataclass(slots=True)
class SyncStatus:
    """``never``: no sync has succeeded yet; ``ok``: the last run applied (or found nothing);
    ``degraded``: the last run failed and the last good snapshot keeps serving;
    ``refused``: the last run hit ``max_deletions`` and waits for a fix or ``--force``."""

    state: SyncState = "never"
    last_success: float | None = None  # epoch seconds of the last run that succeeded
    last_full: float | None = None
    last_attempt: float | None = None
    last_error: str | None = None
    consecutive_failures: int = 0
    users: int = 0  # in the applied snapshot
    groups: int = 0
    pending_deletions: int = 0  # users a refused run would have removed or disabled
    issues: int = 0  # odd entries met by the last run (see the log)
    next_attempt: float | None = None

    @property
    def ready(self) -> bool:
        """True when a snapshot is serving (degraded and refused still serve the last good one)."""
        return self.last_success is not None

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "ready": self.ready,
            "last_success": self.last_success,
            "last_full": self.last_full,
            "last_attempt": self.last_attempt,
            "last_error": self.last_error,
            "consecutive_failures": self.consecutive_failures,
            "users": self.users,
            "groups": self.groups,
            "pending_deletions": self.pending_deletions,
            "issues": self.issues,
            "next_attempt": self.next_attempt,
        }


@dataclass(slots=True)
class SyncResult:
    """One run: full or incremental, and whether its changes were applied."""

    full: bool
    applied: bool = False
    dry_run: bool = False
    refused: bool = False
    forced: bool = False
    error: str | None = None
    diff: SyncDiff = field(default_factory=SyncDiff)
    users: int = 0  # in the snapshot the run produced
    groups: int = 0
    entries_read: int = 0
    pending_deletions: int = 0
    refusal: str | None = None
    issues: tuple[str, ...] = ()
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None and not self.refused

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": "full" if self.full else "incremental",
            "ok": self.ok,
            "applied": self.applied,
            "dry_run": self.dry_run,
            "refused": self.refused,
            "forced": self.forced,
            "error": self.error,
            "refusal": self.refusal,
            "pending_deletions": self.pending_deletions,
            "users": self.users,
            "groups": self.groups,
            "entries_read": self.entries_read,
            "issues": list(self.issues),
            "duration": round(self.duration, 3),
            "diff": self.diff.as_dict(),
        }
