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


def _person(user: Any) -> Person:
    return Person(user.username, user.name, user.email, user.disabled, user.groups)


class DirectoryPeople(People):
    """People over the directory snapshot, read on demand.

    A 403 page's approvers look up a few users and the members of the groups bound to managing roles; they must
    not turn a directory of a million into a million objects in the worker (the snapshot's members index answers
    a group). The full sorted list (the admin's people pages) is made only when asked for, and kept.
    """

    def __init__(self, snapshot: Any) -> None:  # noqa: D107 - no People.__init__: nothing is read up front
        self.source = "directory"
        self._snapshot = snapshot
        self._all: list[Person] | None = None

    @property  # type: ignore[override]  # People keeps a list; here it is made on first use
    def people(self) -> list[Person]:
        if self._all is None:
            self._all = sorted((_person(u) for u in self._snapshot), key=lambda p: p.username.casefold())
        return self._all

    def user(self, username: str) -> Person | None:
        found = self._snapshot.user(username)
        return _person(found) if found is not None else None

    def members(self, group: str) -> list[Person]:
        return sorted((_person(u) for u in self._snapshot.members(group)), key=lambda p: p.username.casefold())


async def load_people(runtime: Any) -> People:
    snapshot = runtime.directory
    if runtime.config.directory is not None and snapshot is not None:
        return DirectoryPeople(snapshot)
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
