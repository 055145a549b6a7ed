"""Day passes in the admin API and UI: issue (link + QR code), list, revoke, through the day-pass stage.

Issuing needs ``rolegate:daypass:issue`` at the pass's scope (the stage asks us through
``issuer_may_issue``); listing shows the passes issued at scopes where the caller may issue (all of
them with the permission globally); revoking follows the same rule.
"""

from __future__ import annotations

import base64
import time
from datetime import datetime, timezone
from typing import Any

from pydantic import Field

from rolegate.admin.delegation import DAYPASS_ISSUE
from rolegate.admin.errors import Denied, Invalid, Missing
from rolegate.admin.guard import Actor
from rolegate.admin.models import SCOPE, Body, Out
from rolegate.errors import RolegateError
from rolegate.identity import daypass as daypass_stage


class DaypassIn(Body):
    template: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    scope: str = Field(pattern=SCOPE)
    name: str = Field("", max_length=200)
    company: str = Field("", max_length=200)
    reason: str = Field("", max_length=200)


class DaypassOut(Out):
    id: str
    template: str
    role: str
    scope: str
    name: str
    company: str
    reason: str
    issued_by: str
    issued_at: str
    expires_at: str
    status: str
    devices: int
    devices_left: int
    revoked_by: str | None = None


class DaypassIssued(DaypassOut):
    link: str = Field(description="the one-time redemption link (shown once; only its hash is stored)")
    qr_svg: str
    qr_png_base64: str


class DaypassList(Out):
    items: list[DaypassOut]
    templates: dict[str, dict[str, Any]]


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")


def pass_out(record: Any, now: float) -> dict[str, Any]:
    return {
        "id": record.id,
        "template": record.template,
        "role": record.role,
        "scope": record.scope,
        "name": record.name,
        "company": record.company,
        "reason": record.reason,
        "issued_by": record.issued_by,
        "issued_at": _iso(record.issued_at),
        "expires_at": _iso(record.expires_at),
        "status": record.status(now),
        "devices": record.devices,
        "devices_left": record.devices_left,
        "revoked_by": record.revoked_by,
    }


def _enabled(runtime: Any) -> Any:
    if runtime.config.daypass is None:
        raise Missing("day passes are not enabled (no daypass section in the config)")
    return runtime.config.daypass


async def list_passes(runtime: Any, actor: Actor) -> dict[str, Any]:
    daypass = _enabled(runtime)
    if not actor.admin_rights().get(DAYPASS_ISSUE):
        raise Denied("listing day passes needs rolegate:daypass:issue")
    now = time.time()
    records = await daypass_stage.list_passes(runtime.store)
    mine = [r for r in records if actor.holds(DAYPASS_ISSUE, r.scope)]
    mine.sort(key=lambda r: r.issued_at, reverse=True)
    templates = {
        name: {
            "role": t.role,
            "scopes": list(t.scopes),
            "require": list(t.require),
            "max_lifetime": t.max_lifetime.total_seconds(),
            "expires": t.expires,
        }
        for name, t in daypass.templates.items()
    }
    return {"items": [pass_out(r, now) for r in mine], "templates": templates}


async def issue(runtime: Any, actor: Actor, body: DaypassIn) -> dict[str, Any]:
    _enabled(runtime)
    try:
        issued = await daypass_stage.issue_pass(
            runtime.store,
            runtime.board,
            runtime.config,
            template=body.template,
            scope=body.scope,
            name=body.name,
            company=body.company,
            reason=body.reason,
            issuer=actor.username,
            issuer_may_issue=lambda scope: actor.holds(DAYPASS_ISSUE, scope),
            now=time.time(),
            audit=runtime.audit,
        )
    except RolegateError as exc:
        if exc.status == 403:
            raise Denied(exc.public_message) from None
        if exc.status == 400:
            field = next(
                (f for f in ("template", "scope", "name", "company", "reason") if f in exc.public_message.lower()),
                "body",
            )
            raise Invalid.field(field, exc.public_message) from None
        raise
    out = pass_out(issued.record, time.time())
    out.update(link=issued.link, qr_svg=issued.qr_svg, qr_png_base64=base64.b64encode(issued.qr_png).decode())
    return out


async def revoke(runtime: Any, actor: Actor, pass_id: str) -> dict[str, Any]:
    _enabled(runtime)
    found = await daypass_stage.load_pass(runtime.store, pass_id)
    if found is None:
        raise Missing(f"no day pass {pass_id}")
    record, _version = found
    if not actor.holds(DAYPASS_ISSUE, record.scope):
        raise Denied(f"revoking passes at {record.scope} needs rolegate:daypass:issue there")
    record, _changed = await daypass_stage.revoke_pass(
        runtime.store, runtime.board, pass_id, by=actor.username, now=time.time(), audit=runtime.audit
    )
    return pass_out(record, time.time())
