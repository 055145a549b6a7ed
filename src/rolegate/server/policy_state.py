"""The live policy: config plus what the admin API and day passes stored, compiled into one Policy.

Shared by the workers (recompiled whenever a version counter moves) and by ``rolegate explain``,
so "why was this denied?" is answered against exactly the state the proxy enforces.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from rolegate.authz import Policy, compile_policy
from rolegate.config import Config
from rolegate.config.sections.policy import Binding, Role
from rolegate.store import Store

log = logging.getLogger("rolegate.policy")


async def compile_live_policy(config: Config, store: Store, now: float, version: int = 0, *,
                              scope_parents: Mapping[str, str] | None = None) -> Policy:
    """Compile config + stored bindings, object grants, user settings, API roles and active day passes."""
    bindings: list[tuple[Binding, str]] = []
    grants: list[tuple[Binding, str]] = []
    for record in await store.list("bindings"):
        try:
            binding = Binding.model_validate({k: v for k, v in record.value.items() if k in Binding.model_fields})
        except Exception as exc:  # noqa: BLE001 - a bad stored binding grants nothing
            log.error("ignoring stored binding %s: %s", record.key, exc)
            continue
        (grants if binding.permission is not None else bindings).append((binding, f"api:binding/{record.key}"))
    settings: dict[str, list[str]] = {}
    for record in await store.list("user_settings"):
        names = record.value.get("settings") if isinstance(record.value, dict) else None
        if isinstance(names, list):
            settings[record.key] = [n for n in names if isinstance(n, str)]
    api_roles: dict[str, Role] = {}
    for record in await store.list("roles"):
        if record.key in config.roles:
            continue  # config roles are read-only; the API cannot shadow them
        try:
            api_roles[record.key] = Role.model_validate(record.value)
        except Exception as exc:  # noqa: BLE001
            log.error("ignoring stored role %s: %s", record.key, exc)
    if config.daypass is not None:
        try:
            from rolegate.identity.daypass import active_pass_bindings
        except ImportError:
            active_pass_bindings = None
        if active_pass_bindings is not None:
            for binding in await active_pass_bindings(store, config, now):
                bindings.append((binding, f"daypass:{binding.daypass}"))
    effective = config.model_copy(update={"roles": {**api_roles, **config.roles}}) if api_roles else config
    policy = compile_policy(effective, extra_bindings=bindings, enabled_settings=settings, object_grants=grants,
                            scope_parents=scope_parents, version=version)
    for problem in policy.problems:
        log.warning("policy: %s", problem)
    return policy
