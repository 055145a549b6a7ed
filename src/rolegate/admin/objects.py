"""The object directory's bulk write: an app upserts where its objects lie, many at once (issue 19).

``PUT /.rolegate/api/v1/scope-members`` with ``{"items": [{"scope": "workorder:1", "parent": "customer:c100"},
...]}`` (a contract proposal, docs/admin-api.md "Object directory"):

* idempotent: an item that already lies where it says (registered, or placed by config) is unchanged; a call
  that changes nothing writes nothing, bumps no version and records no audit event;
* atomic: every item is validated and authorized before anything is written, and the changes are written in
  one Store transaction (``Store.put_many``): all or none;
* bounded: at most ``MAX_ITEMS`` items per call (413 beyond, with the limit), a scope at most once (422);
* audited once per change (one ``admin_change`` event per object placed or moved, committed together), and
  one policy bump for the whole call, so every worker sees the new places at its next request.

Who may: a person needs, for each change, a role that manages something at the new parent (and at the old
one when moving), as for ``PUT /scope-members/{scope}``; an app (``apps:``) the object type in its
``may.place`` (``rolegate.admin.delegation.may_register_member``).
"""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

from pydantic import Field

from rolegate.admin.delegation import may_register_member
from rolegate.admin.errors import AdminError, Invalid
from rolegate.admin.models import SCOPE, Body, Out, PreviewOut
from rolegate.admin.state import SCOPE_MEMBERS, Doc, compile_state, daypass_bindings, write_many

__all__ = ["MAX_ITEMS", "Placement", "PlacementChange", "PlacementsIn", "PlacementsOut", "TooMany", "put_scope_members"]

MAX_ITEMS = 1000


class TooMany(AdminError):
    status, code = 413, "too_many_items"


class Placement(Body):
    scope: str = Field(pattern=SCOPE, description="the object, e.g. workorder:1")
    parent: str = Field(pattern=SCOPE, description="where it lies, e.g. customer:c100")


class PlacementsIn(Body):
    # Not bounded here: beyond MAX_ITEMS the answer is 413 naming the limit, not a validation error.
    items: list[Placement] = Field(description=f"at most {MAX_ITEMS} placements, each scope once")


class PlacementChange(Out):
    scope: str
    parent: str
    before: str | None = Field(description="where it lay before (registered or by config); null: nowhere")
    version: int


class PlacementsOut(Out):
    applied: bool = Field(description="false on a dry run and when nothing changed")
    changed: list[PlacementChange]
    unchanged: int = Field(description="items that already lay where they say")
    preview: PreviewOut


async def put_scope_members(service: Any, body: PlacementsIn, *, dry_run: bool) -> dict[str, Any]:
    """Place (or move) every item of ``body``; see the module doc. Answers what changed and the preview."""
    items = body.items
    if len(items) > MAX_ITEMS:
        raise TooMany(f"{len(items)} placements in one call; at most {MAX_ITEMS} (split the list)")
    config, actor = service.config, service.actor
    errors: list[dict[str, str]] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        child_type, parent_type = item.scope.split(":", 1)[0], item.parent.split(":", 1)[0]
        declared = config.scopes.get(child_type)
        if item.scope in seen:
            errors.append({"field": f"items[{i}].scope", "message": f"{item.scope} is listed twice"})
        seen.add(item.scope)
        if declared is None or declared.parent is None:
            errors.append(
                {
                    "field": f"items[{i}].scope",
                    "message": f"scope type {child_type!r} is not declared with a parent type",
                }
            )
        elif parent_type != declared.parent:
            errors.append(
                {
                    "field": f"items[{i}].parent",
                    "message": f"a {child_type} lies in a {declared.parent}, not in a {parent_type}",
                }
            )
    if errors:
        raise Invalid(errors)  # nothing is written

    state, before = await service.snapshot()
    changes: list[tuple[str, str, str | None, int]] = []  # (scope, parent, old parent, expected version)
    unchanged = 0
    for item in items:
        old = state.members.get(item.scope)
        old_parent = old.value.get("parent") if old is not None else before.scopes.parents.get(item.scope)
        if old_parent == item.parent:
            unchanged += 1
            continue
        may_register_member(actor, item.scope, item.parent)
        if old_parent:
            may_register_member(actor, item.scope, old_parent, "move")
        changes.append((item.scope, item.parent, old_parent, old.version if old is not None else 0))
    result: dict[str, Any] = {"changed": [], "unchanged": unchanged}
    if not changes:
        result["preview"] = {
            "dry_run": dry_run,
            "summary": "nothing to change: every object lies where it says",
            "changes": [],
            "users_considered": 0,
            "notes": [],
        }
        result["applied"] = False
        return result

    at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    values = {scope: {"parent": parent, "by": actor.username, "at": at} for scope, parent, _, _ in changes}
    members = dict(state.members)
    for scope, value in values.items():
        old = members.get(scope)
        members[scope] = Doc(value, (old.version if old else 0) + 1)
    after_state = replace(state, members=members)
    extra = await daypass_bindings(service.store, config, time.time())
    after = compile_state(config, after_state, extra=extra)
    changed_objects = set(values)
    subjects = [(g.subject_kind, g.subject) for g in before.object_grants if g.object in changed_objects]
    moved = sum(1 for _, _, old_parent, _ in changes if old_parent)
    summary = f"place {len(changes) - moved} and move {moved} objects of the object directory"
    result["preview"] = await service.preview(before, after, subjects, summary)
    if dry_run:
        result["changed"] = [{"scope": s, "parent": p, "before": o, "version": v + 1} for s, p, o, v in changes]
        result["applied"] = False
        return result
    old_values = {scope: state.members[scope].value if scope in state.members else None for scope in values}
    versions = await write_many(
        service,
        actor,
        SCOPE_MEMBERS,
        [(scope, values[scope], old_values[scope], expected) for scope, _, _, expected in changes],
        "a placement",
    )
    result["preview"]["dry_run"] = False
    result["changed"] = [
        {"scope": s, "parent": p, "before": o, "version": v} for (s, p, o, _), v in zip(changes, versions)
    ]
    result["applied"] = True
    return result
