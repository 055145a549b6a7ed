"""The user page of the admin UI: who a user is, what they hold, why a request would pass, and the two
per-user switches of seed 001 — "if enabled in user settings" and "if added to a task" — each changed
through a preview of who gains or loses what, like the group-to-role mappings.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web
from pydantic import ValidationError

from rolegate.admin import views
from rolegate.admin.errors import Invalid, from_validation
from rolegate.admin.guard import Actor
from rolegate.admin.models import ExplainIn, UserSettingsIn
from rolegate.admin.service import AdminService, Change
from rolegate.admin.ui import (
    BASE, Pages, _binding_from_form, _describe, _field_errors, csrf_input, e, flash, holdings_table, page,
    preview_table, remove_button,
)


def _user_url(username: str, **query: str) -> str:
    return f"{BASE}/users/{quote(username, safe='')}" + (f"?{urlencode(query)}" if query else "")


async def user_page(request: web.Request, runtime: Any, actor: Actor, form: Any) -> web.StreamResponse:
    Pages._admin(actor)
    username = request.match_info["username"]
    service = AdminService(runtime, actor)
    people = await service.people()
    detail = views.user_detail(people, actor.policy, username)
    q = request.query
    answer = ""
    if q.get("permission") or q.get("url"):
        try:
            explain_in = ExplainIn.model_validate({k: v for k, v in {
                "user": username, "permission": q.get("permission") or None, "scope": q.get("scope") or None,
                "object": q.get("object") or None, "method": q.get("method") or None,
                "url": q.get("url") or None}.items() if v is not None})
            result = views.explain_for(runtime, actor, people, explain_in)
            reasons = "".join(f"<li>{e(r)}</li>" for r in result["reasons"] + result["notes"])
            answer = (f'<div class="flash{"" if result["allowed"] else " error"}" id="explain-result">'
                      f'<strong>{"ALLOWED" if result["allowed"] else "DENIED"}</strong>: {e(result["outcome"])}'
                      f'<ul>{reasons}</ul></div>')
        except ValidationError as exc:
            answer = _field_errors(from_validation(exc))
    groups = "".join(f"<span class=tag>{e(g)}</span>" for g in detail["groups"])
    done = q.get("done")
    body = ((flash(f"Applied: {done}") if done else "")
            + f'<div class="card"><p><strong>{e(detail["name"] or username)}</strong> ({e(username)})'
            f'{" — disabled" if detail["disabled"] else ""}</p><p>Groups: {groups or "none"}</p></div>'
            f'<h2>Roles and effective permissions</h2>{holdings_table(detail["scopes"])}'
            + await _settings_card(service, actor, username)
            + await _grants_card(service, actor, username)
            + f'<h2>Why? Explain a decision</h2><div class="card"><form method="get" class="grid" id="explain">'
            f'<label>Permission<input name="permission" value="{e(q.get("permission", ""))}" '
            f'placeholder="documents:view"></label>'
            f'<label>Scope<input name="scope" value="{e(q.get("scope", ""))}" placeholder="building:a"></label>'
            f'<label>Object<input name="object" value="{e(q.get("object", ""))}" placeholder="task:42"></label>'
            f'<label>or URL<input name="url" value="{e(q.get("url", ""))}" placeholder="/buildings/a/trends">'
            f'</label><button type="submit">Explain</button></form>{answer}</div>')
    return page(actor, f"User {username}", body, "users")


async def _settings_card(service: AdminService, actor: Actor, username: str) -> str:
    data = await service.user_settings(username)
    described = getattr(service.config, "user_settings", {})
    boxes = []
    for name, perms in data["available"].items():
        setting = described.get(name)
        label = f'{e(name)}{f" — {e(setting.description)}" if setting is not None and setting.description else ""}'
        tags = "".join(f"<span class=tag>{e(p)}</span>" for p in perms)
        if name in data["from_config"]:
            boxes.append(f'<label class="check"><input type="checkbox" checked disabled> {label} {tags} '
                         f'<span class="muted">(config file)</span></label>')
        else:
            on = " checked" if name in data["settings"] else ""
            boxes.append(f'<label class="check"><input type="checkbox" name="setting" value="{e(name)}"{on}> '
                         f'{label} {tags}</label>')
    if not boxes:
        return '<h2>User settings</h2><p class="muted">The config defines no user settings.</p>'
    return (f'<h2>User settings</h2><div class="card"><form method="post" action="{_user_url(username)}/settings" '
            f'id="settings">{csrf_input(actor)}<input type="hidden" name="version" value="{data["version"]}">'
            f'{"".join(boxes)}<button type="submit">Preview</button></form></div>')


async def _grants_card(service: AdminService, actor: Actor, username: str) -> str:
    _state, policy = await service.snapshot()
    rows = []
    for g in await service.bindings(grants=True):
        if g["user"] != username:
            continue
        rows.append(f'<tr><td><code>{e(g["permission"] or "")}</code></td><td><code>{e(g["object"] or "")}</code></td>'
                    f'<td>{e(g["scope"] or "everywhere")}</td><td>{e(g["until"] or "")}</td>'
                    f'<td>{remove_button(actor, g)}</td></tr>')
    # What the actor's roles assign first (adding people to tasks is what this form is mostly for).
    assigns = actor.assigns_at(None)
    ordered = sorted(policy.catalogue_order, key=lambda p: p not in assigns)
    options = "".join(f'<option value="{e(p)}">{e(p)}</option>' for p in ordered)
    table = (f'<div class="scroll"><table id="grants"><thead><tr><th>Permission</th><th>Object</th><th>Where</th>'
             f'<th>Until</th><th></th></tr></thead><tbody>{"".join(rows)}</tbody></table></div>') if rows else ""
    return (f'<h2>Added to (object grants)</h2>{table}<div class="card">'
            f'<form method="post" action="{_user_url(username)}/grants" class="grid" id="grant">{csrf_input(actor)}'
            f'<label>Permission<select name="permission">{options}</select></label>'
            f'<label>Object<input name="object" required placeholder="task:42"></label>'
            f'<label>Scope<input name="scope" placeholder="building:a (empty: everywhere)"></label>'
            f'<label>Until<input name="until" type="date"></label>'
            f'<label>Note<input name="note" maxlength="500"></label>'
            f'<button type="submit">Preview</button></form></div>')


def _confirm_page(actor: Actor, title: str, change: Change, action: str, hidden: list[tuple[str, str]],
                  back: str) -> web.Response:
    fields = "".join(f'<input type="hidden" name="{e(k)}" value="{e(v)}">' for k, v in hidden)
    body = (f'<div class="card"><h2 style="margin-top:0">Preview</h2>{preview_table(change.preview)}'
            f'<form method="post" action="{action}" class="inline">{csrf_input(actor)}{fields}'
            f'<input type="hidden" name="confirm" value="1"><button type="submit" id="apply">Apply</button></form> '
            f'<a href="{back}">Cancel</a></div>')
    return page(actor, title, body, "users")


async def settings_post(request: web.Request, runtime: Any, actor: Actor, form: Any) -> web.StreamResponse:
    username = request.match_info["username"]
    names = [str(n) for n in form.getall("setting", [])]
    version = str(form.get("version", ""))
    try:
        body_in = UserSettingsIn.model_validate({"settings": names})
    except ValidationError as exc:
        raise from_validation(exc) from None
    confirmed = form.get("confirm") == "1"
    change = await AdminService(runtime, actor).put_user_settings(username, body_in, f'"v{version}"',
                                                                   dry_run=not confirmed)
    if confirmed:
        on = ", ".join(sorted(names)) or "none"
        raise web.HTTPSeeOther(_user_url(username, done=f"user settings of {username}: {on}"))
    return _confirm_page(actor, f"Preview: user settings of {username}", change, f"{_user_url(username)}/settings",
                         [("version", version), *(("setting", n) for n in names)], _user_url(username))


async def grant_post(request: web.Request, runtime: Any, actor: Actor, form: Any) -> web.StreamResponse:
    username = request.match_info["username"]
    fields = {k: str(form.get(k, "")) for k in ("permission", "object", "scope", "until", "note")}
    if not fields["permission"] or not fields["object"]:
        raise Invalid.field("object", "an object grant names a permission and an object, e.g. task:42")
    body_in = _binding_from_form({**fields, "kind": "user", "subject": username})
    confirmed = form.get("confirm") == "1"
    change = await AdminService(runtime, actor).create_binding(body_in, dry_run=not confirmed)
    if confirmed:
        raise web.HTTPSeeOther(_user_url(username, done=_describe(change)))
    return _confirm_page(actor, f"Preview: add {username} to {fields['object']}", change,
                         f"{_user_url(username)}/grants", list(fields.items()), _user_url(username))


def add_user_pages(router: web.UrlDispatcher, pages: Pages, base: str) -> None:
    router.add_get(base + "/users/{username}", pages.route(user_page))
    router.add_post(base + "/users/{username}/settings", pages.route(settings_post))
    router.add_post(base + "/users/{username}/grants", pages.route(grant_post))
