"""Issue 16, items 6-8, against a real ``rolegate serve`` over raw sockets (HTTP clients refuse to send these).

- Bytes that are not valid where they appear are a 400 with a reference, never a 500: a bearer token with a
  non-UTF-8 byte (protected routes, admin API, forward-auth), a non-UTF-8 ``Host``, a back-channel logout body
  that is not UTF-8, a WebSocket handshake header that cannot be passed on unchanged. Someone else's cookie
  with such a byte is no error: it reaches the backend byte for byte, without rolegate's cookies.
- An underscore form of a header rolegate sets or strips (``X_Rolegate_User``, ``X-Rolegate_Roles``,
  ``X_Forwarded_For``) never reaches the backend; ``server.drop_underscore_headers`` drops every one.
- Method-override headers never reach the backend.
- A malformed request is one INFO line, rate limited, never a traceback.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator

import pytest

from tests.security.proxied import ProxiedWorker, proxied_worker
from tests.security.rawhttp import Response, request_bytes, send

pytestmark = pytest.mark.lab

BAD = b"\xff\xfe"  # never UTF-8


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxiedWorker]:
    with proxied_worker(tmp_path_factory.mktemp("bytes")) as served:
        yield served


def _new_requests(worker: ProxiedWorker, since: int) -> list:
    return worker.upstream.received[since:]


def _assert_clean_log(worker: ProxiedWorker) -> None:
    log = worker.log()
    assert "Traceback" not in log, log[-4000:]
    assert " ERROR " not in log, log[-4000:]


def _reference(response: Response) -> str:
    """The reference id the client can quote: in the X-Rolegate-Reference header or the JSON body."""
    ref = response.header("X-Rolegate-Reference")
    if ref is None:
        ref = json.loads(response.body).get("reference")
    assert ref and re.fullmatch(r"[0-9a-f]{12}", ref), response
    return ref


# -- bytes ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", [b"/workorders/1", b"/buildings/a/plans", b"/public/x"])
def test_a_bearer_token_with_a_byte_that_is_not_utf8_is_a_400_with_a_reference(worker, target):
    before = len(worker.upstream.received)
    response = send(
        worker.port,
        request_bytes(
            b"GET", target, [(b"Authorization", b"Bearer ab" + BAD + b"cd"), (b"Accept", b"application/json")]
        ),
    )
    assert response.status == 400, response
    _reference(response)
    assert _new_requests(worker, before) == []
    _assert_clean_log(worker)


def test_a_bearer_token_with_a_byte_that_is_not_utf8_on_the_admin_api(worker):
    response = send(
        worker.port, request_bytes(b"GET", b"/.rolegate/api/v1/me", [(b"Authorization", b"Bearer ab" + BAD + b"cd")])
    )
    assert response.status == 400, response
    _reference(response)
    _assert_clean_log(worker)


def test_a_bearer_token_with_a_byte_that_is_not_utf8_at_forward_auth(worker):
    # Forward-auth answers a front proxy, which only understands 2xx/401/403: a refusal with a reference.
    response = send(
        worker.port,
        request_bytes(
            b"GET",
            b"/.rolegate/auth",
            [
                (b"Authorization", b"Bearer ab" + BAD + b"cd"),
                (b"X-Original-URI", b"/workorders/1"),
                (b"X-Original-Method", b"GET"),
            ],
        ),
    )
    assert response.status in (400, 403), response
    _reference(response)
    _assert_clean_log(worker)


@pytest.mark.parametrize("first", [b"Bearer abc", b"", b"Basic YTpi"])
@pytest.mark.parametrize("target", [b"/public/x", b"/workorders/1"])
def test_a_second_authorization_header_is_a_400_not_a_way_past_the_token_check(worker, target, first):
    """Only the first Authorization header was read: rolegate's token behind another one went to the backend."""
    before = len(worker.upstream.received)
    response = send(
        worker.port,
        request_bytes(
            b"GET", target, [(b"Authorization", first), (b"Authorization", b"Bearer " + worker.bearer.encode())]
        ),
    )
    leaked = [
        seen
        for seen in _new_requests(worker, before)
        if worker.bearer.encode() in b"".join(seen.values(b"Authorization"))
    ]
    assert not leaked, "rolegate's bearer token reached the backend"
    assert response.status == 400, response
    _reference(response)
    assert _new_requests(worker, before) == []
    _assert_clean_log(worker)


@pytest.mark.parametrize("target", [b"/public/x", b"/workorders/1"])
def test_a_host_that_is_not_a_host_name_is_a_400_with_a_reference(worker, target):
    before = len(worker.upstream.received)
    for host in (b"ex" + BAD + b"ample", "b\u00fccher.example".encode(), b"a b", b"a/b@c"):
        response = send(
            worker.port, request_bytes(b"GET", target, [(b"Cookie", worker.session_cookie.encode())], host=host)
        )
        assert response.status == 400, (host, response)
        _reference(response)
    assert _new_requests(worker, before) == []
    _assert_clean_log(worker)


def test_a_backchannel_logout_body_that_is_not_utf8_is_a_400_with_a_reference(worker):
    response = send(
        worker.port,
        request_bytes(
            b"POST",
            b"/.rolegate/logout/backchannel",
            [(b"Content-Type", b"application/x-www-form-urlencoded")],
            b"logout_token=ab" + BAD + b"cd",
        ),
    )
    assert response.status == 400, response
    _reference(response)
    _assert_clean_log(worker)


@pytest.mark.parametrize("target", [b"/public/x", b"/workorders/1"])
def test_other_cookies_pass_byte_for_byte_without_rolegates(worker, target):
    """A non-UTF-8 byte, or UTF-8 beyond latin-1, in the application's own cookies: no error, and the
    backend gets exactly those bytes (it used to be a 500, or latin-1 mojibake) minus rolegate's cookies."""
    before = len(worker.upstream.received)
    mine = b"app=ab" + BAD + b"cd; name=" + "J\u00f6rg \u20ac".encode()
    response = send(
        worker.port,
        request_bytes(
            b"GET", target, [(b"Cookie", mine + b"; " + worker.session_cookie.encode() + b"; rolegate_login_x=y")]
        ),
    )
    assert response.status == 200, response
    (seen,) = _new_requests(worker, before)
    assert seen.values(b"Cookie") == [mine]
    _assert_clean_log(worker)


def test_a_websocket_handshake_header_that_cannot_be_passed_on_is_a_400(worker):
    response = send(
        worker.port,
        request_bytes(
            b"GET",
            b"/ws",
            [
                (b"Upgrade", b"websocket"),
                (b"Connection", b"Upgrade"),
                (b"Sec-WebSocket-Version", b"13"),
                (b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ=="),
                (b"X-App", b"ab" + BAD),
            ],
        ),
    )
    assert response.status == 400, response
    _reference(response)
    _assert_clean_log(worker)


# -- headers ----------------------------------------------------------------------------------------------

SPOOFED = [
    (b"X_Rolegate_User", b"alice"),
    (b"X-Rolegate_Roles", b"admin"),
    (b"x_rolegate_assertion", b"forged"),
    (b"X-ROLEGATE_EMAIL", b"boss@example.com"),
    (b"X_Rolegate-Groups", b"admins"),
    (b"X_Forwarded_For", b"10.0.0.1"),
    (b"X-Forwarded_Host", b"evil.example"),
    (b"X_Forwarded_Proto", b"https"),
    (b"X_Real_IP", b"10.0.0.1"),
    (b"Proxy_Authorization", b"Basic eA=="),
]
OVERRIDES = [
    (b"X-HTTP-Method-Override", b"DELETE"),
    (b"X-HTTP-Method", b"DELETE"),
    (b"X-Method-Override", b"DELETE"),
    (b"X_HTTP_Method_Override", b"PUT"),
]


@pytest.mark.parametrize(
    "target,credential", [(b"/public/x", False), (b"/workorders/1", True), (b"/buildings/a/plans", True)]
)
def test_underscore_forms_and_method_overrides_never_reach_the_backend(worker, target, credential):
    before = len(worker.upstream.received)
    headers = SPOOFED + OVERRIDES + [(b"X_App_Header", b"kept"), (b"X-App-Header", b"kept too")]
    if credential:
        headers.append((b"Cookie", worker.session_cookie.encode()))
    response = send(worker.port, request_bytes(b"GET", target, headers))
    assert response.status == 200, response
    (seen,) = _new_requests(worker, before)
    for name in seen.names():
        dashed = name.replace(b"_", b"-")
        assert b"_" not in name or not dashed.startswith((b"x-rolegate-", b"x-forwarded-", b"x-real-", b"proxy-")), name
        assert dashed not in {b"x-http-method-override", b"x-http-method", b"x-method-override"}, name
    assert seen.values(b"X-Forwarded-For") == [b"127.0.0.1"]
    assert seen.values(b"X-Forwarded-Host") == [b"127.0.0.1"]
    if credential:
        assert seen.values(b"X-Rolegate-User") == [worker.user.encode()]
    else:
        assert not [n for n in seen.names() if n.replace(b"_", b"-").startswith(b"x-rolegate-")]
    # Only look-alikes of rolegate's headers are dropped by default: the application's own pass.
    assert seen.values(b"X_App_Header") == [b"kept"] and seen.values(b"X-App-Header") == [b"kept too"]
    _assert_clean_log(worker)


@pytest.mark.parametrize("websocket", [False, True])
def test_the_header_rules_hold_on_both_upstream_paths(websocket):
    """The HTTP head rolegate writes and the WebSocket handshake it asks aiohttp for drop the same headers."""
    from rolegate.proxy.headers import upstream_request_head, websocket_request_headers

    raw = (
        *SPOOFED,
        *OVERRIDES,
        (b"Sec_WebSocket_Key", b"x"),
        (b"Connection", b"X_App_Hop"),
        (b"X-App-Hop", b"1"),
        (b"X_App_Header", b"kept"),
        (b"Cookie_", b"kept"),
    )
    common = dict(
        client_addr="127.0.0.1", forwarded_proto="http", forwarded_host="h", set_headers={"X-Rolegate-User": "vera"}
    )

    def sent(**options) -> list[bytes]:
        if websocket:
            return [n.lower().encode() for n in websocket_request_headers(raw, **common, **options)]
        head = upstream_request_head("GET", b"/", raw, host=b"h", framing=b"", **common, **options)
        return [line.split(b":", 1)[0].lower() for line in head.split(b"\r\n")[1:] if line]

    names = sent()
    assert [
        n
        for n in names
        if n.replace(b"_", b"-").startswith((b"x-rolegate-", b"x-forwarded-", b"x-real-", b"proxy-"))
        and n not in (b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host")
    ] == [b"x-rolegate-user"]
    # aiohttp writes the handshake itself: no look-alike of it goes along (a plain request keeps it).
    assert (b"sec_websocket_key" in names) is not websocket
    assert not {n.replace(b"_", b"-") for n in names} & {
        b"x-http-method-override",
        b"x-http-method",
        b"x-method-override",
        b"x-app-hop",
    }
    assert b"x_app_header" in names and b"cookie_" in names
    assert [n for n in sent(drop_underscore=True) if b"_" in n] == []


def test_drop_underscore_headers_drops_every_underscore_header(tmp_path):
    with proxied_worker(tmp_path, drop_underscore_headers=True) as strict:
        response = send(
            strict.port,
            request_bytes(
                b"GET",
                b"/workorders/1",
                [
                    (b"Cookie", strict.session_cookie.encode()),
                    (b"X_App_Header", b"dropped"),
                    (b"X-App-Header", b"kept"),
                    *SPOOFED,
                ],
            ),
        )
        assert response.status == 200, response
        seen = strict.upstream.received[-1]
        assert [n for n in seen.names() if b"_" in n] == []
        assert seen.values(b"X-App-Header") == [b"kept"]
        assert seen.values(b"X-Rolegate-User") == [strict.user.encode()]
        _assert_clean_log(strict)


# -- malformed requests in the log ------------------------------------------------------------------------

MALFORMED = [
    b"GET /public/x HTTP/1.1\r\nHost: a\r\nX" + BAD + b"Y: 1\r\n\r\n",  # refused by the HTTP parser
    b"GET /public/x HTTP/1.1\r\nHost: a\r\nBad Name: 1\r\n\r\n",  # refused by the HTTP parser
    request_bytes(b"GET", b"/public/x", [], host=b"ex" + BAD),  # refused by rolegate (Host)
    request_bytes(b"GET", b"/workorders/1", [(b"Authorization", b'Bearer "quoted"')]),  # (bearer token)
]
_LINE = re.compile(r"^(\S+ \S+),\d+ INFO \S+ rolegate\.malformed: (.*)$", re.M)
_LEFT_OUT = re.compile(r"\[(\d+) more not logged")


def test_malformed_requests_are_one_info_line_each_rate_limited(worker):
    # First a line of its own, in a second of its own: it carries the count of earlier tests' left-out lines.
    time.sleep(1.1)
    flushed = len(worker.rolegate.output)
    assert send(worker.port, MALFORMED[1]).status == 400
    deadline = time.monotonic() + 10
    while not _LINE.search("".join(worker.rolegate.output[flushed:])) and time.monotonic() < deadline:
        time.sleep(0.05)
    start = len(worker.rolegate.output)
    statuses = []
    for _ in range(60):  # more than the limit allows in a second, unless this machine is very slow
        for raw in MALFORMED:
            statuses.append(send(worker.port, raw).status)
    time.sleep(1.1)  # a new second: the next line reports what the last one left out
    statuses.append(send(worker.port, MALFORMED[0]).status)
    sent = len(statuses)

    def counted() -> tuple[list[tuple[str, str]], int]:
        lines = _LINE.findall("".join(worker.rolegate.output[start:]))
        return lines, sum(int(n) for _, text in lines for n in _LEFT_OUT.findall(text))

    deadline = time.monotonic() + 10  # the log arrives through a pipe: wait for the last line
    lines, left_out = counted()
    while len(lines) + left_out < sent and time.monotonic() < deadline:
        time.sleep(0.05)
        lines, left_out = counted()
    log = "".join(worker.rolegate.output[start:])
    assert "Traceback" not in log and " ERROR " not in log, log[-4000:]
    assert set(statuses) == {400}, statuses
    per_second: dict[str, int] = {}
    for second, _ in lines:
        per_second[second] = per_second.get(second, 0) + 1
    assert max(per_second.values()) <= 10, per_second
    # Every malformed request is counted once: a line of its own, or in a later line's summary.
    assert len(lines) + left_out == sent, (len(lines), left_out, sent)
    assert any("Invalid header token" in text for _, text in lines), lines[:5]
