"""One access decision for a request target, shared by the proxy pipeline and forward-auth.

normalize -> match -> authenticate -> authorize -> mint assertion; the result says what to forward
and which headers to add, or which error to answer. Every decision is handed to the audit log.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, cast
from urllib.parse import parse_qsl

from aiohttp import web
from multidict import CIMultiDict

from rolegate.audit import decision_event, request_event
from rolegate.audit.events import DecisionVerdict
from rolegate.authz import Decision, Identity, Policy, effective_permissions, roles_of
from rolegate.authz.explain import decide_route
from rolegate.authz.requirement import Requirement, requirement_of
from rolegate.authz.where import where_for_route
from rolegate.config.sections.routing import RedactConfig
from rolegate.errors import Forbidden, MethodNotAllowed, RolegateError, Unauthenticated
from rolegate.identity.authenticator import Pending, bearer_token
from rolegate.identity.errors import AccountDisabled
from rolegate.identity.origin import identified_by_cookie, started_here
from rolegate.identity.principal import Principal
from rolegate.identity.stage import IdentityStage
from rolegate.limits import ACCESS_MEMO, COOKIE_KEY_LENGTH
from rolegate.memo import BoundedCache
from rolegate.proxy.headers import EncodedHeaders
from rolegate.proxy.paths import normalize_path, split_segments
from rolegate.proxy.redact import RedactionFilter
from rolegate.proxy.routes import Route, canonical_host
from rolegate.proxy.websocket import is_websocket_upgrade
from rolegate.server import metrics
from rolegate.server.runtime import Runtime
from rolegate.tokens import audience_for

_NO_HEADERS: dict[str, str] = {}
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_DECISIONS = {
    (d, m): metrics.buffered(metrics.DECISIONS.labels(d, m))
    for d in ("allow", "deny", "would-deny")
    for m in ("enforce", "log", "authenticated", "public")
}


_ALLOWED = {m: _DECISIONS[("allow", m)] for m in ("enforce", "log", "authenticated", "public")}


def _read_recorded(runtime: Runtime) -> bool:
    audit = runtime.audit
    return audit is not None and audit.should_record_read()


class Access:
    """The outcome of check_access: either ``error`` is set, or the request may be forwarded."""

    __slots__ = (
        "route",
        "path_qs",
        "principal",
        "identity",
        "set_headers",
        "error",
        "allow_header",
        "response_filter",
        "write",
        "scope",
        "known",
    )

    def __init__(self) -> None:
        self.route: Route | None = None
        self.path_qs = ""
        self.principal: Principal | None = None
        self.identity: Identity | None = None
        self.set_headers: dict[str, str] = _NO_HEADERS
        self.error: RolegateError | None = None
        self.allow_header: str | None = None
        self.response_filter: RedactionFilter | None = None
        self.write = False
        self.scope: str | None = None
        # The remembered answer this one came from or was kept as (AccessMemo), when there is one: what
        # forward-auth builds from it once (its answer's headers) lives and ends with it.
        self.known: _Known | None = None


def _query_getter(query: str) -> Callable[[str], str | None]:
    parsed: dict[str, str] | None = None

    def get(name: str) -> str | None:
        nonlocal parsed
        if parsed is None:
            parsed = {}
            for key, value in parse_qsl(query, keep_blank_values=True):
                parsed.setdefault(key, value)  # the first value wins, like most frameworks
        return parsed.get(name)

    return get


async def check_access(runtime: Runtime, request: web.BaseRequest, method: str, host: str, raw_target: str) -> Access:
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
                access.set_headers = _public_headers(runtime.access_memo or _memo_for(runtime), identity_stage, request)
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

        # -- who is asking: remembered per credential while nothing moved (see AccessMemo), else worked out --
        memo = runtime.access_memo or _memo_for(runtime)
        credential = _credential_of(request)
        # The epoch is taken first: a change while the awaited path runs makes what that path finds stale.
        epoch = runtime.epoch() if credential is not None else None  # nothing to remember without one
        known = memo.known.get((credential, route.upstream, _scope_key(route, scope))) if epoch is not None else None
        principal: Principal | Pending | None
        identity: Identity | None
        policy: Policy | None
        if known is not None and memo.valid(known, epoch, runtime):
            principal, identity, policy = known.principal, known.identity, known.policy
            access.known = known
        else:
            known = None
            # A browser's cached session is answered from memory; anything else (a bearer token, a
            # session to refresh or write back, no credential at all) takes the awaited path.
            principal = identity_stage.authenticate_now(request)
            if isinstance(principal, Pending):
                principal = await identity_stage.authenticate(request)
            if principal is None:
                raise identity_stage.sign_in_required(
                    f"{route.mode} route {route.name} needs a signed-in user",
                    scheme=None,
                    host=host,
                    raw_target=raw_target,
                )
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
                _audit(
                    runtime,
                    "deny",
                    method,
                    path,
                    route,
                    principal,
                    None,
                    ("deny: the account is disabled",),
                    started,
                    request,
                )
                raise AccountDisabled(f"{principal.username} is disabled or unknown in the directory")
        access.principal = principal
        access.identity = identity

        # -- a WebSocket any site's page opens carries the cookie too: Cross-Site WebSocket Hijacking ------
        if (
            is_websocket_upgrade(request)
            and identified_by_cookie(principal)
            and not (started_here(request, runtime.config.server))
        ):
            _audit(
                runtime,
                "deny",
                method,
                path,
                route,
                principal,
                None,
                ("deny: cross-site WebSocket upgrade identified by a cookie",),
                started,
                request,
            )
            raise Forbidden(
                f"{principal.username} {method} {path}: WebSocket upgrade from origin "
                f"{request.headers.get('Origin', '')[:200]!r} refused (not one of rolegate's origins)"
            )

        # -- authorize against the current compiled policy -----------------------------------------------
        if route.placed and runtime.object_lookup is not None and scope not in policy.scopes.complete:
            requirement = await runtime.object_lookup.place(requirement)  # an object the directory misses
        decision = decide_route(policy, identity, requirement, runtime.clock())
        if not decision.allowed:
            if route.mode == "enforce":
                _audit(runtime, "deny", method, path, route, principal, decision, decision.reasons, started, request)
                raise Forbidden(f"{principal.username} {method} {path}: {'; '.join(decision.reasons)}")
            _audit(runtime, "would-deny", method, path, route, principal, decision, decision.reasons, started, request)
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
            headers_key = _headers_key(request, principal, identity, policy, route, scope)
            cached = memo.headers.get(headers_key)
            tokens = runtime.tokens
            if (
                cached is not None
                and cached.not_before <= time.time() < cached.until
                and (tokens is None or tokens.minter is None or tokens.keyring.in_step())
            ):
                access.set_headers = cached.headers
            else:
                access.set_headers = await _upstream_headers(
                    runtime, memo, request, identity_stage, principal, identity, policy, route, scope, headers_key
                )
            if epoch is not None and credential is not None:  # one short credential on a runtime with a board
                access.known = memo.remember(
                    runtime, identity_stage, credential, route, scope, principal, identity, policy, headers_key, epoch
                )

        # -- redaction: fields hidden unless the caller holds the route's `unless` permission -------------------
        redact = cast("RedactConfig | None", route.redact)  # (typed ``object`` in proxy, below config)
        if redact is not None:
            unless = redact.unless
            # At the same place: an object the lookup placed is judged where it lies, not at itself alone.
            if (
                unless is None
                or not decide_route(
                    policy,
                    identity,
                    Requirement(
                        "enforce", unless, requirement.scope, None, None, requirement.placed, requirement.parent
                    ),
                    runtime.clock(),
                ).allowed
            ):
                access.response_filter = runtime.redaction_filter(route.index)
        return access
    except RolegateError as exc:
        access.error = exc
    return access


# Caches keyed by Cookie headers keep them as they are up to this length, and a digest of longer ones:
# a client sending 16 KiB headers cannot make 10,000 entries cost 160 MiB.
_COOKIE_KEY_LENGTH = COOKIE_KEY_LENGTH


def _cookie_key(cookies: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    if not cookies:
        return ()
    if len(cookies) == 1 and len(cookies[0]) <= _COOKIE_KEY_LENGTH:
        return (cookies[0],)
    if sum(len(c) for c in cookies) <= _COOKIE_KEY_LENGTH:
        return tuple(cookies)
    return ("#", hashlib.blake2b("\n".join(cookies).encode("utf-8", "surrogateescape"), digest_size=32).hexdigest())


def _public_headers(memo: AccessMemo, identity_stage: IdentityStage, request: web.BaseRequest) -> dict[str, str]:
    """A public route's upstream headers: the Cookie header without rolegate's own cookies (a signed-in
    browser sends its session cookie everywhere; no backend may see it), remembered per Cookie header."""
    cookies = request.headers.getall("Cookie", ())
    if not cookies:
        return _NO_HEADERS
    key = (identity_stage, *_cookie_key(cookies))  # the stage: a reload may rename the cookies
    public = memo.public
    headers = public.get(key)
    if headers is None:
        kept = identity_stage.backend_cookie(cookies)
        headers = _NO_HEADERS if kept == "; ".join(cookies) else EncodedHeaders({"Cookie": kept})
        public.put(key, headers)
    return headers


def _without_own_bearer(runtime: Runtime, request: web.BaseRequest, headers: dict[str, str]) -> dict[str, str]:
    """A public route's headers, also dropping ``Authorization`` when it carries a token rolegate issued:
    apps send their token with every request, and no backend may see rolegate's credential."""
    tokens = runtime.tokens
    token = bearer_token(request)
    if tokens is None or token is None or not tokens.service.is_ours(token):
        return headers
    return EncodedHeaders({**(headers or {}), "Authorization": ""})


class _Known:
    """What the last full check found for one (credential, upstream, scope): who is asking, their authz
    identity, the policy and the upstream headers, the epoch it was made under, until when it stands on
    the wall clock (``until``) and when the credential itself ends on the Runtime's clock (``expires``).
    The decision itself is still made (memoized) and audited on every request."""

    __slots__ = ("principal", "identity", "policy", "headers", "until", "expires", "epoch", "answer", "wire")

    def __init__(
        self,
        principal: Principal,
        identity: Identity,
        policy: Policy,
        headers: EncodedHeaders,
        until: float,
        expires: float,
        epoch: object,
    ) -> None:
        self.principal = principal
        self.identity = identity
        self.policy = policy
        self.headers = headers
        self.until = until
        self.expires = expires
        self.epoch = epoch
        self.answer: CIMultiDict[str] | None = None  # forward-auth's answer headers for this entry, built on first use
        self.wire: bytes | None = None  # the lean listener's answer head, built from ``answer`` on first use


class _Headers:
    """Upstream headers of one (principal, identity, policy, scope, upstream, Cookie header), and when
    they stop being valid: the assertion's refresh time or a time-bound binding starting or ending."""

    __slots__ = ("headers", "not_before", "until")

    def __init__(self, headers: EncodedHeaders, not_before: float, until: float) -> None:
        self.headers = headers
        self.not_before = not_before
        self.until = until


class AccessMemo:
    """Everything check_access remembers, owned by one Runtime (``runtime.access_memo``; a reload's new
    Runtime starts with none), and the one rule for when a remembered answer still stands.

    * ``known``: (credential, upstream, scope) -> _Known, for the proxy path and forward-auth alike. The
      credential is the request's one Cookie header and its one Authorization header (see
      ``_credential_of``): a browser session, a day-pass session and a rolegate bearer token are
      remembered the same way.
    * ``headers``: upstream headers (identity headers, the caller's cookies, the signed assertion).
    * ``public``: a public route's Cookie header without rolegate's own cookies.

    ``valid``: an entry stands while ``runtime.epoch()`` is the one it was made under (nothing on the
    version board moved: no session, token or day-pass revocation, no policy, directory, key or config
    change, here or, through the Store poll, on another instance; the Store answered within
    max_staleness; at most EPOCH_SECONDS passed), before ``until`` (the session's next write-back,
    refresh or expiry, the assertion's refresh time, the key ring's next check) and before the
    credential's own end (``expires``: a day pass's end, a bearer token's ``exp``), which is read on
    every request. No TTL of its own: whatever moves, the next request is worked out in full.
    Each map holds at most ``limits.ACCESS_MEMO`` entries (a ``BoundedCache``: emptied when full).
    """

    __slots__ = ("known", "headers", "public")

    def __init__(self) -> None:
        self.known: BoundedCache[tuple[Any, ...], _Known] = BoundedCache(ACCESS_MEMO)
        self.headers: BoundedCache[tuple[Any, ...], _Headers] = BoundedCache(ACCESS_MEMO)
        self.public: BoundedCache[tuple[Any, ...], dict[str, str]] = BoundedCache(ACCESS_MEMO)

    @staticmethod
    def valid(known: _Known, epoch: object, runtime: Runtime) -> bool:
        return (
            known.epoch is epoch
            and time.time() < known.until
            and (known.expires == math.inf or runtime.clock() < known.expires)
        )

    def remember(
        self,
        runtime: Runtime,
        identity_stage: IdentityStage,
        credential: tuple[str, str],
        route: Route,
        scope: str | None,
        principal: Principal,
        identity: Identity,
        policy: Policy,
        headers_key: tuple[Any, ...],
        epoch: object,
    ) -> _Known | None:
        """Keep what this check found for the next request with the same credential: a browser session
        answered from memory, a day-pass session or a rolegate bearer token (never an IdP's token, which
        only the provider can vouch for, nor a session with something to write back or refresh)."""
        cookie, authorization = credential
        expires = math.inf
        if principal.rolegate_bearer:
            # Revocation, a family's end, the permission version and the pass of a pass's token move the
            # board; the token's own expiry does not, so it is read at every request (``expires``).
            if not authorization:
                return None
            expires = principal.expires_at or 0.0
            until = math.inf
        elif authorization:
            return None  # a cookie's principal while an Authorization header is there: worked out every time
        elif principal.auth == "session":
            until = identity_stage.session_quiet_until(cookie, principal)
        elif principal.auth == "daypass":
            # Revoking a pass (or ending its sessions) moves the board; its end is read at every request.
            expires = principal.expires_at or 0.0
            until = math.inf
        else:
            return None
        cached = self.headers.get(headers_key)
        if cached is None or until <= 0.0:
            return None
        until = min(until, cached.until)
        tokens = runtime.tokens
        if tokens is not None and tokens.minter is not None:
            until = min(until, tokens.keyring.checked_until)
        now = time.time()
        if until <= now or cached.not_before > now or runtime.clock() >= expires:
            return None
        return self.known.put(
            (credential, route.upstream, _scope_key(route, scope)),
            _Known(principal, identity, policy, cached.headers, until, expires, epoch),
        )


def remembered_target(
    runtime: Runtime, request: Any, method: str, host: str, raw_target: str
) -> tuple[Any, ...] | None:
    """What ``remembered`` reads of a request before the memo: the memo key, the route, the requirement, the
    path. A function of the request's headers and the Runtime's routes only (the lean listener keeps it per
    distinct subrequest head); None when nothing may be answered from memory (no single short credential,
    no route or a refused method, a public route, a route that redacts, a target check_access refuses)."""
    credential = _credential_of(request)
    if credential is None:
        return None
    try:
        raw_path, sep, query = raw_target.partition("?")
        path = normalize_path(raw_path)
        match = runtime.routes.match(method, canonical_host(host), split_segments(path))
        if match is None or not match.method_allowed:
            return None
        route = match.route
        if route.mode == "public" or route.redact is not None or is_websocket_upgrade(request):
            return None
        if route.scope or route.object:
            requirement = requirement_of(match, _query_getter(query), request.headers.get)
        else:
            requirement = requirement_of(match)
    except RolegateError:
        return None
    return (
        (credential, route.upstream, _scope_key(route, requirement.scope)),
        route,
        requirement,
        path,
        path + sep + query,
    )


def remembered(
    runtime: Runtime, request: Any, method: str, host: str, raw_target: str, target: tuple[Any, ...] | None = None
) -> Access | None:
    """check_access for the lean forward-auth listener, when its answer is an allowing one from a valid
    remembered entry: the same look-up, the same validity rule (one epoch read), the same decision, counted and
    sampled for the audit the same way (check_access's remembered path, allowing branch). None, with nothing
    recorded, for anything else (a miss, an entry no longer valid, a public route, a route that redacts, a
    placement to look up, a refusal or a log-mode would-deny, a WebSocket upgrade): the listener then hands
    the request to aiohttp, whose check_access decides it in full. tests/security/test_lean_forward_auth.py
    holds the two to the same answers. ``target``: ``remembered_target``'s answer for this request, when
    the caller kept it."""
    started = time.perf_counter()
    memo = runtime.access_memo
    if runtime.identity is None or memo is None:
        return None
    if target is None:
        target = remembered_target(runtime, request, method, host, raw_target)
        if target is None:
            return None
    key, route, requirement, path, path_qs = target
    epoch = runtime.epoch()
    if epoch is None:
        return None
    known = memo.known.get(key)
    if known is None or known.answer is None or not memo.valid(known, epoch, runtime):
        return None
    if route.placed and runtime.object_lookup is not None and requirement.scope not in known.policy.scopes.complete:
        return None
    principal = known.principal
    decision = decide_route(known.policy, known.identity, requirement, runtime.clock())
    if not decision.allowed:
        return None
    access = Access()
    access.route = route
    access.path_qs = path_qs
    access.principal = principal
    access.identity = known.identity
    access.scope = requirement.scope
    access.write = write = method not in _READ_METHODS
    access.set_headers = known.headers
    access.known = known
    if not write and _read_recorded(runtime):
        _audit(runtime, "allow", method, path, route, principal, decision, None, started, request)
    else:
        _ALLOWED[route.mode].inc()
    return access


def _memo_for(runtime: Runtime) -> AccessMemo:
    memo = runtime.access_memo
    if memo is None:
        memo = runtime.access_memo = AccessMemo()
    return memo


def _credential_of(request: web.BaseRequest) -> tuple[str, str] | None:
    """(Cookie header, Authorization header) as the key of a remembered answer, '' for one not sent;
    None when nothing may be remembered: no credential at all, or one header sent twice (worked out in
    full, where a second Authorization header is refused), or one longer than _COOKIE_KEY_LENGTH."""
    headers = request.headers
    cookies = headers.getall("Cookie", ())
    authorizations = headers.getall("Authorization", ())
    if len(cookies) > 1 or len(authorizations) > 1 or not (cookies or authorizations):
        return None
    cookie = cookies[0] if cookies else ""
    authorization = authorizations[0] if authorizations else ""
    if len(cookie) > _COOKIE_KEY_LENGTH or len(authorization) > _COOKIE_KEY_LENGTH:
        return None
    return (cookie, authorization)


def _headers_key(
    request: web.BaseRequest, principal: Principal, identity: Identity, policy: Policy, route: Route, scope: str | None
) -> tuple[Any, ...]:
    """Everything the upstream headers depend on (see ``_upstream_headers``)."""
    cookies = request.headers.getall("Cookie", ())
    # identity.key: its groups (a string with a cached hash); a disabled identity never gets this far
    return (principal, identity.key, policy, _scope_key(route, scope), route.upstream, _cookie_key(cookies))


def _scope_key(route: Route, scope: str | None) -> str | None:
    """The scope, or on a route without one the permission its assertion's ``where`` claim is about (no scope
    holds a space)."""
    return scope if scope is not None or route.permission is None else f"where {route.permission}"


async def _upstream_headers(
    runtime: Runtime,
    memo: AccessMemo,
    request: web.BaseRequest,
    identity_stage: IdentityStage,
    principal: Principal,
    identity: Identity,
    policy: Policy,
    route: Route,
    scope: str | None,
    key: tuple[Any, ...],
) -> EncodedHeaders:
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
    if tokens is not None and minter is not None:
        await tokens.keyring.sync()
    now = time.time()
    cache = memo.headers
    cached = cache.get(key)
    if cached is not None and cached.not_before <= now < cached.until:
        return cached.headers
    headers = identity_stage.upstream_headers(request, principal)
    not_before, until = -math.inf, math.inf
    if minter is not None:
        try:
            entry = policy.entry(identity, scope, now)
            not_before, until = entry.not_before, entry.expires
        except Exception:  # noqa: BLE001 - the functions below fail closed; just do not cache
            until = now
        # A route naming no upstream (the front proxy forwards it) mints ``aud`` null, as it always has.
        aud = audience_for(route.upstream, runtime.config.upstreams.get(route.upstream))  # type: ignore[arg-type]
        assertion, refresh_at = minter.assertion_headers_until(
            sub=principal.username,
            name=principal.name or principal.username,
            email=principal.email or "",
            roles=roles_of(policy, identity, scope, now),
            scope=scope or "",
            perms=effective_permissions(policy, identity, scope, now),
            sid=principal.session_id or "",
            ver=policy.version,
            aud=aud,
            where=where_for_route(policy, identity, route, scope, now),
        )
        headers = {**headers, **assertion}
        until = min(until, refresh_at)
        if not principal.session_id:
            until = now  # minted per request (no session to cache it for): never reused
    encoded = EncodedHeaders(headers)
    if until > now:
        cache.put(key, _Headers(encoded, not_before, until))
    return encoded


def _audit(
    runtime: Runtime,
    verdict: DecisionVerdict,
    method: str,
    path: str,
    route: Route,
    principal: Principal,
    decision: Decision | None,
    reasons: Sequence[str] | None,
    started: float,
    request: web.BaseRequest,
) -> None:
    """Hand a decision to the audit log: every denial, and the allowed reads the caller sampled."""
    _DECISIONS[(verdict, route.mode)].inc()
    audit = runtime.audit
    if audit is None:
        return
    if reasons is None:
        assert decision is not None  # a caller without a decision names the reasons
        reasons = decision.reasons  # worked out only for events that are recorded
    audit.emit(
        decision_event(
            decision=verdict,
            user=principal.username,
            method=method,
            path=path,
            permission=decision.permission if decision is not None else route.permission,
            scope=decision.scope if decision is not None else None,
            route=route.name,
            mode=route.mode,
            reasons=reasons,
            latency_us=int((time.perf_counter() - started) * 1e6),
            ref=request.headers.get("X-Request-Id"),
            client=request.remote,
            auth=getattr(principal, "auth", None),
        )
    )


async def record_write(runtime: Runtime, request: web.BaseRequest, access: Access, method: str) -> None:
    """A write about to be forwarded: its event is committed first (durable_writes), so no write that
    got a response can be missing from the audit trail, even after a crash."""
    audit = runtime.audit
    route = access.route
    if audit is None or route is None:
        return
    principal = access.principal
    await audit.emit_write(
        decision_event(
            decision="allow",
            user=principal.username if principal is not None else None,
            method=method,
            path=access.path_qs.partition("?")[0],
            permission=route.permission,
            scope=access.scope,
            route=route.name,
            mode=route.mode,
            ref=request.headers.get("X-Request-Id"),
            client=request.remote,
            auth=getattr(principal, "auth", None) if principal is not None else "public",
        )
    )


def record_outcome(
    runtime: Runtime, request: web.BaseRequest, access: Access, method: str, status: int, started: float
) -> None:
    """The upstream's answer to a write that passed (method, path, status)."""
    audit = runtime.audit
    route = access.route
    if audit is None or route is None:
        return
    principal = access.principal
    try:
        audit.emit(
            request_event(
                user=principal.username if principal is not None else None,
                method=method,
                path=access.path_qs.partition("?")[0],
                status=status,
                route=route.name,
                upstream=route.upstream,
                latency_us=int((time.perf_counter() - started) * 1e6),
                ref=request.headers.get("X-Request-Id"),
                client=request.remote,
            )
        )
    except RolegateError:
        pass  # the durable decision event already holds this write; a full queue must not fail the response
