"""Issue 21: the lean forward-auth listener (``server.forward_auth.listen``, rolegate.server.lean_auth) gives
exactly the answer the full path gives, and a revocation, a disabled user and a policy change bite at the
next request on it.

The worker's application runs in-process (tests/security/test_fast_paths_next_request.py's ``fast`` fixture:
SQLite Store, slapd, the lab IdP, day passes and tokens issued for real), with a LeanServer on a port of its
own beside it, as ``rolegate serve`` starts one per worker. Every test checks that the lean listener itself
answered (``lean.answered`` grew): a test whose requests were all relayed would not exercise the fast path.
tests/security/test_lean_forward_auth_serve.py runs it through ``rolegate serve`` behind a real nginx.
"""

from __future__ import annotations

import asyncio
import re
import urllib.parse
from collections.abc import AsyncIterator

import aiohttp
import pytest

from rolegate.server.lean_auth import LeanServer
from rolegate_lab import free_port
from tests.security.test_fast_paths_next_request import (
    DASHBOARD,
    JSON,
    Fast,
    day_pass,
    disable_heidi,
    fast,
    heidi_session,
    heidi_token,
    refused_from_now_on,
    take_back_from_heidi,
)

pytestmark = pytest.mark.lab
__all__ = ["fast"]  # the fixture, imported for its name


@pytest.fixture
async def lean(fast: Fast) -> AsyncIterator[LeanServer]:
    server = LeanServer(fast.holder, fast.server.runner, "127.0.0.1", free_port())
    await server.start()
    yield server
    await server.close()  # drain() would make this process close every connection after its answer


def routing(served: Fast, uri: str = DASHBOARD, method: str = "GET") -> dict[str, str]:
    host = urllib.parse.urlsplit(served.url).netloc
    return {"X-Original-URI": uri, "X-Original-Method": method, "X-Forwarded-Host": host, "X-Forwarded-Proto": "http"}


class Answer:
    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def comparable(self) -> tuple[int, list[tuple[str, str]], bytes]:
        """Everything but the date and an error's random reference id."""
        headers = [(k, v) for k, v in self.headers if k.lower() not in ("date", "x-rolegate-reference")]
        return self.status, headers, re.sub(rb"[0-9a-f]{12}", b"<ref>", self.body)


async def ask(
    http: aiohttp.ClientSession,
    port: int,
    headers: list[tuple[str, str]] | dict[str, str],
    *,
    method: str = "GET",
    path: str = "/.rolegate/auth",
) -> Answer:
    async with http.request(method, f"http://127.0.0.1:{port}{path}", headers=headers, allow_redirects=False) as resp:
        body = await resp.read()
        return Answer(
            resp.status, list(resp.raw_headers and [(k.decode(), v.decode()) for k, v in resp.raw_headers]), body
        )


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False) as session:
        yield session


def main_port(served: Fast) -> int:
    return urllib.parse.urlsplit(served.url).port  # type: ignore[return-value]


async def warm_lean(
    served: Fast, lean: LeanServer, http: aiohttp.ClientSession, credential: dict[str, str], part: str
) -> None:
    """Allowed on the lean port until the lean listener answers it itself."""
    for _ in range(8):
        answer = await ask(http, lean.port, {**JSON, **credential, **routing(served)})
        assert answer.status == 200
        before = lean.answered
        if served.remembered(part):
            answer = await ask(http, lean.port, {**JSON, **credential, **routing(served)})
            assert answer.status == 200
            if lean.answered == before + 1:
                return
    pytest.fail("the lean listener never answered from memory: this test would not exercise it")


def lean_asker(served: Fast, lean: LeanServer, http: aiohttp.ClientSession):
    async def ask_lean(credential: dict[str, str]) -> int:
        return (await ask(http, lean.port, {**JSON, **credential, **routing(served)})).status

    return ask_lean


# -- the next request after a change, on the lean port ----------------------------------------------------------------


async def test_a_revoked_day_pass_is_refused_at_the_next_lean_request(fast: Fast, lean: LeanServer, http) -> None:
    credential, part, pass_id = await day_pass(fast)
    await warm_lean(fast, lean, http, credential, part)
    alice = await fast.login("alice")
    status, body, _ = await alice.call("DELETE", f"/.rolegate/api/v1/daypasses/{pass_id}")
    assert status == 200 and body["status"] == "revoked", body
    await refused_from_now_on(lean_asker(fast, lean, http), credential, "the pass was revoked")


async def test_a_revoked_bearer_token_is_refused_at_the_next_lean_request(fast: Fast, lean: LeanServer, http) -> None:
    credential, token, _browser = await heidi_token(fast)
    await warm_lean(fast, lean, http, credential, token)
    async with fast.app().post(fast.url + "/.rolegate/token/revoke", data={"token": token}) as resp:
        assert resp.status == 200, await resp.text()
    await refused_from_now_on(lean_asker(fast, lean, http), credential, "the token was revoked")


async def test_a_day_pass_that_ended_is_refused_at_the_next_lean_request(fast: Fast, lean: LeanServer, http) -> None:
    credential, part, _ = await day_pass(fast)
    await warm_lean(fast, lean, http, credential, part)
    fast.clock.offset = 2 * 86400.0
    await refused_from_now_on(lean_asker(fast, lean, http), credential, "the pass's end")


@pytest.mark.parametrize("credential_kind", ["session", "bearer"])
async def test_a_disabled_user_is_refused_at_the_next_lean_request(
    fast: Fast, lean: LeanServer, http, credential_kind: str
) -> None:
    credential, part, _ = await (heidi_session if credential_kind == "session" else heidi_token)(fast)
    await warm_lean(fast, lean, http, credential, part)
    await disable_heidi(fast)
    await refused_from_now_on(lean_asker(fast, lean, http), credential, "heidi was disabled in the directory")


@pytest.mark.parametrize("credential_kind", ["session", "bearer"])
async def test_a_removed_binding_is_refused_at_the_next_lean_request(
    fast: Fast, lean: LeanServer, http, credential_kind: str
) -> None:
    credential, part, _ = await (heidi_session if credential_kind == "session" else heidi_token)(fast)
    await warm_lean(fast, lean, http, credential, part)
    await take_back_from_heidi(fast)
    await refused_from_now_on(lean_asker(fast, lean, http), credential, "the binding was removed")


# -- the same answer as the full path -----------------------------------------------------------------------------------


def matrix(served: Fast, credentials: dict[str, dict[str, str]]) -> list[tuple[str, str, list[tuple[str, str]]]]:
    """(name, method, headers) of forward-auth subrequests: tests/security/test_forward_auth_spoofing.py's nginx
    cases (other conventions' copies agreeing or not, routing headers missing or repeated), each with every
    credential, and the routes the next-request tests ask about."""
    cases: list[tuple[str, str, list[tuple[str, str]]]] = []
    for who, credential in credentials.items():

        def add(name: str, headers: list[tuple[str, str]], method: str = "GET") -> None:
            cases.append((f"{who}: {name}", method, [*JSON.items(), *credential.items(), *headers]))  # noqa: B023

        base = list(routing(served).items())
        add("dashboard", base)
        add("dashboard, HEAD subrequest", base, "HEAD")
        add("dashboard b", list(routing(served, "/buildings/b/dashboard").items()))
        add("dashboard with a query", list(routing(served, DASHBOARD + "?x=1&x=2").items()))
        add("dashboard, DELETE", list(routing(served, method="DELETE").items()))
        add("unknown method", list(routing(served, method="BREW").items()))
        add("me", list(routing(served, "/me").items()))
        add("unmatched", list(routing(served, "/nowhere").items()))
        add("non-canonical", list(routing(served, "/buildings/a/../a/dashboard").items()))
        add("relative uri", list(routing(served, "buildings/a/dashboard").items()))
        add("agreeing X-Forwarded-Uri", [*base, ("X-Forwarded-Uri", DASHBOARD)])
        add("X-Forwarded-Uri elsewhere", [*base, ("X-Forwarded-Uri", "/me")])
        add("X-Forwarded-Method elsewhere", [*base, ("X-Forwarded-Method", "DELETE")])
        add("X-Envoy-Original-Path elsewhere", [*base, ("X-Envoy-Original-Path", "/me")])
        add("two X-Original-URI", [*base, ("X-Original-URI", "/me")])
        add("two X-Forwarded-Host", [*base, ("X-Forwarded-Host", "other.example.test")])
        add("two X-Forwarded-Proto", [*base, ("X-Forwarded-Proto", "https")])
        add("no X-Original-Method", [h for h in base if h[0] != "X-Original-Method"])
        add("no X-Forwarded-Host", [h for h in base if h[0] != "X-Forwarded-Host"])
        add("other host", list(routing(served).items())[:2] + [("X-Forwarded-Host", "other.example.test")])
        add("host with a comma", list(routing(served).items())[:2] + [("X-Forwarded-Host", "a.test,b.test")])
        add(
            "WebSocket upgrade headers",
            [*base, ("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Origin", "https://evil.example.test")],
        )
        add("a second Cookie header", [*base, ("Cookie", "rolegate_session=forged")])
        add("a second Authorization header", [*base, ("Authorization", "Bearer forged")])
    return cases


async def test_the_lean_port_answers_what_the_main_port_answers(fast: Fast, lean: LeanServer, http) -> None:
    passed, part, _ = await day_pass(fast)
    await warm_lean(fast, lean, http, passed, part)
    session, cookie, _ = await heidi_session(fast)
    await warm_lean(fast, lean, http, session, cookie)
    bearer, token, _ = await heidi_token(fast)
    await warm_lean(fast, lean, http, bearer, token)
    credentials = {
        "session": session,
        "bearer": bearer,
        "day pass": passed,
        "nobody": {},
        "forged cookie": {"Cookie": "rolegate_session=forged"},
    }
    answered = lean.answered
    differences = []
    for _ in range(2):  # the second round meets what the first remembered
        for name, method, headers in matrix(fast, credentials):
            on_main = await ask(http, main_port(fast), headers, method=method)
            on_lean = await ask(http, lean.port, headers, method=method)
            if on_main.comparable() != on_lean.comparable():
                main, leaned = on_main.comparable(), on_lean.comparable()
                differences.append(
                    (
                        name,
                        main[0],
                        leaned[0],
                        [h for h in main[1] if h not in leaned[1]],
                        [h for h in leaned[1] if h not in main[1]],
                        main[2][:200],
                        leaned[2][:200],
                    )
                )
    assert not differences, differences[:3]
    assert lean.answered >= answered + 6, "the lean listener answered none of the matrix itself"
    assert lean.relayed > 0


async def test_an_untrusted_peer_is_refused_on_the_lean_port_too(fast: Fast, lean: LeanServer, http) -> None:
    """The relay carries the peer's own address: a peer outside trusted_proxies is not taken for loopback."""
    session, cookie, _ = await heidi_session(fast)
    await warm_lean(fast, lean, http, session, cookie)
    server = fast.runtime.config.server
    object.__setattr__(server, "trusted_proxies", ("10.255.255.1/32",))
    headers = {**JSON, **session, **routing(fast)}
    on_lean = await ask(http, lean.port, headers)
    on_main = await ask(http, main_port(fast), headers)
    assert on_lean.status == on_main.status == 403
    assert on_lean.comparable() == on_main.comparable()


# -- bytes that are not a forward-auth question -------------------------------------------------------------------------


async def raw(port: int, data: bytes, *, wait: float = 2.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    out = b""
    try:
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), wait)
            if not chunk:
                break
            out += chunk
    except asyncio.TimeoutError:
        pass
    writer.close()
    return out


async def test_malformed_and_oversized_requests_never_allow(fast: Fast, lean: LeanServer, http) -> None:
    session, cookie, _ = await heidi_session(fast)
    await warm_lean(fast, lean, http, session, cookie)
    head = "".join(f"{k}: {v}\r\n" for k, v in {**session, **routing(fast)}.items()).encode()
    good = b"GET /.rolegate/auth HTTP/1.1\r\nHost: x\r\n" + head + b"\r\n"
    assert (await raw(lean.port, good, wait=0.5)).startswith(b"HTTP/1.1 200 ")
    bad = [
        b"GET /.rolegate/auth HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n" + head + b"\r\n",
        b"GET /.rolegate/auth HTTP/1.1\r\nHost: x\r\nX-Junk: \x00\x01\r\n" + head + b"\r\n",
        b"GET /.rolegate/auth HTTP/9.9\r\n" + head + b"\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,  # a TLS ClientHello
        b"GET /.rolegate/auth HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n" + head + b"\r\n",
        b"GET /.rolegate/auth HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n" + head + b"\r\nhello",
    ]
    for data in bad:
        answer = await raw(lean.port, data)
        assert not answer.startswith(b"HTTP/1.1 200"), (data[:80], answer[:200])
    # invalid UTF-8 in a header beside a valid credential: relayed, and aiohttp answers as it would on the main port
    odd = b"GET /.rolegate/auth HTTP/1.1\r\nHost: x\r\nX-Note: caf\xe9 \xff\r\n" + head + b"\r\n"
    on_lean, on_main = await raw(lean.port, odd, wait=0.5), await raw(main_port(fast), odd, wait=0.5)
    assert on_lean.split(b"\r\n")[0] == on_main.split(b"\r\n")[0]
    # a subrequest with a body (sized, chunked, or after 100 Continue) is relayed: the same status as the main port
    for framed in (
        b"Content-Length: 5\r\n" + head + b"\r\nhello",
        b"Transfer-Encoding: chunked\r\n" + head + b"\r\n5\r\nhello\r\n0\r\n\r\n",
        b"Expect: 100-continue\r\nContent-Length: 5\r\n" + head + b"\r\nhello",
    ):
        data = b"POST /.rolegate/auth HTTP/1.1\r\nHost: x\r\n" + framed + good
        on_lean, on_main = await raw(lean.port, data, wait=0.5), await raw(main_port(fast), data, wait=0.5)
        assert re.findall(rb"HTTP/1.1 (\d{3}) ", on_lean) == re.findall(rb"HTTP/1.1 (\d{3}) ", on_main), framed[:30]
        assert len(re.findall(rb"HTTP/1.1 200 ", on_lean)) >= 1  # the pipelined plain request after it
    # the listener still answers
    assert (await raw(lean.port, good, wait=0.5)).startswith(b"HTTP/1.1 200 ")


async def test_pipelined_requests_are_answered_in_order(fast: Fast, lean: LeanServer, http) -> None:
    session, cookie, _ = await heidi_session(fast)
    await warm_lean(fast, lean, http, session, cookie)
    head = "".join(f"{k}: {v}\r\n" for k, v in {**JSON, **session}.items()).encode()
    host = urllib.parse.urlsplit(fast.url).netloc.encode()

    def request(uri: bytes) -> bytes:
        return (
            b"GET /.rolegate/auth HTTP/1.1\r\nHost: x\r\nX-Original-URI: " + uri + b"\r\nX-Original-Method: GET\r\n"
            b"X-Forwarded-Host: " + host + b"\r\nX-Forwarded-Proto: http\r\n" + head + b"\r\n"
        )

    answer = await raw(
        lean.port, request(DASHBOARD.encode()) + request(b"/nowhere") + request(DASHBOARD.encode()), wait=1.0
    )
    statuses = re.findall(rb"HTTP/1.1 (\d{3}) ", answer)
    assert statuses == [b"200", b"403", b"200"], answer[:300]


# -- server.timeouts and server.max_connections on the lean port ---------------------------------------------------------


def set_limits(served: Fast, lean: LeanServer, **values: object) -> None:
    """Change the running config's server limits (as a reload would: the lean listener reads them again)."""
    lean._timeouts_of = None
    server = served.runtime.config.server
    timeouts = server.timeouts
    for name, value in values.items():
        if name in ("header", "idle"):
            from datetime import timedelta

            object.__setattr__(timeouts, name, timedelta(seconds=float(value)))  # type: ignore[arg-type]
        else:
            object.__setattr__(server, name, value)


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes | None:
    """What the server sent before closing, or None when it kept the connection open that long."""
    out = b""
    try:
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), seconds)
            if not chunk:
                return out
            out += chunk
    except asyncio.TimeoutError:
        return None


async def test_slow_and_idle_connections_are_closed(fast: Fast, lean: LeanServer, http) -> None:
    session, cookie, _ = await heidi_session(fast)
    await warm_lean(fast, lean, http, session, cookie)
    set_limits(fast, lean, header=0.3, idle=0.3)
    # a head that never ends
    reader, writer = await asyncio.open_connection("127.0.0.1", lean.port)
    writer.write(b"GET /.rolegate/auth HTTP/1.1\r\nHost: x\r\n")
    assert await closed_within(reader, 10) == b""
    writer.close()
    # a kept-alive connection that asks nothing more
    reader, writer = await asyncio.open_connection("127.0.0.1", lean.port)
    head = "".join(f"{k}: {v}\r\n" for k, v in {**session, **routing(fast)}.items()).encode()
    writer.write(b"GET /.rolegate/auth HTTP/1.1\r\nHost: x\r\n" + head + b"\r\n")
    answer = await closed_within(reader, 10)
    assert answer is not None and answer.startswith(b"HTTP/1.1 200 "), answer
    writer.close()
    # a connection that says nothing at all
    reader, writer = await asyncio.open_connection("127.0.0.1", lean.port)
    assert await closed_within(reader, 10) == b""
    writer.close()


async def test_connections_past_the_cap_are_told_to_come_back(fast: Fast, lean: LeanServer) -> None:
    set_limits(fast, lean, max_connections=2)
    held = [await asyncio.open_connection("127.0.0.1", lean.port) for _ in range(2)]
    await asyncio.sleep(0.1)
    reader, writer = await asyncio.open_connection("127.0.0.1", lean.port)
    answer = await closed_within(reader, 10)
    assert answer is not None and answer.startswith(b"HTTP/1.1 503 "), answer
    writer.close()
    for _, w in held:
        w.close()


def test_config_lean_listen_is_optional_and_checked(tmp_path) -> None:
    from rolegate.config.loader import load_config_text
    from rolegate.errors import ConfigError

    base = (
        "server: {listen: 127.0.0.1:8080, public_url: http://127.0.0.1:8080, forward_auth: %s}\n"
        "upstreams: {app: {url: http://127.0.0.1:9}}\nroutes: [{path: /x, mode: public, upstream: app}]\n"
    )
    assert load_config_text(base % "{proxy: nginx}", base_dir=tmp_path).server.forward_auth.listen is None
    config = load_config_text(base % "{proxy: caddy, listen: '127.0.0.1:9091'}", base_dir=tmp_path)
    assert config.server.forward_auth.listen == ("127.0.0.1", 9091)
    for bad, says in (
        ("{proxy: nginx, listen: '127.0.0.1:8080'}", "another port"),
        ("{proxy: nginx, listen: '127.0.0.1:0'}", "port of its own"),
        ("{proxy: envoy, listen: '127.0.0.1:9091'}", "Envoy"),
        ("{proxy: nginx, listen: 'nowhere'}", "listen"),
    ):
        with pytest.raises(ConfigError) as err:
            load_config_text(base % bad, base_dir=tmp_path)
        assert says in str(err.value), (bad, str(err.value))
