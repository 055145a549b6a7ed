"""What a sync changes: users and groups added, removed and changed, and (through a hook) roles."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

from rolegate.directory.model import DirectoryGroup, DirectorySnapshot, DirectoryUser

# describe_roles(old_user, new_user) -> e.g. ["+ responsible@building:a", "- user"]; None: nothing to say.
RolesHook = Callable[[DirectoryUser | None, DirectoryUser | None], "list[str] | None"]

_FIELDS = ("dn", "username", "email", "name", "disabled")
C = TypeVar("C")


@dataclass(slots=True)
class UserChange:
    username: str
    id: str
    fields: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # field -> (old, new)
    groups_added: list[str] = field(default_factory=list)
    groups_removed: list[str] = field(default_factory=list)
    roles: list[str] | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"username": self.username, "id": self.id}
        if self.fields:
            out["fields"] = {k: {"old": o, "new": n} for k, (o, n) in self.fields.items()}
        if self.groups_added:
            out["groups_added"] = self.groups_added
        if self.groups_removed:
            out["groups_removed"] = self.groups_removed
        if self.roles:
            out["roles"] = self.roles
        return out


class Changes(Sequence[C]):
    """Entries added or removed, in report order, each made a change (``UserChange``, ``GroupChange``) when asked for.

    A first full sync of a million users adds a million, and twenty thousand groups listing three million members;
    the audit trail keeps the first thousand of each and the CLI shows the first few (``--json``: all). Made up front
    they were 10 s and 400 MB of that sync.
    """

    __slots__ = ("_ids", "_make")

    def __init__(self, ids: list[str], make: Callable[[str], C]) -> None:
        self._ids = ids
        self._make = make

    def __len__(self) -> int:
        return len(self._ids)

    @overload
    def __getitem__(self, index: int) -> C: ...

    @overload
    def __getitem__(self, index: slice) -> list[C]: ...

    def __getitem__(self, index: int | slice) -> C | list[C]:
        if isinstance(index, slice):
            return [self._make(uid) for uid in self._ids[index]]
        return self._make(self._ids[index])

    def __iter__(self) -> Iterator[C]:
        return (self._make(uid) for uid in self._ids)

    def ids(self) -> list[str]:
        return self._ids

    def __repr__(self) -> str:
        return f"<Changes: {len(self._ids)}>"


NO_USERS: Changes[UserChange] = Changes([], lambda uid: UserChange("", uid))


@dataclass(slots=True)
class GroupChange:
    name: str
    id: str
    renamed_from: str | None = None
    dn_changed: bool = False
    members_added: list[str] = field(default_factory=list)  # usernames, or group names for nested groups
    members_removed: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "id": self.id}
        if self.renamed_from is not None:
            out["renamed_from"] = self.renamed_from
        if self.dn_changed:
            out["dn_changed"] = True
        if self.members_added:
            out["members_added"] = self.members_added
        if self.members_removed:
            out["members_removed"] = self.members_removed
        return out


NO_GROUPS: Changes[GroupChange] = Changes([], lambda gid: GroupChange("", gid))


@dataclass(slots=True)
class SyncDiff:
    users_added: Sequence[UserChange] = NO_USERS
    users_removed: Sequence[UserChange] = NO_USERS
    users_changed: list[UserChange] = field(default_factory=list)
    groups_added: Sequence[GroupChange] = NO_GROUPS
    groups_removed: Sequence[GroupChange] = NO_GROUPS
    groups_changed: list[GroupChange] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (
            self.users_added
            or self.users_removed
            or self.users_changed
            or self.groups_added
            or self.groups_removed
            or self.groups_changed
        )

    @property
    def newly_disabled(self) -> list[UserChange]:
        return [c for c in self.users_changed if c.fields.get("disabled") == (False, True)]

    def counts(self) -> dict[str, int]:
        return {
            "users_added": len(self.users_added),
            "users_removed": len(self.users_removed),
            "users_changed": len(self.users_changed),
            "users_disabled": len(self.newly_disabled),
            "groups_added": len(self.groups_added),
            "groups_removed": len(self.groups_removed),
            "groups_changed": len(self.groups_changed),
        }

    def as_dict(self, limit: int | None = None) -> dict[str, Any]:
        """JSON-ready; ``limit``: at most that many entries a list, then ``{"truncated": <how many more>}``."""

        def listed(changes: Sequence[Any]) -> list[dict[str, Any]]:
            if limit is None or len(changes) <= limit:
                return [c.as_dict() for c in changes]
            return [c.as_dict() for c in changes[:limit]] + [{"truncated": len(changes) - limit}]

        return {
            "counts": self.counts(),
            "users_added": listed(self.users_added),
            "users_removed": listed(self.users_removed),
            "users_changed": listed(self.users_changed),
            "groups_added": listed(self.groups_added),
            "groups_removed": listed(self.groups_removed),
            "groups_changed": listed(self.groups_changed),
        }


def diff(old: DirectorySnapshot, new: DirectorySnapshot, *, describe_roles: RolesHook | None = None) -> SyncDiff:
    """Compare two snapshots entry by entry, matched by stable id (a rename is a change, not a swap)."""
    result = SyncDiff()

    def roles(before: DirectoryUser | None, after: DirectoryUser | None) -> list[str] | None:
        if describe_roles is None:
            return None
        try:
            return describe_roles(before, after)
        except Exception as exc:  # noqa: BLE001 - a broken hook must not break the sync report
            return [f"(roles unavailable: {type(exc).__name__})"]

    def pairs() -> Iterator[tuple[str, DirectoryUser | None, DirectoryUser | None]]:
        ids = new.changed_since(old)
        if ids is None:
            for uid, after in new.users.items():
                yield uid, old.users.get(uid), after
            for uid, before in old.users.items():
                if uid not in new.users:
                    yield uid, before, None
        else:  # ``new`` was made from ``old``: every user not in ``ids`` is the same object in both
            for uid in ids:
                yield uid, old.users.get(uid), new.users.get(uid)

    def added(uid: str) -> UserChange:
        after = new.users[uid]
        return UserChange(after.username, uid, groups_added=sorted(after.groups), roles=roles(None, after))

    def removed(uid: str) -> UserChange:
        before = old.users[uid]
        return UserChange(before.username, uid, groups_removed=sorted(before.groups), roles=roles(before, None))

    added_ids: list[str] = []
    removed_ids: list[str] = []
    for uid, before, after in pairs():
        if after is None:
            if before is not None:
                removed_ids.append(uid)
        elif before is None:
            added_ids.append(uid)
        elif not before.same_as(after):
            change = UserChange(after.username, uid)
            for name in _FIELDS:
                if getattr(before, name) != getattr(after, name):
                    change.fields[name] = (getattr(before, name), getattr(after, name))
            if dict(before.attributes) != dict(after.attributes):
                change.fields["attributes"] = (
                    {k: list(v) for k, v in before.attributes.items()},
                    {k: list(v) for k, v in after.attributes.items()},
                )
            change.groups_added = sorted(after.groups - before.groups)
            change.groups_removed = sorted(before.groups - after.groups)
            change.roles = roles(before, after)
            result.users_changed.append(change)

    def member_names(snapshot: DirectorySnapshot, group: DirectoryGroup) -> set[str]:
        names = {u.username for i in group.member_users if (u := snapshot.users.get(i)) is not None}
        names.update(f"group:{g.name}" for i in group.member_groups if (g := snapshot.groups.get(i)) is not None)
        return names

    # A group that lists the same ids as before can still change in the report: a member renamed, added or removed
    # (its name then appears or goes), a nested group renamed. Anything else with equal ids reads the same, and is
    # not turned into names: a full sync makes every group anew, each listing thousands of members.
    # (Only groups in both snapshots ask: a first sync, a million additions, has none.)
    named_anew = {c.id for c in result.users_changed}
    if old.groups and new.groups:
        named_anew.update(added_ids, removed_ids)
    groups_renamed = {
        gid for gid, g in new.groups.items() if (b := old.groups.get(gid)) is not None and b.name != g.name
    }
    groups_renamed.update(gid for gid in old.groups if gid not in new.groups)
    groups_renamed.update(gid for gid in new.groups if gid not in old.groups)

    def group_added(gid: str) -> GroupChange:
        group = new.groups[gid]
        return GroupChange(group.name, gid, members_added=sorted(member_names(new, group)))

    def group_removed(gid: str) -> GroupChange:
        group = old.groups[gid]
        return GroupChange(group.name, gid, members_removed=sorted(member_names(old, group)))

    added_groups = [gid for gid in new.groups if gid not in old.groups]
    removed_groups = [gid for gid in old.groups if gid not in new.groups]
    for gid, after_group in new.groups.items():
        before_group = old.groups.get(gid)
        if (
            before_group is not None
            and before_group is not after_group
            and not (
                before_group.name == after_group.name
                and before_group.dn == after_group.dn
                and before_group.member_users == after_group.member_users
                and before_group.member_groups == after_group.member_groups
                and after_group.member_users.isdisjoint(named_anew)
                and after_group.member_groups.isdisjoint(groups_renamed)
            )
        ):
            old_members, new_members = member_names(old, before_group), member_names(new, after_group)
            change = GroupChange(
                after_group.name,
                gid,
                renamed_from=before_group.name if before_group.name != after_group.name else None,
                dn_changed=before_group.dn != after_group.dn,
                members_added=sorted(new_members - old_members),
                members_removed=sorted(old_members - new_members),
            )
            if change.renamed_from or change.dn_changed or change.members_added or change.members_removed:
                result.groups_changed.append(change)
    # by name, then id: two entries may share a name, and either walk above must list them alike
    # Two stable sorts, by id and then by name, instead of a (name, id) key tuple for each of a million users.
    added_ids.sort()
    added_ids.sort(key=lambda uid: new.users[uid].username)
    removed_ids.sort()
    removed_ids.sort(key=lambda uid: old.users[uid].username)
    result.users_added, result.users_removed = Changes(added_ids, added), Changes(removed_ids, removed)
    result.users_changed.sort(key=lambda c: (c.username, c.id))
    added_groups.sort(key=lambda gid: (new.groups[gid].name, gid))
    removed_groups.sort(key=lambda gid: (old.groups[gid].name, gid))
    result.groups_added, result.groups_removed = (
        Changes(added_groups, group_added),
        Changes(removed_groups, group_removed),
    )
    result.groups_changed.sort(key=lambda c: (c.name, c.id))
    return result
