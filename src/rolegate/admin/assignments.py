"""Assignments: an app marks who is assigned to an object (``workorder:1`` -> bob), issue 19 part 3.

A role grants what it lists under ``on_assigned`` only on objects assigned to its holder (and, by scope
type, at the scope such an object lies in directly): see ``rolegate.authz.evaluate``. The admin API
(a contract proposal, docs/admin-api.md "Assignments"):

* ``PUT /assignments/{object}`` ``{"users": ["bob"]}``: who is assigned to that object now (the list replaces
  the previous one; ``[]`` or ``DELETE`` assigns nobody);
* ``PUT /assignments`` ``{"items": [{"object": "workorder:1", "users": ["bob"]}, ...]}``: many at once;
* ``GET /assignments`` (``?object=``, ``?user=``) and ``GET /assignments/{object}``.

Every write is idempotent (an object whose users are already those listed is unchanged; a call changing
nothing writes, bumps and audits nothing), bounded (``MAX_ITEMS`` objects per call: 413 beyond;
``MAX_USERS`` users per object: 422), atomic (validated and authorized whole, then written in one Store
transaction), audited once per object changed (``admin_change`` on ``assignments/<object>``, by the app or
person), and ends with one policy bump: every worker compiles the new assignments before its next request,
so an assignment added or removed counts from the next request (the decision memo lives on the policy).

Who may: an app (``apps:``) the object types in its ``may.assign``; a person a role, held at the object
(there or above), that manages something on single objects (``manages.assigns``).
"""

from __future__ import annotations

import re
import time
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

from aiohttp import web
from pydantic import Field

from rolegate.admin.errors import AdminError, Denied, Invalid, Missing
from rolegate.admin.models import NAME, SCOPE, Body
from rolegate.admin.state import ASSIGNED, Doc, compile_state, daypass_bindings, load_state, write_many
from rolegate.authz.stored import Assigned, assigned_of

__all__ = ["MAX_ITEMS", "MAX_USERS", "AssignmentIn", "AssignmentsIn", "list_assignments", "put_assignments"]

MAX_ITEMS = 1000
MAX_USERS = 100


class TooMany(AdminError):
    status, code = 413, "too_many_items"


class AssignmentIn(Body):
    users: list[str] = Field(
        max_length=MAX_USERS, description=f"who is assigned to the object now (at most {MAX_USERS}; [] assigns nobody)"
    )


class AssignmentItem(AssignmentIn):
    object: str = Field(pattern=SCOPE, description="the object, e.g. workorder:1")


class AssignmentsIn(Body):
    # Not bounded here: beyond MAX_ITEMS the answer is 413 naming the limit, not a validation error.
    items: list[AssignmentItem] = Field(description=f"at most {MAX_ITEMS} objects, each once")


class AssignmentQuery(Body):
    object: str | None = Field(None, pattern=SCOPE, description="only this object")
    user: str | None = Field(None, pattern=NAME, description="only objects this user is assigned to")


def _users_out(value: Any, key: str) -> list[dict[str, Any]]:
    return [a.to_json() for a in assigned_of(key, value)]


def _may_read(actor: Any, obj: str) -> bool:
    return actor.may_assign(obj.split(":", 1)[0]) if actor.is_app else True


async def list_assignments(service: Any, obj: str | None = None, user: str | None = None) -> list[dict[str, Any]]:
    """Every object someone is assigned to (as stored), filtered by object or user."""
    state = await load_state(service.store)
    out = []
    for key, doc in sorted(state.assignments.items()):
        if (obj is not None and key != obj) or not _may_read(service.actor, key):
            continue
        users = _users_out(doc.value, key)
        if not users or (user is not None and all(u["user"] != user for u in users)):
            continue
        out.append({"object": key, "users": users, "version": doc.version})
    return out


def unlocked_by(policy: Any, config: Any, obj_type: str) -> frozenset[str]:
    """What an assignment to an object of ``obj_type`` can grant: every permission a role lists under
    ``on_assigned`` for the object itself (``*`` or its type) or for the type it lies in directly."""
    declared = config.scopes.get(obj_type)
    types = {"*", obj_type} | ({declared.parent} if declared is not None and declared.parent else set())
    return frozenset().union(
        *(perms for role in policy.roles.values() for t, perms in role.on_assigned.items() if t in types)
    )


def _check_person(actor: Any, obj: str, unlocked: frozenset[str]) -> None:
    """A person assigns where a role they hold (at the object, there or above) manages single objects, and
    manages (``manages.assigns``) every permission the assignment can grant: no one hands out more by assigning
    than they could grant on the object directly."""
    assigns = actor.assigns_at(obj)
    if not assigns:
        raise Denied(f"you cannot assign people to {obj}: no role you hold there manages assignments (manages.assigns)")
    missing = sorted(p for p in unlocked if p not in assigns)
    if missing:
        raise Denied(
            f"you cannot assign people to {obj}: an assignment there grants {', '.join(missing)} "
            f"(on_assigned), which no role you hold there manages (manages.assigns)"
        )


async def put_assignments(service: Any, items: list[AssignmentItem], *, dry_run: bool) -> dict[str, Any]:
    """Set who is assigned to each object of ``items``; see the module doc. Answers what changed."""
    if len(items) > MAX_ITEMS:
        raise TooMany(f"{len(items)} objects in one call; at most {MAX_ITEMS} (split the list)")
    config, actor = service.config, service.actor
    errors: list[dict[str, str]] = []
    seen: set[str] = set()
    name = re.compile(NAME)
    for i, item in enumerate(items):
        obj_type = item.object.split(":", 1)[0]
        if item.object in seen:
            errors.append({"field": f"items[{i}].object", "message": f"{item.object} is listed twice"})
        seen.add(item.object)
        if obj_type not in config.scopes:
            errors.append(
                {
                    "field": f"items[{i}].object",
                    "message": f"object type {obj_type!r} is not declared (declare it under scopes:)",
                }
            )
        for j, user in enumerate(item.users):
            if not isinstance(user, str) or not name.match(user):
                errors.append({"field": f"items[{i}].users[{j}]", "message": "not a user name"})
    if errors:
        raise Invalid(errors)
    for item in items:  # type level first (an app's may.assign), then a person's roles
        actor.require_assign(item.object.split(":", 1)[0])
    state, before = await service.snapshot()
    at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    changes: list[tuple[str, dict[str, Any], dict[str, Any] | None, int]] = []  # object, value, old, expected
    unchanged = 0
    for item in items:
        old = state.assignments.get(item.object)
        current = {a.user: a for a in assigned_of(item.object, old.value if old else None)}
        wanted = list(dict.fromkeys(item.users))
        if set(current) == set(wanted):
            unchanged += 1
            continue
        if not actor.is_app:
            _check_person(actor, item.object, unlocked_by(before, config, item.object.split(":", 1)[0]))
        # Who stays keeps when and by whom they were assigned; who is new is assigned by this caller, now.
        users = [current.get(u) or Assigned(u, actor.username, at) for u in wanted]
        changes.append(
            (
                item.object,
                {"users": [u.to_json() for u in users]},
                old.value if old else None,
                old.version if old else 0,
            )
        )
    result: dict[str, Any] = {"changed": [], "unchanged": unchanged}
    if not changes:
        result["applied"] = False
        result["preview"] = {
            "dry_run": dry_run,
            "summary": "nothing to change: everyone is assigned as listed",
            "changes": [],
            "users_considered": 0,
            "notes": [],
        }
        return result
    docs = dict(state.assignments)
    for obj, value, _, expected in changes:
        docs[obj] = Doc(value, expected + 1)
    after = compile_state(
        config, replace(state, assignments=docs), extra=await daypass_bindings(service.store, config, time.time())
    )
    affected = {a.user for obj, value, old, _ in changes for doc in (value, old) for a in assigned_of(obj, doc)}
    result["preview"] = await service.preview(
        before, after, [("user", u) for u in sorted(affected)], f"assign people to {len(changes)} object(s)"
    )
    if dry_run:
        result["changed"] = [{"object": o, "users": v["users"], "version": e + 1} for o, v, _, e in changes]
        result["applied"] = False
        return result
    versions = await write_many(service, actor, ASSIGNED, changes, "an assignment")
    result["preview"]["dry_run"] = False
    result["changed"] = [{"object": o, "users": v["users"], "version": n} for (o, v, _, _), n in zip(changes, versions)]
    result["applied"] = True
    return result


def register(op: Any, Call: Any, json_out: Any) -> None:
    """Add the assignment operations to the admin API (``rolegate.admin.api`` calls this once)."""

    def _object(call: Any) -> str:
        obj = call.request.match_info["object"]
        if not isinstance(obj, str) or len(obj) > 300 or not re.match(SCOPE, obj):
            raise Missing("no such object (type:id, e.g. workorder:1)")
        return obj

    @op(
        "GET",
        "/assignments",
        "Who is assigned to which object (apps mark it; on_assigned roles grant there)",
        "assignments",
        query=AssignmentQuery,
        apps=True,
    )
    async def get_assignments(call: Any) -> web.Response:
        if not call.actor.is_app:
            call.require_admin()
        q = call.query
        return json_out({"items": await list_assignments(call.service, q.object if q else None, q.user if q else None)})

    @op("GET", "/assignments/{object}", "Who is assigned to one object", "assignments", apps=True)
    async def get_assignment(call: Any) -> web.Response:
        obj = _object(call)
        if not call.actor.is_app:
            call.require_admin()
        elif not call.actor.may_assign(obj.split(":", 1)[0]):
            call.actor.require_assign(obj.split(":", 1)[0])
        items = await list_assignments(call.service, obj)
        return json_out(items[0] if items else {"object": obj, "users": [], "version": 0})

    @op(
        "PUT",
        "/assignments/{object}",
        "Set who is assigned to one object, e.g. workorder:1 -> [bob]",
        "assignments",
        body=AssignmentIn,
        apps=True,
        description="Replaces the list (idempotent: the same list again changes nothing). Roles grant what they "
        "list under on_assigned only on objects assigned to the user. An app needs the object type in "
        "its may.assign; a person a role at the object that manages assignments (manages.assigns).",
    )
    async def put_assignment(call: Any) -> web.Response:
        obj = _object(call)
        item = AssignmentItem(object=obj, users=call.body.users)
        return json_out(await put_assignments(call.service, [item], dry_run=call.dry_run))

    @op("DELETE", "/assignments/{object}", "Assign nobody to one object", "assignments", apps=True)
    async def delete_assignment(call: Any) -> web.Response:
        obj = _object(call)
        return json_out(
            await put_assignments(call.service, [AssignmentItem(object=obj, users=[])], dry_run=call.dry_run)
        )

    @op(
        "PUT",
        "/assignments",
        "Set who is assigned to many objects at once (bulk, atomic)",
        "assignments",
        body=AssignmentsIn,
        apps=True,
        description=f"items: [{{object, users}}], at most {MAX_ITEMS} (413 beyond), each object once. Idempotent "
        "and atomic; one audit event per object changed and one policy bump per call.",
    )
    async def put_assignments_bulk(call: Any) -> web.Response:
        return json_out(await put_assignments(call.service, call.body.items, dry_run=call.dry_run))
