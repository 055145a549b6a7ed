"""Delegated administration: what an actor may grant, and where.

The rule everywhere: an actor can only hand out (or take away) what they hold themselves, at the
scope it is handed out at. A building's responsible holding ``rolegate:bindings:edit`` at
``building:a`` manages bindings at ``building:a`` only, and only of roles whose every permission
they hold at ``building:a``. Taking away follows the same rule, so nobody can strip a role they
could not have given.
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
    actor.require(BINDINGS_EDIT, scope, f"{verb} bindings {_where(scope)}")
    if binding.permission is not None:
        # An object grant: the actor holds the permission at the scope, or on that object themselves.
        if not actor.holds(binding.permission, scope, binding.object):
            raise Denied(f"you cannot {verb} {binding.permission} on {binding.object}: you do not hold it "
                         f"{_where(scope)}")
        return
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
