"""The whole config file as one typed, immutable structure, checked for consistency at load."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from rolegate.config.loader import SourceMap
from rolegate.config.sections.access_requests import AccessRequestsConfig
from rolegate.config.sections.apps import AppConfig, cross_check_apps
from rolegate.config.sections.directory import DirectoryConfig
from rolegate.config.sections.features import AuditConfig, DaypassConfig, TokensConfig
from rolegate.config.sections.identity import OIDCConfig, SessionConfig
from rolegate.config.sections.policy import (
    ASSIGNED_ITSELF,
    MAX_SCOPE_DEPTH,
    NAME,
    PERMISSION,
    ROLEGATE_PERMISSIONS,
    SCOPE,
    Binding,
    Role,
    ScopeType,
    UserEntry,
    UserSetting,
)
from rolegate.config.sections.routing import RouteConfig, UpstreamConfig
from rolegate.config.sections.server import ServerConfig
from rolegate.config.sections.storage import StorageConfig
from rolegate.config.types import Section


class Config(Section):
    server: ServerConfig
    storage: StorageConfig = Field(default_factory=StorageConfig)  # reads ROLEGATE_DATA at each load
    oidc: OIDCConfig | None = None
    session: SessionConfig | None = None
    directory: DirectoryConfig | None = None
    tokens: TokensConfig = TokensConfig()
    scopes: dict[str, ScopeType] = Field(default_factory=dict)
    permissions: tuple[str, ...] = ()
    roles: dict[str, Role] = Field(default_factory=dict)
    bindings: tuple[Binding, ...] = ()
    user_settings: dict[str, UserSetting] = Field(default_factory=dict)
    users: dict[str, UserEntry] = Field(default_factory=dict)
    routes: tuple[RouteConfig, ...]
    upstreams: dict[str, UpstreamConfig]
    daypass: DaypassConfig | None = None
    audit: AuditConfig = AuditConfig()
    # Optional (absent: off): "Request access" on the 403 page, see docs/access-requests.md.
    access_requests: AccessRequestsConfig | None = None
    # Optional (absent: none): machine callers of the object directory, see config/sections/apps.py.
    apps: dict[str, AppConfig] = Field(default_factory=dict)
    apps_audience: str | None = None

    @property
    def catalogue(self) -> frozenset[str]:
        """Every permission that may be named: the declared ones plus rolegate's own."""
        return frozenset(self.permissions) | frozenset(ROLEGATE_PERMISSIONS)

    def cross_check(self, source: SourceMap) -> list[str]:
        """Problems that span sections: unknown names, cycles. Empty when consistent."""
        problems: list[str] = []

        def bad(path: tuple[Any, ...], message: str) -> None:
            problems.append(f"{source.where(path)}: {message}")

        seen: set[str] = set()
        for i, perm in enumerate(self.permissions):
            if not PERMISSION.match(perm):
                bad(("permissions", i), f"{perm!r} is not a permission; write resource:action, e.g. invoices:view")
            if perm in seen:
                bad(("permissions", i), f"{perm!r} is declared twice")
            seen.add(perm)
        catalogue = self.catalogue

        def check_perm(path: tuple[Any, ...], perm: str | None) -> None:
            if perm is not None and perm not in catalogue:
                bad(path, f"unknown permission {perm!r} (declare it under permissions:)")

        for name, scope_type in self.scopes.items():
            if not NAME.match(name):
                bad(("scopes", name), f"{name!r} is not a valid scope type name")
            if scope_type.parent is not None and scope_type.parent not in self.scopes:
                bad(("scopes", name, "parent"), f"unknown scope type {scope_type.parent!r}")
            if scope_type.members and scope_type.parent is None:
                bad(("scopes", name, "members"), "members name parents, so the scope type needs a parent")
        for name in self.scopes:
            chain, current = [name], self.scopes[name].parent
            while current is not None and current in self.scopes:
                if current in chain:
                    bad(("scopes", name, "parent"), f"scope types nest in a cycle: {' -> '.join(chain + [current])}")
                    break
                chain.append(current)
                current = self.scopes[current].parent
            else:
                if len(chain) >= MAX_SCOPE_DEPTH:
                    bad(
                        ("scopes", name, "parent"),
                        f"scope types nest {len(chain)} deep ({' -> '.join(chain)}); at most {MAX_SCOPE_DEPTH - 1}",
                    )

        def check_scope(path: tuple[Any, ...], scope: str) -> None:
            scope_type = scope.split(":", 1)[0]
            if scope_type not in self.scopes:
                bad(path, f"unknown scope type {scope_type!r} (declare it under scopes:)")

        conditioned: set[str] = set()
        for name, role in self.roles.items():
            if not NAME.match(name):
                bad(("roles", name), f"{name!r} is not a valid role name")
            for key in ("permissions", "deny"):
                for i, perm in enumerate(getattr(role, key)):
                    check_perm(("roles", name, key, i), perm)
            for i, parent in enumerate(role.inherits):
                if parent not in self.roles:
                    bad(("roles", name, "inherits", i), f"unknown role {parent!r}")
            for setting, perms in role.if_setting.items():
                conditioned.add(setting)
                if setting not in self.user_settings:
                    bad(
                        ("roles", name, "if_setting", setting),
                        f"unknown user setting {setting!r} (declare it under user_settings:)",
                    )
                for i, perm in enumerate(perms):
                    check_perm(("roles", name, "if_setting", setting, i), perm)
            for type_name, perms in role.on_assigned.items():
                if type_name != ASSIGNED_ITSELF and type_name not in self.scopes:
                    bad(
                        ("roles", name, "on_assigned", type_name),
                        f"unknown scope type {type_name!r} (declare it under scopes:, or give a plain list: "
                        f"the permissions on the assigned object itself)",
                    )
                for i, perm in enumerate(perms):
                    check_perm(("roles", name, "on_assigned", type_name, i), perm)
            manages = role.manages
            if manages.roles != "all":
                for i, other in enumerate(manages.roles):
                    if other not in self.roles:
                        bad(("roles", name, "manages", "roles", i), f"unknown role {other!r}")
            if manages.settings != "all":
                for i, setting in enumerate(manages.settings):
                    if setting not in self.user_settings:
                        bad(("roles", name, "manages", "settings", i), f"unknown user setting {setting!r}")
            if manages.assigns != "all":
                for i, perm in enumerate(manages.assigns):
                    check_perm(("roles", name, "manages", "assigns", i), perm)
        for cycle_path, message in _inherit_cycles(self.roles):
            bad(cycle_path, message)

        for name in self.user_settings:
            if not NAME.match(name):
                bad(("user_settings", name), f"{name!r} is not a valid user setting name")
            elif name not in conditioned:
                bad(
                    ("user_settings", name),
                    f"no role lists {name!r} under if_setting, so switching it on would "
                    "grant nothing (a setting is a condition inside a role)",
                )
        for user, entry in self.users.items():
            if not NAME.match(user):
                bad(("users", user), f"{user!r} is not a valid user name")
            for scope, names in entry.settings.items():
                if SCOPE.match(scope):
                    check_scope(("users", user, "settings", scope), scope)
                for i, setting in enumerate(names):
                    if setting not in self.user_settings:
                        bad(("users", user, "settings", scope, i), f"unknown user setting {setting!r}")

        for i, binding in enumerate(self.bindings):
            if binding.role is not None and binding.role not in self.roles:
                bad(("bindings", i, "role"), f"unknown role {binding.role!r}")
            check_perm(("bindings", i, "permission"), binding.permission)
            if binding.scope is not None:
                scope_type = binding.scope.split(":", 1)[0]
                if scope_type not in self.scopes:
                    bad(("bindings", i, "scope"), f"unknown scope type {scope_type!r} (declare it under scopes:)")

        for type_name, scope_type in self.scopes.items():
            if scope_type.lookup is not None:
                if scope_type.parent is None:
                    bad(
                        ("scopes", type_name, "lookup"),
                        f"a lookup answers where a {type_name} lies: give scopes.{type_name} a parent type",
                    )
                if scope_type.lookup.upstream not in self.upstreams:
                    bad(("scopes", type_name, "lookup", "upstream"), f"unknown upstream {scope_type.lookup.upstream!r}")

        for i, route in enumerate(self.routes):
            if route.upstream is not None and route.upstream not in self.upstreams:
                bad(("routes", i, "upstream"), f"unknown upstream {route.upstream!r}")
            check_perm(("routes", i, "permission"), route.permission)
            if route.redact is not None:
                check_perm(("routes", i, "redact", "unless"), route.redact.unless)
            if route.scope is not None:
                placed = route.scope.startswith("of ")
                scope_type = route.scope.removeprefix("of ").strip().split(":", 1)[0]
                if scope_type not in self.scopes:
                    bad(("routes", i, "scope"), f"unknown scope type {scope_type!r} (declare it under scopes:)")
                elif placed and self.scopes[scope_type].parent is None:
                    bad(
                        ("routes", i, "scope"),
                        f"'of {scope_type}:...' decides where the object directory places "
                        f"a {scope_type}: give scopes.{scope_type} a parent type",
                    )

        if self.daypass is not None:
            for name, template in self.daypass.templates.items():
                if template.role not in self.roles:
                    bad(("daypass", "templates", name, "role"), f"unknown role {template.role!r}")
                for j, scope_type in enumerate(template.scopes):
                    if scope_type not in self.scopes:
                        bad(("daypass", "templates", name, "scopes", j), f"unknown scope type {scope_type!r}")

        if self.access_requests is not None:
            self.access_requests.cross_check(catalogue, self.scopes, bad)
        if self.apps or self.apps_audience is not None:
            cross_check_apps(self.apps, self.apps_audience, oidc=self.oidc, scopes=self.scopes, bad=bad)

        if (self.oidc is not None or self.daypass is not None) and self.session is None:
            bad(("session",), "sign-in (oidc) and day passes need a session section with a secret")
        return problems


def _inherit_cycles(roles: dict[str, Role]) -> list[tuple[tuple[Any, ...], str]]:
    found: list[tuple[tuple[Any, ...], str]] = []
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done

    def visit(name: str, stack: list[str]) -> None:
        state[name] = 1
        for parent in roles[name].inherits:
            if parent not in roles:
                continue
            if state.get(parent) == 1:
                cycle = stack[stack.index(parent) :] + [parent] if parent in stack else [name, parent]
                found.append((("roles", name, "inherits"), f"roles inherit in a cycle: {' -> '.join(cycle)}"))
            elif state.get(parent) is None:
                visit(parent, [*stack, parent])
        state[name] = 2

    for name in roles:
        if name not in state:
            visit(name, [name])
    return found
