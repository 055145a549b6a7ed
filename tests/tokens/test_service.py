"""TokenService seams: identity re-read at refresh, ending every family of a user."""

from __future__ import annotations

import pytest

from rolegate.errors import Unauthenticated
from rolegate.identity.principal import Principal
from rolegate.tokens import GrantError, TokenService

from .conftest import ISSUER

ALICE = Principal(username="alice", groups=frozenset({"staff"}), session_id="s1")


async def test_refresh_rereads_the_identity(keyring, store, board, clock, version) -> None:
    directory = {"alice": frozenset({"staff", "risk-assessors"})}

    async def reload(principal: Principal) -> Principal | None:
        groups = directory.get(principal.username)
        if groups is None:
            return None  # disabled or deleted: the family ends
        return Principal(username=principal.username, groups=groups, auth=principal.auth)

    service = TokenService(
        keyring=keyring,
        store=store,
        issuer=ISSUER,
        current_version=version,
        board=board,
        clock=clock,
        reload_identity=reload,
    )
    grant = await service.issue(ALICE)
    assert (await service.authenticate(grant.access_token)).groups == {"staff"}
    grant = await service.refresh(grant.refresh_token)
    assert (await service.authenticate(grant.access_token)).groups == {"staff", "risk-assessors"}
    del directory["alice"]
    with pytest.raises(GrantError):
        await service.refresh(grant.refresh_token)
    with pytest.raises(Unauthenticated):
        await service.authenticate(grant.access_token)


async def test_revoke_user_ends_every_family(service) -> None:
    grants = [await service.issue(ALICE) for _ in range(3)]
    other = await service.issue(Principal(username="bob"))
    assert await service.revoke_user("alice") == 3
    for grant in grants:
        with pytest.raises(Unauthenticated):
            await service.authenticate(grant.access_token)
        with pytest.raises(GrantError):
            await service.refresh(grant.refresh_token)
    assert (await service.authenticate(other.access_token)).username == "bob"


async def test_concurrent_refresh_of_one_token_is_reuse(service) -> None:
    import asyncio

    grant = await service.issue(ALICE)
    results = await asyncio.gather(*(service.refresh(grant.refresh_token) for _ in range(2)), return_exceptions=True)
    assert sum(isinstance(r, GrantError) for r in results) >= 1
    # Whoever won, the family is now revoked (two parties presented the same token).
    winners = [r for r in results if not isinstance(r, BaseException)]
    for winner in winners:
        with pytest.raises(GrantError):
            await service.refresh(winner.refresh_token)
