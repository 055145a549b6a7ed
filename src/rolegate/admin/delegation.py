"""Delegated administration: what an actor may grant, and where.

The rule everywhere: an actor can only hand out (or take away) what they hold themselves, at the
scope it is handed out at. A building's responsible holding ``rolegate:bindings:edit`` at
``building:a`` manages bindings at ``building:a`` only, and only of roles whose every permission
they hold at ``building:a``. Taking away follows the same rule, so nobody can strip a role they
could not have given.

One exception, for object grants ("assign users to specific tasks via task settings", seed 001): a
role may list permissions it ``assigns``; whoever holds it at a scope may grant (and take away) those
permissions on single objects at that scope without holding them, and without
``rolegate:bindings:edit``. An administrator adds a technician to task 42 without being able to
perform its controls themselves.
"""

from __future__ import annotations

from collections.abc import Iterable

from rolegate.admin.errors import Denied, Invalid
from rolegate.admin.guard import Actor
from rolegate.authz import Policy
from rolegate.config.sections.policy import Binding

BINDINGS_EDIT = "rolegate:bindings:edit"
ROLES_EDIT = "rolegate:roles:edit"
DAYPASS_ISSUE = "rolegate:daypass:issue"
AUDIT_VIEW = "rolegate:audit:view"


def _where(scope: str | None) -> str:
    return f"at {scope}" if scope else "everywhere (globally)"


def check_grant(actor: Actor, policy: Policy, binding: Binding, verb: str = "grant") -> None:
    """Raise Denied unless ``actor`` may create or remove ``binding`` (roles resolved in ``policy``)."""
    scope = binding.scope
    if binding.permission is not None:
        # An object grant: a role the actor holds here assigns it (see the module docstring), or the
        # actor edits bindings here and holds the permission at the scope or on that object.
        if binding.permission in actor.assigns_at(scope):
            return
        if not actor.holds(BINDINGS_EDIT, scope) or not actor.holds(binding.permission, scope, binding.object):
            raise Denied(f"you cannot {verb} {binding.permission} on {binding.object} {_where(scope)}: no role you "
                         f"hold there assigns it, and you do not both hold it and {BINDINGS_EDIT} there")
        return
    actor.require(BINDINGS_EDIT, scope, f"{verb} bindings {_where(scope)}")
    role = policy.roles.get(binding.role or "")
    if role is None:
        raise Invalid.field("role", f"unknown role {binding.role!r}")
    missing = sorted(role.allow - actor.permissions_at(scope))
    if missing:
        raise Denied(f"you cannot {verb} role {role.name} {_where(scope)}: it contains permissions you do not "
                     f"hold there: {', '.join(missing)}")


def check_permissions_held(actor: Actor, permissions: Iterable[str], what: str) -> None:
    """Global grants (roles' contents, user settings): every permission must be held globally."""
    missing = sorted(set(permissions) - actor.permissions_at(None))
    if missing:
        raise Denied(f"you cannot {what}: it gives permissions you do not hold everywhere: {', '.join(missing)}")
