"""Admin operations shared by the API and the web UI: validate, authorize, preview, write, audit, bump.

Every change goes through ``_apply``: compile the policy with and without it (the preview), stop
there on a dry run, else write with the caller's expected version (optimistic concurrency), record a
durable ``admin_change`` event with before and after, and bump ``policy`` so every worker
recompiles before its next request.
"""

from __future__ import annotations

import secrets
import time
from datetime import datetime, timezone
from typing import Any

from pydantic import ValidationError

from rolegate.admin.delegation import (
    ROLES_EDIT,
    check_binding,
    check_not_own_powers,
    check_role_definition,
    check_setting,
    grant_scope,
    may_register_member,
)
from rolegate.admin.errors import Conflict, Invalid, Missing, PreconditionFailed, PreconditionRequired, from_validation
from rolegate.admin.guard import Actor
from rolegate.admin.holdings import permission_diff
from rolegate.admin.models import BindingIn, RoleCreate, RoleIn, ScopeMemberIn, UserSettingsIn
from rolegate.admin.people import People, load_people
from rolegate.admin.state import (
    BINDINGS,
    ROLES,
    SCOPE_MEMBERS,
    USER_SETTINGS,
    DynamicState,
    binding_of,
    compile_state,
    daypass_bindings,
    load_state,
)
from rolegate.audit import admin_change_event
from rolegate.authz import Identity, Policy
from rolegate.authz.roles import expand
from rolegate.authz.stored import Switch, switches_of
from rolegate.config.sections.policy import EVERYWHERE, Binding, Role
from rolegate.store.base import VersionConflict
from rolegate.store.version_board import bump

CONFIG_PREFIX = "config-"


def etag(version: int) -> str:
    return f'"v{version}"'


def parse_if_match(header: str | None) -> int:
    """The version an If-Match names; 428 when absent, 412 when it names nothing we issued."""
    if header is None or not header.strip():
        raise PreconditionRequired("this update needs If-Match with the ETag from your last read")
    value = header.strip()
    if value.startswith("W/"):
        value = value[2:]
    value = value.strip('"')
    if value.startswith("v") and value[1:].isdigit():
        return int(value[1:])
    raise PreconditionFailed("If-Match does not name a current version; read the resource again")


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat(timespec="seconds")
    return str(value)


def binding_out(key: str, value: dict[str, Any], version: int, source: str = "api") -> dict[str, Any]:
    out = {
        "id": key,
        "source": source,
        "readonly": source == "config",
        "version": version,
        "note": value.get("note") or "",
        "created_by": value.get("created_by"),
        "created_at": value.get("created_at"),
    }
    for name in ("group", "user", "daypass", "role", "permission", "object", "scope"):
        out[name] = value.get(name)
    out["until"] = _iso(value.get("until"))
    return out


def _config_binding_value(binding: Binding) -> dict[str, Any]:
    return {k: v for k, v in binding.model_dump(mode="json").items() if v is not None}


class Change:
    """The outcome of a change: the resource as it is (or would be), its version, and the preview."""

    __slots__ = ("resource", "version", "preview")

    def __init__(self, resource: dict[str, Any] | None, version: int, preview: dict[str, Any]) -> None:
        self.resource = resource
        self.version = version
        self.preview = preview


class AdminService:
    """One request's view of the admin state (built per request; cheap)."""

    def __init__(self, runtime: Any, actor: Actor) -> None:
        self.runtime = runtime
        self.config = runtime.config
        self.store = runtime.store
        self.actor = actor

    # -- reading ---------------------------------------------------------------------------------------

    async def snapshot(self) -> tuple[DynamicState, Policy]:
        state = await load_state(self.store)
        extra = await daypass_bindings(self.store, self.config, time.time())
        return state, compile_state(self.config, state, extra=extra)

    async def people(self) -> People:
        return await load_people(self.runtime)

    async def bindings(self, *, grants: bool | None = None) -> list[dict[str, Any]]:
        """Config bindings (read-only, ids ``config-<n>``) then API bindings, by id."""
        state = await load_state(self.store)
        out = [
            binding_out(f"{CONFIG_PREFIX}{i}", _config_binding_value(b), 0, "config")
            for i, b in enumerate(self.config.bindings)
        ]
        out += [binding_out(k, d.value, d.version) for k, d in sorted(state.bindings.items())]
        if grants is not None:
            out = [b for b in out if (b["permission"] is not None) == grants]
        return out

    async def binding(self, key: str) -> dict[str, Any]:
        if key.startswith(CONFIG_PREFIX):
            index = key[len(CONFIG_PREFIX) :]
            if index.isdigit() and int(index) < len(self.config.bindings):
                return binding_out(key, _config_binding_value(self.config.bindings[int(index)]), 0, "config")
            raise Missing(f"no binding {key}")
        record = await self.store.get(BINDINGS, key)
        if record is None:
            raise Missing(f"no binding {key}")
        return binding_out(key, record.value, record.version)

    # -- bindings and object grants -------------------------------------------------------------------

    def _validate_binding(self, body: BindingIn, policy: Policy) -> Binding:
        errors: list[dict[str, str]] = []
        if (body.group is None) == (body.user is None):
            errors.append({"field": "group", "message": "name exactly one subject: group or user"})
        if (body.role is None) == (body.permission is None):
            errors.append({"field": "role", "message": "give a role, or a permission with an object (object grant)"})
        if body.role is not None and body.role not in policy.roles:
            errors.append({"field": "role", "message": f"unknown role {body.role!r}"})
        if body.permission is not None:
            if body.permission not in policy.catalogue:
                errors.append({"field": "permission", "message": f"{body.permission!r} is not in the catalogue"})
            if body.object is None:
                errors.append({"field": "object", "message": "an object grant needs an object, e.g. task:42"})
        if body.object is not None and body.role is not None:
            errors.append({"field": "object", "message": "object goes with permission, not with role"})
        scope_types = self.config.scopes
        for name in ("scope",):
            value = getattr(body, name)
            if value is not None and scope_types and value.split(":", 1)[0] not in scope_types:
                errors.append(
                    {
                        "field": name,
                        "message": f"scope type {value.split(':', 1)[0]!r} is not declared "
                        f"(declared: {', '.join(scope_types)})",
                    }
                )
        if errors:
            raise Invalid(errors)
        try:
            return binding_of(body.model_dump(exclude={"note"}))
        except ValidationError as exc:
            raise from_validation(exc) from None

    def _binding_value(self, body: BindingIn, created: dict[str, Any] | None = None) -> dict[str, Any]:
        value: dict[str, Any] = {k: v for k, v in body.model_dump(mode="json").items() if v is not None and k != "note"}
        value["note"] = body.note
        if created is None:
            value["created_by"] = self.actor.username
            value["created_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        else:
            value["created_by"] = created.get("created_by")
            value["created_at"] = created.get("created_at")
            value["updated_by"] = self.actor.username
        return value

    async def create_binding(self, body: BindingIn, *, dry_run: bool) -> Change:
        state, before = await self.snapshot()
        binding = self._validate_binding(body, before)
        check_binding(self.actor, before, binding)
        if binding.permission is not None and binding.scope is None:
            # An object grant is made where the grantor manages it: a building's responsible's grant on
            # task 42 holds while task 42 lies in their building.
            scope = grant_scope(self.actor, before, binding)
            if scope is not None:
                body = body.model_copy(update={"scope": scope})
                binding = self._validate_binding(body, before)
        key = "b_" + secrets.token_urlsafe(9).replace("-", "x").replace("_", "y")
        value = self._binding_value(body)
        return await self._apply(
            BINDINGS,
            key,
            state,
            before,
            None,
            value,
            expected=0,
            dry_run=dry_run,
            subjects=[binding.subject],
            action="create",
        )

    async def update_binding(self, key: str, body: BindingIn, if_match: str | None, *, dry_run: bool) -> Change:
        state, before = await self.snapshot()
        old = self._existing_binding(state, key)
        expected = parse_if_match(if_match)
        old_binding = binding_of(old.value)
        check_binding(self.actor, before, old_binding, "change")
        binding = self._validate_binding(body, before)
        check_binding(self.actor, before, binding)
        value = self._binding_value(body, created=old.value)
        return await self._apply(
            BINDINGS,
            key,
            state,
            before,
            old.value,
            value,
            expected=expected,
            dry_run=dry_run,
            subjects=[old_binding.subject, binding.subject],
            action="update",
            current=old.version,
        )

    async def delete_binding(self, key: str, if_match: str | None, *, dry_run: bool) -> Change:
        state, before = await self.snapshot()
        old = self._existing_binding(state, key)
        expected = parse_if_match(if_match)
        old_binding = binding_of(old.value)
        check_binding(self.actor, before, old_binding, "remove")
        return await self._apply(
            BINDINGS,
            key,
            state,
            before,
            old.value,
            None,
            expected=expected,
            dry_run=dry_run,
            subjects=[old_binding.subject],
            action="delete",
            current=old.version,
        )

    def _existing_binding(self, state: DynamicState, key: str) -> Any:
        if key.startswith(CONFIG_PREFIX):
            raise Conflict(f"{key} comes from the config file; change it there (the API cannot)")
        doc = state.bindings.get(key)
        if doc is None:
            raise Missing(f"no binding {key}")
        return doc

    # -- roles ------------------------------------------------------------------------------------------

    async def roles(self) -> list[dict[str, Any]]:
        state, policy = await self.snapshot()
        out = []
        for name, role in self.config.roles.items():
            out.append(self._role_out(name, role.model_dump(), policy, "config", 0))
        for name, doc in sorted(state.roles.items()):
            if name not in self.config.roles:
                out.append(self._role_out(name, doc.value, policy, "api", doc.version))
        return out

    async def role(self, name: str) -> dict[str, Any]:
        for item in await self.roles():
            if item["name"] == name:
                return item
        raise Missing(f"no role {name}")

    @staticmethod
    def _role_out(name: str, value: dict[str, Any], policy: Policy, source: str, version: int) -> dict[str, Any]:
        flat = policy.roles.get(name)
        manages = value.get("manages") or {}
        if value.get("assigns") and not manages:  # stored before manages existed (read as manages.assigns)
            manages = {"assigns": value["assigns"]}
        return {
            "name": name,
            "source": source,
            "readonly": source == "config",
            "version": version,
            "description": value.get("description") or "",
            "permissions": list(value.get("permissions") or ()),
            "inherits": list(value.get("inherits") or ()),
            "deny": list(value.get("deny") or ()),
            "if_setting": {k: list(v) for k, v in (value.get("if_setting") or {}).items()},
            "manages": {k: v if v == "all" else list(v) for k, v in manages.items() if v},
            "on_assigned": {
                k: list(v)
                for k, v in Role.model_validate({"on_assigned": value.get("on_assigned") or {}}).on_assigned.items()
            },
            "effective": sorted(flat.allow) if flat else [],
            "conditional": {k: sorted(v) for k, v in flat.conditional.items()} if flat else {},
        }

    def _validate_role(self, body: RoleIn, policy: Policy, name: str) -> dict[str, Any]:
        errors: list[dict[str, str]] = []
        catalogue = policy.catalogue

        def known(field: str, perm: Any) -> None:
            if not isinstance(perm, str) or not expand([perm], catalogue) & catalogue:
                errors.append({"field": field, "message": f"{perm!r} names no catalogue permission"})

        for field in ("permissions", "deny"):
            for i, perm in enumerate(getattr(body, field)):
                known(f"{field}[{i}]", perm)
        for i, parent in enumerate(body.inherits):
            if parent not in policy.roles or parent == name:
                errors.append({"field": f"inherits[{i}]", "message": f"unknown role {parent!r}"})
        settings = self.config.user_settings
        for setting, perms in body.if_setting.items():
            if setting not in settings:
                errors.append({"field": f"if_setting.{setting}", "message": f"unknown user setting {setting!r}"})
            for i, perm in enumerate(perms):
                known(f"if_setting.{setting}[{i}]", perm)
        on_assigned = body.on_assigned if isinstance(body.on_assigned, dict) else {"*": body.on_assigned}
        for type_name, perms in on_assigned.items():
            if type_name != "*" and type_name not in self.config.scopes:
                errors.append({"field": f"on_assigned.{type_name}", "message": f"unknown scope type {type_name!r}"})
            for i, perm in enumerate(perms):
                known(f"on_assigned.{type_name}[{i}]", perm)
        manages = body.manages
        if manages.roles != "all":
            for i, role in enumerate(manages.roles):
                if role not in policy.roles and role != name:
                    errors.append({"field": f"manages.roles[{i}]", "message": f"unknown role {role!r}"})
        if manages.settings != "all":
            for i, setting in enumerate(manages.settings):
                if setting not in settings:
                    errors.append({"field": f"manages.settings[{i}]", "message": f"unknown user setting {setting!r}"})
        if manages.assigns != "all":
            for i, perm in enumerate(manages.assigns):
                known(f"manages.assigns[{i}]", perm)
        if errors:
            raise Invalid(errors)
        value: dict[str, Any] = {
            "description": body.description,
            "permissions": body.permissions,
            "inherits": body.inherits,
            "deny": body.deny,
        }
        if body.if_setting:
            value["if_setting"] = body.if_setting
        if on_assigned:
            value["on_assigned"] = on_assigned
        dumped = {k: v for k, v in manages.model_dump().items() if v}
        if dumped:
            value["manages"] = dumped
        return value

    async def create_role(self, body: RoleCreate, *, dry_run: bool) -> Change:
        self.actor.require(ROLES_EDIT, None, "define roles")
        state, before = await self.snapshot()
        if body.name in self.config.roles or body.name in state.roles:
            raise Conflict(f"role {body.name} exists already")
        value = self._validate_role(body, before, body.name)
        return await self._apply_role(state, before, body.name, None, value, 0, dry_run, "create")

    async def update_role(self, name: str, body: RoleIn, if_match: str | None, *, dry_run: bool) -> Change:
        self.actor.require(ROLES_EDIT, None, "change roles")
        state, before = await self.snapshot()
        if name in self.config.roles:
            raise Conflict(f"role {name} comes from the config file; change it there (the API cannot)")
        old = state.roles.get(name)
        if old is None:
            raise Missing(f"no role {name}")
        expected = parse_if_match(if_match)
        check_not_own_powers(self.actor, before, name, "change")
        value = self._validate_role(body, before, name)
        return await self._apply_role(
            state, before, name, old.value, value, expected, dry_run, "update", current=old.version
        )

    async def delete_role(self, name: str, if_match: str | None, *, dry_run: bool) -> Change:
        self.actor.require(ROLES_EDIT, None, "delete roles")
        state, before = await self.snapshot()
        if name in self.config.roles:
            raise Conflict(f"role {name} comes from the config file; change it there (the API cannot)")
        old = state.roles.get(name)
        if old is None:
            raise Missing(f"no role {name}")
        expected = parse_if_match(if_match)
        check_not_own_powers(self.actor, before, name, "delete")
        users = [f"config-{i}" for i, b in enumerate(self.config.bindings) if b.role == name]
        users += [k for k, d in state.bindings.items() if d.value.get("role") == name]
        heirs = [r for r, flat in before.roles.items() if name in flat.ancestors]
        if users or heirs:
            raise Conflict(f"role {name} is still used by bindings {users} / inherited by {heirs}; remove those first")
        return await self._apply_role(
            state, before, name, old.value, None, expected, dry_run, "delete", current=old.version
        )

    async def _apply_role(
        self,
        state: DynamicState,
        before: Policy,
        name: str,
        old: dict[str, Any] | None,
        value: dict[str, Any] | None,
        expected: int,
        dry_run: bool,
        action: str,
        current: int | None = None,
    ) -> Change:
        after_state = state.with_doc(ROLES, name, value)
        after = compile_state(self.config, after_state)
        if value is not None:
            # Business permissions are the role editor's to define; rolegate's own and delegation are bounded.
            check_role_definition(self.actor, after, name)
        touched = {r for r, flat in after.roles.items() if r == name or name in flat.ancestors}
        touched |= {r for r, flat in before.roles.items() if r == name or name in flat.ancestors}
        subjects = [(b.subject_kind, b.subject) for b in (*before.bindings, *after.bindings) if b.role.name in touched]
        return await self._apply(
            ROLES,
            name,
            state,
            before,
            old,
            value,
            expected=expected,
            dry_run=dry_run,
            subjects=subjects,
            action=action,
            current=current,
            after_state=after_state,
        )

    # -- user settings -------------------------------------------------------------------------------------

    async def user_settings(self, user: str) -> dict[str, Any]:
        """The settings switched on for ``user``: from config (read-only) and through the API, per scope."""
        record = await self.store.get(USER_SETTINGS, user)
        switches = switches_of(record.value if record is not None else None)
        on = [{**sw.to_json(), "source": "config"} for sw in self._config_switches(user)]
        on += [{**sw.to_json(), "source": "api"} for sw in switches]
        _state, policy = await self.snapshot()
        described = self.config.user_settings
        return {
            "user": user,
            "on": on,
            "version": record.version if record else 0,
            "settings": sorted({sw.setting for sw in switches if sw.scope is None}),
            "from_config": sorted({sw.setting for sw in self._config_switches(user)}),
            "available": {n: sorted(policy.settings.get(n, ())) for n in described},
            "roles": {n: {p: list(r) for p, r in policy.unlocks.get(n, {}).items()} for n in described},
        }

    def _config_switches(self, user: str) -> list[Switch]:
        entry = self.config.users.get(user)
        if entry is None:
            return []
        return [
            Switch(name, None if scope == EVERYWHERE else scope)
            for scope, names in entry.settings.items()
            for name in names
        ]

    async def put_user_settings(
        self, user: str, body: UserSettingsIn, if_match: str | None, *, dry_run: bool
    ) -> Change:
        """Set which settings are on for ``user`` at ``body.scope`` (None: everywhere); other scopes keep theirs.

        Each setting switched on or off there must be one a role the actor holds there manages.
        """
        expected = parse_if_match(if_match)
        state, before = await self.snapshot()
        errors = [
            {"field": f"settings[{i}]", "message": f"unknown user setting {n!r}"}
            for i, n in enumerate(body.settings)
            if n not in self.config.user_settings
        ]
        scope = body.scope
        if scope is not None and scope.split(":", 1)[0] not in self.config.scopes:
            errors.append({"field": "scope", "message": f"scope type {scope.split(':', 1)[0]!r} is not declared"})
        if errors:
            raise Invalid(errors)
        old = state.settings.get(user)
        switches = switches_of(old.value if old else None)
        here = {sw.setting: sw for sw in switches if sw.scope == scope}
        wanted = set(body.settings)
        changed = sorted(set(here) ^ wanted)
        for name in changed:
            check_setting(self.actor, before, name, scope, "switch on" if name in wanted else "switch off")
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        kept = [sw for sw in switches if sw.scope != scope or sw.setting in wanted]
        added = [Switch(name, scope, self.actor.username, now) for name in sorted(wanted - set(here))]
        value = {"on": [sw.to_json() for sw in (*kept, *added)]}
        where = f" at {scope}" if scope else " everywhere"
        return await self._apply(
            USER_SETTINGS,
            user,
            state,
            before,
            old.value if old else None,
            value,
            expected=expected,
            dry_run=dry_run,
            subjects=[("user", user)],
            action="update",
            current=old.version if old else 0,
            summary=f"user settings of {user}{where}: {', '.join(sorted(wanted)) or 'none'}",
        )

    # -- scope membership (an app registers its tasks) ---------------------------------------------------

    async def scope_members(self, scope_type: str | None = None) -> list[dict[str, Any]]:
        """Every placed scope: config ``members`` (read-only) and what the API registered."""
        state = await load_state(self.store)
        out = []
        for type_name, declared in self.config.scopes.items():
            if declared.parent is None or (scope_type and type_name != scope_type):
                continue
            for child, parent in declared.members.items():
                key = f"{type_name}:{child}"
                api = state.members.get(key)
                out.append(
                    {
                        "scope": key,
                        "parent": f"{declared.parent}:{parent}",
                        "source": "config",
                        "readonly": True,
                        "version": 0,
                        "by": None,
                        "at": None,
                        "overridden_by_api": api is not None,
                    }
                )
        for key, doc in sorted(state.members.items()):
            if scope_type and key.split(":", 1)[0] != scope_type:
                continue
            out.append(
                {
                    "scope": key,
                    "parent": doc.value.get("parent"),
                    "source": "api",
                    "readonly": False,
                    "version": doc.version,
                    "by": doc.value.get("by"),
                    "at": doc.value.get("at"),
                    "overridden_by_api": False,
                }
            )
        return out

    async def put_scope_member(self, child: str, body: ScopeMemberIn, if_match: str | None, *, dry_run: bool) -> Change:
        """Place ``child`` (task:42) in ``body.parent`` (building:a): where grants made at the parent reach it."""
        state, before = await self.snapshot()
        child_type, parent_type = child.split(":", 1)[0], body.parent.split(":", 1)[0]
        declared = self.config.scopes.get(child_type)
        if declared is None or declared.parent is None:
            raise Invalid.field("scope", f"scope type {child_type!r} is not declared with a parent type")
        if parent_type != declared.parent:
            raise Invalid.field("parent", f"a {child_type} lies in a {declared.parent}, not in a {parent_type}")
        old = state.members.get(child)
        expected = parse_if_match(if_match) if old is not None else 0
        old_parent = old.value.get("parent") if old else before.scopes.parents.get(child)
        may_register_member(self.actor, child, body.parent)
        if old_parent and old_parent != body.parent:
            may_register_member(self.actor, child, old_parent, "move")
        value = {
            "parent": body.parent,
            "by": self.actor.username,
            "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        subjects = [(g.subject_kind, g.subject) for g in before.object_grants if g.object == child]
        return await self._apply(
            SCOPE_MEMBERS,
            child,
            state,
            before,
            old.value if old else None,
            value,
            expected=expected,
            dry_run=dry_run,
            subjects=subjects,
            action="update" if old else "create",
            current=old.version if old else 0,
        )

    async def delete_scope_member(self, child: str, if_match: str | None, *, dry_run: bool) -> Change:
        state, before = await self.snapshot()
        old = state.members.get(child)
        if old is None:
            if before.scopes.parents.get(child):
                raise Conflict(f"{child} is placed by the config file; change it there (the API cannot)")
            raise Missing(f"no registered scope {child}")
        expected = parse_if_match(if_match)
        may_register_member(self.actor, child, old.value.get("parent"), "remove")
        subjects = [(g.subject_kind, g.subject) for g in before.object_grants if g.object == child]
        return await self._apply(
            SCOPE_MEMBERS,
            child,
            state,
            before,
            old.value,
            None,
            expected=expected,
            dry_run=dry_run,
            subjects=subjects,
            action="delete",
            current=old.version,
        )

    # -- the common path of every change ---------------------------------------------------------------------

    async def _apply(
        self,
        namespace: str,
        key: str,
        state: DynamicState,
        before: Policy,
        old: dict[str, Any] | None,
        value: dict[str, Any] | None,
        *,
        expected: int,
        dry_run: bool,
        subjects: list[tuple[str, str]],
        action: str,
        current: int | None = None,
        after_state: DynamicState | None = None,
        summary: str | None = None,
    ) -> Change:
        if current is not None and expected != current:
            raise PreconditionFailed(f"{namespace}/{key} changed since you read it (now v{current}); read it again")
        after_state = after_state or state.with_doc(namespace, key, value)
        extra = await daypass_bindings(self.store, self.config, time.time())
        after = compile_state(self.config, after_state, extra=extra)
        preview = await self.preview(before, after, subjects, summary or f"{action} {namespace}/{key}")
        if dry_run:
            version = (current or 0) + (0 if value is None else 1)
            return Change(self._resource(namespace, key, value, version), version, preview)
        try:
            if value is None:
                removed = await self.store.delete(namespace, key, expected_version=expected)
                if not removed:
                    raise PreconditionFailed(f"{namespace}/{key} is gone; read it again")
                version = 0
            else:
                version = await self.store.put(namespace, key, value, expected_version=expected)
        except VersionConflict:
            raise PreconditionFailed(f"{namespace}/{key} changed since you read it; read it again") from None
        audit = self.runtime.audit
        if audit is not None:
            await audit.emit_durable(
                admin_change_event(
                    actor=self.actor.username,
                    target=f"{namespace}/{key}",
                    action=action,
                    before=old,
                    after=value,
                    via="api",
                )
            )
        await bump(self.store, self.runtime.board, "policy")
        preview["dry_run"] = False
        return Change(self._resource(namespace, key, value, version), version, preview)

    @staticmethod
    def _resource(namespace: str, key: str, value: dict[str, Any] | None, version: int) -> dict[str, Any] | None:
        if value is None:
            return None
        if namespace == BINDINGS:
            return binding_out(key, value, version)
        if namespace == ROLES:
            return {"name": key, **value, "version": version}
        if namespace == SCOPE_MEMBERS:
            return {"scope": key, **value, "source": "api", "version": version}
        return {**value, "version": version}

    async def preview(
        self, before: Policy, after: Policy, subjects: list[tuple[str, str]], summary: str
    ) -> dict[str, Any]:
        """Who gains or loses what: the users behind ``subjects``, diffed between both policies."""
        people = await self.people()
        identities: dict[str, Identity] = {}
        notes: list[str] = []
        for kind, name in dict.fromkeys(subjects):
            if kind == "group":
                members = people.members(name)
                if not members:
                    notes.append(f"no member of group {name} is known ({people.source}); nobody is affected yet")
                for person in members:
                    identities.setdefault(person.username, person.identity())
            elif kind == "user":
                identities.setdefault(name, people.identity_for(name))
                if people.user(name) is None:
                    notes.append(f"user {name} is not known ({people.source}); previewed without groups")
            else:
                notes.append(f"{kind} {name}: not previewed")
        changes = permission_diff(before, after, list(identities.values()), time.time())
        if not changes:
            notes.append("nobody gains or loses any permission")
        return {
            "dry_run": True,
            "summary": summary,
            "changes": changes,
            "users_considered": len(identities),
            "notes": notes,
        }
