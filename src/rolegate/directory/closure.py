"""Nested groups: which group names a membership implies, and who sits below a group. Cycle safe."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from rolegate.directory.model import DirectoryGroup, NameSet

# A user's direct group ids: a sorted tuple (DirectoryUser.direct_groups), or a set when memberOf adds some.
GroupIds = tuple[str, ...] | frozenset[str]


def group_parents(groups: Mapping[str, DirectoryGroup]) -> dict[str, list[str]]:
    """group id -> ids of the groups that list it as a member."""
    parents: dict[str, list[str]] = {}
    for group in groups.values():
        for child in group.member_groups:
            parents.setdefault(child, []).append(group.id)
    return parents


def group_closures(groups: Mapping[str, DirectoryGroup]) -> dict[str, frozenset[str]]:
    """group id -> names of the group and every group it is nested in, however deep.

    A walk per group with its own visited set: a cycle (A in B in A) ends the walk instead of
    looping, and every group on a cycle gets the names of the whole cycle.
    """
    parents = group_parents(groups)
    closures: dict[str, frozenset[str]] = {}
    interned: dict[frozenset[str], frozenset[str]] = {}
    for start in groups:
        seen = {start}
        stack = [start]
        while stack:
            for parent in parents.get(stack.pop(), ()):
                if parent not in seen:
                    seen.add(parent)
                    stack.append(parent)
        names = frozenset(groups[g].name for g in seen if g in groups)
        closures[start] = interned.setdefault(names, names)  # share equal sets: less memory
    return closures


def users_below(groups: Mapping[str, DirectoryGroup], starts: Iterable[str]) -> set[str]:
    """Ids of every user in the given groups or any group nested in them (cycle safe)."""
    users: set[str] = set()
    seen: set[str] = set()
    stack = [g for g in starts]
    while stack:
        gid = stack.pop()
        if gid in seen:
            continue
        seen.add(gid)
        group = groups.get(gid)
        if group is None:
            continue
        users.update(group.member_users)
        stack.extend(child for child in group.member_groups if child not in seen)
    return users


# Distinct direct-group combinations a ClosureCache remembers: where most users' combination is their own, a
# remembered one per user would be 40 MB of a full sync's peak at a million users, for no sharing.
CACHE_LIMIT = 65536


class ClosureCache:
    """User closure = union of the closures of their direct groups, shared between equal sets."""

    __slots__ = ("_closures", "_cache")

    def __init__(self, closures: Mapping[str, frozenset[str]]) -> None:
        self._closures = closures
        self._cache: dict[GroupIds, NameSet | frozenset[str]] = {}

    def of(self, direct: GroupIds) -> NameSet | frozenset[str]:
        hit = self._cache.get(direct)
        if hit is None:
            names: set[str] = set()
            closures = self._closures
            for gid in direct:
                names.update(closures.get(gid, ()))
            if len(self._cache) >= CACHE_LIMIT:
                self._cache.clear()  # combinations nobody else has: sharing is only lost for those
            hit = self._cache[direct] = NameSet.of_set(names)
        return hit

    def prefer(self, direct: GroupIds, existing: NameSet | frozenset[str]) -> NameSet | frozenset[str]:
        """``of(direct)``, answered from now on with ``existing`` when equal (an older snapshot's set)."""
        hit = self.of(direct)
        if hit is not existing and hit == existing:
            hit = self._cache[direct] = existing
        return hit
