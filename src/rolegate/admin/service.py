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

from rolegate.admin.delegation import BINDINGS_EDIT, ROLES_EDIT, check_grant, check_permissions_held
from rolegate.admin.errors import (Conflict, Invalid, Missing, PreconditionFailed, PreconditionRequired,
                                   from_validation)
from rolegate.admin.guard import Actor
from rolegate.admin.holdings import permission_diff
from rolegate.admin.models import BindingIn, RoleCreate, RoleIn, UserSettingsIn
from rolegate.admin.people import People, load_people
from rolegate.admin.state import (BINDINGS, ROLES, USER_SETTINGS, DynamicState, binding_of, compile_state,
                                  daypass_bindings, load_state)
from rolegate.audit import admin_change_event
from rolegate.authz import Identity, Policy
from rolegate.authz.roles import expand
from rolegate.config.sections.policy import Binding
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
    out = {"id": key, "source": source, "readonly": source == "config", "version": version,
           "note": value.get("note") or "", "created_by": value.get("created_by"),
           "created_at": value.get("created_at")}
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
        out = [binding_out(f"{CONFIG_PREFIX}{i}", _config_binding_value(b), 0, "config")
               for i, b in enumerate(self.config.bindings)]
        out += [binding_out(k, d.value, d.version) for k, d in sorted(state.bindings.items())]
        if grants is not None:
            out = [b for b in out if (b["permission"] is not None) == grants]
        return out

    async def binding(self, key: str) -> dict[str, Any]:
        if key.startswith(CONFIG_PREFIX):
            index = key[len(CONFIG_PREFIX):]
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
                errors.append({"field": name, "message": f"scope type {value.split(':', 1)[0]!r} is not declared "
                                                         f"(declared: {', '.join(scope_types)})"})
        if errors:
            raise Invalid(errors)
        try:
            return binding_of(body.model_dump(exclude={"note"}))
        except ValidationError as exc:
            raise from_validation(exc) from None

    def _binding_value(self, body: BindingIn, created: dict[str, Any] | None = None) -> dict[str, Any]:
        value: dict[str, Any] = {k: v for k, v in body.model_dump(mode="json").items()
                                 if v is not None and k != "note"}
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
        check_grant(self.actor, before, binding)
        key = "b_" + secrets.token_urlsafe(9).replace("-", "x").replace("_", "y")
        value = self._binding_value(body)
        return await self._apply(BINDINGS, key, state, before, None, value, expected=0, dry_run=dry_run,
                                 subjects=[binding.subject], action="create")

    async def update_binding(self, key: str, body: BindingIn, if_match: str | None, *, dry_run: bool) -> Change:
        state, before = await self.snapshot()
        old = self._existing_binding(state, key)
        expected = parse_if_match(if_match)
        old_binding = binding_of(old.value)
        check_grant(self.actor, before, old_binding, "change")
        binding = self._validate_binding(body, before)
        check_grant(self.actor, before, binding)
        value = self._binding_value(body, created=old.value)
        return await self._apply(BINDINGS, key, state, before, old.value, value, expected=expected, dry_run=dry_run,
                                 subjects=[old_binding.subject, binding.subject], action="update",
                                 current=old.version)

    async def delete_binding(self, key: str, if_match: str | None, *, dry_run: bool) -> Change:
        state, before = await self.snapshot()
        old = self._existing_binding(state, key)
        expected = parse_if_match(if_match)
        old_binding = binding_of(old.value)
        check_grant(self.actor, before, old_binding, "remove")
        return await self._apply(BINDINGS, key, state, before, old.value, None, expected=expected, dry_run=dry_run,
                                 subjects=[old_binding.subject], action="delete", current=old.version)

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
        return {"name": name, "source": source, "readonly": source == "config", "version": version,
                "description": value.get("description") or "", "permissions": list(value.get("permissions") or ()),
                "inherits": list(value.get("inherits") or ()), "deny": list(value.get("deny") or ()),
                "assigns": list(value.get("assigns") or ()), "effective": sorted(flat.allow) if flat else []}

    def _validate_role(self, body: RoleIn, policy: Policy, name: str) -> dict[str, Any]:
        errors: list[dict[str, str]] = []
        catalogue = policy.catalogue
        for field in ("permissions", "deny", "assigns"):
            for i, perm in enumerate(getattr(body, field)):
                if not isinstance(perm, str) or not expand([perm], catalogue) & catalogue:
                    errors.append({"field": f"{field}[{i}]", "message": f"{perm!r} names no catalogue permission"})
        for i, parent in enumerate(body.inherits):
            if parent not in policy.roles or parent == name:
                errors.append({"field": f"inherits[{i}]", "message": f"unknown role {parent!r}"})
        if errors:
            raise Invalid(errors)
        value = {"description": body.description, "permissions": body.permissions, "inherits": body.inherits,
                 "deny": body.deny}
        if body.assigns:
            value["assigns"] = body.assigns
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
        value = self._validate_role(body, before, name)
        return await self._apply_role(state, before, name, old.value, value, expected, dry_run, "update",
                                      current=old.version)

    async def delete_role(self, name: str, if_match: str | None, *, dry_run: bool) -> Change:
        self.actor.require(ROLES_EDIT, None, "delete roles")
        state, before = await self.snapshot()
        if name in self.config.roles:
            raise Conflict(f"role {name} comes from the config file; change it there (the API cannot)")
        old = state.roles.get(name)
        if old is None:
            raise Missing(f"no role {name}")
        expected = parse_if_match(if_match)
        users = [f"config-{i}" for i, b in enumerate(self.config.bindings) if b.role == name]
        users += [k for k, d in state.bindings.items() if d.value.get("role") == name]
        heirs = [r for r, flat in before.roles.items() if name in flat.ancestors]
        if users or heirs:
            raise Conflict(f"role {name} is still used by bindings {users} / inherited by {heirs}; remove those first")
        return await self._apply_role(state, before, name, old.value, None, expected, dry_run, "delete",
                                      current=old.version)

    async def _apply_role(self, state: DynamicState, before: Policy, name: str, old: dict[str, Any] | None,
                          value: dict[str, Any] | None, expected: int, dry_run: bool, action: str,
                          current: int | None = None) -> Change:
        after_state = state.with_doc(ROLES, name, value)
        after = compile_state(self.config, after_state)
        if value is not None:
            # Whoever holds this role (or a role inheriting it) gets its contents: hold them yourself.
            check_permissions_held(self.actor, after.roles[name].allow, f"define role {name} this way")
            # ... and what it lets holders assign on objects: hold it, or assign it yourself, everywhere.
            unassignable = after.roles[name].assigns - self.actor.assigns_at(None)
            check_permissions_held(self.actor, unassignable, f"let role {name} assign these on objects")
        touched = {r for r, flat in after.roles.items() if r == name or name in flat.ancestors}
        touched |= {r for r, flat in before.roles.items() if r == name or name in flat.ancestors}
        subjects = [(b.subject_kind, b.subject) for b in (*before.bindings, *after.bindings) if b.role.name in touched]
        return await self._apply(ROLES, name, state, before, old, value, expected=expected, dry_run=dry_run,
                                 subjects=subjects, action=action, current=current, after_state=after_state)

    # -- user settings -------------------------------------------------------------------------------------

    async def user_settings(self, user: str) -> dict[str, Any]:
        record = await self.store.get(USER_SETTINGS, user)
        names = record.value.get("settings", []) if record is not None and isinstance(record.value, dict) else []
        return {"user": user, "settings": list(names), "version": record.version if record else 0,
                "from_config": sorted(n for n, s in self.config.user_settings.items() if user in s.users),
                "available": {n: sorted(s.permissions) for n, s in self.config.user_settings.items()}}

    async def put_user_settings(self, user: str, body: UserSettingsIn, if_match: str | None, *,
                                dry_run: bool) -> Change:
        self.actor.require(BINDINGS_EDIT, None, "switch user settings (they apply everywhere)")
        expected = parse_if_match(if_match)
        state, before = await self.snapshot()
        errors = [{"field": f"settings[{i}]", "message": f"unknown user setting {n!r}"}
                  for i, n in enumerate(body.settings) if n not in self.config.user_settings]
        if errors:
            raise Invalid(errors)
        old = state.settings.get(user)
        old_names = set(old.value.get("settings", ())) if old else set()
        new_names = set(body.settings)
        changed = old_names ^ new_names
        check_permissions_held(self.actor, {p for n in changed if n in before.settings for p in before.settings[n]},
                               f"switch {', '.join(sorted(changed)) or 'nothing'} for {user}")
        value = {"settings": sorted(new_names)}
        return await self._apply(USER_SETTINGS, user, state, before, old.value if old else None, value,
                                 expected=expected, dry_run=dry_run, subjects=[("user", user)], action="update",
                                 current=old.version if old else 0)

    # -- the common path of every change ---------------------------------------------------------------------

    async def _apply(self, namespace: str, key: str, state: DynamicState, before: Policy,
                     old: dict[str, Any] | None, value: dict[str, Any] | None, *, expected: int, dry_run: bool,
                     subjects: list[tuple[str, str]], action: str, current: int | None = None,
                     after_state: DynamicState | None = None) -> Change:
        if current is not None and expected != current:
            raise PreconditionFailed(f"{namespace}/{key} changed since you read it (now v{current}); read it again")
        after_state = after_state or state.with_doc(namespace, key, value)
        extra = await daypass_bindings(self.store, self.config, time.time())
        after = compile_state(self.config, after_state, extra=extra)
        preview = await self.preview(before, after, subjects, f"{action} {namespace}/{key}")
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
            await audit.emit_durable(admin_change_event(
                actor=self.actor.username, target=f"{namespace}/{key}", action=action, before=old, after=value,
                via="api"))
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
        return {**value, "version": version}

    async def preview(self, before: Policy, after: Policy, subjects: list[tuple[str, str]],
                      summary: str) -> dict[str, Any]:
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
        return {"dry_run": True, "summary": summary, "changes": changes, "users_considered": len(identities),
                "notes": notes}
