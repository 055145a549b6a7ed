"""Delegated administration by roles: what an actor may hand out and take away, and where.

A role says what its holders manage: which roles they bind people to, which user settings they switch,
which permissions they grant on single objects ("add someone to a task"), as
``manages: {roles, settings, assigns}`` (``all`` for an administrator). Holders manage at the scope
where they hold the role and below: a building's responsible, bound at ``building:a``, makes people
responsible or user there, switches their settings there and adds them to the tasks that lie in a;
nothing at ``building:b``, nothing globally. Taking away follows the same rule as handing out.

Guards on top of what roles say:

* nobody creates, changes or removes a binding, setting or object grant outside the scopes where they
  manage it (an object grant is judged where the object lies: task 77 in building b is not carol's);
* nobody hands out rolegate's own permissions (``rolegate:*``) beyond what they hold at that scope,
  whatever ``manages`` says;
* nobody defines a role that manages more than they manage everywhere, and nobody changes or deletes
  a role they hold (or one a role they hold inherits): a delegate cannot edit the definitions that
  give them their powers.

``rolegate:bindings:edit`` no longer authorizes a change by itself: it lets its holder look at other
people's access at its scope (user pages, explain), as managing anything there does.
"""

from __future__ import annotations

from collections.abc import Iterable

from rolegate.admin.errors import Denied, Invalid
from rolegate.admin.guard import Actor
from rolegate.authz import Policy
from rolegate.authz.roles import ALL, Delegation, FlatRole
from rolegate.config.sections.policy import Binding

BINDINGS_EDIT = "rolegate:bindings:edit"
ROLES_EDIT = "rolegate:roles:edit"
DAYPASS_ISSUE = "rolegate:daypass:issue"
AUDIT_VIEW = "rolegate:audit:view"
OWN_PREFIX = "rolegate:"


def _where(scope: str | None) -> str:
    return f"at {scope}" if scope else "everywhere (globally)"


def _managed(actor: Actor, scope: str | None) -> str:
    manages = actor.manages_at(scope)
    return f"what you manage {_where(scope)}: {manages.describe()}"


def gives(role: FlatRole) -> frozenset[str]:
    """Everything a holder of ``role`` can get from it: its permissions, its conditional ones and those it grants
    on assigned objects (``on_assigned``)."""
    return role.allow | role.conditional_permissions() | role.assigned_permissions()


def check_own_permissions(actor: Actor, permissions: Iterable[str], scope: str | None, what: str) -> None:
    """rolegate's own permissions are handed out only by someone who holds them at that scope."""
    own = {p for p in permissions if p.startswith(OWN_PREFIX)}
    missing = sorted(own - actor.permissions_at(scope))
    if missing:
        raise Denied(
            f"you cannot {what}: it hands out rolegate's own permissions you do not hold "
            f"{_where(scope)}: {', '.join(missing)}"
        )


def check_binding(actor: Actor, policy: Policy, binding: Binding, verb: str = "grant") -> None:
    """Raise Denied unless ``actor`` may create (or change, or remove: ``verb``) ``binding``."""
    if binding.permission is not None:
        check_object_grant(actor, policy, binding, verb)
        return
    role = policy.roles.get(binding.role or "")
    if role is None:
        raise Invalid.field("role", f"unknown role {binding.role!r}")
    scope = binding.scope
    if role.name not in actor.manages_at(scope).roles:
        raise Denied(
            f"you cannot {verb} role {role.name} {_where(scope)}: no role you hold there manages it "
            f"({_managed(actor, scope)})"
        )
    check_own_permissions(actor, gives(role), scope, f"{verb} role {role.name} {_where(scope)}")


def _object_place(policy: Policy, obj: str, scope: str | None, verb: str, permission: str) -> str | None:
    """Where an object grant is judged: the object itself when it lies in a known place (its chain
    holds the building), or the scope given for an object of an undeclared type."""
    if obj.split(":", 1)[0] not in policy.scopes.types:
        return scope
    unplaced = policy.scopes.unplaced(obj)
    if unplaced is not None:
        raise Denied(f"you cannot {verb} {permission} on {obj}: {unplaced}")
    place = policy.scopes.chain(obj)
    if scope is not None and scope not in place:
        inside = f"lies in {' in '.join(place[1:])}" if len(place) > 1 else "lies in no other scope"
        raise Denied(f"you cannot {verb} {permission} on {obj} at {scope}: {obj} {inside}, not in {scope}")
    return scope if scope is not None else obj


def check_object_grant(actor: Actor, policy: Policy, binding: Binding, verb: str = "grant") -> None:
    permission, obj = binding.permission or "", binding.object or ""
    where = _object_place(policy, obj, binding.scope, verb, permission)
    if permission not in actor.manages_at(where).assigns:
        place = policy.scopes.chain(where)[1:] if where == obj else ()
        inside = f" ({obj} lies in {' in '.join(place)})" if place else ""
        raise Denied(
            f"you cannot {verb} {permission} on {obj}: no role you hold {_where(where)}{inside} manages it "
            f"(manages.assigns; {_managed(actor, where)})"
        )
    check_own_permissions(actor, (permission,), where, f"{verb} {permission} on {obj}")


def grant_scope(actor: Actor, policy: Policy, binding: Binding) -> str | None:
    """The scope an object grant given without one is made at: the broadest one where the actor's power to
    grant it comes from (a responsible's building; None for someone who manages it globally)."""
    if binding.scope is not None or binding.object is None:
        return binding.scope
    if binding.object.split(":", 1)[0] not in policy.scopes.types:
        return None
    chain = policy.scopes.chain(binding.object)
    sources = [b.scope for b in actor.holdings_at(binding.object) if (binding.permission or "") in b.role.assigns]
    if not sources or None in sources:
        return None
    return max(sources, key=lambda s: chain.index(s) if s in chain else -1)


def check_setting(actor: Actor, policy: Policy, setting: str, scope: str | None, verb: str = "switch") -> None:
    """May ``actor`` switch ``setting`` on or off for someone at ``scope`` (None: everywhere)?"""
    if setting not in actor.manages_at(scope).settings:
        raise Denied(
            f"you cannot {verb} user setting {setting} {_where(scope)}: no role you hold there manages it "
            f"({_managed(actor, scope)})"
        )
    check_own_permissions(actor, policy.settings.get(setting, ()), scope, f"{verb} user setting {setting}")


def check_role_definition(actor: Actor, after: Policy, name: str) -> None:
    """A role defined (or redefined) through the API hands out no more than its author may."""
    role = after.roles[name]
    check_own_permissions(actor, gives(role), None, f"define role {name} this way")
    mine = actor.manages_at(None)
    if not role.manages.within(mine):
        raise Denied(
            f"you cannot define role {name} to manage {role.manages.describe()}: you manage "
            f"{mine.describe()} everywhere, and a role cannot hand out more than its author"
        )


def check_not_own_powers(actor: Actor, policy: Policy, name: str, verb: str) -> None:
    """Nobody changes or deletes a role they hold, or one a role they hold inherits."""
    held = actor.roles_held()
    mine = sorted(r for r in held if r == name or name in policy.roles[r].ancestors) if name in policy.roles else []
    if mine:
        raise Denied(
            f"you cannot {verb} role {name}: you hold {', '.join(mine)}, so it defines your own powers; "
            f"another administrator must change it"
        )


def delegations(actor: Actor) -> list[tuple[str | None, Delegation]]:
    """Where the actor manages what: one (scope, what its role there manages) per binding that manages
    anything, broadest first (None: everywhere). The admin UI offers exactly this."""
    subjects = set(actor.identity.subjects)
    found = [
        (b.scope, b.role.manages)
        for b in actor.policy.bindings
        if f"{b.subject_kind[0]}:{b.subject}" in subjects and actor.now < b.until and b.role.manages
    ]
    return sorted(found, key=lambda item: (item[0] is not None, item[0] or ""))


def choices(actor: Actor, kind: str, universe: Iterable[str]) -> tuple[list[str], list[str | None]]:
    """What the actor may hand out of ``kind`` ("roles", "settings", "assigns") somewhere, in ``universe``'s
    order, and the scopes where they may (None first: everywhere)."""
    names: set[str] = set()
    scopes: list[str | None] = []
    universe = list(universe)
    for scope, manages in delegations(actor):
        managed = getattr(manages, kind)
        if not managed:
            continue
        names.update(universe if managed is ALL else managed)
        if scope not in scopes:
            scopes.append(scope)
    return [n for n in universe if n in names], scopes


def manages_anything(actor: Actor) -> bool:
    """Holds, somewhere, a role that manages something: may use the admin pages for those people."""
    return any(actor.policy.roles[r].manages for r in actor.roles_held() if r in actor.policy.roles)


def may_register_member(actor: Actor, child: str, parent: str | None, verb: str = "place") -> None:
    """An app (or person) places a scope (a task) inside a parent where it manages people.

    An app (``apps:``) holds no role: the types its config lets it place decide, wherever the parent lies."""
    if actor.is_app:
        actor.require_place(child.split(":", 1)[0])
        return
    if parent is not None and not actor.manages_at(parent):
        raise Denied(f"you cannot {verb} {child} in {parent}: no role you hold there manages anything")


__all__ = [
    "ALL",
    "AUDIT_VIEW",
    "BINDINGS_EDIT",
    "DAYPASS_ISSUE",
    "Delegation",
    "ROLES_EDIT",
    "check_binding",
    "check_not_own_powers",
    "check_object_grant",
    "check_own_permissions",
    "check_role_definition",
    "check_setting",
    "choices",
    "delegations",
    "gives",
    "grant_scope",
    "manages_anything",
    "may_register_member",
]
