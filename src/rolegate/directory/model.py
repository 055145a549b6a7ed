"""The directory as rolegate sees it: users, groups and an immutable snapshot of both."""

from __future__ import annotations

import itertools
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping, Set
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, Protocol

from rolegate.directory.values import fold_name

EMPTY: frozenset[str] = frozenset()
# Most users have no attributes beyond email and name: they all share this one empty mapping.
NO_ATTRIBUTES: Mapping[str, tuple[str, ...]] = MappingProxyType({})


class NameSet(tuple[str, ...], Set[str]):  # type: ignore[misc]  # (tuple's and Set's comparisons differ)
    """An immutable set of names held as a sorted tuple: a user's closure, a group's member ids in the sync's snapshot.

    A frozenset of nine names takes about 700 bytes (its own hash table), this tuple 130; at a million users, each
    in groups no other user's combination matches, that is 570 MB of a full sync's peak, and a group of 170 members
    8 KB against 1.4 KB. Equal to, hashed like and combined with (``-``, ``&``, ``|``) frozensets of the same
    names; ``in`` is a binary search. The workers' mapped snapshot keeps frozensets: their look-ups are the hot path.
    """

    __slots__ = ()

    def __new__(cls, names: Iterable[str] = ()) -> "NameSet":
        return super().__new__(cls, sorted(set(names)))

    @classmethod
    def of_set(cls, names: "set[str] | frozenset[str]") -> "NameSet":
        """``NameSet(names)`` for names already in a set (no repeats): no second set made on the way (a full sync
        makes a million closures)."""
        return tuple.__new__(cls, sorted(names))

    @classmethod
    def _from_iterable(cls, names: Iterable[str]) -> "NameSet":
        return cls(names)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        at = bisect_left(self, name)
        return at < len(self) and self[at] == name

    def __hash__(self) -> int:
        return hash(frozenset(self))  # a frozenset's hash: the two stand for each other as keys

    def __eq__(self, other: object) -> bool:
        if isinstance(other, NameSet):
            return tuple.__eq__(self, other)  # both sorted, both without repeats
        if isinstance(other, (set, frozenset)):
            return frozenset(self) == other
        if isinstance(other, Set):
            return Set.__eq__(self, other)
        return False  # not NotImplemented: a plain tuple of the same names would then answer equal, as tuples do

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __le__(self, other: Any) -> bool:
        return Set.__le__(self, other)

    def __lt__(self, other: Any) -> bool:
        return Set.__lt__(self, other)

    def __ge__(self, other: Any) -> bool:
        return Set.__ge__(self, other)

    def __gt__(self, other: Any) -> bool:
        return Set.__gt__(self, other)

    def isdisjoint(self, other: Iterable[Any]) -> bool:
        if isinstance(other, (set, frozenset)):
            return other.isdisjoint(self)  # walks this tuple, looks each name up in the set
        return not any(name in self for name in other)

    def __and__(self, other: Any) -> "NameSet":
        if isinstance(other, (set, frozenset)):
            return NameSet(other.intersection(self))  # (Set's walks ``other``: a delta's ids, per group)
        return NameSet(Set.__and__(self, other))

    __rand__ = __and__

    def __repr__(self) -> str:
        return f"NameSet({list(self)!r})"


@dataclass(frozen=True, slots=True, eq=False)
class DirectoryUser:
    """One user: identity, profile, and the closure of their groups (names, nesting resolved)."""

    id: str  # entryUUID / objectGUID: stable across renames and moves
    dn: str
    username: str
    email: str | None
    name: str | None
    disabled: bool
    groups: frozenset[str] | NameSet  # every group name the user is in, directly or through nesting
    attributes: Mapping[str, tuple[str, ...]] = field(
        default_factory=lambda: NO_ATTRIBUTES
    )  # mapped (beyond email, name) + scope attributes
    # Group ids the user is a direct member of (group side, sorted: a tuple is a quarter of a set's size at a million
    # users / memberOf side); kept for incremental sync.
    direct_groups: tuple[str, ...] = ()
    member_of_groups: frozenset[str] = EMPTY

    def same_as(self, other: "DirectoryUser") -> bool:
        """True when nothing a caller can see differs (direct memberships are bookkeeping)."""
        return self is other or (
            self.dn == other.dn
            and self.username == other.username
            and self.email == other.email
            and self.name == other.name
            and self.disabled == other.disabled
            and self.groups == other.groups
            and self.attributes == other.attributes
        )

    def public(self) -> dict[str, object]:
        """A JSON-ready view (for the CLI, the admin API and audit)."""
        return {
            "id": self.id,
            "dn": self.dn,
            "username": self.username,
            "email": self.email,
            "name": self.name,
            "disabled": self.disabled,
            "groups": sorted(self.groups),
            "attributes": {k: list(v) for k, v in self.attributes.items()},
        }


def _user_maker() -> Callable[..., DirectoryUser]:
    assert [f.name for f in fields(DirectoryUser)] == list(DirectoryUser.__slots__)
    set_id, set_dn, set_username, set_email, set_name, set_disabled, set_groups, set_attributes, set_direct, set_of = (
        getattr(DirectoryUser, name).__set__ for name in DirectoryUser.__slots__
    )
    new = object.__new__

    def make_user(
        id: str,
        dn: str,
        username: str,
        email: str | None,
        name: str | None,
        disabled: bool,
        groups: frozenset[str] | NameSet,
        attributes: Mapping[str, tuple[str, ...]],
        direct_groups: tuple[str, ...],
        member_of_groups: frozenset[str],
    ) -> DirectoryUser:
        user = new(DirectoryUser)
        set_id(user, id)
        set_dn(user, dn)
        set_username(user, username)
        set_email(user, email)
        set_name(user, name)
        set_disabled(user, disabled)
        set_groups(user, groups)
        set_attributes(user, attributes)
        set_direct(user, direct_groups)
        set_of(user, member_of_groups)
        return user

    return make_user


# DirectoryUser(...) with every field, in order, at half the cost of its frozen __init__ (which sets each field
# through object.__setattr__ by name): the builder makes two a user, a million users a full sync.
make_user = _user_maker()


@dataclass(frozen=True, slots=True, eq=False)
class DirectoryGroup:
    """One group with its members resolved to ids; what did not resolve is kept as written."""

    id: str
    dn: str
    name: str
    member_users: frozenset[str] | NameSet  # user ids
    member_groups: frozenset[str]  # group ids (nesting)
    unresolved: tuple[str, ...] = ()  # member values that name no known entry (normalized DNs / uids)


class DirectorySnapshot:
    """An immutable, complete view of the directory; lookups by username or id are O(1)."""

    __slots__ = (
        "users",
        "groups",
        "taken_at",
        "full_at",
        "since",
        "issues",
        "_by_username",
        "_by_dn",
        "_incremental_ready",
        "_stored",
        "_serial",
        "_derived",
    )

    def __init__(
        self,
        users: Mapping[str, DirectoryUser],
        groups: Mapping[str, DirectoryGroup],
        *,
        taken_at: float = 0.0,
        full_at: float = 0.0,
        since: str | None = None,
        issues: tuple[str, ...] = (),
        incremental_ready: bool = True,
        by_username: dict[str, str | None] | None = None,
        by_dn: dict[str, str] | None = None,
        derived: tuple[int, frozenset[str]] | None = None,
    ) -> None:
        self.users = users  # id -> user
        self.groups = groups  # id -> group
        self.taken_at = taken_at  # when this snapshot was read (epoch seconds)
        self.full_at = full_at  # when the last full sync behind it ran
        self.since = since  # change-attribute watermark for the next incremental sync
        self.issues = issues  # odd data met while building it (reported, never fatal)
        # Snapshots read back from the store carry no direct memberships: a full sync comes first.
        self._incremental_ready = incremental_ready
        # username (casefolded) -> id; None for a name two users share. ``by_username``: built by the caller
        # (the builder, which needs the same index to resolve memberUid values).
        self._by_username = by_username if by_username is not None else username_index(users.values())
        # normalized DN -> id, kept by the builder so the next incremental run updates it instead of building it
        self._by_dn = by_dn
        self._serial = next(_SERIALS)
        # (serial of the snapshot this one was made from, the ids whose user may differ from it): see changed_since
        self._derived = derived
        # How this snapshot sits in a Store once saved or loaded (persist.StoredLayout): lets the next
        # save write only what changed. Never part of what the snapshot says.
        self._stored: object = None

    def user(self, username: str) -> DirectoryUser | None:
        """The user signing in as ``username`` (case-insensitive); None if unknown or ambiguous."""
        uid = self._by_username.get(username.casefold())
        return self.users.get(uid) if uid is not None else None

    def indexes(self) -> tuple[dict[str, str], dict[str, str | None]] | None:
        """(normalized DN -> id, casefolded username -> id or None) as the builder left them, or None."""
        if self._by_dn is None:
            return None
        return self._by_dn, self._by_username

    def serial_with(self, ids: set[str]) -> tuple[int, frozenset[str]]:
        """What a snapshot made from this one by changing ``ids`` records of it (see changed_since)."""
        return self._serial, frozenset(ids)

    def changed_since(self, base: "DirectorySnapshot") -> frozenset[str] | None:
        """The ids whose user may differ from ``base``'s (changed, added, removed) when this snapshot was made
        from ``base`` by ``apply_changes``: every other user is the very object ``base`` holds. None when it was
        not: compare every user."""
        derived = self._derived
        if derived is not None and derived[0] == base._serial:
            return derived[1]
        return None

    def __len__(self) -> int:
        return len(self.users)

    def __iter__(self) -> Iterator[DirectoryUser]:
        return iter(self.users.values())

    @property
    def incremental_ready(self) -> bool:
        return self._incremental_ready

    @property
    def group_count(self) -> int:
        return len(self.groups)

    def members(self, group: str) -> Iterator[DirectoryUser]:
        """The users in the group named ``group`` (nesting resolved): a pass over every user."""
        return (user for user in self.users.values() if group in user.groups)

    def __repr__(self) -> str:
        return f"<DirectorySnapshot {len(self.users)} users, {len(self.groups)} groups>"


class SnapshotView(Protocol):
    """What a worker reads of a snapshot: ``DirectorySnapshot`` (built by the sync) or the file every worker
    maps (``mapped.MappedSnapshot``)."""

    taken_at: float
    full_at: float
    issues: tuple[str, ...]

    @property
    def users(self) -> Mapping[str, DirectoryUser]: ...

    @property
    def group_count(self) -> int: ...

    def user(self, username: str) -> DirectoryUser | None: ...

    def members(self, group: str) -> Iterator[DirectoryUser]: ...

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[DirectoryUser]: ...


_SERIALS = itertools.count(1)


def username_index(users: Iterable[DirectoryUser]) -> dict[str, str | None]:
    """username (casefolded) -> id; a name two entries share maps to None: nobody (fail closed)."""
    index: dict[str, str | None] = {}
    for user in users:
        key = fold_name(user.username)
        index[key] = None if key in index else user.id
    return index


EMPTY_SNAPSHOT = DirectorySnapshot({}, {})
