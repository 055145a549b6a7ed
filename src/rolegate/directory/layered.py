"""``LayeredSnapshot``: what a worker reads, as a large base file with a small top file over it.

The Store keeps a snapshot as base chunks plus one delta (``persist``); an incremental sync of a few users
writes a new delta and leaves the chunks alone. The workers follow the same split (``shared``): one mapped
file per base, built when the base changes (seconds at a million users), and one small file per stored
version holding the groups, the users written since the base and, in its meta, the ids removed since. A new
version then costs a worker the top file (milliseconds), not the whole directory again.

Read through the stack, an entry of the base is hidden when the top holds its id (a newer row) or names it
removed. A name resolves as over one snapshot: to the single entry of the stack that has it, and to nobody
when two have it (``DirectorySnapshot.user``: fail closed), so a base entry renamed in the top no longer
shares its old name and a top entry taking a base entry's name shares it.

A stack is a layer too (``named``, ``find_id``, ``contains_id``, ``members``, iteration), so a base can be
stood for by the stack it was folded from while its own file is built.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from rolegate.directory.mapped import MappedSnapshot, MappedUsers
from rolegate.directory.model import DirectoryUser


class Layer(Protocol):
    """What a stack reads of the layer under its top."""

    def named(self, key: str) -> list[DirectoryUser]: ...

    def find_id(self, uid: str) -> DirectoryUser | None: ...

    def contains_id(self, uid: str) -> bool: ...

    def members(self, group: str) -> Iterator[DirectoryUser]: ...

    def __iter__(self) -> Iterator[DirectoryUser]: ...

    def __len__(self) -> int: ...

    def close(self) -> None: ...


class LayeredSnapshot:
    """``top`` over ``lower``; reads like ``DirectorySnapshot`` (``user``, ``users``, ``members``, iteration).

    ``removed``: ids of ``lower`` gone since; ``count``: the users of the whole stack (checked when the top was
    built, so ``len`` needs no pass)."""

    __slots__ = ("lower", "top", "removed", "count", "users", "taken_at", "full_at", "since", "issues")

    def __init__(self, lower: Layer, top: MappedSnapshot, removed: frozenset[str], count: int) -> None:
        self.lower = lower
        self.top = top
        self.removed = removed
        self.count = count
        self.taken_at, self.full_at, self.since, self.issues = top.taken_at, top.full_at, top.since, top.issues
        self.users = MappedUsers(self)

    @property
    def path(self) -> Path:
        return self.top.path

    @property
    def incremental_ready(self) -> bool:
        return False  # as MappedSnapshot: the sync's bookkeeping lives in the syncing process

    @property
    def group_count(self) -> int:
        return self.top.group_count

    def groups(self) -> list[tuple[str, str, str]]:
        return self.top.groups()

    def depth(self) -> int:
        lower = self.lower
        return 1 + (lower.depth() if isinstance(lower, LayeredSnapshot) else 1)

    def _hidden(self, uid: str) -> bool:
        return uid in self.removed or self.top.contains_id(uid)

    # -- what DirectorySnapshot offers ---------------------------------------------------------------------------

    def user(self, username: str) -> DirectoryUser | None:
        """The user signing in as ``username`` (case-insensitive); None if unknown or the name is shared."""
        found = self.named(username.casefold())
        return found[0] if len(found) == 1 else None

    def members(self, group: str) -> Iterator[DirectoryUser]:
        for user in self.lower.members(group):
            if not self._hidden(user.id):
                yield user
        yield from self.top.members(group)

    def __iter__(self) -> Iterator[DirectoryUser]:
        for user in self.lower:
            if not self._hidden(user.id):
                yield user
        yield from self.top

    def __len__(self) -> int:
        return self.count

    def close(self) -> None:
        """Release every mapping of the stack now; only for a stack no newer one stands on (they share layers)."""
        self.top.close()
        self.lower.close()

    def __repr__(self) -> str:
        return f"<LayeredSnapshot {self.count} users over {self.lower!r}, top {self.top.path.name}>"

    # -- a layer itself -----------------------------------------------------------------------------------------

    def named(self, key: str) -> list[DirectoryUser]:
        below = [user for user in self.lower.named(key) if not self._hidden(user.id)]
        return below + self.top.named(key)

    def find_id(self, uid: str) -> DirectoryUser | None:
        if uid in self.removed:
            return None
        found = self.top.find_id(uid)
        return found if found is not None else self.lower.find_id(uid)

    def contains_id(self, uid: str) -> bool:
        return uid not in self.removed and (self.top.contains_id(uid) or self.lower.contains_id(uid))


__all__ = ["Layer", "LayeredSnapshot"]
