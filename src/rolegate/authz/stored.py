"""What the admin API stores for the policy, read back into ``compile_policy``'s inputs.

The Store's documents are plain JSON; the admin API writes them and both the workers and the
admin API's previews read them through here, so both compile the same thing.

User settings switched on: one document per user (namespace ``user_settings``, key = username)::

    {"on": [{"setting": "documents_add", "scope": "building:a", "by": "carol", "at": "2026-05-04T09:12:00+00:00"},
            {"setting": "vacancy", "scope": null, "by": "alice", "at": "..."}]}

``scope`` null means everywhere. A switch may carry ``"until": "2026-05-04T11:12:00+00:00"`` (an approved
access request): it counts only before then; an ``until`` that is no time with a zone grants nothing. The form written before settings were per scope,
``{"settings": ["vacancy", ...]}``, is still read: those are on everywhere, by nobody known.
Anything malformed is skipped (it grants nothing; the compiler reports unknown names).

Assignments (an app marks who works on an object): one document per object (namespace ``assignments``,
key = the object, e.g. ``workorder:1``)::

    {"users": [{"user": "bob", "by": "app:fieldservice", "at": "2026-05-04T09:12:00+00:00"}]}

Scope membership registered by apps: one document per scope (namespace ``scope_members``, key =
the child scope, e.g. ``task:42``): ``{"parent": "building:a", "by": "carol", "at": "..."}``.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

from rolegate.authz.scopes import is_scope

__all__ = ["ASSIGNMENTS", "MEMBERS", "SETTINGS", "Assigned", "Switch", "assigned_of", "member_of", "switches_of"]

SETTINGS = "user_settings"
MEMBERS = "scope_members"
ASSIGNMENTS = "assignments"
USER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@\-]{0,127}\Z")


class Switch(NamedTuple):
    """One user setting switched on for one user, at a scope (None: everywhere), by someone, at a time."""

    setting: str
    scope: str | None = None
    by: str | None = None
    at: str | None = None
    until: str | None = None  # ISO 8601 with a zone; None: no end

    def to_json(self) -> dict[str, Any]:
        out = {"setting": self.setting, "scope": self.scope, "by": self.by, "at": self.at}
        if self.until is not None:
            out["until"] = self.until
        return out


def switches_of(value: Any) -> list[Switch]:
    """The switches in one stored document (see the module docstring); malformed parts are skipped."""
    if not isinstance(value, dict):
        return []
    out: list[Switch] = []
    legacy = value.get("settings")
    if isinstance(legacy, list):
        out.extend(Switch(name) for name in legacy if isinstance(name, str))
    records = value.get("on")
    if isinstance(records, list):
        for record in records:
            if not isinstance(record, dict) or not isinstance(record.get("setting"), str):
                continue
            scope = record.get("scope")
            if scope is not None and not is_scope(scope):
                continue
            by, at, until = record.get("by"), record.get("at"), record.get("until")
            if until is not None and not isinstance(until, str):
                continue  # an end that cannot be read must not become "no end"
            out.append(
                Switch(
                    record["setting"],
                    scope,
                    by if isinstance(by, str) else None,
                    at if isinstance(at, str) else None,
                    until,
                )
            )
    return list(dict.fromkeys(out))


def member_of(key: str, value: Any) -> tuple[str, str] | None:
    """(child, parent) from one stored membership document, or None when malformed."""
    parent = value.get("parent") if isinstance(value, dict) else None
    if is_scope(key) and is_scope(parent):
        return key, parent
    return None


class Assigned(NamedTuple):
    """One user assigned to one object, by whom (``app:fieldservice``, or a person) and when."""

    user: str
    by: str | None = None
    at: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"user": self.user, "by": self.by, "at": self.at}


def assigned_of(key: str, value: Any) -> list[Assigned]:
    """The users assigned to object ``key`` in one stored document; malformed parts are skipped (grant nothing)."""
    if not is_scope(key) or not isinstance(value, dict) or not isinstance(value.get("users"), list):
        return []
    out: dict[str, Assigned] = {}
    for record in value["users"]:
        if not isinstance(record, dict) or not isinstance(record.get("user"), str) or not USER.match(record["user"]):
            continue
        by, at = record.get("by"), record.get("at")
        out.setdefault(
            record["user"],
            Assigned(record["user"], by if isinstance(by, str) else None, at if isinstance(at, str) else None),
        )
    return list(out.values())
