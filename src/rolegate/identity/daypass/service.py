"""The day-pass stage of one IdentityStage: the pass cookie, its sessions, and the check at every request.

One instance per IdentityStage (``daypass_service(stage)``). It takes the audit log and the clock
from the stage (``stage.audit``, ``stage.clock``, given to it at construction) so that tests can move time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from rolegate.audit import AuditLog
from rolegate.authz import Policy
from rolegate.config import Config
from rolegate.identity.daypass.audit import pass_event, record
from rolegate.identity.daypass.errors import PassEnded
from rolegate.identity.daypass.links import PassLink
from rolegate.identity.daypass.pages import ended_message
from rolegate.identity.daypass.principal import DaypassPrincipal
from rolegate.identity.daypass.record import PassRecord, load_pass
from rolegate.identity.daypass.redeem import note_expiry
from rolegate.identity.daypass.sessions import PassSession, create_session, find_session, mark_used
from rolegate.identity.sealed_cookie import CookieSealer
from rolegate.errors import ServiceUnavailable
from rolegate.limits import DAYPASS_SESSIONS, PASS_LINKS
from rolegate.memo import BoundedCache
from rolegate.proxy.routes import RouteTable
from rolegate.store import Store, StoreUnavailable
from rolegate.store.version_board import VersionBoard

if TYPE_CHECKING:
    from rolegate.identity.stage import IdentityStage

log = logging.getLogger("rolegate.daypass")

# The pass cookie outlives its pass by this much, so that a holder who comes back after the end reads
# "this day pass has expired" (and whom to call) instead of "no day pass on this device". It grants
# nothing by then: every request checks the pass itself.
ENDED_NOTICE_SECONDS = 12 * 3600.0


class DaypassService:
    """Pass sessions for one IdentityStage."""

    def __init__(self, stage: "IdentityStage") -> None:
        self.stage = stage
        config = stage.config
        assert config.daypass is not None and config.session is not None
        secret = config.session.secret.get_secret_value()
        self.cookie_name = config.daypass.cookie_name
        self.csrf_cookie_name = config.daypass.cookie_name + "_confirm"
        self.cookie_sealer = CookieSealer(secret, "daypass-session")
        self.csrf_sealer = CookieSealer(secret, "daypass-confirm")
        # (pass id, session id) -> (session, record, record version): valid while the board's
        # ``daypass`` counter stands still (every issue and revocation moves it).
        self._cache: BoundedCache[tuple[str, str], tuple[PassSession, PassRecord, int]] = BoundedCache(DAYPASS_SESSIONS)
        self._cache_version = -2
        # (pass id, scope) -> (policy, route table, links): a pass holder's every 403 shows the list, and working
        # it out walks the whole route table; it only changes with the policy or the routes (a new object each).
        # Owned here, so per Runtime: a reload (a new stage, a new service) drops it.
        self.links: BoundedCache[tuple[str, str], tuple[Policy, RouteTable, list[PassLink]]] = BoundedCache(PASS_LINKS)

    # -- what the Runtime provides ------------------------------------------------------------------
    @property
    def config(self) -> Config:
        return self.stage.config

    @property
    def contact(self) -> str:
        daypass = self.config.daypass
        assert daypass is not None  # checked in __init__
        return daypass.contact

    @property
    def store(self) -> Store:
        return self.stage.store

    @property
    def board(self) -> VersionBoard | None:
        board: VersionBoard | None = self.stage.board  # IdentityStage(board=...) takes it untyped
        return board

    @property
    def audit(self) -> AuditLog | None:
        return self.stage.audit

    @property
    def clock(self) -> Callable[[], float]:
        return self.stage.clock

    # -- the pass cookie ----------------------------------------------------------------------------
    def cookie_args(self) -> dict[str, Any]:
        server = self.config.server
        args: dict[str, Any] = {"path": "/", "httponly": True, "secure": server.secure_cookies, "samesite": "Lax"}
        session = self.config.session
        assert session is not None  # checked in __init__
        if session.domain:
            args["domain"] = session.domain
        return args

    def seal_cookie(self, pass_id: str, session_id: str, ttl: float) -> str:
        return self.cookie_sealer.seal({"p": pass_id, "s": session_id}, name=self.cookie_name, ttl=ttl)

    def cookie_of(self, request: web.BaseRequest) -> tuple[str, str] | None:
        payload = self.cookie_sealer.unseal(request.cookies.get(self.cookie_name), name=self.cookie_name)
        if payload is None:
            return None
        pass_id, session_id = payload.get("p"), payload.get("s")
        if not isinstance(pass_id, str) or not isinstance(session_id, str):
            return None
        return pass_id, session_id

    async def start_session(self, rec: PassRecord, device: int, now: float) -> tuple[str, int]:
        """A session for a device that just redeemed ``rec``: (cookie value, cookie max-age)."""
        session_id, _session = await create_session(
            self.store, rec.id, device=device, expires_at=rec.expires_at, now=now
        )
        ttl = max(1.0, rec.expires_at - now) + ENDED_NOTICE_SECONDS
        return self.seal_cookie(rec.id, session_id, ttl), int(ttl)

    # -- at every request -----------------------------------------------------------------------------
    def _fresh_cache(self) -> bool:
        board = self.board
        if board is None:
            self._cache.clear()
            return False
        version = board.get("daypass")
        if version != self._cache_version:
            self._cache.clear()
            self._cache_version = version
        return True

    async def _load(self, pass_id: str, session_id: str) -> tuple[PassSession | None, PassRecord | None, int]:
        cacheable = self._fresh_cache()
        cached = self._cache.get((pass_id, session_id))
        if cached is not None:
            return cached
        store = self.store
        session = await find_session(store, pass_id, session_id)
        found = await load_pass(store, pass_id)
        rec, version = found if found is not None else (None, 0)
        if cacheable and session is not None and rec is not None:
            self._cache.put((pass_id, session_id), (session, rec, version))
        return session, rec, version

    def _ended(self, kind: str, pass_id: str) -> PassEnded:
        return PassEnded(f"day pass {pass_id}: {kind}", public_message=ended_message(kind, self.contact), kind=kind)

    async def authenticate(self, request: web.BaseRequest) -> DaypassPrincipal | None:
        """The pass holder's Principal; None without a pass cookie; PassEnded once the pass stopped working."""
        held = await self.holder(request)
        return held[0] if held is not None else None

    async def holder(self, request: web.BaseRequest) -> tuple[DaypassPrincipal, PassRecord] | None:
        """``authenticate``, with the pass's record (for the pages that show it)."""
        cookie = self.cookie_of(request)
        if cookie is None:
            return None
        pass_id, session_id = cookie
        await self.stage.open()
        now = self.clock()
        try:
            session, rec, version = await self._load(pass_id, session_id)
        except StoreUnavailable as exc:
            raise ServiceUnavailable(f"day pass store unavailable: {exc}") from None
        if rec is None:
            raise self._ended("invalid", pass_id)
        status = rec.status(now)
        if status == "revoked":
            raise self._ended("revoked", pass_id)
        if status == "expired" or (session is not None and now >= session.expires_at):
            await note_expiry(self.store, self.audit, rec, version, client=request.remote, now=now)
            self._cache.pop((pass_id, session_id), None)
            raise self._ended("expired", pass_id)
        if session is None:
            # The pass works, but not on this device any more (its session was ended).
            raise self._ended("used_up", pass_id)
        if not session.used and await mark_used(self.store, session, now):
            record(
                self.audit,
                pass_event(
                    "use",
                    rec,
                    user=f"daypass:{rec.id}",
                    client=request.remote,
                    method=request.method,
                    path=request.path,
                    ts=now,
                ),
            )
        return DaypassPrincipal(
            pass_id=rec.id,
            name=rec.name,
            company=rec.company,
            scope=rec.scope,
            session_id=session.public_id,
            expires_at=min(rec.expires_at, session.expires_at),
        ), rec

    async def live_session(self, request: web.BaseRequest, pass_id: str) -> bool:
        """Whether this browser already holds a live session of ``pass_id`` (re-opening the link)."""
        cookie = self.cookie_of(request)
        if cookie is None or cookie[0] != pass_id:
            return False
        session, rec, _version = await self._load(*cookie)
        now = self.clock()
        return session is not None and rec is not None and rec.status(now) == "active" and now < session.expires_at


def daypass_service(stage: "IdentityStage") -> DaypassService:
    """The DaypassService of ``stage`` (created on first use)."""
    service = stage.daypass
    if service is None:
        service = DaypassService(stage)
        stage.daypass = service
    return service
