"""``compile_policy``: config plus dynamic state (admin API, directory) -> an immutable ``Policy``."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Protocol

from rolegate.authz.policy import DEFAULT_CACHE_SIZE, Assignment, CompiledBinding, ObjectGrant, Policy, SettingGrant
from rolegate.authz.roles import flatten_roles
from rolegate.authz.scopes import ScopeTree, is_scope
from rolegate.authz.stored import Assigned, Switch
from rolegate.config.sections.policy import EVERYWHERE, ROLEGATE_PERMISSIONS, Binding

__all__ = ["BindingInput", "compile_policy"]

# A binding as the admin API stores it: the Binding value, optionally with where it came from.
BindingInput = Binding | tuple[Binding, str]


def _timestamp(until: datetime | None) -> float:
    return math.inf if until is None else until.timestamp()


def _switch_until(until: str | None) -> float | None:
    """A stored switch's ``until`` (ISO 8601 with a zone) as a timestamp; inf without one, None if unreadable."""
    if until is None:
        return math.inf
    try:
        value = datetime.fromisoformat(until)
    except (TypeError, ValueError):
        return None
    return value.timestamp() if value.tzinfo is not None else None


class _SourceMap(Protocol):
    """``config.source`` (rolegate.config.loader): where in the config file a key path was written."""

    def where(self, path: tuple[str | int, ...]) -> str: ...


def _where(config: object, path: tuple[str | int, ...], fallback: str) -> str:
    source: _SourceMap | None = getattr(config, "source", None)
    if source is None:
        return fallback
    try:
        return source.where(path)
    except Exception:  # a source map is a nicety; never let it break compilation
        return fallback


def _unpack(item: BindingInput, fallback: str) -> tuple[Binding, str]:
    if isinstance(item, tuple):
        return item[0], item[1]
    return item, fallback


def compile_policy(
    config: object,
    extra_bindings: Iterable[BindingInput] = (),
    enabled_settings: Mapping[str, Iterable[str | Switch]] | None = None,
    object_grants: Iterable[BindingInput] = (),
    scope_parents: Mapping[str, str] | None = None,
    assignments: Mapping[str, Iterable[str | Assigned]] | None = None,
    *,
    version: int = 0,
    cache_size: int = DEFAULT_CACHE_SIZE,
) -> Policy:
    """Compile ``config`` (a ``rolegate.config.Config``) and dynamic state into a ``Policy``.

    - ``extra_bindings``: role bindings (and object grants) stored by the admin API or
      issued day passes, as ``Binding`` values or ``(Binding, source)`` pairs.
    - ``enabled_settings``: username -> user settings switched on for them through the admin API:
      ``Switch`` values (setting, scope or None for everywhere, by whom, when) or bare names
      (on everywhere); added to what config ``users:`` switches on. A setting grants nothing by
      itself: roles held where it is on list what it adds (``if_setting``).
    - ``object_grants``: ``Binding`` values with ``permission`` + ``object``.
    - ``scope_parents``: runtime scope membership, child -> parent (``building:c`` ->
      ``client:acme``), e.g. from directory attributes; overrides config ``members``.
    - ``assignments``: object -> the users an app assigned to it (``Assigned`` values or bare
      usernames); roles listing permissions under ``on_assigned`` grant them there.
    - ``version``: the permission version the store counts (goes into tokens as ``ver``).

    Anything that names an unknown role, permission or setting grants nothing and is
    listed in ``policy.problems`` (fail closed); compilation itself never raises on it.
    """
    declared = tuple(getattr(config, "permissions", ()))
    catalogue_order = declared + tuple(p for p in ROLEGATE_PERMISSIONS if p not in declared)
    catalogue = frozenset(catalogue_order)
    problems: list[str] = []
    roles = flatten_roles(getattr(config, "roles", {}), catalogue)
    scopes = ScopeTree(getattr(config, "scopes", {}), scope_parents)
    problems.extend(scopes.problems)

    bindings: list[CompiledBinding] = []
    grants: list[ObjectGrant] = []

    def add(binding: Binding, source: str) -> None:
        kind, subject = binding.subject
        until = _timestamp(binding.until)
        if binding.scope is not None and not is_scope(binding.scope):
            problems.append(f"{source}: scope {binding.scope!r} is not type:id; binding ignored")
            return
        if binding.permission is not None:
            if binding.permission not in catalogue or binding.object is None or not is_scope(binding.object):
                problems.append(f"{source}: object grant of {binding.permission!r} on {binding.object!r} ignored")
                return
            grants.append(ObjectGrant(kind, subject, binding.permission, binding.object, binding.scope, until, source))
            return
        role = roles.get(binding.role or "")
        if role is None:
            problems.append(f"{source}: unknown role {binding.role!r}; binding ignored")
            return
        bindings.append(CompiledBinding(kind, subject, role, binding.scope, until, source))

    for i, binding in enumerate(getattr(config, "bindings", ())):
        add(binding, f"config {_where(config, ('bindings', i), f'bindings[{i}]')}")
    for n, item in enumerate(extra_bindings):
        binding, source = _unpack(item, f"dynamic binding #{n}")
        add(binding, source)
    for n, item in enumerate(object_grants):
        binding, source = _unpack(item, f"object grant #{n}")
        if binding.permission is None:
            problems.append(f"{source}: an object grant needs permission and object; ignored")
            continue
        add(binding, source)

    declared_settings = tuple(getattr(config, "user_settings", {}))
    setting_grants: list[SettingGrant] = []
    seen: set[tuple[str, str, str | None, float]] = set()

    def switch_on(
        user: str,
        name: str,
        scope: str | None,
        source: str,
        by: str | None = None,
        at: str | None = None,
        until: str | None = None,
    ) -> None:
        ends = _switch_until(until)
        if name not in declared_settings:
            problems.append(f"{source}: user setting {name!r} switched on for {user} is not in config; ignored")
        elif scope is not None and not is_scope(scope):
            problems.append(f"{source}: user setting {name!r} for {user} at {scope!r}: not type:id; ignored")
        elif ends is None:
            problems.append(f"{source}: user setting {name!r} for {user}: until {until!r} is no time; ignored")
        elif (user, name, scope, ends) not in seen:  # a switch until a time never hides one without an end
            seen.add((user, name, scope, ends))
            setting_grants.append(SettingGrant(name, user, scope, source, by, at, ends))

    for user, entry in getattr(config, "users", {}).items():
        for scope, names in entry.settings.items():
            for j, name in enumerate(names):
                where = _where(config, ("users", user, "settings", scope, j), f"users.{user}.settings")
                switch_on(user, name, None if scope == EVERYWHERE else scope, f"config {where}")
    for user, items in (enabled_settings or {}).items():
        for on in items:
            switch = Switch(on) if isinstance(on, str) else Switch(*on)
            switch_on(user, switch.setting, switch.scope, "admin API", switch.by, switch.at, switch.until)

    compiled: list[Assignment] = []
    for obj, users in (assignments or {}).items():
        if not is_scope(obj):
            problems.append(f"assignment to {obj!r} ignored: not a type:id object")
            continue
        for user_item in users:
            who = Assigned(user_item) if isinstance(user_item, str) else Assigned(*user_item)
            compiled.append(Assignment(obj, who.user, who.by, who.at))

    return Policy(
        version=version,
        catalogue_order=catalogue_order,
        roles=roles,
        bindings=tuple(bindings),
        scopes=scopes,
        settings=declared_settings,
        setting_grants=tuple(setting_grants),
        object_grants=tuple(grants),
        problems=tuple(problems),
        config=config,
        cache_size=cache_size,
        assignments=tuple(compiled),
    )
