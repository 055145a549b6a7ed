"""rolegate's sign-in endpoints under ``/.rolegate/``: login, callback, logout, back-channel logout.

Handlers only glue HTTP to the identity stage; the protocol lives in oidc_client / provider_jwt.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import logging
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from aiohttp import web

from rolegate.audit import AuditEvent, signin_event, signout_event
from rolegate.config.sections.server import ServerConfig
from rolegate.errors import BadRequest, NotFound, RolegateError
from rolegate.identity.errors import ProviderUnavailable, SignInFailed
from rolegate.identity.forward_auth import ForwardAuth
from rolegate.identity.oidc_client import LoginRequest, TokenRefused
from rolegate.identity.origin import started_here
from rolegate.identity.principal import principal_from_claims
from rolegate.identity.provider_jwt import InvalidProviderToken
from rolegate.identity.stage import LOGIN_COOKIE_PREFIX
from rolegate.store import StoreUnavailable, VersionConflict
from rolegate.web.responses import error_response, wants_html

if TYPE_CHECKING:
    from rolegate.identity.forward_auth import CheckAccess
    from rolegate.identity.stage import IdentityStage
    from rolegate.server.runtime import RuntimeHolder

log = logging.getLogger("rolegate.identity.endpoints")
# Refused back-channel requests: anyone can send them; the server rate-limits this logger (rolegate.web.malformed).
_malformed = logging.getLogger("rolegate.malformed")

LOGIN_TTL = 600.0
LOGGED_OUT_PATH = "/.rolegate/logged-out"
_USED_STATES = "login_states_used"
_USED_LOGOUT_JTIS = "logout_jtis_used"
# Claims from userinfo never override the ID token's protocol claims.
_PROTOCOL_CLAIMS = frozenset(
    {"iss", "aud", "exp", "iat", "nbf", "nonce", "azp", "at_hash", "c_hash", "sid", "auth_time"}
)

_SIGNED_OUT_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>Signed out</title><style>body{{font:16px/1.5 system-ui,sans-serif;max-width:36rem;margin:12vh auto;padding:0 1rem}}</style>
</head><body><h1>Signed out</h1><p>You are signed out.</p><p><a href="{home}">Sign in again</a></p></body></html>
"""

# Shown instead of signing out when another site sent the browser to /.rolegate/logout (a link or a
# redirect carries the Lax session cookie): the POST below comes from this origin, so it is the user's.
_CONFIRM_SIGN_OUT_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>Sign out?</title><style>body{font:16px/1.5 system-ui,sans-serif;max-width:36rem;margin:12vh auto;padding:0 1rem}
button{font:inherit;padding:.5rem 1rem}</style>
</head><body><h1>Sign out?</h1><p>Another site sent you here to sign you out.</p>
<form method="post" action="/.rolegate/logout"><button type="submit">Sign out</button></form></body></html>
"""


def _sent_by_another_site(request: web.BaseRequest, server: ServerConfig) -> bool:
    """The browser says another site started the request: its ``Origin`` is none of rolegate's own, or
    without one, ``Sec-Fetch-Site`` says so (see identity/origin.py). The session cookie, not the
    headers present, is what logout acts on, so nothing exempts it."""
    return not started_here(request, server)


def _state_tag(state: str) -> str:
    return hashlib.sha256(state.encode()).hexdigest()[:16]


class IdentityEndpoints:
    """Handlers bound to the RuntimeHolder, so a reload switches them to the new config too."""

    def __init__(self, holder: "RuntimeHolder") -> None:
        self.holder = holder

    def _stage(self) -> "IdentityStage":
        stage: IdentityStage | None = getattr(self.holder.runtime, "identity", None)
        if stage is None or not stage.sign_in_enabled:
            raise NotFound("sign-in is not configured (no oidc/session section)")
        return stage

    def _cookie_args(self, stage: "IdentityStage", *, path: str = "/") -> dict[str, Any]:
        session = stage.config.session
        assert session is not None
        args: dict[str, Any] = {
            "path": path,
            "httponly": True,
            "secure": stage.config.server.secure_cookies,
            "samesite": session.same_site,
        }
        if session.domain:
            args["domain"] = session.domain
        return args

    # -- /.rolegate/login ---------------------------------------------------------------------
    async def login(self, request: web.Request) -> web.StreamResponse:
        try:
            stage = self._stage()
            rd = request.query.get("rd")
            target = stage.redirects.safe_target(rd) if rd else stage.redirects.public_url + "/"
            if target is None:
                raise BadRequest(
                    f"login with a refused return target {rd!r}", public_message="That return address is not allowed."
                )
            assert stage.client is not None and stage.login_sealer is not None and stage.metadata is not None
            await stage.metadata.reachable()  # a provider that is down gets the clear 503 page, not a dead link
            login = LoginRequest(target)
            url = await stage.client.authorization_url(login)
        except RolegateError as exc:
            return error_response(request, exc)
        response = web.Response(status=302, headers={"Location": url, "Cache-Control": "no-store"})
        name = LOGIN_COOKIE_PREFIX + _state_tag(login.state)
        sealed = stage.login_sealer.seal(login.to_dict(), name=name, ttl=LOGIN_TTL)
        # Only the callback ever needs it; it expires on its own if the sign-in is abandoned.
        response.set_cookie(
            name,
            sealed,
            max_age=int(LOGIN_TTL),
            **{**self._cookie_args(stage, path="/.rolegate/callback"), "samesite": "Lax"},
        )
        return response

    # -- /.rolegate/callback ------------------------------------------------------------------
    def _audit(self, event: AuditEvent) -> None:
        """Hand a sign-in/sign-out event to the worker's audit log (never fails the request)."""
        audit = self.holder.runtime.audit
        if audit is None:
            return
        try:
            audit.emit(event)
        except RolegateError as exc:
            log.error("audit: could not record %s: %s", event.kind, exc.detail)

    async def callback(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._callback(request)
        except RolegateError as exc:
            self._audit(
                signin_event(
                    user=None,
                    method="oidc",
                    outcome="failed",
                    reason=exc.detail or exc.code,
                    ref=exc.reference,
                    client=request.remote,
                )
            )
            extra = ""
            if isinstance(exc, SignInFailed) and wants_html(request):
                extra = '<p><a href="/.rolegate/login">Sign in again</a></p>'
            return error_response(request, exc, extra_html=extra)

    async def _callback(self, request: web.Request) -> web.StreamResponse:
        stage = self._stage()
        assert stage.client is not None and stage.login_sealer is not None and stage.provider_tokens is not None
        oidc = stage.config.oidc
        assert oidc is not None
        query = request.query
        state = query.get("state")
        if not state or len(state) > 512:
            raise SignInFailed("callback without state")
        name = LOGIN_COOKIE_PREFIX + _state_tag(state)
        login = LoginRequest.from_dict(stage.login_sealer.unseal(request.cookies.get(name), name=name) or {})
        # The state must be the one this browser started (CSRF, RFC 6749 §10.12).
        if login is None or not _same(login.state, state):
            raise SignInFailed("state unknown to this browser (no/expired/foreign login cookie)")
        if "error" in query:
            raise SignInFailed(f"provider returned error {query.get('error')!r}")
        code = query.get("code")
        if not code:
            raise SignInFailed("callback without code")
        await stage.open()
        # One use per state, across workers: a replayed callback stops here.
        try:
            await stage.store.put(
                _USED_STATES,
                hashlib.sha256(state.encode()).hexdigest(),
                1,
                expected_version=0,
                expires_at=time.time() + LOGIN_TTL + 60,
            )
        except VersionConflict:
            raise SignInFailed("replayed callback (state already used)") from None
        except StoreUnavailable as exc:
            raise ProviderUnavailable(f"store: {exc}") from None
        try:
            tokens = await stage.client.exchange_code(code, login)
        except TokenRefused as exc:
            raise SignInFailed(f"code exchange refused: {exc.error}") from None
        id_token = tokens.get("id_token")
        if not isinstance(id_token, str):
            raise SignInFailed("token response without an ID token")
        try:
            claims = await stage.provider_tokens.verify_id_token(
                id_token, nonce=login.nonce, access_token=tokens.get("access_token")
            )
        except InvalidProviderToken as exc:
            raise SignInFailed(f"ID token rejected: {exc}") from None
        if oidc.userinfo:
            info = await stage.client.userinfo(tokens["access_token"])
            if not _same(str(info.get("sub", "")), str(claims["sub"])):
                raise SignInFailed("userinfo names another subject")
            claims = {**claims, **{k: v for k, v in info.items() if k not in _PROTOCOL_CLAIMS}}
        try:
            principal = principal_from_claims(
                claims, username_claim=oidc.username_claim, groups_claim=oidc.groups_claim, auth="session"
            )
        except ValueError as exc:
            raise SignInFailed(str(exc)) from None
        try:
            session_id, tag, session = await stage.sessions.create(
                claims=claims, principal=principal, tokens=tokens, issuer=oidc.issuer
            )
        except StoreUnavailable as exc:
            raise ProviderUnavailable(f"store: {exc}") from None
        log.info("signed in %s (session %s)", principal.username, session.principal.session_id)
        self._audit(
            signin_event(
                user=principal.username,
                method="oidc",
                session_id=session.principal.session_id,
                groups=sorted(principal.groups),
                client=request.remote,
            )
        )
        response = web.Response(status=302, headers={"Location": login.return_to, "Cache-Control": "no-store"})
        session_config = stage.config.session
        assert session_config is not None and stage.cookie_sealer is not None
        cookie_name = session_config.cookie_name
        lifetime = session_config.lifetime.total_seconds()
        response.set_cookie(
            cookie_name,
            stage.cookie_sealer.seal({"i": session_id, "u": tag}, name=cookie_name, ttl=lifetime),
            max_age=int(lifetime),
            **self._cookie_args(stage),
        )
        response.del_cookie(name, path="/.rolegate/callback", domain=session_config.domain)
        return response

    # -- /.rolegate/logout --------------------------------------------------------------------
    async def logout(self, request: web.Request) -> web.StreamResponse:
        if _sent_by_another_site(request, self.holder.runtime.config.server):
            # Signing out is a change: another site may not make it on the user's behalf (logout CSRF).
            return web.Response(
                text=_CONFIRM_SIGN_OUT_PAGE,
                content_type="text/html",
                headers={
                    "Cache-Control": "no-store",
                    "X-Frame-Options": "DENY",
                    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                    "form-action 'self'; frame-ancestors 'none'",
                },
            )
        try:
            stage = self._stage()
            session = await stage.session_from_request(request)
            id_token = None
            if session is not None:
                id_token = stage.sessions.id_token(session)
                await stage.sessions.end(session.key)
                log.info("signed out %s (session %s)", session.principal.username, session.principal.session_id)
                self._audit(
                    signout_event(
                        user=session.principal.username,
                        reason="user",
                        session_id=session.principal.session_id,
                        client=request.remote,
                    )
                )
        except RolegateError as exc:
            return error_response(request, exc)
        except StoreUnavailable as exc:
            return error_response(request, ProviderUnavailable(f"store: {exc}"))
        session_config, oidc = stage.config.session, stage.config.oidc
        assert session_config is not None and stage.client is not None and oidc is not None
        done = stage.redirects.public_url + LOGGED_OUT_PATH
        location = done
        endpoint = await stage.client.end_session_endpoint()
        if endpoint is not None:
            # RP-initiated logout (OIDC RP-Initiated Logout 1.0 §2).
            params = {"client_id": oidc.client_id, "post_logout_redirect_uri": done}
            if id_token:
                params["id_token_hint"] = id_token
            location = endpoint + ("&" if "?" in endpoint else "?") + urlencode(params)
        if wants_html(request) or request.method == "GET":
            response: web.Response = web.Response(
                status=302, headers={"Location": location, "Cache-Control": "no-store"}
            )
        else:
            response = web.json_response(
                {"signed_out": True, "end_session_url": location}, headers={"Cache-Control": "no-store"}
            )
        response.del_cookie(session_config.cookie_name, path="/", domain=session_config.domain)
        return response

    async def logged_out(self, request: web.Request) -> web.StreamResponse:
        stage = getattr(self.holder.runtime, "identity", None)
        home = stage.redirects.public_url + "/" if stage is not None else "/"
        return web.Response(
            text=_SIGNED_OUT_PAGE.format(home=html.escape(home)),
            content_type="text/html",
            headers={"Cache-Control": "no-store"},
        )

    # -- /.rolegate/logout/backchannel --------------------------------------------------------
    async def backchannel_logout(self, request: web.Request) -> web.StreamResponse:
        """OIDC Back-Channel Logout 1.0 §2.5-2.8: validate the logout token, end the sessions it names."""
        headers = {"Cache-Control": "no-store"}
        try:
            stage = self._stage()
            assert stage.provider_tokens is not None and stage.config.oidc is not None
            if request.content_length is not None and request.content_length > 64 * 1024:
                raise BadRequest("logout request too large")
            try:
                form = await request.post()
            except ValueError as exc:  # a body that is not UTF-8 form data (UnicodeDecodeError)
                raise BadRequest(f"unreadable logout request body: {type(exc).__name__}") from None
            token = form.get("logout_token")
            if not isinstance(token, str) or not token:
                raise BadRequest("no logout_token")
            claims = await stage.provider_tokens.verify_logout_token(token)
            await stage.open()
            try:
                await stage.store.put(
                    _USED_LOGOUT_JTIS,
                    hashlib.sha256(str(claims["jti"]).encode()).hexdigest(),
                    1,
                    expected_version=0,
                    expires_at=time.time() + 3600,
                )
            except VersionConflict:
                raise BadRequest("replayed logout token") from None
            sub = claims.get("sub") if isinstance(claims.get("sub"), str) else None
            sid = claims.get("sid") if isinstance(claims.get("sid"), str) else None
            ended = await stage.sessions.end_matching(sub=sub, idp_sid=sid, issuer=stage.config.oidc.issuer)
            log.info("back-channel logout ended %d session(s)", ended)
            self._audit(
                signout_event(
                    user=sub, reason="revoked", session_id=f"idp-sid:{sid}" if sid else None, client=request.remote
                )
            )
            return web.Response(status=200, headers=headers)
        except InvalidProviderToken as exc:
            error = BadRequest(f"invalid logout token: {exc}")
            _malformed.info("back-channel logout refused ref=%s: %s", error.reference, error.detail)
            return web.json_response(
                {"error": "invalid_request", "error_description": "invalid logout token", "reference": error.reference},
                status=400,
                headers=headers,
            )
        except RolegateError as exc:
            status = 501 if isinstance(exc, NotFound) else 400 if exc.status < 500 else exc.status
            (_malformed if status == 400 else log).info(
                "back-channel logout refused ref=%s: %s", exc.reference, exc.detail
            )
            return web.json_response(
                {"error": "invalid_request", "reference": exc.reference}, status=status, headers=headers
            )
        except StoreUnavailable as exc:
            log.warning("back-channel logout failed: store unavailable: %s", exc)
            return web.json_response({"error": "temporarily_unavailable"}, status=503, headers=headers)


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def add_identity_routes(reserved: web.Application, holder: "RuntimeHolder", check_access: "CheckAccess") -> None:
    """Register the sign-in endpoints on the ``/.rolegate`` sub-application (paths relative to it);
    ``check_access`` is the proxy pipeline's decision, which forward-auth runs."""
    endpoints = IdentityEndpoints(holder)
    reserved.router.add_get("/login", endpoints.login)
    reserved.router.add_get("/callback", endpoints.callback)
    reserved.router.add_route("GET", "/logout", endpoints.logout)
    reserved.router.add_route("POST", "/logout", endpoints.logout)
    reserved.router.add_get("/logged-out", endpoints.logged_out)
    reserved.router.add_post("/logout/backchannel", endpoints.backchannel_logout)
    forward_auth = ForwardAuth(holder, check_access)
    reserved.router.add_route("*", "/auth", forward_auth.handle)
    reserved.router.add_route("*", "/auth/{original:.*}", forward_auth.handle)  # Envoy's ext_authz path_prefix
