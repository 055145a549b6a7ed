"""The token stage of one Runtime: the key ring, the assertion minter, the token service and its routes.

Built from config in one call so the app wires tokens in three lines::

    tokens = TokenStage(config, store, board=board, current_version=lambda: board.get("policy"),
                        authenticate_session=identity.authenticate, audit=audit,
                        reload_identity=subject_check(runtime))  # every grant re-checks its subject
    await tokens.open()                       # loads or creates the signing key
    tokens.add_routes(app)                    # /.well-known/jwks.json, /.rolegate/token, .../revoke
    identity.use_tokens(tokens.service)       # enables the rolegate_token bearer authenticator
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from rolegate.store import Store
from rolegate.store.version_board import VersionBoard
from rolegate.tokens.assertion import AssertionMinter
from rolegate.tokens.endpoint import DaypassFn, SessionFn, TokenEndpoint
from rolegate.tokens.jwks import PATH as JWKS_PATH
from rolegate.tokens.jwks import jwks_handler
from rolegate.tokens.keys import KeyRing
from rolegate.tokens.service import GrantsFn, ReloadFn, TokenService


def audience_for(upstream_name: str, upstream: Any) -> str:
    """The ``aud`` of assertions for an upstream: its configured ``audience``, else its name."""
    return getattr(upstream, "audience", None) or upstream_name


class TokenStage:
    """Everything the ``tokens`` config section turns on."""

    __slots__ = ("keyring", "minter", "service", "endpoint", "issuer")

    def __init__(
        self,
        config: Any,
        store: Store,
        *,
        board: VersionBoard | None = None,
        current_version: Callable[[], int],
        grants: GrantsFn | None = None,
        reload_identity: ReloadFn | None = None,
        authenticate_session: SessionFn | None = None,
        redeem_daypass: DaypassFn | None = None,
        audit: Any = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        tokens = config.tokens
        skew = tokens.clock_skew.total_seconds()
        self.issuer: str = config.server.public_url.rstrip("/")
        self.keyring = KeyRing.from_config(store, config, board=board, skew=skew, clock=clock)
        lifetime = tokens.lifetime.total_seconds()
        self.minter: AssertionMinter | None = None
        if tokens.assertion:
            self.minter = AssertionMinter(
                self.keyring, self.issuer, lifetime, max_entries=tokens.assertion_cache_size, clock=clock
            )
        self.service = TokenService(
            keyring=self.keyring,
            store=store,
            issuer=self.issuer,
            current_version=current_version,
            lifetime=lifetime,
            refresh_lifetime=tokens.refresh_lifetime.total_seconds(),
            board=board,
            grants=grants,
            reload_identity=reload_identity,
            leeway=skew,
            clock=clock,
        )
        self.endpoint = TokenEndpoint(
            self.service,
            public_url=self.issuer,
            authenticate_session=authenticate_session,
            redeem_daypass=redeem_daypass,
            audit=audit,
        )

    async def open(self) -> None:
        """Load (or, first of the fleet, create) the signing keys; call inside the worker's event loop."""
        await self.keyring.sync()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(JWKS_PATH, jwks_handler(self.keyring))
        self.endpoint.add_routes(app)
