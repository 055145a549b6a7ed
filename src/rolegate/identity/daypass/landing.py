"""Where a browser goes after redeeming a pass: the template's ``landing``, or the pass home.

``landing`` may name the pass's scope id as ``{<scope type>}`` (``/buildings/{building}/dashboard``).
``rolegate check`` (and every load and reload, through ``Compiled``) refuses a landing that a pass of
its template could not open, at any scope the template allows; at redemption a landing this pass
cannot open (the policy changed since) gives way to the pass home. A subcontractor never lands on
"Access denied".
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from rolegate.authz import Identity, compile_policy
from rolegate.config.sections.policy import Binding
from rolegate.identity.daypass.codes import PASS_HOME
from rolegate.identity.daypass.links import opens
from rolegate.proxy.routes import RouteTable, canonical_host

if TYPE_CHECKING:
    from rolegate.server.runtime import Runtime

# The stand-in pass of the check: an id no real pass has (real ids are 16 hex digits), and a scope id
# no route pins (a landing fixed to building a would open for a pass at building a only).
_PROBE = "landing-check"
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


def fill_landing(landing: str, scope: str) -> str | None:
    """``landing`` with ``{<scope type>}`` replaced by the id of ``scope``; None when it names another type."""
    scope_type, _, scope_id = scope.partition(":")
    unfillable = False

    def fill(m: re.Match[str]) -> str:
        nonlocal unfillable
        if m.group(1) != scope_type:
            unfillable = True
            return ""
        return quote(scope_id, safe="")

    filled = _PLACEHOLDER.sub(fill, landing)
    return None if unfillable else filled


def landing_problems(config: Any, routes: RouteTable) -> list[str]:
    """Each template whose landing a pass of it could not open, named, with the reason."""
    daypass = getattr(config, "daypass", None)
    if daypass is None:
        return []
    source = getattr(config, "source", None)
    host = canonical_host(config.server.public_host)
    identity = Identity(f"daypass:{_PROBE}", (), daypass=_PROBE)
    problems: list[str] = []
    for name, template in daypass.templates.items():
        if template.landing is None:
            continue
        key = ("daypass", "templates", name, "landing")
        where = source.where(key) if source is not None else "daypass.templates." + name + ".landing"
        for scope_type in template.scopes:
            scope = f"{scope_type}:{_PROBE}"
            target = fill_landing(template.landing, scope)
            if target is None:  # the template's own validation refuses this; never land on a guess
                problems.append(f"{where}: {template.landing} cannot be filled for a pass at a {scope_type}")
                continue
            policy = compile_policy(config, [Binding(daypass=_PROBE, role=template.role, scope=scope)])
            opening = opens(routes, policy, identity, host, target, time.time())
            if not opening.passes:
                placeholder = "{" + scope_type + "}"
                shown = target.replace(quote(_PROBE, safe=""), placeholder)
                reason = opening.reason.replace(_PROBE, placeholder)
                required = opening.requirement
                if required is not None and required.scope == scope:
                    reason += f", which role {template.role} does not grant"
                elif required is not None:
                    reason += f", and the pass holds role {template.role} at its own {scope_type} only"
                problems.append(
                    f"{where}: a pass of template {name!r} (role {template.role} at one {scope_type}) cannot "
                    f"open {shown}: {reason}. Use a page the pass opens (its scope id is {placeholder}), or "
                    f"leave landing out: the pass then lands on its home page, {PASS_HOME}, which lists them"
                )
                break
    return problems


async def landing_for(runtime: "Runtime", template_name: str, scope: str, identity: Identity) -> str:
    """Where this pass's browser goes now: the template's landing when this pass opens it, else the home."""
    daypass = runtime.config.daypass
    template = daypass.templates.get(template_name) if daypass is not None else None
    if template is None or template.landing is None:
        return PASS_HOME
    target = fill_landing(template.landing, scope)
    if target is None:
        return PASS_HOME
    policy = runtime.policy_now()
    if policy is None:
        policy = await runtime.current_policy()
    host = canonical_host(runtime.config.server.public_host)
    return target if opens(runtime.routes, policy, identity, host, target, runtime.clock()).passes else PASS_HOME
