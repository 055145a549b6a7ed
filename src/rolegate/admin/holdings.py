"""What one identity holds, scope by scope: the answer behind ``/me``, the user page and previews."""

from __future__ import annotations

import math
from typing import Any

from rolegate.authz import Identity, Policy, decide, effective_permissions
from rolegate.authz.policy import format_until
from rolegate.config.sections.policy import ROLEGATE_PERMISSIONS


def known_scopes(*policies: Policy) -> list[str | None]:
    """Every scope a policy can tell apart: global, each bound scope, each scope in the nesting tree.

    Effective permissions can only differ between these (an unnamed building gets exactly what its
    parents and the global bindings give), so listing and diffing them is exhaustive.
    """
    found: set[str] = set()
    for policy in policies:
        for b in policy.bindings:
            if b.scope is not None:
                found.add(b.scope)
        for g in policy.object_grants:
            if g.scope is not None:
                found.add(g.scope)
        for s in policy.setting_grants:
            if s.scope is not None:
                found.add(s.scope)
        for child, parent in policy.scopes.parents.items():
            found.update((child, parent))
    return [None, *sorted(found)]


def _until(values: list[float]) -> str | None:
    finite = [v for v in values if v != math.inf]
    return format_until(min(finite)) if finite else None


def scope_holdings(policy: Policy, identity: Identity, now: float) -> list[dict[str, Any]]:
    """Per scope: roles, permissions and until. Scopes that add nothing to the global row are left out."""
    rows: list[dict[str, Any]] = []
    global_perms: frozenset[str] | None = None
    for scope in known_scopes(policy):
        entry = policy.entry(identity, scope, now) if not identity.disabled else None
        perms = entry.allow if entry is not None else frozenset()
        if scope is None:
            global_perms = perms
        elif perms == global_perms:
            continue
        if scope is not None and not perms:
            continue
        holdings = entry.holdings if entry is not None else ()
        rows.append(
            {
                "scope": scope,
                "roles": sorted({b.role.name for b in holdings}),
                "permissions": sorted(perms),
                "until": _until([b.until for b in holdings]),
                "granted_by": [b.describe() for b in holdings]
                + [
                    f"role {b.role.name} with {s.describe()}: {', '.join(sorted(perms))}"
                    for b, s, perms in (entry.conditional if entry else ())
                ],
            }
        )
    return rows


def object_grants_of(policy: Policy, identity: Identity, now: float) -> list[dict[str, Any]]:
    subjects = set(identity.subjects)
    return [
        {
            "permission": g.permission,
            "object": g.object,
            "scope": g.scope,
            "until": None if g.until == math.inf else format_until(g.until),
        }
        for g in policy.object_grants
        if f"{g.subject_kind[0]}:{g.subject}" in subjects and now < g.until
    ]


MAX_ASSIGNMENTS = 200  # listed on /me and a user's page; more are counted, not listed


def assignments_of(policy: Policy, identity: Identity, now: float) -> list[dict[str, Any]]:
    """The objects apps assigned to the user (``/assignments``), sorted, at most ``MAX_ASSIGNMENTS``: where each
    lies, who assigned it when, and which of the permissions roles grant on assigned objects (``on_assigned``)
    the user holds on it now (decided, so a deny or an expired binding shows)."""
    index = policy._index
    objects = sorted(index.assigned_objects.get(identity.username, ()))[:MAX_ASSIGNMENTS]
    perms = sorted(index.assigned_perms)
    out = []
    for obj in objects:
        a = index._assigned[(identity.username, obj)]
        out.append(
            {
                "object": obj,
                "lies_in": policy.scopes.parents.get(obj),
                "by": a.by,
                "at": a.at,
                "permissions": [p for p in perms if decide(policy, identity, p, obj, now=now).allowed],
            }
        )
    return out


def settings_of(policy: Policy, identity: Identity) -> list[str]:
    return sorted({s.name for s in policy.setting_grants if s.username == identity.username})


def switches_of_user(policy: Policy, identity: Identity) -> list[dict[str, Any]]:
    """Each setting switched on for the user: where (None: everywhere), by whom and when, from where."""
    return [
        {
            "setting": s.name,
            "scope": s.scope,
            "by": s.by,
            "at": s.at,
            "until": None if s.until == math.inf else format_until(s.until),
            "source": "config" if s.source.startswith("config") else "api",
        }
        for s in policy.setting_grants
        if s.username == identity.username
    ]


def admin_scopes(policy: Policy, identity: Identity, now: float) -> dict[str, list[str | None]]:
    """rolegate's own permissions and where the identity holds each (None: everywhere)."""
    out: dict[str, list[str | None]] = {}
    scopes = known_scopes(policy)
    for perm in ROLEGATE_PERMISSIONS:
        held = [s for s in scopes if decide(policy, identity, perm, s, None, now).allowed]
        if None in held:
            held = [None]
        out[perm] = held
    return out


def permission_diff(
    before: Policy, after: Policy, identities: list[Identity], now: float, limit: int = 2000
) -> list[dict[str, Any]]:
    """Who gains or loses which permission at which scope between two policies."""
    scopes = known_scopes(before, after)
    changes: list[dict[str, Any]] = []
    for identity in identities:
        diffs: dict[str | None, tuple[frozenset[str], frozenset[str]]] = {}
        for scope in scopes:
            old = effective_permissions(before, identity, scope, now)
            new = effective_permissions(after, identity, scope, now)
            diffs[scope] = (new - old, old - new)
        for scope in scopes:
            gains, loses = diffs[scope]
            if not gains and not loses:
                continue
            # A change inherited unchanged from a parent scope (or from a global binding) is reported once,
            # at the parent: "gains X at client:acme" already says it for every building of acme.
            parents = [*after.scopes.chain(scope)[1:], None] if scope is not None else []
            if any(diffs.get(p) == (gains, loses) for p in parents):
                continue
            changes.append({"user": identity.username, "scope": scope, "gains": sorted(gains), "loses": sorted(loses)})
            if len(changes) >= limit:
                return changes
    return changes
