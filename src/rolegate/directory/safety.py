"""The deletion guard: a sync that would take access from too many users is refused."""

from __future__ import annotations

from dataclasses import dataclass

from rolegate.directory.diff import SyncDiff


@dataclass(frozen=True, slots=True)
class DeletionCheck:
    losing: int  # users removed or newly disabled
    allowed: int  # the most the threshold lets through
    current: int  # users in the snapshot now

    @property
    def refused(self) -> bool:
        return self.losing > self.allowed

    def explain(self) -> str:
        return (f"the sync would remove or disable {self.losing} of {self.current} users; "
                f"max_deletions allows {self.allowed}")


def check_deletions(changes: SyncDiff, current_users: int, max_share: float) -> DeletionCheck:
    """Count users who would lose access; both removal and disabling count, since a broken
    ``disabled_filter`` locks people out just as surely as a broken user filter."""
    losing = len(changes.users_removed) + len(changes.newly_disabled)
    # The first sync (nothing to lose) always passes; rounding down keeps the guard strict.
    allowed = int(current_users * max_share) if current_users else losing
    return DeletionCheck(losing=losing, allowed=allowed, current=current_users)
