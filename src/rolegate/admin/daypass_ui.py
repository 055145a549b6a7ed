"""The day-pass page of the admin UI: issue a pass and show its link and QR code; list and revoke."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from aiohttp import web
from pydantic import ValidationError

from rolegate.admin import daypasses
from rolegate.admin.errors import from_validation
from rolegate.admin.guard import Actor
from rolegate.admin.ui import csrf_input, e, flash, page
from rolegate.display_time import display_zone, time_html


def _zone(runtime: Any, template: str) -> str:
    """A pass's times in its template's zone (where its day ends), as the holder reads them."""
    tpl = runtime.config.daypass.templates.get(template) if runtime.config.daypass is not None else None
    return tpl.timezone if tpl is not None else display_zone(runtime.config)


async def passes_page(request: web.Request, runtime: Any, actor: Actor, form: Any) -> web.StreamResponse:
    data = await daypasses.list_passes(runtime, actor)
    options = "".join(
        f'<option value="{e(n)}">{e(n)} (role {e(t["role"])}, {e(", ".join(t["scopes"]))})</option>'
        for n, t in data["templates"].items()
    )
    rows = []
    for p in data["items"]:
        action = ""
        if p["status"] == "active":
            action = (
                f'<form method="post" action="/.rolegate/admin/daypasses/{quote(p["id"])}/revoke" class="inline" '
                f'data-confirm="Revoke this pass now?">{csrf_input(actor)}'
                f'<button class="danger">Revoke</button></form>'
            )
        rows.append(
            f'<tr><td>{e(p["name"])}<br><span class="muted">{e(p["company"])}</span></td>'
            f"<td>{e(p['scope'])}</td><td>{e(p['status'])}</td>"
            f"<td>{time_html(p['expires_at'], _zone(runtime, p['template']), until=True)}</td>"
            f"<td>{e(p['issued_by'])}</td><td>{action}</td></tr>"
        )
    msg = request.query.get("done")
    body = (
        (flash(msg) if msg else "") + f'<div class="card"><h2 style="margin-top:0">Issue a day pass</h2>'
        f'<form method="post" action="/.rolegate/admin/daypasses" class="grid" id="issue">{csrf_input(actor)}'
        f'<label>Template<select name="template">{options}</select></label>'
        f'<label>Scope<input name="scope" required placeholder="building:a"></label>'
        f'<label>Name<input name="name" maxlength="200"></label>'
        f'<label>Company<input name="company" maxlength="200"></label>'
        f'<label>Reason<input name="reason" maxlength="200"></label>'
        f'<button type="submit">Issue</button></form></div>'
        f'<h2>Passes</h2><div class="scroll"><table id="passes"><thead><tr><th>Holder</th><th>Scope</th>'
        f"<th>Status</th><th>Expires</th><th>Issued by</th><th></th></tr></thead><tbody>{''.join(rows)}</tbody>"
        f"</table></div>"
    )
    return page(actor, "Day passes", body, "daypasses")


async def issue_page(request: web.Request, runtime: Any, actor: Actor, form: Any) -> web.StreamResponse:
    try:
        body_in = daypasses.DaypassIn.model_validate(
            {k: str(form.get(k, "")) for k in ("template", "scope", "name", "company", "reason")}
        )
    except ValidationError as exc:
        raise from_validation(exc) from None
    issued = await daypasses.issue(runtime, actor, body_in)
    body = (
        f'<div class="card" id="issued"><p>Pass for <strong>{e(issued["name"])}</strong> '
        f"({e(issued['company'])}) at <strong>{e(issued['scope'])}</strong>, role {e(issued['role'])}, "
        f'until <strong id="issued-until">'
        f"{time_html(issued['expires_at'], _zone(runtime, issued['template']), until=True)}</strong>.</p>"
        f"<p>Let them scan the code, or send the link. It is shown only now.</p>"
        f'<img class="qr" alt="QR code of the day-pass link" src="data:image/png;base64,{issued["qr_png_base64"]}">'
        f'<p><input readonly value="{e(issued["link"])}" style="width:100%" id="pass-link"></p>'
        f'<p><a href="/.rolegate/admin/daypasses">Back to day passes</a></p></div>'
    )
    return page(actor, "Day pass issued", body, "daypasses")


async def revoke_page(request: web.Request, runtime: Any, actor: Actor, form: Any) -> web.StreamResponse:
    record = await daypasses.revoke(runtime, actor, request.match_info["id"])
    raise web.HTTPSeeOther(f"/.rolegate/admin/daypasses?done=revoked+pass+{quote(record['id'])}")


def add_daypass_pages(router: web.UrlDispatcher, pages: Any, base: str) -> None:
    router.add_get(base + "/daypasses", pages.route(passes_page))
    router.add_post(base + "/daypasses", pages.route(issue_page))
    router.add_post(base + "/daypasses/{id}/revoke", pages.route(revoke_page))
