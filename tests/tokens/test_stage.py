"""The token stage built from a real config file: routes mounted, secret fallback, assertion switch."""

from __future__ import annotations

import json

from aiohttp import web

from rolegate.config.loader import load_config_text
from rolegate.tokens import JWKS_PATH, TOKEN_PATH, TokenStage, audience_for

CONFIG = """
server: {listen: 127.0.0.1:0, public_url: https://safety.example.com/}
session: {secret: %s}
tokens: {algorithm: ES256, lifetime: 2m, rotate_every: 1d}
upstreams:
  app: {url: http://127.0.0.1:8081}
  billing: {url: http://127.0.0.1:8082, audience: urn:billing}
routes:
  - {path: /static/**, mode: public, upstream: app}
""" % ("q" * 40)


async def test_stage_from_config(store, board, aiohttp_client) -> None:
    config = load_config_text(CONFIG)
    stage = TokenStage(config, store, board=board, current_version=lambda: board.get("policy"))
    await stage.open()
    assert stage.issuer == "https://safety.example.com"
    assert stage.keyring.signing_key.alg == "ES256" and stage.minter is not None and stage.minter.lifetime == 120
    assert audience_for("app", config.upstreams["app"]) == "app"
    assert audience_for("billing", config.upstreams["billing"]) == "urn:billing"
    app = web.Application()
    stage.add_routes(app)
    client = await aiohttp_client(app)
    body = json.loads(await (await client.get(JWKS_PATH)).text())
    # The signing key is published; so is the next one during the last quarter of a period
    # (with rotate_every 1d: from 18:00 UTC), so the document's order is not the test's business.
    assert stage.keyring.signing_key.kid in {k["kid"] for k in body["keys"]}
    assert (await client.post(TOKEN_PATH, data={"grant_type": "nope"})).status == 400


async def test_assertions_can_be_switched_off(store) -> None:
    config = load_config_text(CONFIG.replace("rotate_every: 1d", "rotate_every: 1d, assertion: false"))
    assert TokenStage(config, store, current_version=lambda: 0).minter is None
