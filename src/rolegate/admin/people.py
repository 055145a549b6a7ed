"""Who exists: users and groups from the directory snapshot, or, without a directory, from sign-ins.

Without a directory rolegate only learns a user's groups from the IdP's claim at sign-in; the audit
trail's ``signin`` events are that record (newest per user wins). Read-only either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from rolegate.audit import AuditFilters, query_events
from rolegate.authz import Identity

SIGNINS_SCANNED = 5000


@dataclass(frozen=True, slots=True)
class Person:
    username: str
    name: str | None
    email: str | None
    disabled: bool
    groups: frozenset[str]

    def identity(self) -> Identity:
        return Identity(self.username, self.groups, disabled=self.disabled)


class People:
    """An index of people and group memberships (closure: nested groups count)."""

    def __init__(self, people: list[Person], source: Literal["directory", "signins"]) -> None:
        self.source = source
        self._by_name = {p.username.casefold(): p for p in people}
        self.people = sorted(people, key=lambda p: p.username.casefold())

    def user(self, username: str) -> Person | None:
        return self._by_name.get(username.casefold())

    def members(self, group: str) -> list[Person]:
        return [p for p in self.people if group in p.groups]

    def groups(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for p in self.people:
            for g in p.groups:
                out.setdefault(g, []).append(p.username)
        return dict(sorted(out.items()))

    def identity_for(self, username: str, groups: list[str] | None = None) -> Identity:
        """The authz identity of ``username``; ``groups`` (what-if) overrides what is known."""
        person = self.user(username)
        if groups is not None:
            return Identity(username, groups, disabled=person.disabled if person else False)
        if person is None:
            return Identity(username, ())
        return person.identity()


async def load_people(runtime: Any) -> People:
    snapshot = runtime.directory
    if runtime.config.directory is not None and snapshot is not None:
        return People([Person(u.username, u.name, u.email, u.disabled, u.groups) for u in snapshot], "directory")
    seen: dict[str, Person] = {}
    if runtime.store is not None:
        events = await query_events(
            runtime.store, AuditFilters(kind="signin", limit=SIGNINS_SCANNED, newest_first=True)
        )
        for event in events:
            user = event.get("user")
            if not isinstance(user, str) or event.get("outcome") != "ok" or user.casefold() in seen:
                continue
            groups = frozenset(g for g in event.get("groups") or () if isinstance(g, str))
            seen[user.casefold()] = Person(user, None, None, False, groups)
    return People(list(seen.values()), "signins")
