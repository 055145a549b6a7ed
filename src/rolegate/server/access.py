"""One access decision for a request target, shared by the proxy pipeline and forward-auth.

normalize -> match -> authenticate -> authorize -> mint assertion; the result says what to forward
and which headers to add, or which error to answer. Every decision is handed to the audit log.
"""

from __future__ import annotations

import hashlib
import math
import time
from typing import Any

from aiohttp import web

from rolegate.audit import decision_event, request_event
from rolegate.authz.explain import Requirement, decide_route, requirement_of
from rolegate.errors import Forbidden, MethodNotAllowed, RolegateError, Unauthenticated
from rolegate.identity.authenticator import PENDING, bearer_token
from rolegate.identity.errors import AccountDisabled
from rolegate.identity.origin import identified_by_cookie, started_here
from rolegate.proxy.headers import EncodedHeaders
from rolegate.proxy.paths import normalize_path, split_segments
from rolegate.proxy.routes import Route, canonical_host
from rolegate.proxy.websocket import is_websocket_upgrade
from rolegate.server import metrics
from rolegate.server.runtime import Runtime

_NO_HEADERS: dict[str, str] = {}
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_DECISIONS = {(d, m): metrics.buffered(metrics.DECISIONS.labels(d, m)) for d in ("allow", "deny", "would-deny")
              for m in ("enforce", "log", "authenticated", "public")}


_ALLOWED = {m: _DECISIONS[("allow", m)] for m in ("enforce", "log", "authenticated", "public")}


def _read_recorded(runtime: Runtime) -> bool:
    audit = runtime.audit
    return audit is not None and audit.should_record_read()


class Access:
    """The outcome of check_access: either ``error`` is set, or the request may be forwarded."""

    __slots__ = ("route", "path_qs", "principal", "identity", "set_headers", "error", "allow_header",
                 "response_filter", "write", "scope")

    def __init__(self) -> None:
        self.route: Route | None = None
        self.path_qs = ""
        self.principal: Any = None
        self.identity: Any = None
        self.set_headers: dict[str, str] = _NO_HEADERS
        self.error: RolegateError | None = None
        self.allow_header: str | None = None
        self.response_filter: Any = None
        self.write = False
        self.scope: str | None = None


def _query_getter(query: str):
    parsed: dict[str, str] | None = None

    def get(name: str) -> str | None:
        nonlocal parsed
        if parsed is None:
            from urllib.parse import parse_qsl

            parsed = {}
            for key, value in parse_qsl(query, keep_blank_values=True):
                parsed.setdefault(key, value)  # the first value wins, like most frameworks
        return parsed.get(name)

    return get


async def check_access(runtime: Runtime, request: web.BaseRequest, method: str, host: str,
                       raw_target: str) -> Access:
    """Decide whether ``method raw_target`` on ``host`` may pass, for the caller of ``request``."""
    access = Access()
    started = time.perf_counter()
    try:
        raw_path, sep, query = raw_target.partition("?")
        path = normalize_path(raw_path)
        access.path_qs = path + sep + query
        match = runtime.routes.match(method, canonical_host(host), split_segments(path))
        if match is None:
            raise Forbidden(f"unmatched {method} {path}")
        if not match.method_allowed:
            access.allow_header = ", ".join(sorted(match.allowed_methods or ()))
            raise MethodNotAllowed(f"{method} {path}")
        route = access.route = match.route
        access.write = method not in _READ_METHODS
        identity_stage = runtime.identity
        if route.mode == "public":
            if identity_stage is not None:
                access.set_headers = _public_headers(identity_stage, request)
            if "Authorization" in request.headers:
                access.set_headers = _without_own_bearer(runtime, request, access.set_headers)
            # Nobody is identified here, so nobody holds `unless`: a public route's redaction applies to all.
            access.response_filter = runtime.redaction_filter(route.index)
            return access

        if identity_stage is None:
            raise Unauthenticated(f"{route.mode} route {route.name} needs a signed-in user (no session configured)")
        if route.scope or route.object:
            requirement = requirement_of(match, _query_getter(query), request.headers.get)
        else:
            requirement = requirement_of(match)
        scope = access.scope = requirement.scope

        # -- who is asking: remembered per Cookie header while nothing moved (see _Known), else worked out --
        cookies = request.headers.getall("Cookie", ())
        # Browsers send one Cookie header; several, or one too long to keep, is worked out every time.
        cookie = cookies[0] if len(cookies) == 1 and len(cookies[0]) <= _COOKIE_KEY_LENGTH else None
        # The epoch is taken first: a change while the awaited path runs makes what that path finds stale.
        epoch = runtime.epoch() if cookie is not None else None  # nothing to remember without a cookie
        known = _known.get((cookie, route.upstream, scope)) if epoch is not None else None
        if known is not None and known.epoch is epoch and time.time() < known.until and (
                "Authorization" not in request.headers):
            principal, identity, policy = known.principal, known.identity, known.policy
        else:
            known = None
            # A browser's cached session is answered from memory; anything else (a bearer token, a
            # session to refresh or write back, no credential at all) takes the awaited path.
            principal = identity_stage.authenticate_now(request)
            if principal is PENDING:
                principal = await identity_stage.authenticate(request)
            if principal is None:
                raise identity_stage.sign_in_required(f"{route.mode} route {route.name} needs a signed-in user",
                                                      scheme=None, host=host, raw_target=raw_target)
            # The policy first: bringing it up to date also loads a newer directory snapshot and forgets
            # the identities worked out from the old one, so a disabled account or a removed membership
            # counts from this request, not the next one.
            policy = runtime.policy_now()
            if policy is None:
                policy = await runtime.current_policy()
            identity = runtime.identity_now(principal)
            if identity is None:
                identity = await runtime.identity_for(principal)
            if identity.disabled:
                access.principal = principal
                _audit(runtime, "deny", method, path, route, principal, None, ("deny: the account is disabled",),
                       started, request)
                raise AccountDisabled(f"{principal.username} is disabled or unknown in the directory")
        access.principal = principal
        access.identity = identity

        # -- a WebSocket any site's page opens carries the cookie too: Cross-Site WebSocket Hijacking ------
        if is_websocket_upgrade(request) and identified_by_cookie(principal) and not (
                started_here(request, runtime.config.server)):
            _audit(runtime, "deny", method, path, route, principal, None,
                   ("deny: cross-site WebSocket upgrade identified by a cookie",), started, request)
            raise Forbidden(f"{principal.username} {method} {path}: WebSocket upgrade from origin "
                            f"{request.headers.get('Origin', '')[:200]!r} refused (not one of rolegate's origins)")

        # -- authorize against the current compiled policy -----------------------------------------------
        decision = decide_route(policy, identity, requirement, runtime.clock())
        if not decision.allowed:
            if route.mode == "enforce":
                _audit(runtime, "deny", method, path, route, principal, decision, decision.reasons, started, request)
                raise Forbidden(f"{principal.username} {method} {path}: {'; '.join(decision.reasons)}")
            _audit(runtime, "would-deny", method, path, route, principal, decision, decision.reasons, started,
                   request)
        elif not access.write and _read_recorded(runtime):
            _audit(runtime, "allow", method, path, route, principal, decision, None, started, request)
        else:
            # Counted only: a read not sampled for the trail, or a write (the pipeline records those
            # durably before forwarding, see record_write).
            _ALLOWED[route.mode].inc()

        # -- what the upstream learns: identity headers and the signed assertion ---------------------------
        if known is not None:
            access.set_headers = known.headers
        else:
            headers_key = _headers_key(runtime, request, principal, identity, policy, route, scope)
            cached = _headers_cache.get(headers_key)
            tokens = runtime.tokens
            if cached is not None and cached.not_before <= time.time() < cached.until and (
                    tokens is None or tokens.minter is None or tokens.keyring.in_step()):
                access.set_headers = cached.headers
            else:
                access.set_headers = await _upstream_headers(runtime, request, identity_stage, principal, identity,
                                                             policy, route, scope, headers_key)
            if epoch is not None:  # a single, short Cookie header on a runtime with a board
                _remember(runtime, identity_stage, request, cookie, route, scope, principal, identity, policy,
                          headers_key, epoch)

        # -- redaction: fields hidden unless the caller holds the route's `unless` permission -------------------
        redact = route.redact
        if redact is not None:
            unless = redact.unless
            if unless is None or not decide_route(policy, identity, Requirement("enforce", unless, requirement.scope, None),
                                                  runtime.clock()).allowed:
                access.response_filter = runtime.redaction_filter(route.index)
        return access
    except RolegateError as exc:
        access.error = exc
    return access


# Caches keyed by Cookie headers keep them as they are up to this length, and a digest of longer ones:
# a client sending 16 KiB headers cannot make 10,000 entries cost 160 MiB.
_COOKIE_KEY_LENGTH = 2048


def _cookie_key(cookies: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    if not cookies:
        return ()
    if len(cookies) == 1 and len(cookies[0]) <= _COOKIE_KEY_LENGTH:
        return (cookies[0],)
    if sum(len(c) for c in cookies) <= _COOKIE_KEY_LENGTH:
        return tuple(cookies)
    return ("#", hashlib.blake2b("\n".join(cookies).encode("utf-8", "surrogateescape"), digest_size=32).hexdigest())


_public_cookies: dict[tuple[Any, ...], dict[str, str]] = {}


def _public_headers(identity_stage: Any, request: web.BaseRequest) -> dict[str, str]:
    """A public route's upstream headers: the Cookie header without rolegate's own cookies (a signed-in
    browser sends its session cookie everywhere; no backend may see it), remembered per Cookie header."""
    cookies = request.headers.getall("Cookie", ())
    if not cookies:
        return _NO_HEADERS
    key = (identity_stage, *_cookie_key(cookies))  # the stage: a reload may rename the cookies
    headers = _public_cookies.get(key)
    if headers is None:
        kept = identity_stage.backend_cookie(cookies)
        headers = _NO_HEADERS if kept == "; ".join(cookies) else EncodedHeaders({"Cookie": kept})
        if len(_public_cookies) >= _HEADERS_MAX:
            _public_cookies.clear()
        _public_cookies[key] = headers
    return headers


def _without_own_bearer(runtime: Runtime, request: web.BaseRequest, headers: Any) -> Any:
    """A public route's headers, also dropping ``Authorization`` when it carries a token rolegate issued:
    apps send their token with every request, and no backend may see rolegate's credential."""
    tokens = runtime.tokens
    token = bearer_token(request)
    if tokens is None or token is None or not tokens.service.is_ours(token):
        return headers
    return EncodedHeaders({**(headers or {}), "Authorization": ""})


class _Known:
    """What the last full check found for one (Cookie header, upstream, scope): who is asking, their authz
    identity, the policy and the upstream headers. Valid while ``runtime.epoch()`` is still ``epoch``
    (nothing on the version board moved: no revocation, policy, directory, day-pass or key change, here
    or, through the Store poll, elsewhere) and until ``until``: the session's next last-seen write,
    refresh or expiry, the assertion's refresh time and the key ring's next check. The decision itself
    is still made (memoized) and audited on every request."""

    __slots__ = ("principal", "identity", "policy", "headers", "until", "epoch")

    def __init__(self, principal: Any, identity: Any, policy: Any, headers: EncodedHeaders, until: float,
                 epoch: object) -> None:
        self.principal = principal
        self.identity = identity
        self.policy = policy
        self.headers = headers
        self.until = until
        self.epoch = epoch


_known: dict[tuple[str, str, str | None], _Known] = {}


def _remember(runtime: Runtime, identity_stage: Any, request: web.BaseRequest, cookie: str, route: Route,
              scope: str | None, principal: Any, identity: Any, policy: Any, headers_key: tuple[Any, ...],
              epoch: object) -> None:
    """Keep what this check found for the next request with the same Cookie header, when it came from a
    browser session answered from memory (never a bearer token, a day pass or an awaited answer)."""
    if principal.auth != "session" or "Authorization" in request.headers:
        return
    until = identity_stage.session_quiet_until(cookie, principal)
    cached = _headers_cache.get(headers_key)
    if cached is None or until <= 0.0:
        return
    until = min(until, cached.until)
    tokens = runtime.tokens
    if tokens is not None and tokens.minter is not None:
        until = min(until, tokens.keyring.checked_until)
    if until <= time.time() or cached.not_before > time.time():
        return
    if len(_known) >= _HEADERS_MAX:
        _known.clear()
    _known[(cookie, route.upstream, scope)] = _Known(principal, identity, policy, cached.headers, until, epoch)


class _Headers:
    """Upstream headers of one (principal, identity, policy, scope, upstream, Cookie header), and when
    they stop being valid: the assertion's refresh time or a time-bound binding starting or ending."""

    __slots__ = ("headers", "not_before", "until")

    def __init__(self, headers: EncodedHeaders, not_before: float, until: float) -> None:
        self.headers = headers
        self.not_before = not_before
        self.until = until


_HEADERS_MAX = 10_000
_headers_cache: dict[tuple[Any, ...], _Headers] = {}
_headers_owner: list[Any] = [None]  # the Runtime the cache was filled for; another one starts it afresh


def _headers_key(runtime: Runtime, request: web.BaseRequest, principal: Any, identity: Any, policy: Any,
                 route: Route, scope: str | None) -> tuple[Any, ...]:
    """Everything the upstream headers depend on (see ``_upstream_headers``)."""
    if _headers_owner[0] is not runtime:
        _headers_cache.clear()
        _known.clear()
        _headers_owner[0] = runtime
    cookies = request.headers.getall("Cookie", ())
    # identity.key: its groups (a string with a cached hash); a disabled identity never gets this far
    return (principal, identity.key, policy, scope, route.upstream, _cookie_key(cookies))


async def _upstream_headers(runtime: Runtime, request: web.BaseRequest, identity_stage: Any, principal: Any,
                            identity: Any, policy: Any, route: Route, scope: str | None,
                            key: tuple[Any, ...]) -> EncodedHeaders:
    """Identity headers, the caller's own cookies and the signed assertion, built once and reused.

    The key (``_headers_key``) holds everything the answer depends on: the principal object (a
    session's principal is replaced when the session is refreshed or the session cache is dropped
    on a revocation), the authz identity's key (user, directory groups, day pass), the policy object (a
    new one on every version move), the scope, the upstream and the raw Cookie header values.
    ``until`` bounds the entry by the assertion's refresh time and by the policy entry's validity,
    so nothing outlives the answer it caches. check_access reads a valid entry without calling this.
    """
    tokens = runtime.tokens
    minter = tokens.minter if tokens is not None else None
    if minter is not None:
        await tokens.keyring.sync()
    now = time.time()
    cached = _headers_cache.get(key)
    if cached is not None and cached.not_before <= now < cached.until:
        return cached.headers
    headers = identity_stage.upstream_headers(request, principal)
    not_before, until = -math.inf, math.inf
    if minter is not None:
        from rolegate.authz import effective_permissions, roles_of
        from rolegate.tokens import audience_for

        try:
            entry = policy.entry(identity, scope, now)
            not_before, until = entry.not_before, entry.expires
        except Exception:  # noqa: BLE001 - the functions below fail closed; just do not cache
            until = now
        assertion, refresh_at = minter.assertion_headers_until(
            sub=principal.username, name=principal.name or principal.username, email=principal.email or "",
            roles=roles_of(policy, identity, scope, now), scope=scope or "",
            perms=effective_permissions(policy, identity, scope, now), sid=principal.session_id or "",
            ver=policy.version, aud=audience_for(route.upstream, runtime.config.upstreams.get(route.upstream)))
        headers = {**headers, **assertion}
        until = min(until, refresh_at)
        if not principal.session_id:
            until = now  # minted per request (no session to cache it for): never reused
    encoded = EncodedHeaders(headers)
    if until > now:
        if len(_headers_cache) >= _HEADERS_MAX:
            _headers_cache.clear()
        _headers_cache[key] = _Headers(encoded, not_before, until)
    return encoded


def _audit(runtime: Runtime, verdict: str, method: str, path: str, route: Route, principal: Any, decision: Any,
           reasons: Any, started: float, request: web.BaseRequest) -> None:
    """Hand a decision to the audit log: every denial, and the allowed reads the caller sampled."""
    _DECISIONS[(verdict, route.mode)].inc()
    audit = runtime.audit
    if audit is None:
        return
    if reasons is None:
        reasons = decision.reasons  # worked out only for events that are recorded
    audit.emit(decision_event(
        decision=verdict, user=principal.username, method=method, path=path,
        permission=decision.permission if decision is not None else route.permission,
        scope=decision.scope if decision is not None else None, route=route.name, mode=route.mode,
        reasons=reasons, latency_us=int((time.perf_counter() - started) * 1e6),
        ref=request.headers.get("X-Request-Id"), client=request.remote, auth=getattr(principal, "auth", None)))


async def record_write(runtime: Runtime, request: web.BaseRequest, access: Access, method: str) -> None:
    """A write about to be forwarded: its event is committed first (durable_writes), so no write that
    got a response can be missing from the audit trail, even after a crash."""
    audit = runtime.audit
    route = access.route
    if audit is None or route is None:
        return
    principal = access.principal
    await audit.emit_write(decision_event(
        decision="allow", user=principal.username if principal is not None else None, method=method,
        path=access.path_qs.partition("?")[0], permission=route.permission, scope=access.scope,
        route=route.name, mode=route.mode, ref=request.headers.get("X-Request-Id"), client=request.remote,
        auth=getattr(principal, "auth", None) if principal is not None else "public"))


def record_outcome(runtime: Runtime, request: web.BaseRequest, access: Access, method: str, status: int,
                   started: float) -> None:
    """The upstream's answer to a write that passed (method, path, status)."""
    audit = runtime.audit
    route = access.route
    if audit is None or route is None:
        return
    principal = access.principal
    try:
        audit.emit(request_event(
            user=principal.username if principal is not None else None, method=method,
            path=access.path_qs.partition("?")[0], status=status, route=route.name, upstream=route.upstream,
            latency_us=int((time.perf_counter() - started) * 1e6), ref=request.headers.get("X-Request-Id"),
            client=request.remote))
    except RolegateError:
        pass  # the durable decision event already holds this write; a full queue must not fail the response
