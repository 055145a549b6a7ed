"""``/.rolegate/admin/``: server-rendered pages over the same service as the API.

Every page needs a signed-in user (browsers are sent to sign in); every form that changes state
carries the session's CSRF token and goes through a preview page before it is applied.
"""

from __future__ import annotations

import html
import logging
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web
from pydantic import ValidationError

from rolegate.admin import views
from rolegate.admin.delegation import AUDIT_VIEW, DAYPASS_ISSUE, choices
from rolegate.admin.errors import AdminError, Denied, Invalid, from_validation
from rolegate.admin.guard import CSRF_FIELD, Actor, check_csrf, current_actor
from rolegate.admin.models import AuditQuery, BindingIn
from rolegate.admin.service import AdminService, Change
from rolegate.authz.matrix import build_matrix
from rolegate.display_time import display_zone, time_html
from rolegate.errors import RolegateError

log = logging.getLogger("rolegate.admin.ui")

BASE = "/.rolegate/admin"
STATIC = Path(__file__).resolve().parent / "static"
CSP = (
    "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}

e = html.escape


def _nav(actor: Actor, active: str) -> str:
    rights = actor.admin_rights()
    admin = any(rights.values())
    items = [
        ("me", "My access", True),
        ("matrix", "Matrix", admin),
        ("bindings", "Mappings", admin),
        ("users", "Users", admin),
        ("daypasses", "Day passes", bool(rights.get(DAYPASS_ISSUE))),
        ("requests", "Requests", getattr(actor.policy.config, "access_requests", None) is not None),
        ("audit", "Audit", None in rights.get(AUDIT_VIEW, [])),
    ]
    links = "".join(
        f'<a href="{BASE}/{k}" class="{"active" if k == active else ""}">{e(label)}</a>'
        for k, label, shown in items
        if shown
    )
    return (
        f'<header><span class="brand">rolegate admin</span><nav>{links}</nav>'
        f'<span class="who">{e(actor.username)} · <a href="/.rolegate/logout">sign out</a>'
        f"</span></header>"
    )


def page(actor: Actor, title: str, body: str, active: str = "", status: int = 200) -> web.Response:
    text = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width,initial-scale=1">'
        f'<title>{e(title)} · rolegate</title><link rel="stylesheet" href="{BASE}/static/admin.css">'
        f'<script src="{BASE}/static/admin.js" defer></script></head><body>{_nav(actor, active)}'
        f"<main><h1>{e(title)}</h1>{body}</main></body></html>"
    )
    return web.Response(text=text, content_type="text/html", charset="utf-8", status=status, headers=HEADERS)


def csrf_input(actor: Actor) -> str:
    return f'<input type="hidden" name="{CSRF_FIELD}" value="{e(actor.csrf_token)}">'


def remove_button(actor: Actor, binding: dict[str, Any]) -> str:
    """A binding's "Remove…" (to its preview), or why it cannot be removed here."""
    if binding["readonly"]:
        return '<span class="muted">config file</span>'
    return (
        f'<form method="post" action="{BASE}/bindings/{quote(binding["id"])}/delete" class="inline">'
        f'{csrf_input(actor)}<input type="hidden" name="version" value="{binding["version"]}">'
        f'<button class="secondary">Remove…</button></form>'
    )


def scope_picker(scopes: list[str | None], name: str = "scope") -> str:
    """Where a change may be made: free text under someone who manages everywhere, else their scopes."""
    if None in scopes or not scopes:
        return (
            f'<label>Scope<input name="{name}" placeholder="building:a (empty: everywhere)" autocomplete="off"></label>'
        )
    options = "".join(f'<option value="{e(s)}">{e(s)}</option>' for s in scopes if s is not None)
    return f'<label>Scope<select name="{name}">{options}</select></label>'


def flash(message: str, error: bool = False) -> str:
    return f'<div class="flash{" error" if error else ""}" role="status">{e(message)}</div>'


def _scope_label(scope: str | None) -> str:
    return e(scope) if scope else "everywhere"


def holdings_table(rows: list[dict[str, Any]], zone: str = "UTC") -> str:
    if not rows:
        return '<p class="muted">No roles or permissions.</p>'
    body = "".join(
        f"<tr><td>{_scope_label(r['scope'])}</td><td>{''.join(f'<span class=tag>{e(x)}</span>' for x in r['roles'])}</td>"
        f"<td>{''.join(f'<span class=tag>{e(p)}</span>' for p in r['permissions'])}</td>"
        f"<td>{time_html(r['until'], zone, until=True, empty='no end')}</td></tr>"
        for r in rows
    )
    return (
        f'<div class="scroll"><table><thead><tr><th>Scope</th><th>Roles</th><th>Permissions</th><th>Until</th>'
        f"</tr></thead><tbody>{body}</tbody></table></div>"
    )


def preview_table(preview: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{e(c['user'])}</td><td>{_scope_label(c['scope'])}</td>"
        f'<td class="gain">{"".join(f"<span class=tag>+ {e(p)}</span>" for p in c["gains"])}</td>'
        f'<td class="lose">{"".join(f"<span class=tag>− {e(p)}</span>" for p in c["loses"])}</td></tr>'
        for c in preview["changes"]
    )
    notes = "".join(f"<li>{e(n)}</li>" for n in preview.get("notes", ()))
    table = (
        (
            f'<div class="scroll"><table id="preview"><thead><tr><th>User</th><th>Scope</th><th>Gains</th>'
            f"<th>Loses</th></tr></thead><tbody>{rows}</tbody></table></div>"
        )
        if rows
        else ""
    )
    return (
        f"<p>{e(preview['summary'])}: {len(preview['changes'])} change(s) for "
        f"{preview['users_considered']} user(s) considered.</p>{table}"
        + (f'<ul class="muted">{notes}</ul>' if notes else "")
    )


class Pages:
    """The UI's handlers; each resolves the current runtime (reloads swap it) and the actor."""

    def __init__(self, holder: Any) -> None:
        self.holder = holder

    def route(self, handler):
        async def handle(request: web.Request) -> web.StreamResponse:
            runtime = self.holder.runtime
            if runtime.store is None:  # a data-path-only runtime (tests): no admin state to show
                return web.Response(status=503, text="the admin UI needs the store", headers=HEADERS)
            try:
                actor = await current_actor(request, runtime)
            except AdminError:
                actor = None
            if actor is None:
                return self._sign_in(request, runtime)
            if actor.is_app:  # an app (apps:) writes the object directory through the API, never through pages
                return web.Response(
                    status=403,
                    text=f"{actor.username} is an app: use the API's object-directory endpoints",
                    headers=HEADERS,
                )
            try:
                if request.method == "POST":
                    form = await request.post()
                    check_csrf(request, runtime, actor, str(form.get(CSRF_FIELD, "")))
                    return await handler(request, runtime, actor, form)
                return await handler(request, runtime, actor, None)
            except AdminError as exc:
                return page(
                    actor,
                    "Not done",
                    flash(exc.message, error=True)
                    + _field_errors(exc)
                    + f'<p><a href="{BASE}/">Back to the admin pages</a></p>',
                    status=exc.status,
                )
            except RolegateError as exc:
                return page(actor, "Unavailable", flash(exc.public_message, error=True), status=exc.status)

        return handle

    @staticmethod
    def _sign_in(request: web.Request, runtime: Any) -> web.Response:
        stage = runtime.identity
        login = stage.login_url_for(None, request.host, request.raw_path) if stage is not None else None
        if login is None:
            return web.Response(status=401, text="Sign-in is not configured.", headers=HEADERS)
        return web.Response(status=302, headers={"Location": login, "Cache-Control": "no-store"})

    # -- pages ------------------------------------------------------------------------------------------------

    async def home(self, request: web.Request, runtime: Any, actor: Actor, form: Any) -> web.StreamResponse:
        target = "matrix" if views.is_admin(actor) else "me"
        raise web.HTTPFound(f"{BASE}/{target}")

    async def me(self, request: web.Request, runtime: Any, actor: Actor, form: Any) -> web.StreamResponse:
        data = views.me(actor)
        zone = display_zone(runtime.config)
        groups = "".join(f"<span class=tag>{e(g)}</span>" for g in data["groups"]) or '<span class="muted">none</span>'
        grants = "".join(
            f"<li><code>{e(g['permission'])}</code> on <code>{e(g['object'])}</code></li>"
            for g in data["object_grants"]
        )
        body = (
            f'<div class="card"><p><strong>{e(data["name"] or data["user"])}</strong> ({e(data["user"])}, '
            f"signed in by {e(data['auth'])}, until "
            f"{time_html(data['signed_in_until'], zone, until=True, empty='the session ends')})</p>"
            f"<p>Groups: {groups}</p></div><h2>What you may do</h2>{holdings_table(data['scopes'], zone)}"
            + (f"<h2>Added to</h2><ul>{grants}</ul>" if grants else "")
        )
        assigned = "".join(
            f"<li><code>{e(a['object'])}</code>"
            + (f" in <code>{e(a['lies_in'])}</code>" if a["lies_in"] else "")
            + (
                f": {', '.join(f'<code>{e(p)}</code>' for p in a['permissions'])}"
                if a["permissions"]
                else ' <span class="muted">(no role grants on it)</span>'
            )
            + "</li>"
            for a in data["assignments"]
        )
        if assigned:
            body += f"<h2>Assigned to you</h2><ul>{assigned}</ul>"
        from rolegate.admin.requests_ui import my_access_section  # imports this module

        body += await my_access_section(runtime, actor)
        return page(actor, "My access", body, "me")

    async def matrix(self, request: web.Request, runtime: Any, actor: Actor, form: Any) -> web.StreamResponse:
        self._admin(actor)
        service = AdminService(runtime, actor)
        _state, policy = await service.snapshot()
        wanted = [r.strip() for r in request.query.get("roles", "").split(",") if r.strip() in policy.roles]
        matrix = build_matrix(policy.config, wanted or None, None, policy=policy)
        head = "".join(f'<th scope="col">{e(r)}</th>' for r in matrix.roles)
        rows = []
        for perm in matrix.permissions:
            cells = "".join(_cell(matrix.cells[(perm, r)].kind, matrix.cells[(perm, r)].text) for r in matrix.roles)
            rows.append(f'<tr><th scope="row">{e(_area(perm))}<span class="perm">{e(perm)}</span></th>{cells}</tr>')
        body = (
            f'<p class="muted">Permissions by role (✓ granted, — not granted; otherwise the condition under which it is). '
            f'Export: <a href="/.rolegate/api/v1/matrix?format=csv">CSV</a> · '
            f'<a href="/.rolegate/api/v1/matrix?format=md">Markdown</a> · '
            f'<a href="/.rolegate/api/v1/export">live policy (YAML)</a></p>'
            f'<label>Filter <input data-filter="matrix" placeholder="e.g. documents"></label>'
            f'<div class="scroll card" style="padding:0"><table class="matrix" id="matrix"><thead><tr>'
            f'<th scope="col">Area</th>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'
        )
        return page(actor, "Permissions by role", body, "matrix")

    async def bindings(self, request: web.Request, runtime: Any, actor: Actor, form: Any) -> web.StreamResponse:
        self._admin(actor)
        service = AdminService(runtime, actor)
        items = await service.bindings()
        state, policy = await service.snapshot()
        people = await service.people()
        zone = display_zone(runtime.config)
        rows = []
        for b in items:
            subject = (
                f"group <strong>{e(b['group'])}</strong>"
                if b["group"]
                else f"user <strong>{e(b['user'] or '')}</strong>"
            )
            what = (
                f"role <strong>{e(b['role'])}</strong>"
                if b["role"]
                else f"<code>{e(b['permission'] or '')}</code> on <code>{e(b['object'] or '')}</code>"
            )
            rows.append(
                f"<tr><td>{subject}</td><td>{what}</td><td>{_scope_label(b['scope'])}</td>"
                f"<td>{time_html(b['until'], zone, until=True)}</td><td>{remove_button(actor, b)}</td></tr>"
            )
        group_options = "".join(f'<option value="{e(g)}">' for g in people.groups())
        # Offer exactly what the signed-in person may hand out: the roles they manage, where they manage them.
        roles, scopes = choices(actor, "roles", policy.roles)
        role_options = "".join(f'<option value="{e(r)}">{e(r)}</option>' for r in roles)
        scope_field = scope_picker(scopes)
        msg = request.query.get("applied")
        body = (
            (flash(f"Applied: {msg}") if msg else "")
            + f'<div class="card"><h2 style="margin-top:0">Map a group (or user) to a role</h2>'
            f'<form method="post" action="{BASE}/bindings/preview" class="grid" id="new-binding">{csrf_input(actor)}'
            f'<label>Subject<select name="kind"><option value="group">group</option>'
            f'<option value="user">user</option></select></label>'
            f'<label>Name<input name="subject" required list="groups" autocomplete="off"></label>'
            f'<datalist id="groups">{group_options}</datalist>'
            f'<label>Role<select name="role">{role_options}</select></label>'
            f"{scope_field}"
            f'<label>Until<input name="until" type="date"></label>'
            f'<label>Note<input name="note" maxlength="500"></label>'
            f'<button type="submit"{"" if roles else " disabled"}>Preview</button></form>'
            + ("" if roles else '<p class="muted">No role you hold manages other roles.</p>')
            + "</div>"
            f'<h2>Current mappings</h2><div class="scroll"><table id="bindings"><thead><tr><th>Who</th>'
            f"<th>Gets</th><th>Where</th><th>Until</th><th></th></tr></thead><tbody>{''.join(rows)}</tbody>"
            f"</table></div>"
        )
        return page(actor, "Group-to-role mappings", body, "bindings")

    async def binding_preview(self, request: web.Request, runtime: Any, actor: Actor, form: Any) -> web.StreamResponse:
        body_in = _binding_from_form(form)
        change = await AdminService(runtime, actor).create_binding(body_in, dry_run=True)
        hidden = "".join(
            f'<input type="hidden" name="{e(k)}" value="{e(str(form.get(k, "")))}">'
            for k in ("kind", "subject", "role", "scope", "until", "note")
        )
        body = (
            f'<div class="card"><h2 style="margin-top:0">Preview</h2>{preview_table(change.preview)}'
            f'<form method="post" action="{BASE}/bindings/apply" class="inline">{csrf_input(actor)}{hidden}'
            f'<button type="submit" id="apply">Apply</button></form> '
            f'<a href="{BASE}/bindings">Cancel</a></div>'
        )
        return page(actor, "Preview the mapping", body, "bindings")

    async def binding_apply(self, request: web.Request, runtime: Any, actor: Actor, form: Any) -> web.StreamResponse:
        change = await AdminService(runtime, actor).create_binding(_binding_from_form(form), dry_run=False)
        raise web.HTTPSeeOther(f"{BASE}/bindings?{urlencode({'applied': _describe(change)})}")

    async def binding_delete(self, request: web.Request, runtime: Any, actor: Actor, form: Any) -> web.StreamResponse:
        key = request.match_info["id"]
        version = f'"v{form.get("version", "")}"'
        service = AdminService(runtime, actor)
        if form.get("confirm") == "1":
            await service.delete_binding(key, version, dry_run=False)
            raise web.HTTPSeeOther(f"{BASE}/bindings?{urlencode({'applied': f'removed {key}'})}")
        change = await service.delete_binding(key, version, dry_run=True)
        body = (
            f'<div class="card">{preview_table(change.preview)}'
            f'<form method="post" action="{BASE}/bindings/{quote(key)}/delete" class="inline" '
            f'data-confirm="Remove this mapping?">{csrf_input(actor)}'
            f'<input type="hidden" name="version" value="{e(str(form.get("version", "")))}">'
            f'<input type="hidden" name="confirm" value="1"><button class="danger" id="apply">Remove</button></form> '
            f'<a href="{BASE}/bindings">Cancel</a></div>'
        )
        return page(actor, "Preview the removal", body, "bindings")

    async def users(self, request: web.Request, runtime: Any, actor: Actor, form: Any) -> web.StreamResponse:
        self._admin(actor)
        people = await AdminService(runtime, actor).people()
        rows = "".join(
            f'<tr><td><a href="{BASE}/users/{quote(p.username)}">{e(p.username)}</a></td><td>{e(p.name or "")}</td>'
            f"<td>{''.join(f'<span class=tag>{e(g)}</span>' for g in sorted(p.groups))}</td>"
            f"<td>{'disabled' if p.disabled else ''}</td></tr>"
            for p in people.people
        )
        body = (
            f'<p class="muted">Source: {e(people.source)}.</p>'
            f'<label>Filter <input data-filter="users" placeholder="name or group"></label>'
            f'<div class="scroll"><table id="users"><thead><tr><th>User</th><th>Name</th><th>Groups</th><th></th>'
            f"</tr></thead><tbody>{rows}</tbody></table></div>"
        )
        return page(actor, "Users", body, "users")

    async def audit(self, request: web.Request, runtime: Any, actor: Actor, form: Any) -> web.StreamResponse:
        actor.require(AUDIT_VIEW, None, "read the audit trail")
        q = {k: v for k, v in request.query.items() if v and k in AuditQuery.model_fields}
        try:
            query = AuditQuery.model_validate(q)
            events = await views.audit_events(runtime.store, query)
            problem = ""
        except ValidationError as exc:
            events, problem = [], _field_errors(from_validation(exc))
        except Invalid as exc:
            events, problem = [], _field_errors(exc)
        kinds = "".join(
            f'<option value="{k}"{" selected" if q.get("kind") == k else ""}>{k}</option>'
            for k in ("", "decision", "request", "admin_change", "daypass", "sync", "signin", "signout")
        )
        zone = display_zone(runtime.config)
        rows = "".join(
            f"<tr><td>{time_html(ev.get('ts', ev.get('time')), zone, seconds=True, named=False)}</td>"
            f"<td>{e(ev.get('kind', ''))}</td>"
            f"<td>{e(str(ev.get('user') or ''))}</td><td>{e(_summary(ev))}</td></tr>"
            for ev in events
        )
        body = (
            f'<div class="card"><form method="get" class="grid" id="audit-filters">'
            f'<label>User<input name="user" value="{e(q.get("user", ""))}"></label>'
            f'<label>Kind<select name="kind">{kinds}</select></label>'
            f'<label>Path starts with<input name="path_prefix" value="{e(q.get("path_prefix", ""))}"></label>'
            f'<label>Since<input name="since" value="{e(q.get("since", ""))}" placeholder="24h or 2025-01-31">'
            f'</label><button type="submit">Filter</button></form></div>{problem}'
            f'<div class="scroll"><table id="audit"><thead><tr><th>Time ({e(zone)})</th><th>Kind</th><th>Who</th>'
            f"<th>What</th>"
            f"</tr></thead><tbody>{rows}</tbody></table></div>"
        )
        return page(actor, "Audit log", body, "audit")

    @staticmethod
    def _admin(actor: Actor) -> None:
        if not views.is_admin(actor):
            raise Denied("this page needs one of rolegate's admin permissions")


def _cell(kind: str, text: str) -> str:
    # Plain glyphs instead of the seed's emoji: they render without an emoji font (phones, kiosks).
    if kind == "allow":
        return '<td class="allow"><span aria-label="granted">✓</span></td>'
    if kind in ("none", "denied"):
        label = "denied by the role" if kind == "denied" else "not granted"
        return f'<td class="{kind}"><span aria-label="{label}">—</span></td>'
    return f'<td class="conditional">{e(text)}</td>'


def _area(permission: str) -> str:
    resource, _, action = permission.partition(":")
    return f"{resource.replace('_', ' ').capitalize()}: {action.replace(':', ' ').replace('_', ' ')}"


def _summary(event: dict[str, Any]) -> str:
    kind = event.get("kind")
    if kind == "decision":
        return f"{event.get('decision')} {event.get('method')} {event.get('path')} ({event.get('permission') or '-'})"
    if kind == "admin_change":
        return f"{event.get('action')} {event.get('target')}: {event.get('before')} → {event.get('after')}"
    if kind == "request":
        return f"{event.get('method')} {event.get('path')} → {event.get('status')}"
    if kind == "daypass":
        return f"{event.get('action')} pass {event.get('pass_id')} {event.get('scope') or ''}"
    return ", ".join(
        f"{k}={v}"
        for k, v in event.items()
        if k not in ("seq", "ts", "time", "kind", "hash", "v", "id", "user") and v not in (None, "", [])
    )


def _field_errors(exc: AdminError) -> str:
    if not exc.errors:
        return ""
    return (
        '<ul class="flash error">'
        + "".join(f"<li><strong>{e(err['field'])}</strong>: {e(err['message'])}</li>" for err in exc.errors)
        + "</ul>"
    )


def _binding_from_form(form: Any) -> BindingIn:
    kind = str(form.get("kind", "group"))
    data: dict[str, Any] = {
        "role": str(form.get("role", "")) or None,
        "note": str(form.get("note", "")),
        "permission": str(form.get("permission", "")).strip() or None,
        "object": str(form.get("object", "")).strip() or None,
    }
    subject = str(form.get("subject", "")).strip()
    if kind not in ("group", "user"):
        raise Invalid.field("kind", "choose group or user")
    data[kind] = subject or None
    scope = str(form.get("scope", "")).strip()
    data["scope"] = scope or None
    until = str(form.get("until", "")).strip()
    if until:
        data["until"] = until + "T23:59:59Z" if len(until) == 10 else until
    try:
        return BindingIn.model_validate(data)
    except ValidationError as exc:
        raise from_validation(exc) from None


def _describe(change: Change) -> str:
    r = change.resource or {}
    who = f"group {r.get('group')}" if r.get("group") else f"user {r.get('user')}"
    what = r.get("role") or f"{r.get('permission')} on {r.get('object')}"
    return f"{who} → {what} {('at ' + r['scope']) if r.get('scope') else 'everywhere'}"


def add_ui_routes(reserved: web.Application, holder: Any) -> None:
    pages = Pages(holder)
    base = BASE.removeprefix("/.rolegate")
    r = reserved.router
    r.add_get(base, pages.route(pages.home))
    r.add_get(base + "/", pages.route(pages.home))
    r.add_get(base + "/me", pages.route(pages.me))
    r.add_get(base + "/matrix", pages.route(pages.matrix))
    r.add_get(base + "/bindings", pages.route(pages.bindings))
    r.add_post(base + "/bindings/preview", pages.route(pages.binding_preview))
    r.add_post(base + "/bindings/apply", pages.route(pages.binding_apply))
    r.add_post(base + "/bindings/{id}/delete", pages.route(pages.binding_delete))
    r.add_get(base + "/users", pages.route(pages.users))
    r.add_get(base + "/audit", pages.route(pages.audit))
    from rolegate.admin.user_ui import add_user_pages  # imports this module: registered here, not at the top

    add_user_pages(r, pages, base)
    from rolegate.admin.requests_ui import add_request_pages  # imports this module, as user_ui does

    add_request_pages(r, pages, base)
    try:
        from rolegate.admin.daypass_ui import add_daypass_pages  # imports this module, as user_ui does
    except ImportError:  # the day-pass stage is not installed yet
        pass
    else:
        add_daypass_pages(r, pages, base)
    r.add_static(base + "/static", STATIC, append_version=False)
