"""Read-only answers: /me, users and groups, explain, the matrix, export, audit and sync status."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

from rolegate.admin.delegation import AUDIT_VIEW, BINDINGS_EDIT, manages_anything
from rolegate.admin.errors import Denied, Invalid, Missing
from rolegate.admin.guard import Actor
from rolegate.admin.holdings import assignments_of, object_grants_of, scope_holdings, settings_of, switches_of_user
from rolegate.admin.models import AuditQuery, ExplainIn
from rolegate.admin.people import People
from rolegate.admin.state import DynamicState, binding_of
from rolegate.audit import AuditFilters, parse_time, query_events
from rolegate.authz import Identity, Policy
from rolegate.authz.explain import explain, explain_route
from rolegate.authz.stored import switches_of
from rolegate.config.sections.policy import EVERYWHERE
from rolegate.authz.matrix import build_matrix, render
from rolegate.errors import AmbiguousPath
from rolegate.proxy.paths import normalize_path, split_segments


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")


def me(actor: Actor) -> dict[str, Any]:
    """Everything the caller may do, per scope, and until when (staff and day-pass holders alike)."""
    p, identity, policy, now = actor.principal, actor.identity, actor.policy, actor.now
    return {
        "user": p.username,
        "name": p.name or "",
        "email": p.email or "",
        "auth": str(p.auth),
        "daypass": identity.daypass,
        "groups": sorted(identity.groups),
        "signed_in_until": _iso(p.expires_at),
        "scopes": scope_holdings(policy, identity, now),
        "object_grants": object_grants_of(policy, identity, now),
        "settings": settings_of(policy, identity),
        "settings_on": switches_of_user(policy, identity),
        "assignments": assignments_of(policy, identity, now),
        "admin": actor.admin_rights(),
        "policy_version": policy.version,
    }


def is_admin(actor: Actor) -> bool:
    """Holds any of rolegate's own permissions somewhere, or a role that manages people somewhere: may see
    users, groups and the matrix."""
    return any(actor.admin_rights().values()) or manages_anything(actor)


def can_inspect(actor: Actor, scope: str | None) -> bool:
    """May look at other people's rights (at ``scope``): auditors everywhere; there, binding editors and
    whoever manages anything there."""
    return actor.holds(AUDIT_VIEW) or actor.holds(BINDINGS_EDIT, scope) or bool(actor.manages_at(scope))


def user_detail(people: People, policy: Policy, username: str) -> dict[str, Any]:
    person = people.user(username)
    if person is None:
        raise Missing(f"no user {username} ({people.source})")
    identity, now = person.identity(), time.time()
    return {
        "username": person.username,
        "name": person.name,
        "email": person.email,
        "disabled": person.disabled,
        "groups": sorted(person.groups),
        "source": people.source,
        "scopes": scope_holdings(policy, identity, now),
        "object_grants": object_grants_of(policy, identity, now),
        "settings": settings_of(policy, identity),
        "settings_on": switches_of_user(policy, identity),
        "assignments": assignments_of(policy, identity, now),
    }


def explain_for(runtime: Any, actor: Actor, people: People, body: ExplainIn) -> dict[str, Any]:
    target = body.user or actor.username
    if target != actor.username or body.groups is not None:
        if not can_inspect(actor, body.scope):
            raise Denied(
                "to explain another user's access you need rolegate:audit:view, or "
                "rolegate:bindings:edit at the scope asked about"
            )
    if target == actor.username and body.groups is None:
        identity = actor.identity
    else:
        identity = people.identity_for(target, body.groups)
    policy, now = actor.policy, time.time()
    if body.url:
        parts = urlsplit(body.url)
        try:
            path = normalize_path(parts.path or "/")
        except AmbiguousPath:
            raise Invalid.field("url", "the path is ambiguous; rolegate answers it with 400") from None
        method = (body.method or "GET").upper()
        match = runtime.routes.match(method, parts.hostname if parts.scheme else None, split_segments(path))
        query = parse_qs(parts.query, keep_blank_values=True)
        result = explain_route(
            policy, identity, match, method, path, lambda n: (query.get(n) or [None])[0], lambda _: None, now
        )
    elif body.permission:
        result = explain(policy, identity, body.permission, body.scope, body.object, now)
    else:
        raise Invalid.field("permission", "give a permission (with scope/object) or a url (with method)")
    out = result.to_dict()
    if body.groups is None and identity is not actor.identity and people.user(target) is None:
        out["notes"].append(f"{target} is not known ({people.source}): evaluated without groups")
    return out


def matrix_of(policy: Policy, roles: str | None, scope: str | None, fmt: str) -> str | dict[str, Any]:
    names = [r.strip() for r in roles.split(",") if r.strip()] if roles else None
    try:
        matrix = build_matrix(policy.config, names, scope, policy=policy)
    except ValueError as exc:
        raise Invalid.field("roles", str(exc)) from None
    return matrix.to_dict() if fmt == "json" else render(matrix, fmt)


def export_yaml(config: Any, state: DynamicState) -> str:
    """The live policy in config shape: config plus everything the API added (day passes left out)."""
    data: dict[str, Any] = {}
    dumped = config.model_dump(
        mode="json",
        exclude_defaults=True,
        include={"scopes", "permissions", "roles", "user_settings", "users", "bindings"},
    )
    scopes = dumped.get("scopes", {})
    for key, doc in sorted(state.members.items()):  # tasks the API placed
        child_type, _, child = key.partition(":")
        parent = str(doc.value.get("parent") or "")
        if child_type in scopes and parent:
            scopes[child_type].setdefault("members", {})[child] = parent.partition(":")[2]
    data["scopes"] = scopes
    data["permissions"] = list(config.permissions)
    roles = dict(dumped.get("roles", {}))
    for name, doc in sorted(state.roles.items()):
        if name not in roles:
            roles[name] = {k: v for k, v in doc.value.items() if v not in ("", [], None)}
    data["roles"] = roles
    data["user_settings"] = {name: dict(value) for name, value in dumped.get("user_settings", {}).items()}
    users: dict[str, Any] = {
        name: {"settings": dict(value.get("settings", {}))} for name, value in dumped.get("users", {}).items()
    }
    for user, doc in sorted(state.settings.items()):
        for switch in switches_of(doc.value):
            where = users.setdefault(user, {"settings": {}})["settings"].setdefault(switch.scope or EVERYWHERE, [])
            if switch.setting not in where:
                where.append(switch.setting)
    data["users"] = users
    bindings = list(dumped.get("bindings", []))
    for _key, doc in sorted(state.bindings.items()):
        try:
            binding = binding_of(doc.value)
        except Exception:  # noqa: BLE001 - a damaged record is not exported
            continue
        bindings.append({k: v for k, v in binding.model_dump(mode="json").items() if v is not None})
    data["bindings"] = bindings
    header = (
        f"# rolegate live policy, exported {datetime.now(timezone.utc).isoformat(timespec='seconds')}\n"
        "# config file + admin API state (roles, bindings, object grants, user settings, scope members); "
        "day passes omitted\n"
    )
    return header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


async def audit_events(store: Any, query: AuditQuery) -> list[dict[str, Any]]:
    try:
        since = parse_time(query.since) if query.since else None
        until = parse_time(query.until) if query.until else None
    except ValueError as exc:
        raise Invalid.field("since" if query.since and "since" in str(exc) else "until", str(exc)) from None
    filters = AuditFilters(
        user=query.user,
        path_prefix=query.path_prefix,
        decision=query.decision,
        kind=query.kind,
        since=since,
        until=until,
        after_seq=query.after_seq,
        limit=query.limit,
        newest_first=True,
    )
    problems = filters.problems()
    if problems:
        raise Invalid.field("decision" if query.decision else "kind", "; ".join(problems))
    return await query_events(store, filters)


async def sync_status(runtime: Any) -> dict[str, Any]:
    snapshot = runtime.directory
    recent = await query_events(runtime.store, AuditFilters(kind="sync", limit=5, newest_first=True))
    info = None
    if snapshot is not None:
        info = {
            "users": len(snapshot.users),
            "groups": snapshot.group_count,
            "taken_at": _iso(snapshot.taken_at),
            "full_at": _iso(snapshot.full_at),
            "issues": len(snapshot.issues),
        }
    return {
        "configured": runtime.config.directory is not None,
        "snapshot": info,
        "recent": [{k: e.get(k) for k in ("seq", "time", "result", "mode", "summary", "error")} for e in recent],
    }


def identity_label(identity: Identity) -> str:
    return identity.username + (f" (day pass {identity.daypass})" if identity.daypass else "")
