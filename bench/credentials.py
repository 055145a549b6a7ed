"""Credentials for load tests other than an SSO session (bench/session_cookie.py makes that one).

    .venv/bin/python bench/credentials.py daypass CONFIG SCOPE   -> the Cookie header value of a day-pass session
    .venv/bin/python bench/credentials.py bearer URL COOKIE      -> a rolegate access token for that session

A day pass is issued from the config's first template and claimed for one device exactly as redeeming
its link does (``claim_device`` then the pass session and its sealed cookie); the running server learns
of the new pass through the Store poll. A bearer token comes from the server's own token endpoint
(``urn:rolegate:session`` grant), as a single-page app gets one.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

from rolegate.config import load_config
from rolegate.identity.daypass.issue import issue_pass
from rolegate.identity.daypass.redeem import claim_device
from rolegate.identity.daypass.service import daypass_service
from rolegate.identity.stage import IdentityStage
from rolegate.store import open_store


async def daypass_cookie(config_path: str, scope: str) -> str:
    config = load_config(config_path)
    base_dir = Path(config_path).resolve().parent
    store = await open_store(config.storage, base_dir=base_dir)
    stage = IdentityStage(config, base_dir=base_dir, store=store)
    try:
        await stage.open()
        now = time.time()
        template = next(iter(config.daypass.templates))
        issued = await issue_pass(store, None, config, template=template, scope=scope, name="Bench Holder",
                                  company="Bench BV", reason="load test", issuer="bench", issuer_may_issue=None,
                                  now=now)
        claimed = await claim_device(store, issued.code, via="link", client="127.0.0.1", now=now)
        assert claimed.outcome == "ok" and claimed.record is not None, claimed.outcome
        service = daypass_service(stage)
        value, _max_age = await service.start_session(claimed.record, len(claimed.record.redeemed), now)
        return f"{service.cookie_name}={value}"
    finally:
        await stage.close()
        await store.close()


def bearer_token(url: str, cookie: str) -> str:
    body = urllib.parse.urlencode({"grant_type": "urn:rolegate:session"}).encode()
    request = urllib.request.Request(f"{url}/.rolegate/token", data=body, method="POST", headers={
        "Cookie": cookie, "X-Requested-With": "XMLHttpRequest",
        "Content-Type": "application/x-www-form-urlencoded"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.load(answer)["access_token"]


if __name__ == "__main__":
    kind, *rest = sys.argv[1:]
    if kind == "daypass":
        print(asyncio.run(daypass_cookie(*rest)))
    elif kind == "bearer":
        print(bearer_token(*rest))
    else:
        raise SystemExit(f"unknown kind {kind!r}: daypass or bearer")
