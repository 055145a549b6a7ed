"""Create a signed-in session for a rolegate config and print its Cookie header (for load tests).

    .venv/bin/python bench/session_cookie.py CONFIG USERNAME [GROUP ...]

The session is written to the config's Store and sealed exactly as /.rolegate/callback does after
a real sign-in, so the proxy authenticates it through its normal cookie path.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from rolegate.config import load_config
from rolegate.identity.principal import Principal
from rolegate.identity.sessions import subject_tag
from rolegate.identity.stage import IdentityStage
from rolegate.store import open_store


async def make_cookie(config_path: str, username: str, groups: list[str]) -> str:
    return (await make_cookies(config_path, [(username, groups)]))[0]


async def make_cookies(config_path: str, people: list[tuple[str, list[str]]]) -> list[str]:
    """One Cookie header per (username, groups), the config read and the Store opened once for all."""
    config = load_config(config_path)
    base_dir = Path(config_path).resolve().parent
    store = await open_store(config.storage, base_dir=base_dir)
    stage = IdentityStage(config, base_dir=base_dir, store=store)
    cookies = []
    try:
        await stage.open()
        name = config.session.cookie_name
        for username, groups in people:
            principal = Principal(username=username, name=username.title(), email=f"{username}@example.com",
                                  groups=frozenset(groups), subject=username)
            session_id, tag, _ = await stage.sessions.create(claims={}, principal=principal, tokens={},
                                                             issuer=config.oidc.issuer if config.oidc else "bench")
            assert tag == subject_tag(principal.subject)
            sealed = stage.cookie_sealer.seal({"i": session_id, "u": tag}, name=name,
                                              ttl=config.session.lifetime.total_seconds())
            cookies.append(f"{name}={sealed}")
        return cookies
    finally:
        await stage.close()
        await store.close()


if __name__ == "__main__":
    print(asyncio.run(make_cookie(sys.argv[1], sys.argv[2], sys.argv[3:])))
