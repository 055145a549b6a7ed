"""HTTP glue for ``POST /.rolegate/token`` and ``POST /.rolegate/token/revoke`` (RFC 6749 §5, RFC 7009).

Requests are ``application/x-www-form-urlencoded`` (JSON objects are accepted too); answers are
OAuth JSON with ``Cache-Control: no-store``. Grants:

- ``urn:rolegate:session``: the browser session named by the request's cookie. A cookie travels
  with cross-site requests, so this grant also needs ``X-Requested-With`` (a header a cross-site
  form cannot send and that no CORS preflight of ours approves) and, when the browser says where
  the request came from (``Origin`` / ``Sec-Fetch-Site``), the same origin as ``public_url``.
- ``refresh_token``: ``refresh_token=<token>``; rotates it.
- ``urn:rolegate:daypass``: ``code=<day-pass code>``; redeemed by the day-pass stage's callable.

Every grant re-checks its subject (``TokenService.subject``). A refused grant is answered with one
fixed description per grant, whatever the reason (the reason would tell a guesser which tokens,
passes or accounts exist), and recorded in the audit trail as a failed ``signin`` with the reason.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from aiohttp import web

from rolegate.audit import signin_event
from rolegate.errors import RolegateError
from rolegate.identity.principal import Principal
from rolegate.store import StoreUnavailable
from rolegate.tokens.errors import GrantError
from rolegate.tokens.service import REFRESH_REFUSED, TokenService

log = logging.getLogger("rolegate.tokens.endpoint")

TOKEN_PATH = "/.rolegate/token"
REVOKE_PATH = "/.rolegate/token/revoke"
SESSION_GRANT = "urn:rolegate:session"
DAYPASS_GRANT = "urn:rolegate:daypass"
REFRESH_GRANT = "refresh_token"
MAX_BODY = 8 * 1024
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
SESSION_REFUSED = "No usable signed-in session; sign in again."
DAYPASS_REFUSED = "The day pass is invalid, expired or revoked."
_REFUSED = {REFRESH_GRANT: REFRESH_REFUSED, SESSION_GRANT: SESSION_REFUSED, DAYPASS_GRANT: DAYPASS_REFUSED}
# The session grant turns a browser's sign-in into tokens: only a browser's credential (the session
# cookie, or a day pass's) may be exchanged, never a bearer token (that would start a family the
# sign-in behind the token does not bound).
_BROWSER_AUTH = frozenset({"session", "daypass"})
_UNAVAILABLE = "The token service is unavailable right now; try again shortly."

SessionFn = Callable[[web.Request], Awaitable[Principal | None]]
DaypassFn = Callable[[web.Request, str], Awaitable[Principal | None]]


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads``' object hook: a repeated key is refused, as a repeated form parameter is (RFC 6749
    §3.2) — parsers disagree on which copy wins, so the request is ambiguous."""
    data: dict[str, Any] = {}
    for name, value in pairs:
        if name in data:
            raise GrantError("invalid_request", f"Parameter {name[:64]!r} is repeated.")
        data[name] = value
    return data


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
            data = json.loads(body or b"{}", object_pairs_hook=_unique_keys)
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

    __slots__ = ("service", "authenticate_session", "redeem_daypass", "public_origin", "audit")

    def __init__(
        self,
        service: TokenService,
        *,
        public_url: str,
        authenticate_session: SessionFn | None = None,
        redeem_daypass: DaypassFn | None = None,
        audit: Any = None,
    ) -> None:
        self.service = service
        self.authenticate_session = authenticate_session
        self.redeem_daypass = redeem_daypass
        self.public_origin = _origin(public_url)
        self.audit = audit  # the worker's AuditLog: refused grants are recorded

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(TOKEN_PATH, self.token)
        app.router.add_post(REVOKE_PATH, self.revoke)

    async def token(self, request: web.Request) -> web.StreamResponse:
        grant_type = ""
        try:
            params = await _form(request)
            grant_type = params.get("grant_type", "")
            if grant_type == REFRESH_GRANT:
                refresh_token = params.get("refresh_token", "")
                if not refresh_token:
                    raise GrantError("invalid_request", "refresh_token is required.")
                grant = await self.service.refresh(refresh_token)
            elif grant_type == SESSION_GRANT:
                grant = await self.service.issue(await self._session_principal(request), refused=SESSION_REFUSED)
            elif grant_type == DAYPASS_GRANT:
                grant = await self.service.issue(
                    await self._daypass_principal(request, params.get("code", "")), refused=DAYPASS_REFUSED
                )
            else:
                raise GrantError(
                    "unsupported_grant_type", "Use refresh_token, urn:rolegate:session or urn:rolegate:daypass."
                )
        except GrantError as exc:
            self._refused(request, grant_type, exc.code, exc.detail, exc.user)
            return _error(exc.code, exc.description, exc.status)
        except RolegateError as exc:
            log.info("token request refused: %s (ref %s)", exc.detail, exc.reference)
            if exc.status in (401, 403):  # the credential behind the grant was refused (ended pass, bad token)
                self._refused(request, grant_type, "invalid_grant", exc.detail or exc.code, None, exc.reference)
                return _error("invalid_grant", _REFUSED.get(grant_type, SESSION_REFUSED))
            if exc.status < 500:
                self._refused(request, grant_type, exc.code, exc.detail or exc.code, None, exc.reference)
            return _error("server_error", exc.public_message, exc.status)
        except StoreUnavailable as exc:
            # Nothing was decided (a refresh token is rotated only after its checks): the client retries.
            log.warning("token request not answered: store unavailable: %s", exc)
            return _error("server_error", _UNAVAILABLE, 503)
        return web.json_response(grant.to_json(), headers=_NO_STORE)

    def _refused(
        self, request: web.Request, grant_type: str, code: str, detail: str, user: str | None, ref: str | None = None
    ) -> None:
        """Record a refused token request as a failed sign-in (never fails the answer)."""
        audit = self.audit
        if audit is None:
            return
        grant = grant_type if grant_type in _REFUSED else "other"
        try:
            audit.emit(
                signin_event(
                    user=user,
                    method="token",
                    outcome="failed",
                    reason=f"{grant}: {code}: {detail}",
                    ref=ref or request.headers.get("X-Request-Id"),
                    client=request.remote,
                )
            )
        except RolegateError as exc:
            log.error("audit: could not record a refused token request: %s", exc.detail)

    async def revoke(self, request: web.Request) -> web.StreamResponse:
        try:
            params = await _form(request)
        except GrantError as exc:
            return _error(exc.code, exc.description, exc.status)
        token = params.get("token", "")
        if not token:
            return _error("invalid_request", "token is required.")
        try:
            await self.service.revoke(token, params.get("token_type_hint"))
        except StoreUnavailable as exc:
            log.warning("token revocation not recorded: store unavailable: %s", exc)
            return _error("server_error", _UNAVAILABLE, 503)
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
            raise GrantError(
                "invalid_request",
                "Cross-site token requests are refused; send X-Requested-With from the same origin.",
                status=403,
            )
        principal = await self.authenticate_session(request) if self.authenticate_session is not None else None
        if principal is None:
            raise GrantError("invalid_grant", SESSION_REFUSED, detail="no signed-in session")
        if principal.auth not in _BROWSER_AUTH or principal.rolegate_bearer:
            raise GrantError(
                "invalid_grant",
                SESSION_REFUSED,
                user=principal.username,
                detail=f"a {principal.auth} credential is not a browser session",
            )
        return principal

    async def _daypass_principal(self, request: web.Request, code: str) -> Principal:
        if self.redeem_daypass is None:
            raise GrantError("unsupported_grant_type", "Day passes are not enabled.")
        if not code:
            raise GrantError("invalid_request", "code is required.")
        principal = await self.redeem_daypass(request, code)
        if principal is None:
            raise GrantError("invalid_grant", DAYPASS_REFUSED, detail="day pass code invalid, ended or used up")
        return principal
