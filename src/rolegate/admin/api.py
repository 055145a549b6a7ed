"""``/.rolegate/api/v1/``: the admin API. Handlers are thin: parse, ask the service or views, answer."""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ValidationError

from rolegate.admin import views
from rolegate.admin.delegation import AUDIT_VIEW
from rolegate.admin.errors import AdminError, Denied, Invalid, Missing, Unauthorized, from_validation
from rolegate.admin.guard import CSRF_HEADER, Actor, check_csrf, current_actor
from rolegate.admin.models import (
    NAME,
    AuditOut,
    AuditQuery,
    BindingIn,
    BindingList,
    BindingOut,
    BindingQuery,
    DryRun,
    ExplainIn,
    ExplainOut,
    GroupList,
    ListQuery,
    MatrixOut,
    MatrixQuery,
    PreviewIn,
    PreviewOut,
    RoleCreate,
    RoleIn,
    RoleList,
    RoleOut,
    ScopeMemberIn,
    ScopeMemberList,
    ScopeMemberQuery,
    SyncStatusOut,
    UserDetail,
    UserList,
    UserSettingsIn,
    UserSettingsOut,
    valid_id,
)
from rolegate.admin.objects import MAX_ITEMS, PlacementsIn, PlacementsOut, put_scope_members
from rolegate.admin.openapi import API_PREFIX, build_openapi
from rolegate.admin.request_models import MeWithRequestsOut
from rolegate.admin.requests import AccessRequests
from rolegate.admin.operations import Operation, Registry
from rolegate.admin.service import AdminService, Change, etag
from rolegate.admin.state import load_state
from rolegate.errors import RolegateError
from rolegate.web.responses import log_error

log = logging.getLogger("rolegate.admin")

API = Registry()
op = API.add
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
}
NAME_PATTERN = NAME


class WriteOut(BaseModel):
    """What every write answers: whether it was applied, the resource after it, and who gains or loses what."""

    applied: bool
    resource: dict[str, Any] | None
    preview: PreviewOut


class Call:
    """One API call: the runtime, the actor, parsed inputs."""

    __slots__ = ("request", "runtime", "actor", "query", "body")

    def __init__(self, request: web.Request, runtime: Any, actor: Actor | None, query: Any, body: Any) -> None:
        self.request = request
        self.runtime = runtime
        self.actor = actor
        self.query = query
        self.body = body

    @property
    def service(self) -> AdminService:
        assert self.actor is not None
        return AdminService(self.runtime, self.actor)

    @property
    def dry_run(self) -> bool:
        value = self.request.query.get("dry_run", "")
        return value in ("1", "true")

    def param(self, name: str) -> str:
        value = self.request.match_info[name]
        if not valid_id(value):
            raise Missing(f"no such {name}")
        return value

    def require_admin(self) -> Actor:
        assert self.actor is not None
        if not views.is_admin(self.actor):
            raise Denied("this needs one of rolegate's admin permissions (rolegate:*) somewhere")
        return self.actor


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps(data, ensure_ascii=False, default=str),
        content_type="application/json",
        headers={**SECURITY_HEADERS, **(headers or {})},
    )


def _error(exc: AdminError) -> web.Response:
    return _json(exc.payload(), exc.status, exc.headers)


def _parse(model: type[BaseModel] | None, data: Any) -> Any:
    if model is None:
        return None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise from_validation(exc) from None


def _wrap(operation: Operation, holder: Any):
    async def handle(request: web.Request) -> web.StreamResponse:
        runtime = holder.runtime
        if runtime.store is None and not operation.public:  # a data-path-only runtime: no admin state
            return _json({"error": "unavailable", "message": "the admin API needs the store"}, 503)
        try:
            actor = None
            if not operation.public:
                actor = await current_actor(request, runtime)
                if actor is None:
                    raise Unauthorized(
                        "sign in first (session cookie or Authorization: Bearer)",
                        headers={"WWW-Authenticate": 'Bearer realm="rolegate"'},
                    )
                if actor.is_app and not operation.apps:
                    raise Denied(
                        f"{actor.username} is an app: it may only write the object directory "
                        f"(scope placement, assignments), not {operation.method} {operation.path}"
                    )
            query = None
            if operation.query is not None:
                raw = {k: v for k, v in request.query.items() if k in operation.query.model_fields}
                query = _parse(operation.query, raw)
            if request.method not in ("GET", "HEAD") and actor is not None:
                check_csrf(request, runtime, actor)
            body = None
            if operation.body is not None:
                try:
                    data = await request.json(loads=json.loads) if request.can_read_body else None
                except (ValueError, UnicodeDecodeError, RecursionError):
                    raise Invalid.field("body", "the body is not valid JSON") from None
                if data is None:
                    raise Invalid.field("body", "a JSON body is required")
                body = _parse(operation.body, data)
            call = Call(request, runtime, actor, query, body)
            return await operation.handler(call)
        except AdminError as exc:
            return _error(exc)
        except RolegateError as exc:  # e.g. 503 store unavailable: its safe public message only
            log_error(request, exc)  # the detail, under the reference the client is given
            return _json({"error": exc.code, "message": exc.public_message, "reference": exc.reference}, exc.status)

    return handle


def _write(change: Change, created: bool = False) -> web.Response:
    applied = not change.preview.get("dry_run", True)
    body = {"applied": applied, "resource": change.resource, "preview": change.preview}
    headers = {"ETag": etag(change.version)} if change.resource is not None else {}
    return _json(body, 201 if created and applied else 200, headers)


# -- who am I ------------------------------------------------------------------------------------------------


@op(
    "GET",
    "/me",
    "What I may access: roles and permissions per scope, and until when",
    "me",
    response=MeWithRequestsOut,
    description="Open to every signed-in user, day-pass holders included. The X-Rolegate-CSRF response header "
    "carries the token that writes from this session must send back. With access requests on, "
    "also your pending requests and the access granted on request, with the time left.",
)
async def get_me(call: Call) -> web.Response:
    assert call.actor is not None
    data = {**views.me(call.actor), **await AccessRequests(call.runtime, call.actor).for_me()}
    return _json(data, headers={CSRF_HEADER: call.actor.csrf_token})


# -- roles ---------------------------------------------------------------------------------------------------


@op("GET", "/roles", "Every role: config roles (read-only) and API roles", "roles", response=RoleList)
async def list_roles(call: Call) -> web.Response:
    call.require_admin()
    return _json({"items": await call.service.roles()})


@op(
    "POST",
    "/roles",
    "Define a role (needs rolegate:roles:edit globally)",
    "roles",
    body=RoleCreate,
    response=WriteOut,
    status=201,
    etag=True,
    query=DryRun,
    description="Any catalogue permissions; rolegate's own only those you hold everywhere, and manages no more "
    "than you manage everywhere. Nobody changes or deletes a role they hold.",
)
async def create_role(call: Call) -> web.Response:
    return _write(await call.service.create_role(call.body, dry_run=call.dry_run), created=True)


@op("GET", "/roles/{name}", "One role", "roles", response=RoleOut, etag=True)
async def get_role(call: Call) -> web.Response:
    call.require_admin()
    role = await call.service.role(call.param("name"))
    return _json(role, headers={"ETag": etag(role["version"])})


@op(
    "PUT",
    "/roles/{name}",
    "Replace an API role",
    "roles",
    body=RoleIn,
    response=WriteOut,
    etag=True,
    if_match=True,
    query=DryRun,
)
async def update_role(call: Call) -> web.Response:
    return _write(
        await call.service.update_role(
            call.param("name"), call.body, call.request.headers.get("If-Match"), dry_run=call.dry_run
        )
    )


@op(
    "DELETE",
    "/roles/{name}",
    "Delete an API role no binding uses",
    "roles",
    response=WriteOut,
    if_match=True,
    query=DryRun,
)
async def delete_role(call: Call) -> web.Response:
    return _write(
        await call.service.delete_role(call.param("name"), call.request.headers.get("If-Match"), dry_run=call.dry_run)
    )


# -- bindings (group-to-role mappings, user bindings) and object grants --------------------------------------


def _filter(items: list[dict[str, Any]], query: BindingQuery | None) -> list[dict[str, Any]]:
    if query is None:
        return items
    for name in ("scope", "group", "user", "role"):
        wanted = getattr(query, name)
        if wanted is not None:
            items = [b for b in items if b.get(name) == wanted]
    return items


@op(
    "GET",
    "/bindings",
    "Group-to-role mappings and user bindings (config ones are read-only)",
    "bindings",
    query=BindingQuery,
    response=BindingList,
)
async def list_bindings(call: Call) -> web.Response:
    call.require_admin()
    return _json({"items": _filter(await call.service.bindings(grants=False), call.query)})


@op(
    "POST",
    "/bindings",
    "Bind a group or user to a role, optionally at a scope and until a time",
    "bindings",
    body=BindingIn,
    response=WriteOut,
    status=201,
    etag=True,
    query=DryRun,
    description="Delegated by roles: a role you hold at the binding's scope (or above) manages the role bound "
    "(manages.roles), and you hold every rolegate:* permission it gives there. ?dry_run=1 answers the "
    "preview without writing.",
)
async def create_binding(call: Call) -> web.Response:
    return _write(await call.service.create_binding(call.body, dry_run=call.dry_run), created=True)


@op("GET", "/bindings/{id}", "One binding or object grant", "bindings", response=BindingOut, etag=True)
async def get_binding(call: Call) -> web.Response:
    call.require_admin()
    binding = await call.service.binding(call.param("id"))
    return _json(binding, headers={"ETag": etag(binding["version"])})


@op(
    "PUT",
    "/bindings/{id}",
    "Replace a binding or object grant",
    "bindings",
    body=BindingIn,
    response=WriteOut,
    etag=True,
    if_match=True,
    query=DryRun,
)
async def update_binding(call: Call) -> web.Response:
    return _write(
        await call.service.update_binding(
            call.param("id"), call.body, call.request.headers.get("If-Match"), dry_run=call.dry_run
        )
    )


@op(
    "DELETE",
    "/bindings/{id}",
    "Remove a binding or object grant",
    "bindings",
    response=WriteOut,
    if_match=True,
    query=DryRun,
)
async def delete_binding(call: Call) -> web.Response:
    return _write(
        await call.service.delete_binding(call.param("id"), call.request.headers.get("If-Match"), dry_run=call.dry_run)
    )


@op("GET", "/grants", 'Object grants ("if added to a task")', "grants", query=BindingQuery, response=BindingList)
async def list_grants(call: Call) -> web.Response:
    call.require_admin()
    return _json({"items": _filter(await call.service.bindings(grants=True), call.query)})


@op(
    "POST",
    "/grants",
    "Grant one permission on one object to a user or group",
    "grants",
    body=BindingIn,
    response=WriteOut,
    status=201,
    etag=True,
    query=DryRun,
    description="Needs a role held where the object lies (or at the given scope, which must contain it) that "
    "manages the permission (manages.assigns). Without a scope the grant is made where your power "
    "comes from (a responsible's building). An object of a nested type that lies nowhere known is "
    "refused. Change or remove it through /bindings/{id}.",
)
async def create_grant(call: Call) -> web.Response:
    if call.body.permission is None:
        raise Invalid.field("permission", "an object grant names a permission and an object")
    return _write(await call.service.create_binding(call.body, dry_run=call.dry_run), created=True)


# -- user settings ---------------------------------------------------------------------------------------------


@op(
    "GET",
    "/user-settings/{user}",
    "The user settings switched on for a user",
    "user settings",
    response=UserSettingsOut,
    etag=True,
    path_patterns={"user": NAME_PATTERN},
)
async def get_user_settings(call: Call) -> web.Response:
    call.require_admin()
    data = await call.service.user_settings(call.param("user"))
    return _json(data, headers={"ETag": etag(data["version"])})


@op(
    "PUT",
    "/user-settings/{user}",
    'Set which user settings are on for a user at one scope (If-Match "v0" the first time)',
    "user settings",
    body=UserSettingsIn,
    response=WriteOut,
    etag=True,
    if_match=True,
    query=DryRun,
    path_patterns={"user": NAME_PATTERN},
    description="Replaces the settings on at body.scope (null: everywhere); other scopes keep theirs. Each one "
    "switched on or off needs a role you hold there that manages it (manages.settings). A setting "
    "grants nothing by itself: roles the user holds there list what it adds (if_setting).",
)
async def put_user_settings(call: Call) -> web.Response:
    user = call.param("user")
    change = await call.service.put_user_settings(
        user, call.body, call.request.headers.get("If-Match"), dry_run=call.dry_run
    )
    if change.resource is not None:
        change.resource = {"user": user, **change.resource}
    return _write(change)


# -- scope membership: an app registers its tasks -------------------------------------------------------------


@op(
    "GET",
    "/scope-members",
    "Where scopes lie: config members (read-only) and those registered through the API",
    "scopes",
    query=ScopeMemberQuery,
    response=ScopeMemberList,
)
async def list_scope_members(call: Call) -> web.Response:
    call.require_admin()
    return _json({"items": await call.service.scope_members(call.query.type if call.query else None)})


@op(
    "PUT",
    "/scope-members/{scope}",
    "Place a scope in its parent, e.g. task:42 in building:a",
    "scopes",
    body=ScopeMemberIn,
    response=WriteOut,
    etag=True,
    query=DryRun,
    apps=True,
    description="An app registers its tasks: grants made at a building reach the tasks that lie in it. Needs a "
    "role at the parent (and, when moving, at the old one) that manages something there. If-Match "
    "with the ETag when it was registered before.",
)
async def put_scope_member(call: Call) -> web.Response:
    scope = call.param("scope")
    change = await call.service.put_scope_member(
        scope, call.body, call.request.headers.get("If-Match"), dry_run=call.dry_run
    )
    return _write(change, created=change.version == 1)


@op(
    "PUT",
    "/scope-members",
    "Place or move many objects at once (the object directory's bulk upsert)",
    "scopes",
    body=PlacementsIn,
    response=PlacementsOut,
    query=DryRun,
    apps=True,
    description=f"items: [{{scope, parent}}], at most {MAX_ITEMS} (413 beyond). Idempotent: what already lies "
    "where it says is unchanged, and a call changing nothing writes, bumps and audits nothing. "
    "Atomic: validated and authorized whole, then written in one transaction. One audit event "
    "per change. Needs what PUT /scope-members/{scope} needs, for each change.",
)
async def put_scope_members_bulk(call: Call) -> web.Response:
    return _json(await put_scope_members(call.service, call.body, dry_run=call.dry_run))


@op(
    "DELETE",
    "/scope-members/{scope}",
    "Forget where a registered scope lies (grants made at a scope stop reaching it)",
    "scopes",
    response=WriteOut,
    if_match=True,
    query=DryRun,
    apps=True,
)
async def delete_scope_member(call: Call) -> web.Response:
    return _write(
        await call.service.delete_scope_member(
            call.param("scope"), call.request.headers.get("If-Match"), dry_run=call.dry_run
        )
    )


# -- preview ---------------------------------------------------------------------------------------------------


@op(
    "POST",
    "/preview",
    "Dry-run any change: who gains or loses which permission at which scope",
    "preview",
    body=PreviewIn,
    response=WriteOut,
)
async def preview(call: Call) -> web.Response:
    body: PreviewIn = call.body
    service, value, if_match = call.service, body.value or {}, call.request.headers.get("If-Match")
    if body.action != "create" and not body.id:
        raise Invalid.field("id", "update and delete name the binding id, role name or username")
    if body.id is not None and not valid_id(body.id):
        raise Invalid.field("id", "not a valid id")
    if body.target == "bindings":
        if body.action == "create":
            change = await service.create_binding(_parse_in(BindingIn, value), dry_run=True)
        elif body.action == "update":
            change = await service.update_binding(body.id, _parse_in(BindingIn, value), if_match, dry_run=True)
        else:
            change = await service.delete_binding(body.id, if_match, dry_run=True)
    elif body.target == "roles":
        if body.action == "create":
            change = await service.create_role(_parse_in(RoleCreate, value), dry_run=True)
        elif body.action == "update":
            change = await service.update_role(body.id, _parse_in(RoleIn, value), if_match, dry_run=True)
        else:
            change = await service.delete_role(body.id, if_match, dry_run=True)
    else:
        if body.action == "delete":
            value = {"settings": []}
        change = await service.put_user_settings(
            body.id or "", _parse_in(UserSettingsIn, value), if_match, dry_run=True
        )
    return _write(change)


def _parse_in(model: type[BaseModel], value: dict[str, Any]) -> Any:
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise from_validation(exc, prefix="value.") from None


# -- users, groups, explain, matrix ------------------------------------------------------------------------------


@op(
    "GET",
    "/users",
    "Users (directory snapshot, or sign-ins without a directory)",
    "directory",
    query=ListQuery,
    response=UserList,
)
async def list_users(call: Call) -> web.Response:
    call.require_admin()
    people = await call.service.people()
    q = (call.query.q or "").casefold()
    items = [
        {
            "username": p.username,
            "name": p.name,
            "email": p.email,
            "disabled": p.disabled,
            "groups": sorted(p.groups),
            "source": people.source,
        }
        for p in people.people
        if q in p.username.casefold() or q in (p.name or "").casefold()
    ]
    return _json({"items": items[: call.query.limit], "source": people.source})


@op(
    "GET",
    "/users/{username}",
    "A user: groups, roles and effective permissions per scope",
    "directory",
    response=UserDetail,
    path_patterns={"username": NAME_PATTERN},
)
async def get_user(call: Call) -> web.Response:
    call.require_admin()
    people = await call.service.people()
    return _json(views.user_detail(people, call.actor.policy, call.param("username")))


@op(
    "GET",
    "/groups",
    "Groups and their members (nested groups resolved)",
    "directory",
    query=ListQuery,
    response=GroupList,
)
async def list_groups(call: Call) -> web.Response:
    call.require_admin()
    people = await call.service.people()
    q = (call.query.q or "").casefold()
    items = [{"name": g, "members": sorted(m)} for g, m in people.groups().items() if q in g.casefold()]
    return _json({"items": items[: call.query.limit], "source": people.source})


@op(
    "POST",
    "/explain",
    "Why is (or would) this be allowed or denied?",
    "explain",
    body=ExplainIn,
    response=ExplainOut,
    description="Yourself always; other users (or what-if groups) need rolegate:audit:view, "
    "or rolegate:bindings:edit at the scope asked about.",
)
async def explain(call: Call) -> web.Response:
    assert call.actor is not None
    people = await call.service.people()
    return _json(views.explain_for(call.runtime, call.actor, people, call.body))


@op(
    "GET",
    "/matrix",
    "The role x permission matrix (json, md, csv or html)",
    "matrix",
    query=MatrixQuery,
    response=MatrixOut,
)
async def matrix(call: Call) -> web.Response:
    call.require_admin()
    _state, policy = await call.service.snapshot()
    result = views.matrix_of(policy, call.query.roles, call.query.scope, call.query.format)
    if isinstance(result, dict):
        return _json(result)
    types = {"md": "text/markdown", "csv": "text/csv", "html": "text/html"}
    headers = dict(SECURITY_HEADERS)
    if call.query.format == "html":
        headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"
    return web.Response(text=result, content_type=types[call.query.format], charset="utf-8", headers=headers)


@op("GET", "/export", "The live policy as YAML in config shape", "export", media="application/yaml")
async def export(call: Call) -> web.Response:
    call.require_admin()
    state = await load_state(call.runtime.store)
    return web.Response(
        text=views.export_yaml(call.runtime.config, state),
        content_type="application/yaml",
        charset="utf-8",
        headers=SECURITY_HEADERS,
    )


# -- audit and sync ------------------------------------------------------------------------------------------------


@op(
    "GET",
    "/audit",
    "Audit events, newest first (needs rolegate:audit:view)",
    "audit",
    query=AuditQuery,
    response=AuditOut,
)
async def audit(call: Call) -> web.Response:
    assert call.actor is not None
    call.actor.require(AUDIT_VIEW, None, "read the audit trail")
    return _json({"items": await views.audit_events(call.runtime.store, call.query)})


@op(
    "GET",
    "/sync/status",
    "Directory sync: the snapshot serving and the latest runs",
    "directory",
    response=SyncStatusOut,
)
async def sync_status(call: Call) -> web.Response:
    call.require_admin()
    return _json(await views.sync_status(call.runtime))


@op("GET", "/openapi.json", "This document", "meta", public=True)
async def openapi(call: Call) -> web.Response:
    return _json(openapi_document())


_DOCUMENT: dict[str, Any] | None = None


def openapi_document() -> dict[str, Any]:
    global _DOCUMENT
    if _DOCUMENT is None:
        _DOCUMENT = build_openapi(API)
    return _DOCUMENT


def add_api_routes(reserved: web.Application, holder: Any) -> None:
    """Mount every operation under ``/api/v1`` of the reserved sub-app (``/.rolegate``)."""
    base = API_PREFIX.removeprefix("/.rolegate")
    for operation in API.operations:
        reserved.router.add_route(operation.method, base + operation.path, _wrap(operation, holder))


# -- day passes (the day-pass stage issues, stores and revokes them) ------------------------------------------------

from rolegate.admin import daypasses as _daypasses  # noqa: E402 - kept beside the endpoints that use it


@op(
    "GET",
    "/daypasses",
    "Day passes issued at scopes where you may issue them",
    "day passes",
    response=_daypasses.DaypassList,
)
async def list_daypasses(call: Call) -> web.Response:
    return _json(await _daypasses.list_passes(call.runtime, call.actor))


@op(
    "POST",
    "/daypasses",
    "Issue a day pass: one-time link and QR code",
    "day passes",
    body=_daypasses.DaypassIn,
    response=_daypasses.DaypassIssued,
    status=201,
    description="Needs rolegate:daypass:issue at the pass's scope. The link is shown once.",
)
async def issue_daypass(call: Call) -> web.Response:
    return _json(await _daypasses.issue(call.runtime, call.actor, call.body), 201)


@op(
    "DELETE",
    "/daypasses/{id}",
    "Revoke a day pass (its sessions end at their next request)",
    "day passes",
    response=_daypasses.DaypassOut,
)
async def revoke_daypass(call: Call) -> web.Response:
    return _json(await _daypasses.revoke(call.runtime, call.actor, call.param("id")))


from rolegate.admin import requests_api as _requests_api  # noqa: E402,F401 - registers /access-requests


from rolegate.admin import assignments as _assignments  # noqa: E402 - registers /assignments (issue 19 part 3)

_assignments.register(op, Call, _json)
