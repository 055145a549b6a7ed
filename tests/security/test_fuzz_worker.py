"""Hypothesis throws generated methods, targets, header names and values (bytes, not only text) at a running
``rolegate serve`` in front of an upstream that records every request it receives, and checks each answer:

- no 500 (nor a connection closed without an answer);
- no traceback and no ERROR line in rolegate's log;
- no identity header of the client's (``X-Rolegate-*`` or an underscore form of it, or of any header rolegate
  sets or strips), no method-override header, no rolegate cookie and no rolegate bearer token reaches the
  backend;
- no request to a protected route reaches the backend without a valid credential, and what does reach it
  names the user rolegate authenticated.

Valid credentials (the day-pass session cookie, a rolegate bearer token) are mixed in, so the authenticated
paths are fuzzed too. Bounded: the ``ci`` profile (the default, what CI runs) tries a few hundred requests;
``ROLEGATE_FUZZ_PROFILE=deep`` tries many more. CR and LF are left out: framing (request smuggling) is the
HTTP parser's concern and has tests of its own.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.security.proxied import (
    PROTECTED_PATHS,
    ROLEGATE_COOKIE_PREFIX,
    ROLEGATE_COOKIES,
    ProxiedWorker,
    proxied_worker,
)
from tests.security.rawhttp import request_bytes, send

pytestmark = pytest.mark.lab

# Named for this test (hypothesis profiles are global): ROLEGATE_FUZZ_PROFILE=ci (the default) or deep.
settings.register_profile(
    "fuzz-worker-ci",
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("fuzz-worker-deep", parent=settings.get_profile("fuzz-worker-ci"), max_examples=5000)
PROFILE = settings.get_profile("fuzz-worker-" + os.environ.get("ROLEGATE_FUZZ_PROFILE", "ci"))

# Headers rolegate sets, rewrites or strips: no client's copy, nor an underscore form of one, may reach a backend.
MANAGED = frozenset(
    {
        b"host",
        b"content-length",
        b"transfer-encoding",
        b"connection",
        b"keep-alive",
        b"te",
        b"trailer",
        b"upgrade",
        b"expect",
        b"forwarded",
        b"x-real-ip",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"proxy-connection",
        b"x-http-method-override",
        b"x-http-method",
        b"x-method-override",
    }
)
OVERRIDES = frozenset({b"x-http-method-override", b"x-http-method", b"x-method-override"})

PATHS = [
    b"/public/x",
    b"/public/",
    b"/ws",
    b"/workorders/1",
    b"/workorders",
    b"/buildings/a/plans",
    b"/buildings/b/x",
    b"/admin/x",
    b"/nothing",
    b"/",
    b"/.rolegate/auth",
    b"/.rolegate/api/v1/me",
    b"/.rolegate/api/v1/roles",
    b"/.rolegate/logout/backchannel",
    b"/.rolegate/token",
    b"/.rolegate/token/revoke",
    b"/.rolegate/login",
    b"/.rolegate/callback",
    b"/.rolegate/callback?state=x&code=y",
    b"/.rolegate/pass/abc",
    b"/.rolegate/admin/",
    b"/.well-known/jwks.json",
]
NAMES = [
    b"Authorization",
    b"Cookie",
    b"Host",
    b"Accept",
    b"X-Rolegate-User",
    b"X-Rolegate-Roles",
    b"X-Rolegate-Assertion",
    b"X-Rolegate-Email",
    b"X-HTTP-Method-Override",
    b"X-HTTP-Method",
    b"X-Method-Override",
    b"Connection",
    b"X-Forwarded-For",
    b"X-Forwarded-Host",
    b"X-Forwarded-Proto",
    b"X-Real-IP",
    b"Forwarded",
    b"X-Original-URI",
    b"X-Original-Method",
    b"X-Forwarded-Uri",
    b"X-Forwarded-Method",
    b"X-Requested-With",
    b"X-Request-Id",
    b"Sec-Fetch-Site",
    b"Origin",
    b"Upgrade",
    b"Content-Type",
    b"Proxy-Authorization",
    b"Te",
    b"Keep-Alive",
    b"Sec-WebSocket-Key",
    b"Sec-WebSocket-Version",
    b"Range",
    b"If-None-Match",
]


def no_framing(data: bytes) -> bool:
    return b"\r" not in data and b"\n" not in data


def _text(alphabet: bytes, min_size: int = 0, max_size: int = 24) -> st.SearchStrategy[bytes]:
    return st.lists(st.sampled_from(alphabet), min_size=min_size, max_size=max_size).map(bytes)


@st.composite
def weighted(draw: st.DrawFn, *choices: tuple[int, st.SearchStrategy[bytes]]) -> bytes:
    """One of ``choices`` (weight, strategy), picked in proportion to its weight."""
    pick = draw(st.integers(0, sum(weight for weight, _ in choices) - 1))
    for weight, strategy in choices:
        if pick < weight:
            return draw(strategy)
        pick -= weight
    raise AssertionError("unreachable")


# Mostly requests the HTTP parser accepts (so they reach rolegate), some that it refuses.
TOKEN = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
OBS_TEXT = bytes(range(0x80, 0x100))  # allowed in field values by RFC 9110; never UTF-8 on their own
VISIBLE = bytes(range(0x21, 0x7F))
raw = st.binary(max_size=24).filter(no_framing)  # anything but CR/LF: control bytes, NUL, spaces
field_text = weighted((4, _text(VISIBLE + b" " + OBS_TEXT)), (4, _text(VISIBLE + b" ")), (1, raw))
target_text = weighted((2, _text(VISIBLE + OBS_TEXT)), (6, _text(VISIBLE)), (1, raw))
token_text = _text(TOKEN, 1, 12)
# The parser knows a fixed list of methods: any other is refused before rolegate sees the request.
methods = weighted(
    (
        8,
        st.sampled_from(
            [
                b"GET",
                b"HEAD",
                b"POST",
                b"PUT",
                b"DELETE",
                b"OPTIONS",
                b"PATCH",
                b"PROPFIND",
                b"TRACE",
                b"CONNECT",
                b"MKCOL",
                b"QUERY",
            ]
        ),
    ),
    (1, token_text),
    (1, st.binary(min_size=1, max_size=8).filter(no_framing)),
)


@st.composite
def header_name(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 9))
    if kind == 9:
        return draw(st.one_of(token_text, st.binary(min_size=1, max_size=12).filter(no_framing)))
    name = draw(st.sampled_from(NAMES))
    if kind >= 2:  # the look-alikes a CGI backend folds together: "_" for "-", any case
        name = bytes(c if c != ord("-") or not draw(st.booleans()) else ord("_") for c in name)
        name = draw(st.sampled_from([name, name.lower(), name.upper()]))
    return name


def header_value(worker: ProxiedWorker) -> st.SearchStrategy[bytes]:
    session = worker.session_cookie.encode()
    interesting = st.sampled_from(
        [
            b"text/html",
            b"application/json",
            b"websocket",
            b"Upgrade",
            b"close, X-Rolegate-User",
            b"keep-alive",
            b"XMLHttpRequest",
            b"cross-site",
            b"DELETE",
            b"GET",
            b"/workorders/1",
            b"/public/x",
            b"127.0.0.1",
            b"Basic YTpi",
            b"Bearer",
            b"Bearer ",
            b"13",
            b"dGhlIHNhbXBsZSBub25jZQ==",
            b"rolegate_session=x",
            b"application/x-www-form-urlencoded",
            b"multipart/form-data; boundary=x",
            b"text/plain; charset=latin-1",
        ]
    )
    return weighted(
        (3, field_text),
        (2, interesting),
        (1, st.tuples(st.sampled_from([b"Bearer ", b"bearer  ", b"Bearer\t"]), field_text).map(b"".join)),
        (
            1,
            st.tuples(
                st.sampled_from(
                    [
                        b"rolegate_session=",
                        b"rolegate_pass=",
                        b"rolegate_login_",
                        b"app=",
                        session + b"; x=",
                        b"a=1; " + session + b"; ",
                    ]
                ),
                field_text,
            ).map(b"".join),
        ),
        (1, st.tuples(field_text, st.just(b"; " + session)).map(b"".join)),
    )


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxiedWorker]:
    with proxied_worker(tmp_path_factory.mktemp("fuzz")) as served:
        yield served


def check_forwarded(worker: ProxiedWorker, received: list, credential: str | None, described: str) -> None:
    for seen in received:
        path = seen.target.split(b"?", 1)[0]
        if path.startswith(PROTECTED_PATHS):
            assert credential is not None, f"a protected route reached without a credential: {described}"
            assert seen.values(b"X-Rolegate-User") == [worker.user.encode()], described
        rolegate_headers = [n for n in seen.names() if n.startswith(b"x-rolegate-")]
        if not path.startswith(PROTECTED_PATHS):
            assert not rolegate_headers, f"identity headers on a public route: {described}"
        assert len(rolegate_headers) == len(set(rolegate_headers)), described
        for name in seen.names():
            dashed = name.replace(b"_", b"-")
            if b"_" in name:
                assert not dashed.startswith((b"x-rolegate-", b"proxy-")) and dashed not in MANAGED, (name, described)
            assert dashed not in OVERRIDES, (name, described)
        for value in seen.values(b"Cookie"):
            for part in value.split(b";"):
                cookie = part.split(b"=", 1)[0].strip().decode("utf-8", "replace")
                assert cookie not in ROLEGATE_COOKIES and not cookie.startswith(ROLEGATE_COOKIE_PREFIX), described
        for value in seen.values(b"Authorization"):
            assert worker.bearer.encode() not in value, f"rolegate's bearer token reached the backend: {described}"


def test_generated_requests_never_fail_leak_or_open_a_door(worker: ProxiedWorker) -> None:
    statuses: dict[int, int] = {}

    @settings(PROFILE)
    @given(
        method=methods,
        target=st.one_of(
            st.sampled_from(PATHS),
            st.tuples(st.sampled_from(PATHS), target_text).map(b"".join),
            st.tuples(
                st.sampled_from(PATHS),
                st.sampled_from([b"?", b"/../", b"/%2e%2e/", b";x=", b"//", b"%00", b"%ff", b"%2F", b"\\"]),
                target_text,
            ).map(b"".join),
            target_text.map(lambda b: b"/" + b),
        ),
        headers=st.lists(st.tuples(header_name(), header_value(worker)), max_size=8),
        credential=st.sampled_from([None, None, "cookie", "bearer"]),
        body=st.one_of(st.just(b""), field_text),
    )
    # Always among them: protected routes reached with each credential, spoofed headers alongside.
    @example(
        method=b"GET", target=b"/workorders/1", headers=[(b"X_Rolegate_User", b"alice")], credential="cookie", body=b""
    )
    @example(
        method=b"POST",
        target=b"/buildings/a/plans",
        headers=[(b"X-Rolegate_Roles", b"admin")],
        credential="bearer",
        body=b"x",
    )
    def attack(
        method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], credential: str | None, body: bytes
    ) -> None:
        headers = [(n, v) for n, v in headers if n.lower() not in (b"content-length", b"transfer-encoding")]
        if credential == "cookie":
            headers.append((b"Cookie", worker.session_cookie.encode()))
        elif credential == "bearer":
            headers.append((b"Authorization", b"Bearer " + worker.bearer.encode()))
        request = request_bytes(method, target, headers, body)
        described = repr(request)
        # Generated values may hold the session cookie too: a credential is present when its secret is.
        if worker.session_cookie.encode() in request or worker.bearer.encode() in request:
            credential = credential or "somewhere"
        received_before = len(worker.upstream.received)
        log_before = len(worker.rolegate.output)
        response = send(worker.port, request)
        statuses[response.status] = statuses.get(response.status, 0) + 1
        assert response.status not in (0, 500), f"{response.status} for {described}: {response.body[:300]!r}"
        check_forwarded(worker, worker.upstream.received[received_before:], credential, described)
        log = "".join(worker.rolegate.output[log_before:])
        assert "Traceback" not in log and " ERROR " not in log, f"{described}\n{log[-3000:]}"

    attack()
    print("statuses:", dict(sorted(statuses.items())))
    log = worker.log()
    assert "Traceback" not in log and " ERROR " not in log, log[-4000:]
    # The credentials work: protected routes were reached (by the explicit examples at least) and checked.
    assert 200 in statuses, statuses
    assert any(r.target.startswith(PROTECTED_PATHS) for r in worker.upstream.received[1:]), "no protected request"
