"""The browser session cookie set at sign-in; keeps the session alive with the provider's refresh token."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from aiohttp import web

from rolegate.identity.authenticator import PENDING, Authenticator, Pending
from rolegate.identity.errors import ProviderUnavailable
from rolegate.identity.oidc_client import TokenRefused
from rolegate.identity.principal import Principal, principal_from_claims
from rolegate.identity.provider_jwt import InvalidProviderToken
from rolegate.identity.registry import register
from rolegate.identity.sessions import Session
from rolegate.limits import COOKIE_KEY_LENGTH, QUIET_COOKIES
from rolegate.memo import BoundedCache
from rolegate.store import VersionConflict

if TYPE_CHECKING:
    from rolegate.identity.stage import IdentityStage

log = logging.getLogger("rolegate.identity.session")

# After the provider could not be reached for a refresh, wait this long before trying again.
_REFRESH_RETRY = 10.0


class CookieSessionAuthenticator(Authenticator):
    name = "cookie_session"

    def __init__(self, stage: "IdentityStage") -> None:
        super().__init__(stage)
        self._retry_at: dict[str, float] = {}
        # raw Cookie header -> (session, quiet until): until then, and while no session was revoked,
        # the same header names the same live session with nothing to write back or refresh.
        self._quiet: BoundedCache[str, tuple[Session, float]] = BoundedCache(QUIET_COOKIES)

    async def authenticate(self, request: web.BaseRequest) -> Principal | None:
        session = await self.stage.session_from_request(request)
        if session is None:
            return None
        session = await self._keep_alive(session)
        return session.principal if session is not None else None

    def authenticate_now(self, request: web.BaseRequest) -> Principal | Pending | None:
        raw = request.headers.get("Cookie")
        if raw is None:
            return None  # no session cookie: not ours to answer
        now = time.time()
        hit = self._quiet.get(raw)
        if hit is not None:
            session, until = hit
            if now < until and self.stage.sessions.is_current(session):
                session.data["seen"] = now
                return session.principal
            del self._quiet[raw]
        found, cookie_until = self.stage.session_now(request)
        if found is None or isinstance(found, Pending):
            return found
        session = found
        if self._refresh_due(session, now):
            return PENDING  # _keep_alive's work
        until = min(cookie_until, float(session.data["expires"]), self.stage.sessions.touch_at(session))
        if "rt" in session.data:
            until = min(until, float(session.data.get("tok_exp", 0)) - self.stage.refresh_before)
        if len(raw) <= COOKIE_KEY_LENGTH:  # longer headers are worked out each time (bounded memory)
            self._quiet.put(raw, (session, until))
        return session.principal

    def quiet_until(self, raw_cookie: str, principal: Principal) -> float:
        """Until when ``raw_cookie`` names ``principal``'s session with nothing to do (0: not known so)."""
        hit = self._quiet.get(raw_cookie)
        return hit[1] if hit is not None and hit[0].principal is principal else 0.0

    def _refresh_due(self, session: Session, now: float) -> bool:
        return float(session.data.get("tok_exp", 0)) - now <= self.stage.refresh_before and "rt" in session.data

    async def _keep_alive(self, session: Session) -> Session | None:
        """Refresh the provider tokens when near expiry; a refused refresh ends the session."""
        stage = self.stage
        now = time.time()
        if not self._refresh_due(session, now):
            return session
        if self._retry_at.get(session.key, 0.0) > now:
            return session
        sessions = stage.sessions
        lock = sessions.locks.setdefault(session.key, asyncio.Lock())
        async with lock:
            try:
                return await self._refresh(session)
            finally:
                sessions.locks.pop(session.key, None)

    async def _refresh(self, session: Session) -> Session | None:
        stage = self.stage
        sessions = stage.sessions
        oidc = stage.config.oidc
        assert oidc is not None and stage.client is not None and stage.provider_tokens is not None
        record = await sessions.store.get("sessions", session.key)
        if record is None:
            return None
        if float(record.value.get("tok_exp", 0)) - time.time() > stage.refresh_before:
            return Session(session.key, record.value, record.version)  # someone refreshed meanwhile
        refresh_token = sessions.refresh_token(session)
        if refresh_token is None:
            return session
        try:
            tokens = await stage.client.refresh(refresh_token)
            principal = None
            claims = None
            if isinstance(tokens.get("id_token"), str):
                claims = await stage.provider_tokens.verify_refreshed_id_token(
                    tokens["id_token"], subject=session.data["sub"]
                )
                principal = principal_from_claims(
                    claims, username_claim=oidc.username_claim, groups_claim=oidc.groups_claim, auth="session"
                )
        except TokenRefused as exc:
            log.info("session %s ended: the provider refused its refresh (%s)", session.principal.session_id, exc.error)
            await sessions.end(session.key)
            return None
        except (InvalidProviderToken, ValueError) as exc:
            log.warning("session %s ended: refreshed ID token rejected: %s", session.principal.session_id, exc)
            await sessions.end(session.key)
            return None
        except ProviderUnavailable as exc:
            # The provider is down: the session keeps working on what it already knows.
            log.warning("session %s not refreshed, provider unavailable: %s", session.principal.session_id, exc.detail)
            self._retry_at[session.key] = time.time() + _REFRESH_RETRY
            return session
        self._retry_at.pop(session.key, None)
        try:
            fresh = await sessions.replace_tokens(session, tokens=tokens, claims=claims, principal=principal)
        except VersionConflict:
            record = await sessions.store.get("sessions", session.key)
            return Session(session.key, record.value, record.version) if record is not None else None
        return fresh


@register("cookie_session", order=50)
def _factory(stage: "IdentityStage") -> Authenticator | None:
    # Sessions exist without SSO too (day passes); only the provider refresh needs oidc.
    if stage.config.session is None:
        return None
    return CookieSessionAuthenticator(stage)
