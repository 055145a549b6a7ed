"""The day-pass cookie set by redeeming a pass (Oathkeeper-style authenticator, see identity/registry.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from rolegate.identity.authenticator import Authenticator
from rolegate.identity.daypass.service import daypass_service
from rolegate.identity.principal import Principal
from rolegate.identity.registry import register

if TYPE_CHECKING:
    from rolegate.identity.stage import IdentityStage


class DaypassSessionAuthenticator(Authenticator):
    name = "daypass_session"

    async def authenticate(self, request: web.BaseRequest) -> Principal | None:
        return await daypass_service(self.stage).authenticate(request)


# After the staff session cookie: on a device holding both, the staff member's own sign-in wins.
@register("daypass_session", order=60)
def _factory(stage: "IdentityStage") -> Authenticator | None:
    if stage.config.daypass is None or stage.config.session is None:
        return None
    return DaypassSessionAuthenticator(stage)
