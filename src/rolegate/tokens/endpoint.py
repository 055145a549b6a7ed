"""HTTP glue for ``POST /.rolegate/token`` and ``POST /.rolegate/token/revoke`` (RFC 6749 §5, RFC 7009).

Requests are ``application/x-www-form-urlencoded`` (JSON objects are accepted too); answers are
OAuth JSON with ``Cache-Control: no-store``. Grants:

- ``urn:rolegate:session``: the browser session named by the request's cookie. A cookie travels
  with cross-site requests, so this grant also needs ``X-Requested-With`` (a header a cross-site
  form cannot send and that no CORS preflight of ours approves) and, when the browser says where
  the request came from (``Origin`` / ``Sec-Fetch-Site``), the same origin as ``public_url``.
- ``refresh_token``: ``refresh_token=<token>``; rotates it.
- ``urn:rolegate:daypass``: ``code=<day-pass code>``; redeemed by the day-pass stage's callable.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from aiohttp import web

from rolegate.errors import RolegateError
from rolegate.identity.principal import Principal
from rolegate.tokens.errors import GrantError
from rolegate.tokens.service import TokenService

log = logging.getLogger("rolegate.tokens.endpoint")

TOKEN_PATH = "/.rolegate/token"
REVOKE_PATH = "/.rolegate/token/revoke"
SESSION_GRANT = "urn:rolegate:session"
DAYPASS_GRANT = "urn:rolegate:daypass"
REFRESH_GRANT = "refresh_token"
MAX_BODY = 8 * 1024
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}

SessionFn = Callable[[web.Request], Awaitable[Principal | None]]
DaypassFn = Callable[[web.Request, str], Awaitable[Principal | None]]


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def _error(code: str, description: str, status: int = 400) -> web.Response:
    headers = dict(_NO_STORE)
    if status == 401:
        headers["WWW-Authenticate"] = f'Bearer realm="rolegate", error="{code}"'
    return web.json_response({"error": code, "error_description": description}, status=status, headers=headers)


async def _form(request: web.Request) -> dict[str, str]:
    """The request's parameters (form or JSON object), refusing bodies over MAX_BODY and repeated names."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise GrantError("invalid_request", "The request body is too large.", status=413)
    body = await request.content.read(MAX_BODY + 1)
    if len(body) > MAX_BODY:
        raise GrantError("invalid_request", "The request body is too large.", status=413)
    ctype = request.content_type
    try:
        if ctype == "application/json":
            data = json.loads(body or b"{}")
            if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
                raise ValueError
            return data
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise GrantError("invalid_request", "The request body could not be parsed.") from None
    params: dict[str, str] = {}
    for name, value in pairs:
        if name in params:  # RFC 6749 §3.2: parameters must not be repeated
            raise GrantError("invalid_request", f"Parameter {name!r} is repeated.")
        params[name] = value
    return params


class TokenEndpoint:
    """``token`` and ``revoke`` are the aiohttp handlers to mount at TOKEN_PATH and REVOKE_PATH."""

    __slots__ = ("service", "authenticate_session", "redeem_daypass", "public_origin")

    def __init__(self, service: TokenService, *, public_url: str, authenticate_session: SessionFn | None = None,
                 redeem_daypass: DaypassFn | None = None) -> None:
        self.service = service
        self.authenticate_session = authenticate_session
        self.redeem_daypass = redeem_daypass
        self.public_origin = _origin(public_url)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(TOKEN_PATH, self.token)
        app.router.add_post(REVOKE_PATH, self.revoke)

    async def token(self, request: web.Request) -> web.StreamResponse:
        try:
            params = await _form(request)
            grant_type = params.get("grant_type", "")
            if grant_type == REFRESH_GRANT:
                refresh_token = params.get("refresh_token", "")
                if not refresh_token:
                    raise GrantError("invalid_request", "refresh_token is required.")
                grant = await self.service.refresh(refresh_token)
            elif grant_type == SESSION_GRANT:
                grant = await self.service.issue(await self._session_principal(request))
            elif grant_type == DAYPASS_GRANT:
                grant = await self.service.issue(await self._daypass_principal(request, params.get("code", "")))
            else:
                raise GrantError("unsupported_grant_type", "Use refresh_token, urn:rolegate:session or "
                                                           "urn:rolegate:daypass.")
        except GrantError as exc:
            return _error(exc.code, exc.description, exc.status)
        except RolegateError as exc:
            log.info("token request refused: %s (ref %s)", exc.detail, exc.reference)
            return _error("invalid_grant" if exc.status in (401, 403) else "server_error", exc.public_message,
                          400 if exc.status in (401, 403) else exc.status)
        return web.json_response(grant.to_json(), headers=_NO_STORE)

    async def revoke(self, request: web.Request) -> web.StreamResponse:
        try:
            params = await _form(request)
        except GrantError as exc:
            return _error(exc.code, exc.description, exc.status)
        token = params.get("token", "")
        if not token:
            return _error("invalid_request", "token is required.")
        await self.service.revoke(token, params.get("token_type_hint"))
        # RFC 7009 §2.2: 200 whether or not the token was valid, so the answer reveals nothing.
        return web.Response(status=200, headers=_NO_STORE)

    def _same_site(self, request: web.Request) -> bool:
        if request.headers.get("X-Requested-With", "") == "":
            return False
        origin = request.headers.get("Origin")
        if origin is not None and origin.lower() != self.public_origin:
            return False
        return request.headers.get("Sec-Fetch-Site", "same-origin") in ("same-origin", "none")

    async def _session_principal(self, request: web.Request) -> Principal:
        if not self._same_site(request):
            raise GrantError("invalid_request", "Cross-site token requests are refused; send X-Requested-With "
                                                "from the same origin.", status=403)
        principal = await self.authenticate_session(request) if self.authenticate_session is not None else None
        if principal is None:
            raise GrantError("invalid_grant", "No signed-in session; sign in first.")
        return principal

    async def _daypass_principal(self, request: web.Request, code: str) -> Principal:
        if self.redeem_daypass is None:
            raise GrantError("unsupported_grant_type", "Day passes are not enabled.")
        if not code:
            raise GrantError("invalid_request", "code is required.")
        principal = await self.redeem_daypass(request, code)
        if principal is None:
            raise GrantError("invalid_grant", "The day pass is invalid, expired or revoked.")
        return principal


def token_endpoint(service: TokenService, **kwargs: Any) -> TokenEndpoint:
    return TokenEndpoint(service, **kwargs)
