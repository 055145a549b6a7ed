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
from typing import TYPE_CHECKING, Any, ClassVar

from aiohttp import web

from rolegate.identity.principal import Principal

if TYPE_CHECKING:
    from rolegate.identity.stage import IdentityStage


class _Pending:
    """The answer of ``authenticate_now`` when it cannot tell without I/O."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "PENDING"


PENDING: Any = _Pending()


class Authenticator(abc.ABC):
    name: ClassVar[str]

    def __init__(self, stage: "IdentityStage") -> None:
        self.stage = stage

    @abc.abstractmethod
    async def authenticate(self, request: web.BaseRequest) -> Principal | None:
        """A Principal, None when not responsible, or raise SignInRequired."""

    def authenticate_now(self, request: web.BaseRequest) -> Principal | None:
        """``authenticate``'s answer when it needs no I/O, else ``PENDING`` (the default)."""
        return PENDING


class BearerAuthenticator(Authenticator):
    """An authenticator of ``Authorization: Bearer`` tokens: without one, the answer is None at once."""

    def authenticate_now(self, request: web.BaseRequest) -> Principal | None:
        return None if bearer_token(request) is None else PENDING


def bearer_token(request: web.BaseRequest) -> str | None:
    """The RFC 6750 §2.1 bearer token of the Authorization header, if there is one."""
    header = request.headers.get("Authorization")
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    return token or None
