"""Who the caller is, as the later stages (authz, tokens, audit) see it."""

from __future__ import annotations

from typing import Any, Literal

AuthKind = Literal["session", "bearer", "rolegate_token", "daypass"]


class Principal:
    """An authenticated caller. ``session_id`` is an opaque hash, safe to log; never a credential."""

    __slots__ = (
        "username",
        "name",
        "email",
        "groups",
        "session_id",
        "auth",
        "expires_at",
        "idp_sid",
        "subject",
        "rolegate_bearer",
    )

    def __init__(
        self,
        *,
        username: str,
        name: str = "",
        email: str = "",
        groups: frozenset[str] = frozenset(),
        session_id: str = "",
        auth: AuthKind = "session",
        expires_at: float | None = None,
        idp_sid: str | None = None,
        subject: str = "",
    ) -> None:
        self.username = username
        self.name = name
        self.email = email
        self.groups = groups
        self.session_id = session_id
        self.auth = auth
        self.expires_at = expires_at
        self.idp_sid = idp_sid
        # The IdP's ``sub``; usually equal to ``username`` but not necessarily.
        self.subject = subject or username
        # Authenticated by a bearer token rolegate issued (a user's or a day pass's): rolegate's own
        # credential, which the forwarder never passes to a backend.
        self.rolegate_bearer = False

    def __repr__(self) -> str:
        return f"<Principal {self.username!r} via {self.auth} groups={sorted(self.groups)}>"


def principal_from_claims(
    claims: dict[str, Any],
    *,
    username_claim: str,
    groups_claim: str,
    auth: AuthKind,
    session_id: str = "",
    expires_at: float | None = None,
) -> Principal:
    """Build a Principal from ID-token / access-token / userinfo claims (raises ValueError without a username)."""
    username = claims.get(username_claim)
    if not isinstance(username, str) or not username:
        raise ValueError(f"the token has no usable {username_claim!r} claim")
    raw_groups = claims.get(groups_claim) or ()
    if isinstance(raw_groups, str):
        raw_groups = (raw_groups,)
    groups = frozenset(g for g in raw_groups if isinstance(g, str) and g)
    name = claims.get("name")
    email = claims.get("email")
    sid = claims.get("sid")
    sub = claims.get("sub")
    return Principal(
        username=username,
        name=name if isinstance(name, str) else "",
        email=email if isinstance(email, str) else "",
        groups=groups,
        session_id=session_id,
        auth=auth,
        expires_at=expires_at,
        idp_sid=sid if isinstance(sid, str) else None,
        subject=sub if isinstance(sub, str) else "",
    )


def _header_safe(value: str) -> str:
    """Claims come from the provider: never let one inject a header line or a non-latin-1 byte."""
    return "".join(c for c in value if 0x20 <= ord(c) < 0x7F)


def identity_headers(principal: Principal) -> dict[str, str]:
    """The plain convenience headers for upstreams / forward-auth (X-Rolegate-User, -Email, -Groups)."""
    groups = ",".join(sorted(g for g in principal.groups if "," not in g))
    return {
        "X-Rolegate-User": _header_safe(principal.username),
        "X-Rolegate-Email": _header_safe(principal.email),
        "X-Rolegate-Groups": _header_safe(groups),
    }
