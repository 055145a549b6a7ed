"""The identity stage of one Runtime: who is calling (sessions, bearer tokens), and sign-in itself.

Built synchronously with the Runtime (nothing can fail at request time that config could catch);
network and store resources open lazily inside the worker's event loop.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from pathlib import Path
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote

from aiohttp import web

from rolegate.audit import AuditLog
from rolegate.config import Config
from rolegate.identity.authenticator import PENDING, Authenticator, Pending, bearer_token
from rolegate.identity.authenticator_cookie_session import CookieSessionAuthenticator
from rolegate.identity.discovery import HttpSource, ProviderMetadata
from rolegate.identity.errors import SignInRequired
from rolegate.identity.jwks import ProviderKeys
from rolegate.identity.oidc_client import OIDCClient
from rolegate.identity.principal import Principal, identity_headers
from rolegate.identity.provider_jwt import ProviderTokens
from rolegate.identity.redirect_target import RedirectPolicy
from rolegate.identity.registry import build_authenticators
from rolegate.identity.revocation_watch import RevocationWatch
from rolegate.identity.sealed_cookie import CookieSealer
from rolegate.identity.sessions import Session, SessionStore
from rolegate.limits import COOKIE_KEY_LENGTH, COOKIE_VALUES
from rolegate.memo import BoundedCache
from rolegate.errors import ServiceUnavailable
from rolegate.store import Store, StoreUnavailable, open_store

if TYPE_CHECKING:
    # A type only: the day-pass package (segno and all) loads when a stage is built (registry.py), not on import.
    from rolegate.identity.daypass.service import DaypassService
    from rolegate.tokens.service import TokenService  # tokens sits above identity (tests/test_layers.py)

log = logging.getLogger("rolegate.identity")

RESERVED = "/.rolegate"
LOGIN_PATH = f"{RESERVED}/login"
CALLBACK_PATH = f"{RESERVED}/callback"
LOGIN_COOKIE_PREFIX = "rolegate_login_"


class _Missing(enum.Enum):
    """The type of ``_MISSING``: an enum member, so that ``is not _MISSING`` narrows a cache hit for mypy."""

    MISSING = 0


_MISSING: Final = _Missing.MISSING


class IdentityStage:
    """Authenticates requests (``await authenticate(request)``) and backs the sign-in endpoints."""

    def __init__(
        self,
        config: Config,
        *,
        base_dir: Path | None = None,
        store: Store | None = None,
        board: Any = None,
        audit: AuditLog | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.board = board
        self.audit = audit  # sign-in, day-pass use and expiry events (None: a stage without I/O, in tests)
        self.clock = clock
        # The two that cannot come at construction: the token service needs this stage to authenticate the
        # sessions it grants for, so the Runtime hands it over once both are open (``use_tokens``); the day-pass
        # service is made on first use (daypass_service), keeping its package unloaded until then.
        self.tokens: TokenService | None = None
        self.daypass: DaypassService | None = None
        self.base_dir = base_dir
        self.redirects = RedirectPolicy(config.server.public_url, config.server.allowed_hosts)
        self.http = HttpSource()
        oidc = config.oidc
        self.metadata: ProviderMetadata | None = None
        self.client: OIDCClient | None = None
        self.provider_tokens: ProviderTokens | None = None
        if oidc is not None:
            timeout = oidc.timeout.total_seconds()
            self.metadata = ProviderMetadata(oidc.issuer, self.http, timeout=timeout)
            keys = ProviderKeys(
                self.metadata, self.http, min_refresh=oidc.jwks_min_refresh.total_seconds(), timeout=timeout
            )
            self.provider_tokens = ProviderTokens(
                issuer=oidc.issuer,
                client_id=oidc.client_id,
                algorithms=oidc.algorithms,
                leeway=oidc.clock_skew.total_seconds(),
                keys=keys,
            )
            self.client = OIDCClient(oidc, self.metadata, self.http, config.server.public_url + CALLBACK_PATH)
        session = config.session
        self.cookie_sealer: CookieSealer | None = None
        self.login_sealer: CookieSealer | None = None
        self.refresh_before = 60.0
        if session is not None:
            secret = session.secret.get_secret_value()
            self.cookie_sealer = CookieSealer(secret, "session-cookie")
            self.login_sealer = CookieSealer(secret, "login-state")
            self.refresh_before = session.refresh_before.total_seconds()
        self._store = store
        self._owns_store = store is None
        self._sessions: SessionStore | None = None
        self._open_lock = asyncio.Lock()
        # raw Cookie header -> value of the session cookie in it (see _cookie)
        self._cookie_values: BoundedCache[str, str | None] = BoundedCache(COOKIE_VALUES)
        # Cookies no backend may see (see backend_cookie).
        own: set[str] = set()
        if session is not None:
            own.add(session.cookie_name)
        if config.daypass is not None:  # day passes (issue 7): the pass cookie and its confirm cookie
            own |= {config.daypass.cookie_name, config.daypass.cookie_name + "_confirm"}
        self._own_cookies = frozenset(own)
        self.authenticators: list[Authenticator] = build_authenticators(self)
        self._cookie_sessions = next(
            (a for a in self.authenticators if isinstance(a, CookieSessionAuthenticator)), None
        )

    def use_tokens(self, service: TokenService) -> None:
        """Enable the ``rolegate_token`` bearer authenticator with the Runtime's open token service."""
        self.tokens = service

    # -- resources ------------------------------------------------------------------------------
    @property
    def sign_in_enabled(self) -> bool:
        return self.client is not None and self.cookie_sealer is not None

    @property
    def sessions(self) -> SessionStore:
        assert self._sessions is not None, "call await stage.open() first"
        return self._sessions

    async def open(self) -> None:
        """Open the store and the session layer (idempotent; called on first use)."""
        if self._sessions is not None:
            return
        async with self._open_lock:
            if self._sessions is not None:
                return
            if self._store is None:
                self._store = await open_store(self.config.storage, base_dir=self.base_dir)
            session = self.config.session
            if session is not None:
                self._sessions = SessionStore(
                    self._store,
                    RevocationWatch(self._store, board=self.board),
                    secret=session.secret.get_secret_value(),
                    lifetime=session.lifetime.total_seconds(),
                    idle_timeout=session.idle_timeout.total_seconds(),
                )

    @property
    def store(self) -> Store:
        assert self._store is not None, "call await stage.open() first"
        return self._store

    async def close(self) -> None:
        await self.http.close()
        if self._owns_store and self._store is not None:
            await self._store.close()
            self._store = None

    # -- authentication -------------------------------------------------------------------------
    async def authenticate(self, request: web.BaseRequest) -> Principal | None:
        """The caller's Principal, None when no credential was presented; SignInRequired for a bad token."""
        if self.config.session is not None:
            await self.open()
        for authenticator in self.authenticators:
            principal = await authenticator.authenticate(request)
            if principal is not None:
                return principal
        if bearer_token(request) is not None:
            # A bearer token nobody recognised is an error, not an anonymous request (RFC 6750 §3.1).
            raise SignInRequired("bearer token not recognised by any authenticator", bearer_error="invalid_token")
        return None

    def authenticate_now(self, request: web.BaseRequest) -> Principal | Pending | None:
        """``authenticate``'s answer when no authenticator needs I/O for it (a browser's cached
        session: the common request), else PENDING: then await ``authenticate``."""
        for authenticator in self.authenticators:
            principal = authenticator.authenticate_now(request)
            if principal is not None:
                return principal  # a Principal, or PENDING
        # Nobody recognised a credential: anonymous, unless a bearer token nobody took (an error).
        return None if bearer_token(request) is None else PENDING

    def session_quiet_until(self, raw_cookie: str, principal: Principal) -> float:
        """Until when this Cookie header stands for ``principal``'s session answered from memory (0: not)."""
        cookie_sessions = self._cookie_sessions
        return cookie_sessions.quiet_until(raw_cookie, principal) if cookie_sessions is not None else 0.0

    def session_now(self, request: web.BaseRequest) -> tuple[Session | Pending | None, float]:
        """``session_from_request`` answered from memory, or PENDING; with the time until which
        the session cookie stays valid."""
        sessions, session_config = self._sessions, self.config.session
        if sessions is None or self.cookie_sealer is None or session_config is None:
            return PENDING, 0.0  # not opened yet (sessions exist only with a session section)
        name = session_config.cookie_name
        value = self._cookie(request, name)
        payload = self.cookie_sealer.unseal(value, name=name)
        if payload is None or value is None:  # unseal(None) is None: the second test is for mypy
            return None, 0.0
        sid, tag = payload.get("i"), payload.get("u")
        if not isinstance(sid, str) or not isinstance(tag, str):
            return None, 0.0
        return sessions.find_now(tag, sid, time.time()), self.cookie_sealer.opened_until(value, name=name)

    async def session_from_request(self, request: web.BaseRequest) -> Session | None:
        """The live session named by the request's session cookie, or None."""
        session_config = self.config.session
        if session_config is None or self.cookie_sealer is None:
            return None
        name = session_config.cookie_name
        payload = self.cookie_sealer.unseal(self._cookie(request, name), name=name)
        if payload is None:
            return None
        sid, tag = payload.get("i"), payload.get("u")
        if not isinstance(sid, str) or not isinstance(tag, str):
            return None
        await self.open()
        try:
            return await self.sessions.find(tag, sid)
        except StoreUnavailable as exc:
            raise ServiceUnavailable(f"session store unavailable: {exc}") from None

    def _cookie(self, request: web.BaseRequest, name: str) -> str | None:
        """``request.cookies.get(name)``, remembered per raw Cookie header: a browser sends the same
        header on every request, and parsing it is a measurable share of an authenticated request."""
        raw = request.headers.get("Cookie", "")
        values = self._cookie_values
        hit = values.get(raw, _MISSING)
        if hit is not _MISSING:
            return hit
        value = request.cookies.get(name)  # parsed from exactly this raw header
        if len(raw) <= COOKIE_KEY_LENGTH:  # longer Cookie headers are parsed every time
            values.put(raw, value)
        return value

    def sign_in_required(self, detail: str, *, scheme: str | None, host: str, raw_target: str) -> SignInRequired:
        """The error for an anonymous request to ``host raw_target``, knowing where to sign in."""
        return SignInRequired(detail, login_url=self.login_url_for(scheme, host, raw_target))

    def login_url_for(self, scheme: str | None, host: str, raw_target: str) -> str | None:
        if not self.sign_in_enabled or not raw_target.startswith("/"):
            return None
        public = self.redirects.public_url
        candidate = f"{scheme or self.config.server.public_scheme}://{host}{raw_target}"
        target = self.redirects.safe_target(candidate) or self.redirects.safe_target(raw_target)
        if target is None:
            return f"{public}{LOGIN_PATH}"
        return f"{public}{LOGIN_PATH}?rd={quote(target, safe='')}"

    def upstream_headers(self, request: web.BaseRequest, principal: Principal) -> dict[str, str]:
        """Headers the forwarder sets upstream: who the user is, and the Cookie header minus rolegate's own
        cookies (a backend must never see a session credential). A bearer token rolegate issued is
        rolegate's credential too: it is dropped, so a backend cannot replay it against other routes (the
        signed assertion says who is asking). The IdP's own access tokens pass, for backends calling APIs."""
        headers = identity_headers(principal)
        raw = request.headers.getall("Cookie", [])
        if raw:
            headers["Cookie"] = self.backend_cookie(raw)  # empty: the forwarder drops the header
        if principal.rolegate_bearer:
            headers["Authorization"] = ""
        return headers

    def backend_cookie(self, raw: Iterable[str]) -> str:
        """The Cookie header values ``raw`` without rolegate's own cookies (session, day pass and its
        confirmation, sign-in state): what any backend may see, on every route, public ones included."""
        own = self._own_cookies
        kept = []
        for part in "; ".join(raw).split(";"):
            name = part.split("=", 1)[0].strip()
            if not name or name in own or name.startswith(LOGIN_COOKIE_PREFIX):
                continue
            kept.append(part.strip())
        return "; ".join(kept)
