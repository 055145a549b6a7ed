"""The dynamic policy state (Store namespaces ``bindings``, ``user_settings``, ``roles``, ``scope_members``)
as one value.

The admin API reads it, applies a change to a copy, and compiles both: that is how a change is
previewed, and how a delegated admin's grant is checked before anything is written. Compilation
follows the worker's (``Runtime._compile``) so that what is previewed is what will be enforced.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field, replace
from typing import Any

from rolegate.admin.errors import PreconditionFailed
from rolegate.audit import admin_change_event
from rolegate.authz import Policy, compile_policy
from rolegate.authz.stored import ASSIGNMENTS, MEMBERS, assigned_of, member_of, switches_of
from rolegate.config.sections.policy import Binding, Role
from rolegate.store.base import VersionConflict
from rolegate.store.version_board import bump

log = logging.getLogger("rolegate.admin")

BINDINGS = "bindings"
USER_SETTINGS = "user_settings"
ROLES = "roles"
SCOPE_MEMBERS = MEMBERS
ASSIGNED = ASSIGNMENTS


@dataclass(frozen=True)
class Doc:
    value: dict[str, Any]
    version: int


@dataclass(frozen=True)
class DynamicState:
    """What the admin API owns: id -> binding, username -> settings, name -> API role, scope -> its parent."""

    bindings: dict[str, Doc] = field(default_factory=dict)
    settings: dict[str, Doc] = field(default_factory=dict)
    roles: dict[str, Doc] = field(default_factory=dict)
    members: dict[str, Doc] = field(default_factory=dict)
    assignments: dict[str, Doc] = field(default_factory=dict)  # object -> who is assigned to it

    def with_doc(self, namespace: str, key: str, value: dict[str, Any] | None) -> "DynamicState":
        """A copy with ``key`` set to ``value`` (None: removed) in ``namespace``."""
        attr = {
            BINDINGS: "bindings",
            USER_SETTINGS: "settings",
            ROLES: "roles",
            SCOPE_MEMBERS: "members",
            ASSIGNED: "assignments",
        }[namespace]
        docs = dict(getattr(self, attr))
        if value is None:
            docs.pop(key, None)
        else:
            old = docs.get(key)
            docs[key] = Doc(value, (old.version if old else 0) + 1)
        return replace(self, **{attr: docs})


async def load_state(store: Any) -> DynamicState:
    async def docs(namespace: str) -> dict[str, Doc]:
        return {
            r.key: Doc(r.value if isinstance(r.value, dict) else {}, r.version) for r in await store.list(namespace)
        }

    return DynamicState(
        await docs(BINDINGS),
        await docs(USER_SETTINGS),
        await docs(ROLES),
        await docs(SCOPE_MEMBERS),
        await docs(ASSIGNED),
    )


def binding_of(value: dict[str, Any]) -> Binding:
    return Binding.model_validate({k: v for k, v in value.items() if k in Binding.model_fields})


def effective_config(config: Any, state: DynamicState) -> Any:
    """The config with API roles added (config roles win: the API cannot shadow them)."""
    api_roles: dict[str, Role] = {}
    for name, doc in state.roles.items():
        if name in config.roles:
            continue
        try:
            api_roles[name] = Role.from_stored(doc.value)
        except Exception as exc:  # noqa: BLE001 - a bad stored role grants nothing
            log.error("ignoring stored role %s: %s", name, exc)
    if not api_roles:
        return config
    return config.model_copy(update={"roles": {**api_roles, **config.roles}})


def compile_state(
    config: Any,
    state: DynamicState,
    *,
    extra: list[tuple[Binding, str]] = (),  # type: ignore[assignment]
    version: int = 0,
    scope_parents: dict[str, str] | None = None,
) -> Policy:
    """Compile config + ``state`` (+ ``extra`` bindings such as active day passes) into a Policy."""
    bindings: list[tuple[Binding, str]] = list(extra)
    grants: list[tuple[Binding, str]] = []
    for key, doc in state.bindings.items():
        try:
            binding = binding_of(doc.value)
        except Exception:  # noqa: BLE001
            continue
        (grants if binding.permission is not None else bindings).append((binding, f"api:binding/{key}"))
    settings = {user: switches_of(doc.value) for user, doc in state.settings.items()}
    members = dict(scope_parents or {})
    for key, doc in state.members.items():
        member = member_of(key, doc.value)
        if member is not None:
            members.setdefault(*member)
    assignments = {key: assigned_of(key, doc.value) for key, doc in state.assignments.items()}
    return compile_policy(
        effective_config(config, state),
        extra_bindings=bindings,
        enabled_settings=settings,
        object_grants=grants,
        scope_parents=members,
        assignments=assignments,
        version=version,
    )


async def daypass_bindings(store: Any, config: Any, now: float) -> list[tuple[Binding, str]]:
    """Active day-pass bindings, when the day-pass stage is installed (it owns that namespace)."""
    if config.daypass is None:
        return []
    try:  # lazy: ~100 ms (cryptography, segno) that `rolegate test` and configs without day passes never need
        from rolegate.identity.daypass import active_pass_bindings
    except ImportError:
        return []
    return [(b, f"daypass:{b.daypass}") for b in await active_pass_bindings(store, config, now)]


async def write_many(
    service: Any, actor: Any, namespace: str, changes: list[tuple[str, Any, Any, int]], what: str
) -> list[int]:
    """Write every ``(key, value, old value, expected version)`` in one Store transaction (a conflict on any
    writes none: 412), audit each change as the actor's, and bump the policy so that every worker compiles
    it before its next request. Returns the new versions, in order."""
    try:
        versions = await service.store.put_many(
            namespace, [(key, value, expected) for key, value, _, expected in changes]
        )
    except VersionConflict as exc:
        raise PreconditionFailed(
            f"{what} changed while this call ran ({exc}); nothing was written: send the list again"
        ) from None
    audit = service.runtime.audit
    if audit is not None:
        await asyncio.gather(
            *(
                audit.emit_durable(
                    admin_change_event(
                        actor=actor.username,
                        target=f"{namespace}/{key}",
                        action="update" if old is not None else "create",
                        before=old,
                        after=value,
                        via="api",
                    )
                )
                for key, value, old, _ in changes
            )
        )
    await bump(service.store, service.runtime.board, "policy")
    return versions
