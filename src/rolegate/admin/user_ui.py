"""The user page of the admin UI: who a user is, what they hold, why a request would pass, and the two
per-user switches of seed 001 — "if enabled in user settings" (per building) and "if added to a task" —
each changed through a preview of who gains or loses what, like the group-to-role mappings. Each form
offers exactly what the signed-in person manages, where they manage it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web
from pydantic import ValidationError

from rolegate.admin import views
from rolegate.admin.errors import Invalid, from_validation
from rolegate.admin.delegation import choices
from rolegate.admin.guard import Actor
from rolegate.admin.models import ExplainIn, UserSettingsIn
from rolegate.admin.service import AdminService, Change
from rolegate.admin.ui import (
    BASE,
    Pages,
    _binding_from_form,
    _describe,
    _field_errors,
    csrf_input,
    e,
    flash,
    holdings_table,
    page,
    preview_table,
    remove_button,
    scope_picker,
)
from rolegate.display_time import display_zone, time_html


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
            explain_in = ExplainIn.model_validate(
                {
                    k: v
                    for k, v in {
                        "user": username,
                        "permission": q.get("permission") or None,
                        "scope": q.get("scope") or None,
                        "object": q.get("object") or None,
                        "method": q.get("method") or None,
                        "url": q.get("url") or None,
                    }.items()
                    if v is not None
                }
            )
            result = views.explain_for(runtime, actor, people, explain_in)
            reasons = "".join(f"<li>{e(r)}</li>" for r in result["reasons"] + result["notes"])
            answer = (
                f'<div class="flash{"" if result["allowed"] else " error"}" id="explain-result">'
                f"<strong>{'ALLOWED' if result['allowed'] else 'DENIED'}</strong>: {e(result['outcome'])}"
                f"<ul>{reasons}</ul></div>"
            )
        except ValidationError as exc:
            answer = _field_errors(from_validation(exc))
    groups = "".join(f"<span class=tag>{e(g)}</span>" for g in detail["groups"])
    done = q.get("done")
    body = (
        (flash(f"Applied: {done}") if done else "")
        + f'<div class="card"><p><strong>{e(detail["name"] or username)}</strong> ({e(username)})'
        f"{' — disabled' if detail['disabled'] else ''}</p><p>Groups: {groups or 'none'}</p></div>"
        f"<h2>Roles and effective permissions</h2>{holdings_table(detail['scopes'], display_zone(runtime.config))}"
        + await _settings_card(service, actor, username, q.get("settings_scope"))
        + await _grants_card(service, actor, username)
        + f'<h2>Why? Explain a decision</h2><div class="card"><form method="get" class="grid" id="explain">'
        f'<label>Permission<input name="permission" value="{e(q.get("permission", ""))}" '
        f'placeholder="documents:view"></label>'
        f'<label>Scope<input name="scope" value="{e(q.get("scope", ""))}" placeholder="building:a"></label>'
        f'<label>Object<input name="object" value="{e(q.get("object", ""))}" placeholder="task:42"></label>'
        f'<label>or URL<input name="url" value="{e(q.get("url", ""))}" placeholder="/buildings/a/trends">'
        f'</label><button type="submit">Explain</button></form>{answer}</div>'
    )
    return page(actor, f"User {username}", body, "users")


def _where(scope: str | None) -> str:
    return scope or "everywhere"


async def _settings_card(service: AdminService, actor: Actor, username: str, chosen: str | None) -> str:
    """The settings on for the user (where, by whom, when), and a form for one scope the actor manages.

    The form offers only the scopes where the signed-in person manages settings, and there only the
    settings they manage: roles are per building, so settings are switched per building too.
    """
    data = await service.user_settings(username)
    described = getattr(service.config, "user_settings", {})
    if not described:
        return '<h2>User settings</h2><p class="muted">The config defines no user settings.</p>'
    rows = "".join(
        f"<tr><td>{e(sw['setting'])}</td><td>{e(_where(sw['scope']))}</td>"
        f"<td>{e(sw['by'] or '')}</td><td>{e(sw['at'] or '')}</td><td>{e(sw['source'])}</td></tr>"
        for sw in data["on"]
    )
    table = (
        (
            f'<div class="scroll"><table id="settings-on"><thead><tr><th>Setting</th><th>Where</th><th>By</th>'
            f"<th>When</th><th>From</th></tr></thead><tbody>{rows}</tbody></table></div>"
        )
        if rows
        else ""
    )
    names, scopes = choices(actor, "settings", described)
    if not scopes:
        return f'<h2>User settings</h2>{table}<p class="muted">No role you hold manages user settings.</p>'
    scope = chosen if chosen in scopes or (chosen == "" and None in scopes) else scopes[0]
    scope = None if scope == "" else scope
    manages = actor.manages_at(scope).settings
    picker = "".join(
        f'<a href="{_user_url(username, settings_scope=s or "")}"'
        f"{' aria-current=page' if s == scope else ''}>{e(_where(s))}</a> "
        for s in scopes
    )
    on_api = {sw["setting"] for sw in data["on"] if sw["source"] == "api" and sw["scope"] == scope}
    on_config = {sw["setting"] for sw in data["on"] if sw["source"] == "config" and sw["scope"] == scope}
    boxes = []
    for name in described:
        setting = described[name]
        label = f"{e(name)}{f' — {e(setting.description)}' if setting.description else ''}"
        unlocks = "".join(f"<span class=tag>{e(p)}</span>" for p in data["available"].get(name, ()))
        if name in on_config:
            boxes.append(
                f'<label class="check"><input type="checkbox" checked disabled> {label} {unlocks} '
                f'<span class="muted">(config file)</span></label>'
            )
        elif name in manages:
            on = " checked" if name in on_api else ""
            boxes.append(
                f'<label class="check"><input type="checkbox" name="setting" value="{e(name)}"{on}> '
                f"{label} {unlocks}</label>"
            )
        elif name in on_api:  # on, but not the actor's to switch: kept as it is
            boxes.append(
                f'<label class="check"><input type="checkbox" checked disabled> {label} {unlocks} '
                f'<span class="muted">(not yours to switch here)</span></label>'
                f'<input type="hidden" name="setting" value="{e(name)}">'
            )
    return (
        f'<h2>User settings</h2>{table}<div class="card"><p>Where: {picker}</p>'
        f'<p class="muted">A setting grants nothing by itself: it adds what the roles {e(username)} holds '
        f"{e(_where(scope))} list under if_setting.</p>"
        f'<form method="post" action="{_user_url(username)}/settings" id="settings">{csrf_input(actor)}'
        f'<input type="hidden" name="version" value="{data["version"]}">'
        f'<input type="hidden" name="scope" value="{e(scope or "")}">'
        f'{"".join(boxes)}<button type="submit">Preview</button></form></div>'
    )


async def _grants_card(service: AdminService, actor: Actor, username: str) -> str:
    _state, policy = await service.snapshot()
    rows = []
    for g in await service.bindings(grants=True):
        if g["user"] != username:
            continue
        rows.append(
            f"<tr><td><code>{e(g['permission'] or '')}</code></td><td><code>{e(g['object'] or '')}</code></td>"
            f"<td>{e(g['scope'] or 'everywhere')}</td>"
            f"<td>{time_html(g['until'], display_zone(service.runtime.config), until=True)}</td>"
            f"<td>{remove_button(actor, g)}</td></tr>"
        )
    table = (
        (
            f'<div class="scroll"><table id="grants"><thead><tr><th>Permission</th><th>Object</th><th>Where</th>'
            f"<th>Until</th><th></th></tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
        )
        if rows
        else ""
    )
    # Exactly what the signed-in person may assign (manages.assigns), and where: a responsible adds people to
    # the tasks of their building.
    permissions, scopes = choices(actor, "assigns", policy.catalogue_order)
    if not permissions:
        return f'<h2>Added to (object grants)</h2>{table}<p class="muted">No role you hold assigns anything.</p>'
    options = "".join(f'<option value="{e(p)}">{e(p)}</option>' for p in permissions)
    tasks = sorted(
        child
        for child in policy.scopes.parents
        if child.split(":", 1)[0] in policy.scopes.parent_types
        and any(s is None or s in policy.scopes.chain(child) for s in scopes)
    )
    known = "".join(f'<option value="{e(t)}">' for t in tasks)
    return (
        f'<h2>Added to (object grants)</h2>{table}<div class="card">'
        f'<form method="post" action="{_user_url(username)}/grants" class="grid" id="grant">{csrf_input(actor)}'
        f'<label>Permission<select name="permission">{options}</select></label>'
        f'<label>Object<input name="object" required placeholder="task:42" list="objects" autocomplete="off">'
        f'</label><datalist id="objects">{known}</datalist>'
        f"{scope_picker(scopes)}"
        f'<label>Until<input name="until" type="date"></label>'
        f'<label>Note<input name="note" maxlength="500"></label>'
        f'<button type="submit">Preview</button></form></div>'
    )


def _confirm_page(
    actor: Actor, title: str, change: Change, action: str, hidden: list[tuple[str, str]], back: str
) -> web.Response:
    fields = "".join(f'<input type="hidden" name="{e(k)}" value="{e(v)}">' for k, v in hidden)
    body = (
        f'<div class="card"><h2 style="margin-top:0">Preview</h2>{preview_table(change.preview)}'
        f'<form method="post" action="{action}" class="inline">{csrf_input(actor)}{fields}'
        f'<input type="hidden" name="confirm" value="1"><button type="submit" id="apply">Apply</button></form> '
        f'<a href="{back}">Cancel</a></div>'
    )
    return page(actor, title, body, "users")


async def settings_post(request: web.Request, runtime: Any, actor: Actor, form: Any) -> web.StreamResponse:
    username = request.match_info["username"]
    names = [str(n) for n in form.getall("setting", [])]
    version = str(form.get("version", ""))
    scope = str(form.get("scope", "")).strip()
    try:
        body_in = UserSettingsIn.model_validate({"settings": names, "scope": scope or None})
    except ValidationError as exc:
        raise from_validation(exc) from None
    confirmed = form.get("confirm") == "1"
    change = await AdminService(runtime, actor).put_user_settings(
        username, body_in, f'"v{version}"', dry_run=not confirmed
    )
    if confirmed:
        on = ", ".join(sorted(names)) or "none"
        raise web.HTTPSeeOther(
            _user_url(username, done=f"user settings of {username} {_where(scope or None)}: {on}", settings_scope=scope)
        )
    return _confirm_page(
        actor,
        f"Preview: user settings of {username} {_where(scope or None)}",
        change,
        f"{_user_url(username)}/settings",
        [("version", version), ("scope", scope), *(("setting", n) for n in names)],
        _user_url(username),
    )


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
    return _confirm_page(
        actor,
        f"Preview: add {username} to {fields['object']}",
        change,
        f"{_user_url(username)}/grants",
        list(fields.items()),
        _user_url(username),
    )


def add_user_pages(router: web.UrlDispatcher, pages: Pages, base: str) -> None:
    router.add_get(base + "/users/{username}", pages.route(user_page))
    router.add_post(base + "/users/{username}/settings", pages.route(settings_post))
    router.add_post(base + "/users/{username}/grants", pages.route(grant_post))
