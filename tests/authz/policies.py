"""Small policies built without YAML, for unit and property tests."""

from __future__ import annotations

from types import SimpleNamespace

from rolegate.config.sections.policy import Binding, Role, ScopeType, UserEntry, UserSetting


def make_config(*, permissions=(), roles=None, bindings=(), scopes=None, settings=None, users=None, routes=()):
    return SimpleNamespace(
        permissions=tuple(permissions),
        roles={name: Role(**spec) for name, spec in (roles or {}).items()},
        bindings=tuple(b if isinstance(b, Binding) else Binding(**b) for b in bindings),
        scopes={name: ScopeType(**spec) for name, spec in (scopes or {}).items()},
        user_settings={name: UserSetting(**spec) for name, spec in (settings or {}).items()},
        users={name: UserEntry(**spec) for name, spec in (users or {}).items()},
        routes=tuple(routes),
    )
