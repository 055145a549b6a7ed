"""From raw entries to a snapshot: resolve members, apply nesting, keep identity by stable id.

One code path serves both sync kinds: a full sync applies every entry to an empty snapshot,
an incremental sync applies the changed entries to the current one and recomputes group
closures only for the users those changes can reach.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, TypeVar, cast

from rolegate.directory.closure import ClosureCache, GroupIds, group_closures, users_below
from rolegate.directory.model import (
    EMPTY,
    EMPTY_SNAPSHOT,
    DirectoryGroup,
    NameSet,
    DirectorySnapshot,
    DirectoryUser,
    make_user,
    username_index,
)
from rolegate.directory.values import fold_name, normalize_dn

if TYPE_CHECKING:
    from rolegate.directory.departures import Departures

T = TypeVar("T")

# Reported odd data is capped so a badly broken directory cannot flood logs or the snapshot.
MAX_ISSUES = 200


@dataclass(slots=True)
class RawUser:
    """A user entry as read, before membership resolution."""

    id: str
    dn: str
    username: str
    email: str | None
    name: str | None
    disabled: bool
    attributes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    member_of: tuple[str, ...] = ()  # normalized group DNs from the user side (memberOf)
    # The DN in normal form, the copy the read keeps (``reader.intern_dn``): the builder's DN index key, worked out
    # once a user. None: the builder works it out.
    dn_key: str | None = field(default=None, repr=False, compare=False)
    # Unused: it makes a RawUser the size of a DirectoryUser (ten slots), so each one a full build frees is taken
    # by the DirectoryUser made next. Of a size of its own, the million freed in a build were a million blocks of a
    # size nothing after takes: 98 MB of the sync's peak at a million users (see docs/directory.md).
    _room_too: None = field(default=None, repr=False, compare=False)

    # A build from no users keeps each RawUser as the stand-in of its user until the last step makes the user: these
    # are what that step reads of a user made before (a new user has neither).
    direct_groups: ClassVar[tuple[str, ...]] = ()
    member_of_groups: ClassVar[frozenset[str]] = EMPTY


@dataclass(slots=True)
class RawGroup:
    """A group entry as read: member DNs (normalized) and memberUid usernames."""

    id: str
    dn: str
    name: str
    member_dns: tuple[str, ...] = ()
    member_uids: tuple[str, ...] = ()


class Issues:
    """Collects odd-data reports, counting past the cap instead of growing without bound."""

    __slots__ = ("items", "dropped")

    def __init__(self, initial: Iterable[str] = ()) -> None:
        self.items: list[str] = []
        self.dropped = 0
        for item in initial:
            self.add(item)

    def add(self, message: str) -> None:
        if len(self.items) < MAX_ISSUES:
            self.items.append(message)
        else:
            self.dropped += 1

    def freeze(self) -> tuple[str, ...]:
        if self.dropped:
            return (*self.items, f"... and {self.dropped} more")
        return tuple(self.items)


def build_snapshot(
    users: Iterable[RawUser],
    groups: Iterable[RawGroup],
    *,
    issues: Issues | None = None,
    taken_at: float = 0.0,
    since: str | None = None,
    reuse: DirectorySnapshot | None = None,
    dns: dict[str, str] | None = None,
) -> DirectorySnapshot:
    """A full snapshot from every entry (a full sync).

    ``reuse``: the snapshot serving now. A user that comes out exactly as it is there is that very
    object (and equal group sets are its sets), so old and new share memory instead of doubling it.
    """
    return apply_changes(
        EMPTY_SNAPSHOT,
        users,
        groups,
        issues=issues,
        taken_at=taken_at,
        full_at=taken_at,
        since=since,
        reuse=reuse,
        dns=dns,
    )


def drain(items: list[T]) -> Iterator[T]:
    """Each item of ``items``, the list's own reference dropped as it is handed out: a full sync's raw entries are
    freed one by one as the builder turns them into users instead of all at its end (100 MB at a million users)."""
    for at in range(len(items)):
        item = items[at]
        items[at] = None  # type: ignore[assignment]
        yield item


def share_values(raw: RawUser, current: DirectoryUser) -> None:
    """Point ``raw``'s values that equal ``current``'s at ``current``'s copies (one copy in memory)."""
    raw.id = current.id
    if raw.dn == current.dn:
        raw.dn = current.dn
    if raw.username == current.username:
        raw.username = current.username
    if raw.email == current.email:
        raw.email = current.email
    if raw.name == current.name:
        raw.name = current.name
    if raw.attributes is not current.attributes and raw.attributes == current.attributes:
        raw.attributes = current.attributes  # type: ignore[assignment]


def apply_changes(
    old: DirectorySnapshot,
    changed_users: Iterable[RawUser],
    changed_groups: Iterable[RawGroup],
    *,
    issues: Issues | None = None,
    taken_at: float = 0.0,
    full_at: float | None = None,
    since: str | None = None,
    reuse: DirectorySnapshot | None = None,
    departures: "Departures | None" = None,
    dns: dict[str, str] | None = None,
) -> DirectorySnapshot:
    """``old`` with changed (or new) entries applied; entries are matched by stable id, so a
    renamed or moved entry replaces its old self. ``departures`` (an incremental read's) says which
    known entries have left: deleted, moved out of the bases or filtered out; they are dropped, and
    with them their memberships. ``dns``: normalized DN -> the copy of it the read kept (the DN index's keys), emptied once
    the indexes are made: a million entries are 40 MB of a full sync's peak, and nothing needs them after."""
    if not old.incremental_ready:
        raise ValueError("this snapshot was loaded from the store; run a full sync first")
    issues = issues if issues is not None else Issues()
    users: dict[str, DirectoryUser] = dict(old.users)
    groups: dict[str, DirectoryGroup] = dict(old.groups)

    # 1. users: replace by id, keeping their direct memberships until groups say otherwise
    # Built from no users, the users read are the users dict's keys: no second set of a million ids (32 MB).
    fresh = not users
    seen: set[str] = set()
    pending_member_of: dict[str, tuple[str, ...]] = {}
    if fresh:
        # Each RawUser stands in for its user until step 4 makes it once (it has every field steps 2 to 4 read):
        # a million users made twice was a second of a full build.
        for raw in changed_users:
            if raw.id in users:
                issues.add(f"duplicate id {raw.id}: {raw.dn} ignored")
                continue
            users[raw.id] = cast(DirectoryUser, raw)
            if raw.member_of:
                pending_member_of[raw.id] = raw.member_of
    else:
        for raw in changed_users:
            if raw.id in seen:
                issues.add(f"duplicate id {raw.id}: {raw.dn} ignored")
                continue
            seen.add(raw.id)
            previous = users.get(raw.id)
            users[raw.id] = make_user(
                raw.id,
                raw.dn,
                raw.username,
                raw.email,
                raw.name,
                raw.disabled,
                previous.groups if previous else EMPTY,
                raw.attributes,
                previous.direct_groups if previous else (),
                previous.member_of_groups if previous else EMPTY,
            )
            if raw.member_of or (previous is not None and previous.member_of_groups):
                pending_member_of[raw.id] = raw.member_of  # (a user read with none, and none before, keeps EMPTY)

    seen_users: AbstractSet[str] = users.keys() if fresh else seen
    raw_groups = list(changed_groups)
    gone_groups: set[str] = set()
    gone_users: set[str] = set()
    touched_groups: set[str] = set()
    if departures is not None:
        kept = seen_users | {raw.id for raw in raw_groups}
        gone_users = set(departures.gone(old.users, kept))
        gone_groups = set(departures.gone(old.groups, kept))
        for uid in gone_users:
            del users[uid]
        for gid in gone_groups:
            del groups[gid]
        # Everyone below a departed group loses it and what it was nested in (old.groups still has it).
        touched_groups |= gone_groups
        if gone_users or gone_groups:
            # Groups not read again still list the departed: strip them. The server has (AD's links,
            # OpenLDAP's refint) or its members no longer resolve: either way, what a full sync would show.
            for gid, group in list(groups.items()):
                if not group.member_users.isdisjoint(gone_users) or not group.member_groups.isdisjoint(gone_groups):
                    groups[gid] = DirectoryGroup(
                        id=gid,
                        dn=group.dn,
                        name=group.name,
                        member_users=group.member_users - gone_users,
                        member_groups=group.member_groups - gone_groups,
                        unresolved=group.unresolved,
                    )

    # memberUid of an ambiguous name resolves to nobody (None), as signing in with it does
    user_by_dn, user_by_name = _indexes(old, users, seen_users, gone_users, dns or {})
    if dns is not None:
        dns.clear()

    # 2. groups: replace by id, resolving members against the users as they are now
    seen_groups: set[str] = set()
    for raw in raw_groups:
        if raw.id in users:
            issues.add(f"id {raw.id} is both a user and a group: {raw.dn} ignored")
            continue
        if raw.id in seen_groups:
            issues.add(f"duplicate id {raw.id}: {raw.dn} ignored")
            continue
        seen_groups.add(raw.id)
    group_by_dn = {normalize_dn(g.dn): g.id for g in groups.values() if g.id not in seen_groups}
    for raw in raw_groups:
        if raw.id in seen_groups:
            group_by_dn[normalize_dn(raw.dn)] = raw.id
    # user id -> ids of the groups that now list / no longer list the user (a group comes up once a user)
    joined: dict[str, list[str]] = {}
    left: dict[str, list[str]] = {}
    done: set[str] = set()
    for raw in raw_groups:
        if raw.id not in seen_groups or raw.id in done:
            continue
        done.add(raw.id)
        member_users, member_groups, unresolved = _resolve(raw, user_by_dn, user_by_name, group_by_dn)
        previous = groups.get(raw.id)
        if previous is not None:
            touched_groups.update(previous.member_groups)
        groups[raw.id] = DirectoryGroup(
            id=raw.id,
            dn=raw.dn,
            name=raw.name,
            member_users=member_users,
            member_groups=member_groups,
            unresolved=unresolved,
        )
        touched_groups.add(raw.id)
        old_members = previous.member_users if previous else EMPTY
        for uid in member_users - old_members if old_members else member_users:
            joined.setdefault(uid, []).append(raw.id)
        for uid in old_members - member_users:
            left.setdefault(uid, []).append(raw.id)
    del raw_groups  # (their member values: a full sync's caller hands them over with ``drain``)

    # 3. unchanged groups whose dangling members now name a new or renamed entry
    if seen_users:
        for gid, group in list(groups.items()):
            if gid in done or not group.unresolved:
                continue
            probe = RawGroup(
                id=gid,
                dn=group.dn,
                name=group.name,
                member_dns=tuple(v for v in group.unresolved if "=" in v),
                member_uids=tuple(v for v in group.unresolved if "=" not in v),
            )
            more_users, more_groups, still = _resolve(probe, user_by_dn, user_by_name, group_by_dn)
            if more_users or more_groups:
                groups[gid] = DirectoryGroup(
                    id=gid,
                    dn=group.dn,
                    name=group.name,
                    member_users=group.member_users | more_users,
                    member_groups=group.member_groups | more_groups,
                    unresolved=still,
                )
                touched_groups.add(gid)
                for uid in more_users - group.member_users:
                    joined.setdefault(uid, []).append(gid)

    # 4. who can be affected: changed users, users whose direct groups moved, everyone below a touched group
    affected: AbstractSet[str]
    if fresh:
        # Built from no users: every user is one read now, and every member one of them (the indexes hold no other).
        # Not copied: at a million users a set of them is 32 MB of the peak.
        affected = seen_users
    else:
        grown = set(seen_users)
        grown.update(joined)
        grown.update(left)
        grown.update(users_below(groups, touched_groups))
        if old.groups:
            grown |= users_below(old.groups, touched_groups)
        if gone_groups:
            # ... and whoever named a departed group in memberOf (such members are on no group's list)
            grown.update(uid for uid, u in users.items() if not u.member_of_groups.isdisjoint(gone_groups))
        affected = grown
    closures = group_closures(groups)
    cache = ClosureCache(closures)
    # Groups whose closure is what it was in ``reuse``: a user whose direct groups are all such
    # groups (and the same as before) has the same closure, the set ``reuse`` already holds.
    reuse_users = reuse.users if reuse is not None and reuse.incremental_ready else {}
    # A snapshot loaded from the store has no direct memberships to compare: equal closures are
    # still shared with it.
    share_users = reuse.users if reuse is not None and not reuse.incremental_ready else {}
    if reuse_users:
        before = group_closures(reuse.groups)  # type: ignore[union-attr]
        stable = {gid for gid, names in closures.items() if before.get(gid) == names}
    for uid in affected:
        user = users.get(uid)
        if user is None:
            continue  # a member id of an old group version whose user is gone
        joins, leaves = joined.pop(uid, None), left.pop(uid, None)  # (each list freed once read: a full sync's peak)
        # Membership test per id: intersection_update(groups) would walk every group for every user.
        if joins is None and leaves is None:
            frozen_direct = user.direct_groups
            if frozen_direct and not all(gid in groups for gid in frozen_direct):
                frozen_direct = tuple(gid for gid in frozen_direct if gid in groups)
        elif not user.direct_groups:  # a full sync: every user's groups arrive as additions
            # (each group once: steps 2 and 3 add a group to a user's list once, and only a group they keep)
            frozen_direct = tuple(sorted(joins)) if joins else ()
        else:
            direct = set(user.direct_groups)
            direct.update(joins or ())
            direct.difference_update(leaves or ())
            frozen_direct = tuple(sorted(gid for gid in direct if gid in groups))
        member_of = user.member_of_groups
        if gone_groups and not member_of.isdisjoint(gone_groups):
            member_of = member_of - gone_groups
        if (names := pending_member_of.get(uid)) is not None:
            member_of = frozenset(g for dn in names if (g := group_by_dn.get(dn)) is not None) if names else EMPTY
        current = reuse_users.get(uid)
        if (
            current is not None
            and current.direct_groups == frozen_direct
            and current.member_of_groups == member_of
            and stable.issuperset(frozen_direct)
            and stable.issuperset(member_of)
        ):
            if (
                current.dn == user.dn
                and current.username == user.username
                and current.email == user.email
                and current.name == user.name
                and current.disabled == user.disabled
                and current.attributes == user.attributes
            ):
                users[uid] = current
                continue
            frozen_direct, member_of, closure = current.direct_groups, current.member_of_groups, current.groups
        elif (loaded := share_users.get(uid)) is not None:
            closure = cache.prefer(_joined(frozen_direct, member_of), loaded.groups)
        else:
            closure = cache.of(_joined(frozen_direct, member_of))
        users[uid] = make_user(
            user.id,
            user.dn,
            user.username,
            user.email,
            user.name,
            user.disabled,
            closure,
            user.attributes,
            frozen_direct,
            member_of,
        )

    return DirectorySnapshot(
        users,
        groups,
        taken_at=taken_at,
        full_at=old.full_at if full_at is None else full_at,
        since=since if since is not None else old.since,
        issues=issues.freeze(),
        by_username=user_by_name,
        by_dn=user_by_dn,
        # Every user not in these is the object ``old`` holds: the diff and the Store's delta look at these only.
        derived=old.serial_with(seen_users | affected | gone_users) if old.users else None,
    )


def _indexes(
    old: DirectorySnapshot,
    users: Mapping[str, DirectoryUser],
    changed: AbstractSet[str],
    gone: set[str],
    dns: Mapping[str, str],
) -> tuple[dict[str, str], dict[str, str | None]]:
    """(normalized DN -> id, casefolded username -> id or None when shared) for ``users``: ``old``'s indexes with
    the changed and departed users moved, or built from every user when ``old`` has none."""
    carried = old.indexes()
    before = [u for uid in changed | gone if (u := old.users.get(uid)) is not None]
    # A departing name several users shared may now belong to one: that takes every user to work out (rare).
    if carried is None or any(carried[1].get(u.username.casefold(), "") is None for u in before):
        return {getattr(u, "dn_key", None) or _dn_key(dns, u.dn): u.id for u in users.values()}, username_index(
            users.values()
        )
    by_dn, by_name = dict(carried[0]), dict(carried[1])
    for user in before:
        key, dn = user.username.casefold(), normalize_dn(user.dn)
        if by_name.get(key) == user.id:
            del by_name[key]
        if by_dn.get(dn) == user.id:
            del by_dn[dn]
    for uid in changed:
        user = users[uid]
        key = fold_name(user.username)
        by_name[key] = None if key in by_name else uid
        by_dn[_dn_key(dns, user.dn)] = uid
    return by_dn, by_name


def _joined(direct: tuple[str, ...], member_of: frozenset[str]) -> GroupIds:
    """Every direct group, either side's: the closure cache's key. One side is nearly always empty, and the other is
    then the key itself (a union is a new set a user: 200 MB at a million users)."""
    if not member_of:
        return direct
    return member_of if not direct else member_of.union(direct)


def _dn_key(dns: Mapping[str, str], dn: str) -> str:
    key = normalize_dn(dn)
    return dns.get(key, key)


def _resolve(
    raw: RawGroup, user_by_dn: Mapping[str, str], user_by_name: Mapping[str, str | None], group_by_dn: Mapping[str, str]
) -> tuple[NameSet, frozenset[str], tuple[str, ...]]:
    # Every member DN looked up at once (a group of users, the common case, is then one pass at C speed); only the
    # DNs that name no user are looked at one by one.
    found = list(map(user_by_dn.get, raw.member_dns))
    looked_up = set(found)
    others: list[str] = []
    if None in looked_up:
        looked_up.discard(None)
        others = [dn for dn, uid in zip(raw.member_dns, found) if uid is None]
    member_users = cast(set[str], looked_up)
    member_groups: set[str] = set()
    unresolved: list[str] = []
    for dn in others:
        gid = group_by_dn.get(dn)
        if gid is not None and gid != raw.id:  # a group listing itself adds nothing
            member_groups.add(gid)
        elif gid is None:
            unresolved.append(dn)
    for name in raw.member_uids:
        uid = user_by_name.get(name.casefold())
        if uid is not None:
            member_users.add(uid)
        else:
            unresolved.append(name)
    return NameSet.of_set(member_users), frozenset(member_groups), tuple(unresolved)
