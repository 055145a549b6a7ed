"""Bearer tokens that rolegate itself issued at ``/.rolegate/token`` (see ``rolegate.tokens``).

Asked before the provider's access tokens; answers None for any token whose ``iss`` is not
rolegate, and refuses (SignInRequired / StaleToken) every token that claims to be rolegate's
but fails verification, was revoked, comes from a day pass that ended (checked at every request,
like the pass cookie), or was minted under an older permission version.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from rolegate.identity.authenticator import Authenticator, BearerAuthenticator, bearer_token
from rolegate.identity.principal import Principal
from rolegate.identity.registry import register

if TYPE_CHECKING:
    from rolegate.identity.stage import IdentityStage
    from rolegate.tokens.service import TokenService


class RolegateTokenAuthenticator(BearerAuthenticator):
    name = "rolegate_token"

    def __init__(self, stage: "IdentityStage | None" = None, *, service: "TokenService | None" = None) -> None:
        # None when built on a TokenService alone (``service=``, as in tests): the base class types it non-None.
        self.stage = stage  # type: ignore[assignment]
        self._service = service

    @property
    def service(self) -> "TokenService | None":
        # The Runtime hands the stage its TokenService once the key ring is open (IdentityStage.use_tokens).
        if self._service is not None or self.stage is None:
            return self._service
        return self.stage.tokens

    async def authenticate(self, request: web.BaseRequest) -> Principal | None:
        token = bearer_token(request)
        if token is None:
            return None
        return await self.authenticate_token(token)

    async def authenticate_token(self, token: str) -> Principal | None:
        """The Principal for a raw bearer token; None when it is not rolegate's."""
        service = self.service
        if service is None or not service.is_ours(token):
            return None
        return await service.authenticate(token)


@register("rolegate_token", order=10)
def _factory(stage: "IdentityStage") -> Authenticator | None:
    return RolegateTokenAuthenticator(stage)
