"""The live policy: config plus what the admin API and day passes stored, compiled into one Policy.

Shared by the workers (recompiled whenever a version counter moves) and by ``rolegate explain``,
so "why was this denied?" is answered against exactly the state the proxy enforces.
"""

from __future__ import annotations

import logging

from rolegate.authz import Policy, compile_policy
from rolegate.authz.stored import ASSIGNMENTS, MEMBERS, Switch, assigned_of, member_of, switches_of
from rolegate.config import Config
from rolegate.config.sections.policy import Binding, Role
from rolegate.store import Store

log = logging.getLogger("rolegate.policy")


async def compile_live_policy(config: Config, store: Store, now: float, version: int = 0) -> Policy:
    """Compile config + stored bindings, object grants, user settings, scope members, API roles and day passes."""
    bindings: list[tuple[Binding, str]] = []
    grants: list[tuple[Binding, str]] = []
    for record in await store.list("bindings"):
        try:
            binding = Binding.model_validate({k: v for k, v in record.value.items() if k in Binding.model_fields})
        except Exception as exc:  # noqa: BLE001 - a bad stored binding grants nothing
            log.error("ignoring stored binding %s: %s", record.key, exc)
            continue
        (grants if binding.permission is not None else bindings).append((binding, f"api:binding/{record.key}"))
    settings: dict[str, list[Switch]] = {}
    for record in await store.list("user_settings"):
        settings[record.key] = switches_of(record.value)
    members: dict[str, str] = {}
    for record in await store.list(MEMBERS):
        member = member_of(record.key, record.value)
        if member is not None:
            members.setdefault(*member)
    assignments = {record.key: assigned_of(record.key, record.value) for record in await store.list(ASSIGNMENTS)}
    api_roles: dict[str, Role] = {}
    for record in await store.list("roles"):
        if record.key in config.roles:
            continue  # config roles are read-only; the API cannot shadow them
        try:
            api_roles[record.key] = Role.from_stored(record.value)
        except Exception as exc:  # noqa: BLE001
            log.error("ignoring stored role %s: %s", record.key, exc)
    if config.daypass is not None:
        from rolegate.identity.daypass import active_pass_bindings  # only with day passes configured

        for binding in await active_pass_bindings(store, config, now):
            bindings.append((binding, f"daypass:{binding.daypass}"))
    effective = config.model_copy(update={"roles": {**api_roles, **config.roles}}) if api_roles else config
    policy = compile_policy(
        effective,
        extra_bindings=bindings,
        enabled_settings=settings,
        object_grants=grants,
        scope_parents=members,
        assignments=assignments,
        version=version,
    )
    for problem in policy.problems:
        log.warning("policy: %s", problem)
    return policy
