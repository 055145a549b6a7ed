"""Wire the stages into one aiohttp application: rolegate's own paths, then the pipeline."""

from __future__ import annotations

from aiohttp import web

from rolegate.admin import add_admin_routes
from rolegate.errors import AmbiguousPath, HeadersTooLarge
from rolegate.identity.daypass import add_daypass_routes
from rolegate.identity.endpoints import add_identity_routes
from rolegate.identity.forward_auth import ENDPOINT as FORWARD_AUTH, ForwardAuth
from rolegate.proxy.paths import normalize_path
from rolegate.server.access import check_access
from rolegate.server.pipeline import Pipeline, check_header_size
from rolegate.server.runtime import RuntimeHolder
from rolegate.tokens.jwks import jwks_handler
from rolegate.web.responses import error_response

JWKS_PATH = "/.well-known/jwks.json"
RESERVED_PREFIX = "/.rolegate/"
HOLDER_KEY = web.AppKey("rolegate.holder", RuntimeHolder)
# aiohttp's own parser limit; rolegate's configurable limit (answered with 431) sits below it.
PARSER_MAX_FIELD = 64 * 1024


def _reserved_refusal(request: web.BaseRequest, holder: RuntimeHolder) -> web.Response | None:
    """The answer to a request for one of rolegate's own paths reached through a non-canonical path, or
    with a header block over ``server.max_header_size``; None when it may go on."""
    try:
        path = normalize_path(request.raw_path.partition("?")[0])
    except AmbiguousPath as exc:
        return error_response(request, exc)
    if not path.startswith(RESERVED_PREFIX):
        return error_response(request, AmbiguousPath(f"reserved path reached through {request.raw_path!r}"))
    try:
        check_header_size(request, holder.runtime.config.server.max_header_size)
    except HeadersTooLarge as exc:
        return error_response(request, exc)
    return None


@web.middleware
async def reserved_paths_guard(request: web.Request, handler):
    """rolegate's own endpoints see only canonical paths, like the pipeline does."""
    refused = _reserved_refusal(request, request.app[HOLDER_KEY])
    if refused is not None:
        return refused
    return await handler(request)


def _lean_forward_auth(holder: RuntimeHolder):
    """``/.rolegate/auth`` on the main application: the front proxy asks it about every request, so it
    skips the reserved sub-application's resolution and middleware chain and runs the same guard inline."""
    forward_auth = ForwardAuth(holder, check_access)
    handle = forward_auth.handle

    async def lean(request: web.Request) -> web.StreamResponse:
        refused = _reserved_refusal(request, holder)
        if refused is not None:
            return refused
        return await handle(request)

    return lean


def build_reserved_app(holder: RuntimeHolder) -> web.Application:
    """``/.rolegate/*``: sign-in, tokens, forward-auth, day passes, admin. Stages add their routes."""
    reserved = web.Application(middlewares=[reserved_paths_guard])
    reserved[HOLDER_KEY] = holder
    add_identity_routes(reserved, holder, check_access)  # login, callback, logout, back-channel logout, forward-auth
    add_token_routes(reserved, holder)  # token endpoint and revocation
    add_daypass_routes(reserved, holder)  # /.rolegate/pass/{code}
    add_admin_routes(reserved, holder)  # /.rolegate/api/v1/* and /.rolegate/admin/*
    return reserved


def _tokens_or_404(holder: RuntimeHolder):
    tokens = holder.runtime.tokens
    if tokens is None:
        raise web.HTTPNotFound(text="tokens are not configured (they need session.secret or tokens.key_secret)")
    return tokens


def add_token_routes(reserved: web.Application, holder: RuntimeHolder) -> None:
    """``/.rolegate/token`` and ``/.rolegate/token/revoke``; handlers follow the current runtime across reloads."""

    async def token(request: web.Request) -> web.StreamResponse:
        return await _tokens_or_404(holder).endpoint.token(request)

    async def revoke(request: web.Request) -> web.StreamResponse:
        return await _tokens_or_404(holder).endpoint.revoke(request)

    reserved.router.add_post("/token", token)
    reserved.router.add_post("/token/revoke", revoke)


async def _jwks(request: web.Request) -> web.StreamResponse:
    tokens = _tokens_or_404(request.app[HOLDER_KEY])
    return await jwks_handler(tokens.keyring)(request)


def build_app(holder: RuntimeHolder) -> web.Application:
    app = web.Application(
        handler_args={"max_field_size": PARSER_MAX_FIELD, "max_line_size": 16 * 1024},
        client_max_size=1024 * 1024,
    )
    app[HOLDER_KEY] = holder
    # Forward-auth first: a route of the main application is found before the sub-application's prefix.
    lean = _lean_forward_auth(holder)
    app.router.add_route("*", FORWARD_AUTH, lean)
    app.router.add_route("*", FORWARD_AUTH + "/{original:.*}", lean)  # Envoy's ext_authz path_prefix
    app.add_subapp(RESERVED_PREFIX.rstrip("/"), build_reserved_app(holder))
    app.router.add_get(JWKS_PATH, _jwks)
    # A bound coroutine method: aiohttp wraps (and slows) handlers it does not see as coroutine functions.
    app.router.add_route("*", "/{tail:.*}", Pipeline(holder).__call__)
    return app
