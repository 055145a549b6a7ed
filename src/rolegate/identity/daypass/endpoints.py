"""HTTP glue for ``GET/POST /.rolegate/pass/{code}``, the pass home and the token endpoint's day-pass grant.

GET only shows who issued the pass, for what and until when, with a form: link previews and mail
scanners fetch links, and a fetch must never use up a one-device pass. The POST, carrying a
confirmation token bound to that page (sealed cookie + form field), redeems it on this device and
sends the browser to the template's landing when this pass opens it, else to the pass home
(``/.rolegate/pass/home``): who the pass is for, until when, and the pages it opens.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from aiohttp import web

from rolegate.authz import Identity
from rolegate.config import Config
from rolegate.display_time import display_zone
from rolegate.errors import NotFound, RolegateError, TooManyRequests
from rolegate.identity.daypass import codes
from rolegate.identity.daypass.audit import pass_event, record_durably
from rolegate.identity.daypass.errors import PassEnded
from rolegate.identity.daypass.landing import landing_for
from rolegate.identity.daypass.links import PassLink, pass_links
from rolegate.identity.daypass.pages import (
    already_active_page,
    confirm_page,
    ended_page,
    home_page,
    no_pass_page,
)
from rolegate.identity.daypass.principal import DaypassPrincipal
from rolegate.identity.daypass.ratelimit import allow_attempt
from rolegate.identity.daypass.record import PassRecord
from rolegate.identity.daypass.redeem import Lookup, claim_device, look_up, note_expiry
from rolegate.identity.daypass.service import DaypassService, daypass_service
from rolegate.proxy.routes import canonical_host
from rolegate.web.responses import error_response

if TYPE_CHECKING:
    from rolegate.server.runtime import Runtime, RuntimeHolder

log = logging.getLogger("rolegate.daypass")

CONFIRM_TTL = 15 * 60
# The token endpoint's day-pass grant (tokens/endpoint.py): (request, code) -> Principal | None.
TokenRedeemer = Callable[[web.Request, str], Awaitable[DaypassPrincipal | None]]


def client_address(request: web.BaseRequest, trusted: tuple[str, ...]) -> str:
    """The caller's address: the peer, or the nearest untrusted hop of X-Forwarded-For behind trusted proxies."""
    peer = request.remote or "unknown"
    if not trusted:
        return peer
    networks = [ipaddress.ip_network(n, strict=False) for n in trusted]

    def is_trusted(addr: str) -> bool:
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            return False
        return any(ip in net for net in networks)

    if not is_trusted(peer):
        return peer
    hops = [h.strip() for h in ",".join(request.headers.getall("X-Forwarded-For", [])).split(",") if h.strip()]
    for hop in reversed(hops):
        if not is_trusted(hop):
            return hop
    return peer


def _code_key(code: str) -> str:
    # Per-pass limit keyed by the code's hash, whether or not it exists: the limit itself never tells
    # a guesser which codes are real.
    return "code:" + hashlib.sha256(b"rolegate/daypass/rate\x00" + code.encode()).hexdigest()[:32]


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})


class DaypassEndpoints:
    """Handlers bound to the RuntimeHolder, so a reload switches them to the new config."""

    def __init__(self, holder: "RuntimeHolder") -> None:
        self.holder = holder

    def _context(self) -> tuple["Runtime", DaypassService]:
        runtime = self.holder.runtime
        stage = runtime.identity
        if runtime.config.daypass is None or stage is None or runtime.config.session is None:
            raise NotFound("day passes are not configured")
        return runtime, daypass_service(stage)

    async def _limited(self, runtime: "Runtime", service: DaypassService, client: str, code: str) -> bool:
        """Count this attempt per client address and per pass; True when over either limit."""
        await service.stage.open()
        daypass = runtime.config.daypass
        assert daypass is not None  # _context checked it
        limit, window = daypass.rate
        store = service.store
        if not await allow_attempt(store, f"addr:{client}", limit, window):
            log.info("day pass attempts from %s over the limit", client)
            return True
        return not await allow_attempt(store, _code_key(code), limit, window)

    async def _checked(
        self, request: web.Request, runtime: "Runtime", service: DaypassService, code: str
    ) -> tuple[Lookup | None, web.Response | None, str]:
        client = client_address(request, runtime.config.server.trusted_proxies)
        if await self._limited(runtime, service, client, code):
            return None, ended_page("rate_limited", service.contact), client
        now = service.clock()
        found = await look_up(service.store, code, now)
        if found.outcome == "expired" and found.record is not None:
            await note_expiry(service.store, service.audit, found.record, found.version, client=client, now=now)
        if found.outcome in ("invalid", "expired", "revoked"):
            return found, ended_page(found.outcome, service.contact), client
        return found, None, client

    async def _landing(self, runtime: "Runtime", rec: PassRecord) -> str:
        return await landing_for(runtime, rec.template, rec.scope, pass_identity(rec.id))

    def _zone(self, runtime: "Runtime", template: str) -> str:
        return pass_zone(runtime.config, template)

    # -- GET /.rolegate/pass/home: where a redeemed pass lands --------------------------------------------
    async def home(self, request: web.Request) -> web.StreamResponse:
        try:
            if request.method not in ("GET", "HEAD"):
                # Registered for every method, so that no method of this path reaches /pass/{code}.
                return web.Response(status=405, headers={"Allow": "GET, HEAD", "Cache-Control": "no-store"})
            runtime, service = self._context()
            try:
                held = await service.holder(request)
            except PassEnded as exc:
                return ended_page(exc.kind, service.contact)
            if held is None:
                return no_pass_page(service.contact)
            _principal, rec = held
            links = await links_of(runtime, service, rec)
            return home_page(
                rec, self._zone(runtime, rec.template), links, now=service.clock(), contact=service.contact
            )
        except RolegateError as exc:
            return error_response(request, exc)

    # -- GET: the confirmation page -------------------------------------------------------------------
    async def show(self, request: web.Request) -> web.StreamResponse:
        try:
            runtime, service = self._context()
            code = request.match_info["code"]
            found, refusal, _client = await self._checked(request, runtime, service, code)
            if refusal is not None:
                return refusal
            assert found is not None and found.record is not None  # not refused: ok or used up, with its record
            rec = found.record
            zone = self._zone(runtime, rec.template)
            if await service.live_session(request, rec.id):
                return already_active_page(rec, zone, await self._landing(runtime, rec))
            if found.outcome == "used_up":
                return ended_page("used_up", service.contact)
            nonce = secrets.token_urlsafe(24)
            response = confirm_page(rec, zone, csrf=nonce, action=request.path)
            sealed = service.csrf_sealer.seal({"n": nonce, "p": rec.id}, name=service.csrf_cookie_name, ttl=CONFIRM_TTL)
            response.set_cookie(
                service.csrf_cookie_name,
                sealed,
                max_age=CONFIRM_TTL,
                path=codes.PASS_PATH,
                httponly=True,
                secure=runtime.config.server.secure_cookies,
                samesite="Strict",
            )
            return response
        except RolegateError as exc:
            return error_response(request, exc)

    # -- POST: use the pass on this device ----------------------------------------------------------------
    async def confirm(self, request: web.Request) -> web.StreamResponse:
        try:
            runtime, service = self._context()
            code = request.match_info["code"]
            found, refusal, client = await self._checked(request, runtime, service, code)
            if refusal is not None:
                return refusal
            assert found is not None and found.record is not None  # not refused: ok or used up, with its record
            rec = found.record
            if not await self._confirmation_valid(request, runtime, service, rec.id):
                return ended_page("stale_form", service.contact)
            landing = await self._landing(runtime, rec)
            if await service.live_session(request, rec.id):
                # Same browser, session alive: not a second device.
                return _see_other(landing)
            now = service.clock()
            claimed = await claim_device(service.store, code, via="browser", client=client, now=now)
            if claimed.outcome != "ok":
                return ended_page(claimed.outcome, service.contact)
            assert claimed.record is not None  # claimed: the updated record
            rec = claimed.record
            device = rec.redeemed[-1]["device"]
            cookie, max_age = await service.start_session(rec, device, now)
            await record_durably(
                service.audit,
                pass_event(
                    "redeem", rec, user=f"daypass:{rec.id}", client=client, reason=f"device {device} (browser)", ts=now
                ),
            )
            response = _see_other(landing)
            response.set_cookie(service.cookie_name, cookie, max_age=max_age, **service.cookie_args())
            response.del_cookie(service.csrf_cookie_name, path=codes.PASS_PATH)
            log.info("day pass %s redeemed on device %d", rec.id, device)
            return response
        except RolegateError as exc:
            return error_response(request, exc)

    async def _confirmation_valid(
        self, request: web.Request, runtime: "Runtime", service: DaypassService, pass_id: str
    ) -> bool:
        """The POST comes from the page we served for this pass, in this browser, recently."""
        public = urlsplit(runtime.config.server.public_url)
        origin = request.headers.get("Origin")
        if origin is not None and origin != "null":
            parts = urlsplit(origin)
            if (parts.scheme, parts.netloc.lower()) != (public.scheme, public.netloc.lower()):
                return False
        if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
            return False
        if request.content_length is not None and request.content_length > 4096:
            return False
        form = await request.post()
        submitted = form.get("csrf")
        payload = service.csrf_sealer.unseal(
            request.cookies.get(service.csrf_cookie_name), name=service.csrf_cookie_name
        )
        if not isinstance(submitted, str) or payload is None or payload.get("p") != pass_id:
            return False
        nonce = payload.get("n")
        return isinstance(nonce, str) and hmac.compare_digest(nonce.encode(), submitted.encode())

    # -- the token endpoint's urn:rolegate:daypass grant (mobile apps) -------------------------------------
    async def redeem_for_token(self, request: web.Request, code: str) -> DaypassPrincipal | None:
        """Redeem ``code`` for an app: counts a device; the Principal the token service starts a family for.

        None for an invalid, expired, revoked or used-up pass; TooManyRequests (429) over the rate limit.
        """
        runtime, service = self._context()
        found, refusal, client = await self._checked(request, runtime, service, code)
        if found is None:
            raise TooManyRequests(f"day pass redemption from {client} over the limit")
        if refusal is not None or found.outcome != "ok":
            return None
        now = service.clock()
        claimed = await claim_device(service.store, code, via="token", client=client, now=now)
        if claimed.outcome != "ok":
            return None
        rec = claimed.record
        assert rec is not None  # claimed: the updated record
        device = rec.redeemed[-1]["device"]
        await record_durably(
            service.audit,
            pass_event(
                "redeem", rec, user=f"daypass:{rec.id}", client=client, reason=f"device {device} (app token)", ts=now
            ),
        )
        return DaypassPrincipal(
            pass_id=rec.id,
            name=rec.name,
            company=rec.company,
            scope=rec.scope,
            session_id=f"{rec.id}.{device}",
            expires_at=rec.expires_at,
        )


def pass_identity(pass_id: str) -> Identity:
    """The authz Identity of a pass's holder (as the Runtime builds it for a request)."""
    return Identity(f"daypass:{pass_id}", (), daypass=pass_id)


def pass_zone(config: Config, template: str) -> str:
    """The zone a pass's times are shown in: its template's (where its day ends)."""
    tpl = config.daypass.templates.get(template) if config.daypass is not None else None
    return tpl.timezone if tpl is not None else display_zone(config)


async def links_of(runtime: "Runtime", service: DaypassService, rec: PassRecord) -> list[PassLink]:
    """The pages this pass opens now, against the live policy (remembered in ``service.links``)."""
    policy = runtime.policy_now()
    if policy is None:
        policy = await runtime.current_policy()
    key = (rec.id, rec.scope)
    cached = service.links.get(key)
    if cached is not None and cached[0] is policy and cached[1] is runtime.routes:
        return cached[2]
    host = canonical_host(runtime.config.server.public_host)
    links = pass_links(runtime.config, runtime.routes, policy, pass_identity(rec.id), rec.scope, host, runtime.clock())
    service.links.put(key, (policy, runtime.routes, links))
    return links


def add_daypass_routes(reserved: web.Application, holder: "RuntimeHolder") -> DaypassEndpoints:
    """Mount ``/pass/home`` and ``/pass/{code}`` (GET page, POST confirm) on the ``/.rolegate`` sub-application.

    The home comes first and takes every method: aiohttp tries resources in order, so ``home`` can
    never be taken for a code (a code is 43 characters anyway).
    """
    endpoints = DaypassEndpoints(holder)
    reserved.router.add_route("*", "/pass/home", endpoints.home)
    reserved.router.add_get("/pass/{code}", endpoints.show, allow_head=False)
    reserved.router.add_post("/pass/{code}", endpoints.confirm)
    return endpoints


class _FixedRuntime:
    """A holder that always names one Runtime (for wiring inside Runtime.create, before any holder exists)."""

    __slots__ = ("runtime",)

    def __init__(self, runtime: "Runtime") -> None:
        self.runtime = runtime


def daypass_token_redeemer(source: "RuntimeHolder | Runtime") -> TokenRedeemer:
    """The callable for ``TokenStage(..., redeem_daypass=...)``, from a RuntimeHolder or a Runtime."""
    holder = source if hasattr(source, "runtime") else _FixedRuntime(source)
    return DaypassEndpoints(holder).redeem_for_token  # type: ignore[arg-type]
