"""The authenticator interface (Oathkeeper's ``pipeline/authn/authenticator.go``).

An authenticator looks at a request and answers one of three ways:
a Principal (it recognised and accepted the credential), None (not its kind of credential:
ask the next one), or it raises ``SignInRequired`` (its kind, but invalid: stop here).

``authenticate_now`` is the same question asked without awaiting: an authenticator that can
answer from memory (a cached session, no credential of its kind) does so, and answers
``PENDING`` whenever only ``authenticate`` can tell. It must never answer differently.
"""

from __future__ import annotations

import abc
import re
from typing import TYPE_CHECKING, ClassVar, Final

from aiohttp import web

from rolegate.errors import BadRequest
from rolegate.identity.principal import Principal

if TYPE_CHECKING:
    from rolegate.identity.stage import IdentityStage


class Pending:
    """The type of ``PENDING``, the answer of ``authenticate_now`` when it cannot tell without I/O."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "PENDING"


PENDING: Final[Pending] = Pending()


class Authenticator(abc.ABC):
    name: ClassVar[str]

    def __init__(self, stage: "IdentityStage") -> None:
        self.stage = stage

    @abc.abstractmethod
    async def authenticate(self, request: web.BaseRequest) -> Principal | None:
        """A Principal, None when not responsible, or raise SignInRequired."""

    def authenticate_now(self, request: web.BaseRequest) -> Principal | Pending | None:
        """``authenticate``'s answer when it needs no I/O, else ``PENDING`` (the default)."""
        return PENDING


class BearerAuthenticator(Authenticator):
    """An authenticator of ``Authorization: Bearer`` tokens: without one, the answer is None at once."""

    def authenticate_now(self, request: web.BaseRequest) -> Principal | Pending | None:
        return None if bearer_token(request) is None else PENDING


# RFC 6750 §2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*").fullmatch


class MalformedBearer(BadRequest):
    """``Authorization: Bearer`` followed by something that is no token (RFC 6750 §3.1 invalid_request)."""

    public_message = "The Authorization header is malformed."


def bearer_token(request: web.BaseRequest) -> str | None:
    """The RFC 6750 §2.1 bearer token of the Authorization header, if there is one.

    Raises MalformedBearer (400) when the scheme is Bearer but the rest is not a b64token: bytes no
    token can hold (non-ASCII, not UTF-8, spaces, quotes) never reach a token parser; and when there is
    more than one Authorization header (a single-value field): the one read here must be the only one,
    or a token rolegate issued could travel on to a backend behind another.
    """
    values = request.headers.getall("Authorization", ())
    if not values:
        return None
    if len(values) > 1:
        raise MalformedBearer("more than one Authorization header")
    header = values[0]
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    if not token:
        return None
    if _B64TOKEN(token) is None:
        raise MalformedBearer(f"bearer token is not an RFC 6750 b64token ({len(token)} characters)")
    return token
