"""Issue 21, item 4: the fast paths refuse at the NEXT request after a revocation, a directory change and a
policy change.

check_access remembers its answer per credential (``AccessMemo``): a browser session, a day-pass session
and a rolegate bearer token, on the proxy path and on forward-auth (``/.rolegate/auth``) alike. These tests
put each credential on each path until it is remembered (checked: the memo holds it), make one change,
and require the very next request to be refused, then every one after it.

rolegate in-process with its real pieces (as tests/security/test_token_grants.py): a SQLite Store, the
audit log, this test's own slapd synced by the real DirectorySync, the lab IdP for sign-in, day passes
issued by carol through the admin API and redeemed through their link, tokens from the token endpoint.
heidi's access to the dashboard comes from a stored binding only, so that removing it is a policy change.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
import yarl
import yaml
from aiohttp.test_utils import TestServer

from rolegate.app import build_app
from rolegate.config.loader import load_config_text
from rolegate.server.runtime import Runtime, RuntimeHolder
from rolegate.store.version_board import bump
from rolegate_lab import free_port, rolegate_client
from tests.daypass.conftest import redeem
from tests.security.test_token_grants import Served, exchange, issue_pass, token_config

pytestmark = pytest.mark.lab

DASHBOARD = "/buildings/a/dashboard"
JSON = {"Accept": "application/json"}


class MovableClock:
    """The Runtime's clock (and the identity stage's, which day passes read), moved by a test."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


class Fast(Served):
    clock: MovableClock

    def remembered(self, credential_part: str) -> bool:
        """Whether a remembered answer is keyed by a credential holding ``credential_part``."""
        memo = self.runtime.access_memo
        return memo is not None and any(credential_part in part for key in memo.known for part in key[0])


@pytest.fixture
async def fast(tmp_path: Path, make_idp, fresh_slapd, lab_backend) -> AsyncIterator[Fast]:
    url = f"http://127.0.0.1:{free_port()}"
    idp = make_idp([rolegate_client(url)], slapd=fresh_slapd)
    config = token_config(url, idp, fresh_slapd, lab_backend.url, tmp_path)
    config["server"]["forward_auth"] = {"proxy": "nginx"}
    config["tokens"] = {"clock_skew": "0s"}  # a token's exp is its end, to the second
    # heidi (bs-users) holds the dashboard only through a stored binding (see grant_heidi).
    config["bindings"] = [b for b in config["bindings"] if b.get("group") != "bs-users"]
    loaded = load_config_text(yaml.safe_dump(config, sort_keys=False), base_dir=tmp_path)
    runtime = await Runtime.create(loaded, base_dir=tmp_path)
    clock = MovableClock()
    runtime.clock = clock
    runtime.identity.clock = clock
    holder = RuntimeHolder(runtime)
    server = TestServer(build_app(holder), host="127.0.0.1", port=urllib.parse.urlsplit(url).port)
    await server.start_server()
    served = Fast(url, holder, server, fresh_slapd)
    served.clock = clock
    await served.sync(full=True)
    await grant_heidi(served)
    yield served
    for http in served.opened:
        await http.close()
    await server.close()
    await runtime.close()


async def grant_heidi(served: Served) -> None:
    runtime = served.runtime
    await runtime.store.put("bindings", "heidi-dashboard", {"user": "heidi", "role": "user", "scope": None})
    await bump(runtime.store, runtime.board, "policy")


async def take_back_from_heidi(served: Served) -> None:
    runtime = served.runtime
    assert await runtime.store.delete("bindings", "heidi-dashboard")
    await bump(runtime.store, runtime.board, "policy")


def disable_heidi(served: Served) -> Awaitable[None]:
    dn = f"uid=heidi,ou=people,{served.slapd.base_dn}"
    served.slapd.ldapmodify(f"dn: {dn}\nchangetype: modify\nreplace: employeeType\nemployeeType: disabled\n")
    return served.sync(full=True)


# -- the two paths: rolegate proxying, and rolegate asked by nginx (auth_request) -----------------------------

Ask = Callable[[dict[str, str]], Awaitable[int]]


def asker(served: Served, via: str) -> Ask:
    """GET the dashboard through rolegate's proxy, or ask /.rolegate/auth about it as nginx does."""
    http = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())  # only the credential it is given
    served.opened.append(http)
    host = urllib.parse.urlsplit(served.url).netloc

    async def ask(credential: dict[str, str]) -> int:
        if via == "proxy":
            url, headers = served.url + DASHBOARD, {**JSON, **credential}
        else:
            url = served.url + "/.rolegate/auth"
            headers = {
                **JSON,
                **credential,
                "X-Original-URI": DASHBOARD,
                "X-Original-Method": "GET",
                "X-Forwarded-Host": host,
                "X-Forwarded-Proto": "http",
            }
        async with http.get(url, headers=headers, allow_redirects=False) as resp:
            await resp.read()
            return resp.status

    return ask


def cookie_header(http: aiohttp.ClientSession, url: str) -> str:
    jar = http.cookie_jar.filter_cookies(yarl.URL(url))
    return "; ".join(f"{name}={morsel.value}" for name, morsel in jar.items())


async def warm(served: Fast, ask: Ask, credential: dict[str, str], part: str) -> None:
    """Allowed, repeatedly, until the answer is remembered: the next request meets the memo."""
    for _ in range(5):
        assert await ask(credential) == 200
    assert served.remembered(part), "the answer was never remembered: this test would not exercise the fast path"
    assert await ask(credential) == 200


async def refused_from_now_on(ask: Ask, credential: dict[str, str], what: str) -> None:
    answers = [await ask(credential) for _ in range(3)]
    assert all(code in (401, 403) for code in answers), f"after {what}: {answers}"


# -- credentials ---------------------------------------------------------------------------------------------


async def heidi_session(served: Served) -> tuple[dict[str, str], str, Any]:
    browser = await served.login("heidi")
    cookie = cookie_header(browser.http, served.url)
    assert "rolegate_session" in cookie
    return {"Cookie": cookie}, cookie, browser


async def heidi_token(served: Served) -> tuple[dict[str, str], str, Any]:
    browser = await served.login("heidi")
    status, grant = await exchange(served, browser)
    assert status == 200, grant
    return {"Authorization": f"Bearer {grant['access_token']}"}, grant["access_token"], browser


async def day_pass(served: Served) -> tuple[dict[str, str], str, str]:
    pass_id, code = await issue_pass(served)
    phone = served.app()
    resp = await redeem(served, phone, f"{served.url}/.rolegate/pass/{code}")
    assert resp.status in (302, 303), resp.status
    cookie = cookie_header(phone, served.url)
    assert "rolegate_pass" in cookie
    return {"Cookie": cookie}, cookie, pass_id


# -- revocation --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("via", ["forward-auth", "proxy"])
async def test_a_revoked_day_pass_is_refused_at_the_next_request(fast: Fast, via: str) -> None:
    credential, part, pass_id = await day_pass(fast)
    ask = asker(fast, via)
    await warm(fast, ask, credential, part)
    alice = await fast.login("alice")
    status, body, _ = await alice.call("DELETE", f"/.rolegate/api/v1/daypasses/{pass_id}")
    assert status == 200 and body["status"] == "revoked", body
    await refused_from_now_on(ask, credential, "the pass was revoked")


@pytest.mark.parametrize("via", ["forward-auth", "proxy"])
async def test_a_revoked_bearer_token_is_refused_at_the_next_request(fast: Fast, via: str) -> None:
    credential, token, _browser = await heidi_token(fast)
    ask = asker(fast, via)
    await warm(fast, ask, credential, token)
    async with fast.app().post(fast.url + "/.rolegate/token/revoke", data={"token": token}) as resp:
        assert resp.status == 200, await resp.text()
    await refused_from_now_on(ask, credential, "the token was revoked")


async def test_a_signed_out_session_is_refused_at_the_next_forward_auth_request(fast: Fast) -> None:
    credential, cookie, browser = await heidi_session(fast)
    ask = asker(fast, "forward-auth")
    await warm(fast, ask, credential, cookie)
    async with browser.http.get(fast.url + "/.rolegate/logout", allow_redirects=False) as resp:
        assert resp.status in (302, 303), await resp.text()
    await refused_from_now_on(ask, credential, "sign-out")


# -- the credential's own end, read at every request --------------------------------------------------------------


@pytest.mark.parametrize("via", ["forward-auth", "proxy"])
async def test_a_day_pass_that_ended_is_refused_at_the_next_request(fast: Fast, via: str) -> None:
    credential, part, _pass_id = await day_pass(fast)
    ask = asker(fast, via)
    await warm(fast, ask, credential, part)
    fast.clock.offset = 2 * 86400.0  # past the pass's end: nothing on the version board moves for that
    await refused_from_now_on(ask, credential, "the pass's end")


@pytest.mark.parametrize("via", ["forward-auth", "proxy"])
async def test_a_bearer_token_is_refused_from_its_exp_on(fast: Fast, via: str) -> None:
    """A token's exp moves nothing on the version board: a remembered answer must read it every time.
    Asked densely across the exp second, no request that starts at or after exp may pass."""
    fast.runtime.tokens.service.lifetime = 2.0  # config allows 30 s at least; the test cannot wait that long
    credential, token, _browser = await heidi_token(fast)
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    ask = asker(fast, via)
    await warm(fast, ask, credential, token)
    passed_late: list[float] = []
    refused = 0
    while refused < 5:
        started = time.time()
        code = await ask(credential)
        if code == 200 and started >= exp:
            passed_late.append(started - exp)
        if code in (401, 403):
            refused += 1
            assert time.time() >= exp, "refused before its exp"
        assert time.time() < exp + 10, "never refused"
    assert not passed_late, f"answered 200 after exp (+{passed_late[:3]} s): a remembered answer outlived the token"


# -- a directory change: heidi disabled -----------------------------------------------------------------------------


# A session on the proxy path: tests/security/test_directory_change_next_request.py.
@pytest.mark.parametrize(
    ("via", "credential_kind"), [("forward-auth", "session"), ("forward-auth", "bearer"), ("proxy", "bearer")]
)
async def test_a_disabled_user_is_refused_at_the_next_request(fast: Fast, via: str, credential_kind: str) -> None:
    credential, part, _ = await (heidi_session if credential_kind == "session" else heidi_token)(fast)
    ask = asker(fast, via)
    await warm(fast, ask, credential, part)
    await disable_heidi(fast)
    await refused_from_now_on(ask, credential, "heidi was disabled in the directory")


# -- a policy change: the binding that gave heidi the dashboard removed -----------------------------------------------


@pytest.mark.parametrize("credential_kind", ["session", "bearer"])
@pytest.mark.parametrize("via", ["forward-auth", "proxy"])
async def test_a_removed_binding_is_refused_at_the_next_request(fast: Fast, via: str, credential_kind: str) -> None:
    credential, part, _ = await (heidi_session if credential_kind == "session" else heidi_token)(fast)
    ask = asker(fast, via)
    await warm(fast, ask, credential, part)
    await take_back_from_heidi(fast)
    await refused_from_now_on(ask, credential, "the binding was removed")
