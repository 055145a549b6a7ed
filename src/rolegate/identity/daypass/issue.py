"""Issuing a pass: validate against its template and the issuer's rights, store it, render its QR code."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import segno

from rolegate.audit import AuditLog
from rolegate.config import Config
from rolegate.config.sections.policy import SCOPE
from rolegate.identity.daypass import codes
from rolegate.identity.daypass.audit import pass_event, record_durably
from rolegate.identity.daypass.errors import InvalidPassRequest, IssueRefused
from rolegate.identity.daypass.expiry import pass_expiry
from rolegate.identity.daypass.record import PassRecord, save_pass
from rolegate.store import Store, VersionConflict
from rolegate.store.version_board import VersionBoard, bump

ISSUE_PERMISSION = "rolegate:daypass:issue"
MAX_FIELD = 200


@dataclass(frozen=True, slots=True)
class IssuedPass:
    """What the issuer hands to the subcontractor. ``code`` and ``link`` exist only here, never stored."""

    id: str
    code: str
    link: str
    expires_at: float
    qr_png: bytes
    qr_svg: str
    record: PassRecord


def _clean(field: str, value: str | None, required: bool) -> str:
    text = " ".join((value or "").split())
    if len(text) > MAX_FIELD:
        raise InvalidPassRequest(
            f"{field} longer than {MAX_FIELD} characters",
            public_message=f"{field} is too long (at most {MAX_FIELD} characters).",
        )
    if required and not text:
        raise InvalidPassRequest(f"{field} missing", public_message=f"{field} is required for this day pass.")
    return text


def render_qr(link: str) -> tuple[bytes, str]:
    """The link as a QR code, PNG (for printing or mail) and SVG (for the admin UI)."""
    qr = segno.make(link, error="m")
    png = io.BytesIO()
    qr.save(png, kind="png", scale=8, border=4)
    svg = io.BytesIO()
    qr.save(svg, kind="svg", scale=8, border=4, xmldecl=False)
    return png.getvalue(), svg.getvalue().decode()


async def issue_pass(
    store: Store,
    board: VersionBoard | None,
    config: Config,
    *,
    template: str,
    scope: str,
    name: str | None,
    company: str | None,
    reason: str | None,
    issuer: str,
    issuer_may_issue: Callable[[str], bool] | None,
    now: float,
    audit: AuditLog | None = None,
) -> IssuedPass:
    """Issue a pass from ``template`` at ``scope``.

    ``issuer_may_issue(scope)`` answers whether the issuer holds rolegate:daypass:issue there (the admin
    API passes the authz decision); None means a trusted local operator (the CLI). Raises IssueRefused
    (403) or InvalidPassRequest (400).
    """
    daypass = config.daypass
    if daypass is None:
        raise InvalidPassRequest("daypass section absent", public_message="Day passes are not enabled.")
    tpl = daypass.templates.get(template)
    if tpl is None:
        raise InvalidPassRequest(
            f"unknown template {template!r}", public_message=f"There is no day pass template {template!r}."
        )
    if not isinstance(scope, str) or not SCOPE.match(scope):
        raise InvalidPassRequest(
            f"bad scope {scope!r}", public_message="The scope must look like type:id, e.g. building:a."
        )
    scope_type = scope.partition(":")[0]
    if scope_type not in tpl.scopes:
        raise IssueRefused(
            f"{issuer}: template {template} is for {list(tpl.scopes)}, not {scope_type}",
            public_message=f"Passes of template {template!r} can only be issued for {', '.join(tpl.scopes)}.",
        )
    if issuer_may_issue is not None and not issuer_may_issue(scope):
        raise IssueRefused(
            f"{issuer} lacks {ISSUE_PERMISSION} at {scope}", public_message=f"You may not issue day passes for {scope}."
        )
    holder_name = _clean("name", name, "name" in tpl.require)
    holder_company = _clean("company", company, "company" in tpl.require)
    why = _clean("reason", reason, "reason" in tpl.require)

    for _attempt in range(3):  # a 64-bit id collision is next to impossible; never overwrite one anyway
        code = codes.new_code()
        record = PassRecord(
            id=codes.pass_id_of(code),
            code_hash=codes.code_hash(code),
            template=template,
            role=tpl.role,
            scope=scope,
            name=holder_name,
            company=holder_company,
            reason=why,
            issued_by=issuer,
            issued_at=now,
            expires_at=pass_expiry(tpl, now),
            devices=tpl.devices,
        )
        try:
            await save_pass(store, record, expected_version=0, now=now)
            break
        except VersionConflict:
            continue
    else:  # pragma: no cover
        raise RuntimeError("could not allocate a day pass id")
    await record_durably(audit, pass_event("issue", record, user=issuer, ts=now))
    await bump(store, board, "daypass")
    link = codes.link_for(config.server.public_url, code)
    png, svg = render_qr(link)
    return IssuedPass(
        id=record.id, code=code, link=link, expires_at=record.expires_at, qr_png=png, qr_svg=svg, record=record
    )
