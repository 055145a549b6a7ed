"""The deletion guard: a sync that would take access from too many users is refused."""

from __future__ import annotations

from dataclasses import dataclass

from rolegate.directory.diff import SyncDiff


# Accounts named in a refusal; the diff (``rolegate sync --dry-run``, ``--json``) lists them all.
NAMED = 10


@dataclass(frozen=True, slots=True)
class DeletionCheck:
    losing: int  # users removed or newly disabled
    allowed: int  # the most the threshold lets through
    current: int  # users in the snapshot now
    # Who, by the username the serving snapshot knows them by: the same for every directory and sync
    # kind (a deleted AD account's tombstone is never asked for its name), and the same as the diff.
    removed: tuple[str, ...] = ()
    disabled: tuple[str, ...] = ()

    @property
    def refused(self) -> bool:
        return self.losing > self.allowed

    def explain(self) -> str:
        named = "; ".join(
            f"{kind}: {_names(names)}"
            for kind, names in (("removed", self.removed), ("disabled", self.disabled))
            if names
        )
        return (
            f"the sync would remove or disable {self.losing} of {self.current} users"
            f"{f' ({named})' if named else ''}; max_deletions allows {self.allowed}"
        )


def _names(names: tuple[str, ...]) -> str:
    shown = ", ".join(names[:NAMED])
    return shown + (f" and {len(names) - NAMED} more" if len(names) > NAMED else "")


def check_deletions(changes: SyncDiff, current_users: int, max_share: float) -> DeletionCheck:
    """Count users who would lose access; both removal and disabling count, since a broken
    ``disabled_filter`` locks people out just as surely as a broken user filter."""
    removed = tuple(sorted(c.username for c in changes.users_removed))
    disabled = tuple(sorted(c.username for c in changes.newly_disabled))
    losing = len(removed) + len(disabled)
    # The first sync (nothing to lose) always passes; rounding down keeps the guard strict.
    allowed = int(current_users * max_share) if current_users else losing
    return DeletionCheck(losing=losing, allowed=allowed, current=current_users, removed=removed, disabled=disabled)
