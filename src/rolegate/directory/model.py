"""The directory as rolegate sees it: users, groups and an immutable snapshot of both."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

EMPTY: frozenset[str] = frozenset()
# Most users have no attributes beyond email and name: they all share this one empty mapping.
NO_ATTRIBUTES: Mapping[str, tuple[str, ...]] = MappingProxyType({})


@dataclass(frozen=True, slots=True, eq=False)
class DirectoryUser:
    """One user: identity, profile, and the closure of their groups (names, nesting resolved)."""

    id: str  # entryUUID / objectGUID: stable across renames and moves
    dn: str
    username: str
    email: str | None
    name: str | None
    disabled: bool
    groups: frozenset[str]  # every group name the user is in, directly or through nesting
    attributes: Mapping[str, tuple[str, ...]] = field(
        default_factory=lambda: NO_ATTRIBUTES
    )  # mapped (beyond email, name) + scope attributes
    # Group ids the user is a direct member of (group side / memberOf side); kept for incremental sync.
    direct_groups: frozenset[str] = EMPTY
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


@dataclass(frozen=True, slots=True, eq=False)
class DirectoryGroup:
    """One group with its members resolved to ids; what did not resolve is kept as written."""

    id: str
    dn: str
    name: str
    member_users: frozenset[str]  # user ids
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
        "_incremental_ready",
        "_stored",
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
    ) -> None:
        self.users = users  # id -> user
        self.groups = groups  # id -> group
        self.taken_at = taken_at  # when this snapshot was read (epoch seconds)
        self.full_at = full_at  # when the last full sync behind it ran
        self.since = since  # change-attribute watermark for the next incremental sync
        self.issues = issues  # odd data met while building it (reported, never fatal)
        # Snapshots read back from the store carry no direct memberships: a full sync comes first.
        self._incremental_ready = incremental_ready
        self._by_username = username_index(users.values())
        # How this snapshot sits in a Store once saved or loaded (persist.StoredLayout): lets the next
        # save write only what changed. Never part of what the snapshot says.
        self._stored: object = None

    def user(self, username: str) -> DirectoryUser | None:
        """The user signing in as ``username`` (case-insensitive); None if unknown or ambiguous."""
        return self._by_username.get(username.casefold())

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


def username_index(users: "Iterator[DirectoryUser] | object") -> dict[str, DirectoryUser]:
    """username (casefolded) -> user; a name two entries share maps to nobody (fail closed)."""
    index: dict[str, DirectoryUser] = {}
    taken: set[str] = set()
    for user in users:  # type: ignore[attr-defined]
        key = user.username.casefold()
        if key in index or key in taken:
            index.pop(key, None)
            taken.add(key)
        else:
            index[key] = user
    return index


EMPTY_SNAPSHOT = DirectorySnapshot({}, {})
