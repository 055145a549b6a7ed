"""The "Requests" pages of the admin UI, made for a phone: ask for access (from the 403 page's button), see
what you asked and what you were given, and — for the people who may grant it — open a request, see
what approving changes (the preview), approve (the least role, or another you manage; the wished time,
or less) or deny with a reason.

Every form carries the session's CSRF token; approving goes through the same checks as the API.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web
from pydantic import ValidationError

from rolegate.admin.errors import AdminError, Missing, from_validation
from rolegate.admin.guard import Actor
from rolegate.admin.models import valid_id
from rolegate.admin.request_models import AccessRequestIn, ApproveIn, DenyIn
from rolegate.admin.requests import AccessRequests, approvers_for, section
from rolegate.admin.ui import BASE, Pages, csrf_input, e, flash, page, preview_table
from rolegate.admin.wording import attempt_words, duration_words
from rolegate.config.types import parse_duration
from rolegate.display_time import display_zone, duration_text, time_html

PAGE = f"{BASE}/requests"
# What a requester picks from (those within access_requests.max_duration, and the maximum itself).
DURATIONS = (15 * 60, 30 * 60, 3600, 2 * 3600, 4 * 3600, 8 * 3600, 86400, 3 * 86400, 7 * 86400)
_STATUS = {"pending": "waiting for an answer", "approved": "approved", "denied": "denied", "expired": "expired"}


def _url(key: str, **query: str) -> str:
    return f"{PAGE}/{quote(key, safe='')}" + (f"?{urlencode(query)}" if query else "")


def _seconds(duration: str) -> float:
    try:
        return parse_duration(duration).total_seconds()
    except ValueError:
        return 0.0


def _closest_names(found: list[Any]) -> str:
    """The approvers at the closest scope, as the 403 page names them (at most three)."""
    closest = [a for a in found if a.scope == found[0].scope] if found else []
    names = ", ".join(a.name or a.username for a in closest[:3])
    return names + (" and others" if len(closest) > 3 else "")


def _key(request: web.Request) -> str:
    key = request.match_info["id"]
    if not valid_id(key):
        raise Missing("no such request")
    return key


def _duration_words(seconds: float) -> str:
    return duration_words(seconds)


def _card(runtime: Any, r: dict[str, Any], *, mine: bool) -> str:
    zone = display_zone(runtime.config)
    who = "" if mine else f'<p class="who-asks"><strong>{e(r["name"] or r["user"])}</strong> ({e(r["user"])})</p>'
    status = _STATUS.get(r["status"], r["status"])
    if r["active"]:
        status = (
            f"access until {time_html(r['grant']['until'], zone, until=True)} "
            f"({e(duration_text(r['grant']['seconds_left']))} left)"
        )
    elif r["status"] == "approved":
        status = "approved; the access has ended"
    else:
        status = e(status)
    return (
        f'<div class="card request" id="request-{e(r["id"])}">{who}'
        f'<p class="what"><strong>{e(r["what"])}</strong> for {e(_duration_words(r["duration"]))}</p>'
        f'<p class="muted">“{e(r["reason"])}”</p><p>{status}</p>'
        f'<p><a href="{_url(r["id"])}">Open</a></p></div>'
    )


async def list_page(request: web.Request, runtime: Any, actor: Actor, form: Any) -> web.StreamResponse:
    data = await AccessRequests(runtime, actor).listing()
    review = (
        "".join(_card(runtime, r, mine=False) for r in data["to_review"])
        or '<p class="muted">Nothing waits for you.</p>'
    )
    mine = (
        "".join(_card(runtime, r, mine=True) for r in data["mine"])
        or '<p class="muted">You have asked for nothing.</p>'
    )
    body = f'<h2>To review</h2><div id="to-review">{review}</div><h2>Yours</h2><div id="mine">{mine}</div>'
    return page(actor, "Requests", body, "requests")


def _tried(request: web.Request) -> tuple[str, str | None, str | None, str | None]:
    q = request.query
    return (q.get("permission", ""), q.get("scope") or None, q.get("method") or None, q.get("path") or None)


async def new_page(request: web.Request, runtime: Any, actor: Actor, form: Any) -> web.StreamResponse:
    """The form behind the 403 page's "Request access": why, and for how long."""
    settings = section(runtime.config)
    permission, scope, method, path = _tried(request)
    try:
        tried = AccessRequestIn.model_validate(
            {"permission": permission, "scope": scope, "reason": "-", "duration": 60, "method": method, "path": path}
        )
    except ValidationError as exc:
        raise from_validation(exc) from None
    if tried.permission not in actor.policy.catalogue:
        raise AdminError(f"{tried.permission!r} is not a permission here")
    what = attempt_words(runtime.config, tried.permission, tried.scope)
    found = await approvers_for(runtime, actor.policy, tried.permission, tried.scope, actor.username)
    names = _closest_names(found)
    longest = settings.max_duration.total_seconds()
    options = [d for d in DURATIONS if d < longest] + [longest]
    default = 7200 if 7200 in options else options[0]
    choices = "".join(
        f'<option value="{_format_duration_s(d)}"{" selected" if d == default else ""}>{e(_duration_words(d))}</option>'
        for d in options
    )
    hidden = "".join(
        f'<input type="hidden" name="{k}" value="{e(v)}">'
        for k, v in (
            ("permission", tried.permission),
            ("scope", tried.scope or ""),
            ("method", tried.method or ""),
            ("path", tried.path or ""),
        )
    )
    if not found:
        body = (
            f'<div class="card"><p><strong>{e(what)}</strong></p>'
            f"<p>Nobody can grant this here. Ask your administrator.</p></div>"
        )
        return page(actor, "Request access", body, "requests")
    body = (
        f'<div class="card"><p class="what">You tried to: <strong>{e(what)}</strong>'
        + (f' <span class="muted">({e(tried.method or "")} {e(tried.path)})</span>' if tried.path else "")
        + f"</p><p>Your request goes to <strong>{e(names)}</strong>.</p>"
        f'<form method="post" action="{PAGE}" id="ask" class="stack">{csrf_input(actor)}{hidden}'
        f'<label>Why do you need it?<textarea name="reason" required maxlength="500" rows="3"></textarea></label>'
        f'<label>For how long?<select name="duration">{choices}</select></label>'
        f'<button type="submit" id="send">Send request</button></form></div>'
    )
    return page(actor, "Request access", body, "requests")


def _format_duration_s(seconds: float) -> str:
    """7200 -> "2h": how a duration is written in forms (and in config)."""
    seconds = int(seconds)
    for unit, factor in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= factor and seconds % factor == 0:
            return f"{seconds // factor}{unit}"
    return f"{seconds}s"


async def create_post(request: web.Request, runtime: Any, actor: Actor, form: Any) -> web.StreamResponse:
    data = {
        k: str(form.get(k, "")).strip() or None for k in ("permission", "scope", "reason", "duration", "method", "path")
    }
    try:
        body = AccessRequestIn.model_validate({k: v for k, v in data.items() if v is not None})
    except ValidationError as exc:
        raise from_validation(exc) from None
    created, out = await AccessRequests(runtime, actor).create(body)
    raise web.HTTPSeeOther(_url(out["id"], sent="1" if created else "again"))


async def detail_page(request: web.Request, runtime: Any, actor: Actor, form: Any) -> web.StreamResponse:
    key = _key(request)
    service = AccessRequests(runtime, actor)
    r = await service.get(key)
    zone = display_zone(runtime.config)
    q = request.query
    notes = {
        ("sent", "1"): "Sent. You will see the answer here.",
        ("sent", "again"): "You asked for this already; it is still open.",
        ("done", "approved"): "Approved.",
        ("done", "denied"): "Denied.",
    }
    top = "".join(flash(text) for (name, value), text in notes.items() if q.get(name) == value)
    first = r["approvers"][0]["scope"] if r["approvers"] else None
    closest = [a for a in r["approvers"] if a["scope"] == first]
    approvers = ", ".join(a["name"] for a in closest[:3]) + (
        f"; {len(r['approvers']) - min(len(closest), 3)} more may answer it"
        if len(r["approvers"]) > min(len(closest), 3)
        else ""
    )
    asked = (
        f'<div class="card"><p class="who-asks"><strong>{e(r["name"] or r["user"])}</strong> ({e(r["user"])}) '
        f'asks to</p><p class="what"><strong>{e(r["what"])}</strong></p>'
        + (f'<p class="muted">{e(r["method"] or "")} {e(r["path"])}</p>' if r["path"] else "")
        + f"<p>for <strong>{e(_duration_words(r['duration']))}</strong></p>"
        f"<p>Reason: “{e(r['reason'])}”</p>"
        f'<p class="muted">Asked {time_html(r["created_at"], zone)}; goes to {e(approvers)}.</p></div>'
    )
    answer = _answer(r, zone)
    action = ""
    if r["status"] == "pending" and r["plans"]:
        action = await _approve_card(request, runtime, actor, service, r)
    elif r["status"] == "pending":
        action = (
            f'<p class="muted">Waiting for an answer; it expires unanswered {time_html(r["expires_at"], zone)}.</p>'
        )
    return page(actor, f"Request: {r['what']}", top + asked + answer + action, "requests")


def _answer(r: dict[str, Any], zone: str) -> str:
    if r["status"] == "approved":
        g = r["grant"] or {}
        left = f"<strong>{e(duration_text(g.get('seconds_left', 0)))} left</strong>" if r["active"] else "it has ended"
        settings = f", with {e(', '.join(g.get('settings') or ()))} on" if g.get("settings") else ""
        return (
            f'<div class="card" id="answer"><p><strong>Approved</strong> by {e(r["decided_by"] or "")}: '
            f"role <strong>{e(g.get('role') or '')}</strong> {e('at ' + g['scope'] if g.get('scope') else 'everywhere')}"
            f"{settings} until {time_html(g.get('until'), zone, until=True)} — {left}.</p>"
            + (f'<p class="muted">“{e(r["answer"])}”</p>' if r["answer"] else "")
            + "</div>"
        )
    if r["status"] == "denied":
        return (
            f'<div class="card" id="answer"><p><strong>Denied</strong> by {e(r["decided_by"] or "")}.</p>'
            f"<p>Why: “{e(r['answer'] or '')}”</p></div>"
        )
    if r["status"] == "expired":
        return '<div class="card" id="answer"><p><strong>Expired</strong>: nobody answered in time.</p></div>'
    return ""


async def _approve_card(
    request: web.Request, runtime: Any, actor: Actor, service: AccessRequests, r: dict[str, Any]
) -> str:
    """The preview of what approving changes, and the approve and deny forms."""
    q = request.query
    plans = r["plans"]
    role = q.get("role") if q.get("role") in {p["role"] for p in plans} else plans[0]["role"]
    duration = q.get("duration") or _format_duration_s(r["duration"])
    problem = ""
    try:
        approve_in = ApproveIn.model_validate({"role": role, "duration": duration})
        result = await service.approve(r["id"], approve_in, dry_run=True)
        preview = preview_table(result["preview"])
        until = time_html(result["until"], display_zone(runtime.config), until=True)
    except ValidationError as exc:
        problem, preview, until = flash(str(from_validation(exc).errors), error=True), "", ""
    except AdminError as exc:
        problem, preview, until = flash(exc.message, error=True), "", ""
    options = "".join(
        f'<option value="{e(p["role"])}"{" selected" if p["role"] == role else ""}>{e(p["role"])}'
        + (f" + {e(', '.join(p['settings']))} on" if p["settings"] else "")
        + "</option>"
        for p in plans
    )
    return (
        f'<h2>If you approve</h2><div class="card" id="preview-card">{problem}'
        + (f"<p>Until {until}:</p>{preview}" if until else "")
        + f'<form method="get" action="{_url(r["id"])}" class="stack" id="recompute">'
        f'<label>Role<select name="role">{options}</select></label>'
        f'<label>For<input name="duration" value="{e(duration)}" inputmode="text" '
        f'autocomplete="off" placeholder="e.g. 1h or 30m (at most as asked)"></label>'
        f'<button type="submit" class="secondary">Show what this changes</button></form></div>'
        f'<div class="card"><form method="post" action="{_url(r["id"])}/approve" class="stack" id="approve">'
        f'{csrf_input(actor)}<input type="hidden" name="role" value="{e(role)}">'
        f'<input type="hidden" name="duration" value="{e(duration)}">'
        f'<label>Note (optional)<input name="note" maxlength="500"></label>'
        f'<button type="submit" id="approve-button">Approve: {e(role)} for '
        f"{e(_duration_words(_seconds(duration)))}</button></form></div>"
        f'<div class="card"><form method="post" action="{_url(r["id"])}/deny" class="stack" id="deny">'
        f'{csrf_input(actor)}<label>Why not?<input name="reason" required maxlength="500"></label>'
        f'<button type="submit" class="danger" id="deny-button">Deny</button></form></div>'
    )


async def approve_post(request: web.Request, runtime: Any, actor: Actor, form: Any) -> web.StreamResponse:
    key = _key(request)
    try:
        body = ApproveIn.model_validate(
            {
                "role": str(form.get("role", "")) or None,
                "duration": str(form.get("duration", "")) or None,
                "note": str(form.get("note", "")),
            }
        )
    except ValidationError as exc:
        raise from_validation(exc) from None
    await AccessRequests(runtime, actor).approve(key, body, dry_run=False)
    raise web.HTTPSeeOther(_url(key, done="approved"))


async def deny_post(request: web.Request, runtime: Any, actor: Actor, form: Any) -> web.StreamResponse:
    key = _key(request)
    try:
        body = DenyIn.model_validate({"reason": str(form.get("reason", ""))})
    except ValidationError as exc:
        raise from_validation(exc) from None
    await AccessRequests(runtime, actor).deny(key, body)
    raise web.HTTPSeeOther(_url(key, done="denied"))


async def my_access_section(runtime: Any, actor: Actor) -> str:
    """For "My access": pending requests and the access granted on request, with the time left."""
    if getattr(runtime.config, "access_requests", None) is None:
        return ""
    data = await AccessRequests(runtime, actor).for_me()
    zone = display_zone(runtime.config)
    temporary = "".join(
        f"<li><strong>{e(t['what'])}</strong> (role {e(t['role'])}) until {time_html(t['until'], zone, until=True)}"
        f" — <strong>{e(duration_text(t['seconds_left']))} left</strong></li>"
        for t in data["temporary_access"]
    )
    pending = "".join(
        f'<li><a href="{_url(r["id"])}">{e(r["what"])}</a> for {e(_duration_words(r["duration"]))}, '
        f"waiting since {time_html(r['created_at'], zone)}</li>"
        for r in data["pending_requests"]
    )
    return (
        "<h2>Temporary access</h2>"
        + (f'<ul id="temporary">{temporary}</ul>' if temporary else '<p class="muted">None.</p>')
        + "<h2>Your open requests</h2>"
        + (f'<ul id="pending">{pending}</ul>' if pending else '<p class="muted">None.</p>')
    )


def add_request_pages(router: web.UrlDispatcher, pages: Pages, base: str) -> None:
    router.add_get(base + "/requests", pages.route(list_page))
    router.add_post(base + "/requests", pages.route(create_post))
    router.add_get(base + "/requests/new", pages.route(new_page))
    router.add_get(base + "/requests/{id}", pages.route(detail_page))
    router.add_post(base + "/requests/{id}/approve", pages.route(approve_post))
    router.add_post(base + "/requests/{id}/deny", pages.route(deny_post))
