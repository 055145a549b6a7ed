"""Who is asking: the plain value the authorization engine decides for."""

from __future__ import annotations

from collections.abc import Iterable
from sys import intern

__all__ = ["Identity", "subject_key"]


def subject_key(kind: str, name: str) -> str:
    """The key a binding subject is indexed under: ``u:alice``, ``g:staff``, ``d:<pass id>``."""
    return intern(f"{kind[0]}:{name}")


class Identity:
    """A signed-in user (or day-pass holder) as authorization sees it.

    ``groups`` is the group closure (nested groups already resolved). ``key`` is
    the identity *shape*: two identities with the same user, groups and pass get
    the same decisions, so decisions are cached per shape. Build it once per session
    or token and reuse it: construction sorts the groups, evaluation does not.
    """

    __slots__ = ("username", "groups", "daypass", "disabled", "key", "subjects")

    username: str
    groups: frozenset[str]
    daypass: str | None
    disabled: bool
    key: str
    subjects: tuple[str, ...]

    def __init__(
        self, username: str, groups: Iterable[str] = (), daypass: str | None = None, disabled: bool = False
    ) -> None:
        groups = groups if isinstance(groups, frozenset) else frozenset(groups)
        object.__setattr__(self, "username", username)
        object.__setattr__(self, "groups", groups)
        object.__setattr__(self, "daypass", daypass)
        object.__setattr__(self, "disabled", bool(disabled))
        # One string, so its hash is cached and cache keys hash in constant time. Every part is
        # length-prefixed: the encoding is injective whatever characters a name contains.
        parts = (username, "N" if daypass is None else f"D{daypass}", *sorted(groups))
        object.__setattr__(self, "key", "".join(f"{len(p)}:{p}" for p in parts))
        subjects = [subject_key("user", username)]
        if daypass is not None:
            subjects.append(subject_key("daypass", daypass))
        subjects.extend(subject_key("group", g) for g in sorted(groups))
        object.__setattr__(self, "subjects", tuple(subjects))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Identity is immutable")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Identity) and self.key == other.key and self.disabled == other.disabled

    def __hash__(self) -> int:
        return hash(self.key)

    def __repr__(self) -> str:
        extra = f", daypass={self.daypass!r}" if self.daypass else ""
        extra += ", disabled=True" if self.disabled else ""
        return f"Identity({self.username!r}, groups={sorted(self.groups)!r}{extra})"
