"""Tokens for API and mobile clients: issue, refresh, revoke, and authenticate rolegate's access tokens.

The protocol core; it knows nothing of aiohttp (``endpoint.py`` is the HTTP glue). Permission
changes take effect on the next request: every access token carries the permission version
``ver`` it was minted under, and one minted under an older version is refused as stale (the
client refreshes and gets the current grants).

Every grant re-checks whom the tokens are for, as a request with the original credential would be
checked (``subject.py``): a revoked or expired day pass, a session that ended, a user the directory
disables or does not know gets no tokens, and a refresh that finds one of them ends the family.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from rolegate.identity.errors import SignInRequired
from rolegate.identity.principal import Principal
from rolegate.store import Store
from rolegate.store.version_board import VersionBoard
from rolegate.tokens.access_token import ACCESS_TYP, claims_issuer, mint_access_token
from rolegate.tokens.assertion import compact_permissions
from rolegate.tokens.errors import GrantError, StaleToken
from rolegate.tokens.keys import KeyRing
from rolegate.tokens.refresh import Family, InvalidGrant, RefreshFamilies, parse
from rolegate.tokens.revocation import RevocationList
from rolegate.tokens.subject import PassCheck
from rolegate.tokens.verify import MAX_TOKEN_CHARS, InvalidToken, TokenVerifier

log = logging.getLogger("rolegate.tokens")

# (roles, perms) a token states for a Principal, at no particular scope; informational for clients.
GrantsFn = Callable[[Principal], tuple[Iterable[str], Iterable[str]]]
# Re-checks a token subject at every grant (session liveness, directory; see subject.py) and answers
# it re-read, or None: no tokens (a refresh then ends the family).
ReloadFn = Callable[[Principal], Awaitable[Principal | None]]

# What a client is told when a refresh is refused, whatever the reason (unknown, expired, reused,
# revoked, or the subject behind it ended): the reason is for the log and the audit trail only.
REFRESH_REFUSED = "The refresh token is invalid, expired or revoked."
ISSUE_REFUSED = "The sign-in cannot be used for tokens; sign in again."


class SubjectEnded(Exception):
    """The pass, session or account behind a grant no longer allows tokens; the message says which."""


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """A successful token response (RFC 6749 §5.1)."""

    access_token: str
    expires_in: int
    refresh_token: str
    refresh_expires_in: int

    def to_json(self) -> dict[str, Any]:
        return {
            "access_token": self.access_token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "refresh_token": self.refresh_token,
            "refresh_expires_in": self.refresh_expires_in,
        }


def snapshot(principal: Principal) -> dict[str, Any]:
    """What a family remembers of who signed in (groups included: bearer requests authorize with them).

    A day pass's family keeps the pass id: its tokens authorize as the pass (its binding, its expiry,
    its revocation), never as a user. A browser session's family keeps the session's opaque id, so
    every refresh can ask whether that session still lives.
    """
    data = {
        "username": principal.username,
        "name": principal.name,
        "email": principal.email,
        "groups": sorted(principal.groups),
        "subject": principal.subject,
        "origin": principal.auth,
        "expires_at": principal.expires_at,
    }
    if principal.auth == "session":
        data["session"] = principal.session_id
    daypass_id = getattr(principal, "daypass_id", None)
    if daypass_id is not None:
        data.update(
            daypass_id=daypass_id, company=getattr(principal, "company", ""), scope=getattr(principal, "scope", "")
        )
    return data


def origin_principal(identity: dict[str, Any]) -> Principal:
    """The Principal a family's identity stood for when it signed in (the day pass, or the user with
    the session it came from): what every grant re-checks."""
    expires_at = identity.get("expires_at")
    daypass_id = identity.get("daypass_id")
    if isinstance(daypass_id, str) and daypass_id:
        from rolegate.identity.daypass import DaypassPrincipal  # day passes: loaded only when used

        return DaypassPrincipal(
            pass_id=daypass_id,
            name=identity.get("name", ""),
            company=identity.get("company", ""),
            scope=identity.get("scope", ""),
            session_id="",
            expires_at=expires_at or 0.0,
        )
    return Principal(
        username=identity["username"],
        name=identity.get("name", ""),
        email=identity.get("email", ""),
        groups=frozenset(identity.get("groups", ())),
        session_id=identity.get("session", ""),
        auth=identity.get("origin", "session"),
        expires_at=expires_at,
        subject=identity.get("subject", ""),
    )


def principal_of(identity: dict[str, Any], *, family: str, expires_at: float | None) -> Principal:
    daypass_id = identity.get("daypass_id")
    if isinstance(daypass_id, str) and daypass_id:
        from rolegate.identity.daypass import DaypassPrincipal  # day passes: loaded only when used

        principal: Principal = DaypassPrincipal(
            pass_id=daypass_id,
            name=identity.get("name", ""),
            company=identity.get("company", ""),
            scope=identity.get("scope", ""),
            session_id=family,
            expires_at=expires_at or 0.0,
        )
    else:
        principal = Principal(
            username=identity["username"],
            name=identity.get("name", ""),
            email=identity.get("email", ""),
            groups=frozenset(identity.get("groups", ())),
            session_id=family,
            auth="rolegate_token",
            expires_at=expires_at,
            subject=identity.get("subject", ""),
        )
    principal.rolegate_bearer = True
    return principal


class TokenService:
    """Everything behind ``/.rolegate/token`` and ``Authorization: Bearer <rolegate access token>``."""

    __slots__ = (
        "keyring",
        "store",
        "issuer",
        "lifetime",
        "families",
        "revocations",
        "verifier",
        "current_version",
        "grants",
        "reload_identity",
        "passes",
        "_clock",
        "_principals",
        "_max_principals",
    )

    def __init__(
        self,
        *,
        keyring: KeyRing,
        store: Store,
        issuer: str,
        current_version: Callable[[], int],
        lifetime: float = 300.0,
        refresh_lifetime: float = 12 * 3600.0,
        board: VersionBoard | None = None,
        grants: GrantsFn | None = None,
        reload_identity: ReloadFn | None = None,
        leeway: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keyring = keyring
        self.store = store
        self.issuer = issuer
        self.lifetime = float(lifetime)
        self.families = RefreshFamilies(store, lifetime=refresh_lifetime, clock=clock)
        self.revocations = RevocationList(store, board=board, clock=clock)
        self.verifier = TokenVerifier(keyring, issuer, leeway=leeway, clock=clock)
        self.current_version = current_version
        self.grants = grants
        self.reload_identity = reload_identity
        self.passes = PassCheck(store, board=board, clock=clock)
        self._clock = clock
        # token -> (claims, Principal): a client reuses its access token for minutes, so the signature
        # check and the Store read are paid once per token per worker, not per request.
        self._principals: OrderedDict[str, tuple[dict[str, Any], Principal]] = OrderedDict()
        self._max_principals = 10000

    # -- issuing ----------------------------------------------------------------------------------
    async def subject(self, principal: Principal) -> Principal:
        """``principal`` re-checked as a request would check it (see subject.py), re-read; SubjectEnded
        when it may have no more tokens. Store and directory outages raise their own errors."""
        pass_id = getattr(principal, "daypass_id", None)
        if pass_id is not None and not await self.passes.in_force(pass_id):
            raise SubjectEnded(f"day pass {pass_id} is revoked, expired or unknown")
        if self.reload_identity is None:
            return principal
        fresh = await self.reload_identity(principal)
        if fresh is None:
            raise SubjectEnded(
                f"{principal.username}: the session ended, or the directory disables or does not know the account"
            )
        return fresh

    async def issue(self, principal: Principal, *, refused: str = ISSUE_REFUSED) -> TokenGrant:
        """Start a refresh-token family for a signed-in caller (session or day pass), once it passed the
        subject check; GrantError(invalid_grant, ``refused``) otherwise. The caller was just
        authenticated: the family starts from that Principal as it is."""
        try:
            await self.subject(principal)
        except SubjectEnded as exc:
            raise GrantError("invalid_grant", refused, detail=str(exc), user=principal.username) from None
        await self.keyring.sync()
        family, refresh_token = await self.families.start(snapshot(principal), not_after=principal.expires_at)
        log.info("token family started for %s (%s)", principal.username, family.key)
        return self._grant(family, refresh_token, principal)

    async def refresh(self, refresh_token: str) -> TokenGrant:
        """Rotate a refresh token into a new grant; GrantError(invalid_grant) otherwise.

        The subject is re-checked before the token rotates: one that ended revokes the family (and
        every access token it issued); an outage while checking leaves the token as it was.
        """
        await self.keyring.sync()

        async def recheck(identity: dict[str, Any]) -> dict[str, Any]:
            kept = snapshot(await self.subject(origin_principal(identity)))
            kept["origin"] = identity.get("origin", kept["origin"])
            return kept

        try:
            family, successor = await self.families.rotate(refresh_token, check=recheck)
        except InvalidGrant as exc:
            if exc.reused and exc.family:
                await self.revocations.revoke_family(exc.family, self._clock() + self.lifetime + self.verifier.leeway)
                log.warning("refresh token reuse: family %s revoked", exc.family)
            raise GrantError(
                "invalid_grant", REFRESH_REFUSED, detail=str(exc), user=await self._user_of(exc.family)
            ) from None
        except SubjectEnded as exc:
            key = parse(refresh_token)
            assert key is not None  # rotate checks the subject only of a live token it parsed
            await self.revoke_family(key)
            log.info("token family %s ended at refresh: %s", key, exc)
            raise GrantError(
                "invalid_grant", REFRESH_REFUSED, detail=f"{exc}; family revoked", user=await self._user_of(key)
            ) from None
        principal = principal_of(family.data["identity"], family=family.key, expires_at=family.expires)
        return self._grant(family, successor, principal)

    async def _user_of(self, key: str | None) -> str | None:
        """Whom a family was for (for the audit trail of a refused refresh); None when unknown."""
        found = await self.families.get(key) if key else None
        return found.data["identity"].get("username") if found is not None else None

    def _grant(self, family: Family, refresh_token: str, principal: Principal) -> TokenGrant:
        now = self._clock()
        expires = min(now + self.lifetime, family.expires)
        extra: dict[str, Any] = {"name": principal.name, "email": principal.email}
        if self.grants is not None:
            roles, perms = self.grants(principal)
            extra["roles"] = sorted(roles)
            extra["perms"] = compact_permissions(perms)
        token = mint_access_token(
            self.keyring,
            issuer=self.issuer,
            sub=principal.username,
            family=family.key,
            ver=self.current_version(),
            now=now,
            expires=expires,
            extra=extra,
        )
        return TokenGrant(token, max(0, int(expires - now)), refresh_token, max(0, int(family.expires - now)))

    # -- revoking (RFC 7009) ----------------------------------------------------------------------
    async def revoke(self, token: str, hint: str | None = None) -> bool:
        """Revoke a refresh token (its whole family) or an access token; True when something was revoked.

        ``hint`` (RFC 7009 ``token_type_hint``) is not needed: the two kinds are told apart by shape.
        """
        if parse(token) is not None:
            return await self._revoke_refresh(token)
        try:
            await self.keyring.sync()
            claims = self.verifier.verify(token, audience=self.issuer, typ=ACCESS_TYP, require=("sid",))
        except InvalidToken:
            return False  # unknown, expired or foreign: nothing to do (RFC 7009 §2.2 still answers 200)
        await self.revocations.revoke_token(str(claims["jti"]), float(claims["exp"]) + self.verifier.leeway)
        return True

    async def _revoke_refresh(self, token: str) -> bool:
        key = parse(token)
        family = await self.families.get(key) if key else None
        if family is None:
            return False
        # Any token the family ever issued may end it (revoking only makes things safer); a guessed one may not.
        presented = hashlib.sha256(token.encode()).hexdigest()
        known = hmac.compare_digest(presented, family.data["current"])
        for old in family.data.get("used", ()):
            known |= hmac.compare_digest(presented, old)
        if not known:
            return False
        await self.revoke_family(family.key)
        return True

    async def revoke_family(self, key: str) -> None:
        await self.families.revoke(key)
        await self.revocations.revoke_family(key, self._clock() + self.lifetime + self.verifier.leeway)

    async def revoke_user(self, username: str) -> int:
        """End every token family of a user (disabled account, admin action); how many."""
        count = 0
        for family in await self.families.families_of(username):
            if not family.data.get("revoked"):
                await self.revoke_family(family.key)
                count += 1
        return count

    # -- authenticating bearer requests -----------------------------------------------------------
    def is_ours(self, token: str) -> bool:
        """Whether a bearer token claims to be one of ours (oversized tokens count: we refuse them)."""
        if token in self._principals or len(token) > MAX_TOKEN_CHARS:
            return True
        issuer = claims_issuer(token)
        return issuer is not None and hmac.compare_digest(issuer.encode(), self.issuer.encode())

    async def authenticate(self, token: str) -> Principal:
        """The Principal of a valid access token; SignInRequired (invalid/revoked) or StaleToken (``ver`` behind)."""
        cached = self._principals.get(token)
        if cached is not None:
            claims, principal = cached
            # Exactly these bytes verified before; only time, revocation and version can have changed.
            if self._clock() >= claims["exp"] + self.verifier.leeway:
                del self._principals[token]
                raise SignInRequired("rolegate access token expired", bearer_error="invalid_token")
            self._principals.move_to_end(token)
        else:
            await self.keyring.sync()
            claims = self._verify(token)
            principal = None
        jti, family, ver = claims["jti"], claims["sid"], claims["ver"]
        if await self.revocations.is_revoked(jti, family):
            raise SignInRequired("rolegate access token revoked", bearer_error="invalid_token")
        if principal is None:
            found = await self.families.get(family)
            if found is None or found.data.get("revoked") or self._clock() >= found.expires:
                raise SignInRequired("rolegate access token family ended", bearer_error="invalid_token")
            principal = principal_of(found.data["identity"], family=family, expires_at=float(claims["exp"]))
            self._principals[token] = (claims, principal)
            if len(self._principals) > self._max_principals:
                self._principals.popitem(last=False)
        # A pass's token is a pass cookie in another form: its pass is checked at every request, like
        # the cookie's (before ``ver``: an ended pass is told "invalid", never "refresh").
        pass_id = getattr(principal, "daypass_id", None)
        if pass_id is not None and not await self.passes.in_force(pass_id):
            self._principals.pop(token, None)
            raise SignInRequired(
                f"rolegate access token of day pass {pass_id}, which ended", bearer_error="invalid_token"
            )
        if ver < self.current_version():
            raise StaleToken(f"token ver {ver} behind the permission version")
        return principal

    def _verify(self, token: str) -> dict[str, Any]:
        try:
            claims = self.verifier.verify(token, audience=self.issuer, typ=ACCESS_TYP, require=("sid", "ver"))
        except InvalidToken as exc:
            raise SignInRequired(f"rolegate access token refused: {exc}", bearer_error="invalid_token") from None
        if not isinstance(claims["jti"], str) or not isinstance(claims["sid"], str) or type(claims["ver"]) is not int:
            raise SignInRequired("rolegate access token has malformed claims", bearer_error="invalid_token")
        return claims
