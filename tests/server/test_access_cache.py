"""The per-request caches of the access check never mix callers up and never outlive a change.

check_access keeps the upstream headers (identity headers, the caller's own cookies, the signed
assertion) per (principal, identity, policy, scope, upstream, Cookie header). These tests drive it
directly on a full Runtime (SQLite store, sessions, tokens) with two signed-in users.
"""

from __future__ import annotations

import json
from pathlib import Path

import jwt
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from rolegate.config import load_config
from rolegate.identity.principal import Principal
from rolegate.identity.stage import IdentityStage
from rolegate.server.access import check_access
from rolegate.server.runtime import Runtime
from rolegate.store import open_store
from rolegate.store.version_board import bump

PATH = "/api/things"


def write_config(tmp: Path) -> Path:
    config = {
        "server": {"listen": "127.0.0.1:1", "public_url": "http://127.0.0.1:1", "workers": 1},
        "storage": {"url": f"sqlite:///{tmp}/rolegate.db"},
        "permissions": ["things:view", "things:edit"],
        "roles": {"viewer": {"permissions": ["things:view"]}, "editor": {"permissions": ["things:edit"]}},
        "bindings": [{"group": "staff", "role": "viewer"}],
        "upstreams": {"app": {"url": "http://127.0.0.1:9"}},
        "routes": [{"path": "/api/**", "mode": "enforce", "permission": "things:view", "upstream": "app"}],
        "session": {"secret": "access-cache-test-secret-" + "s" * 40},
        "audit": {"sinks": ["store"], "reads": {"enabled": True, "sample": 1.0}},
    }
    path = tmp / "rolegate.yaml"
    path.write_text(json.dumps(config))
    return path


async def sign_in(config_path: Path, username: str, groups: list[str]) -> tuple[str, str]:
    """(Cookie header value, session id) of a new session, as the callback would create it."""
    config = load_config(str(config_path))
    store = await open_store(config.storage, base_dir=config_path.parent)
    stage = IdentityStage(config, base_dir=config_path.parent, store=store)
    try:
        await stage.open()
        principal = Principal(
            username=username, email=f"{username}@example.com", groups=frozenset(groups), subject=username
        )
        session_id, tag, _ = await stage.sessions.create(claims={}, principal=principal, tokens={}, issuer="test")
        name = config.session.cookie_name
        sealed = stage.cookie_sealer.seal({"i": session_id, "u": tag}, name=name, ttl=3600)
        return f"{name}={sealed}; theme=dark", session_id
    finally:
        await stage.close()
        await store.close()


def request_with(cookie: str):
    headers = CIMultiDict({"Host": "127.0.0.1:1", "Cookie": cookie, "Accept": "application/json"})
    return make_mocked_request("GET", PATH, headers=headers)


async def access_of(runtime: Runtime, cookie: str):
    return await check_access(runtime, request_with(cookie), "GET", "127.0.0.1:1", PATH)


def claims_of(headers) -> dict:
    return jwt.decode(headers["X-Rolegate-Assertion"], options={"verify_signature": False})


async def test_two_users_never_share_headers_and_changes_bite_at_the_next_request(tmp_path: Path) -> None:
    config_path = write_config(tmp_path)
    alice_cookie, _ = await sign_in(config_path, "alice", ["staff"])
    bob_cookie, _ = await sign_in(config_path, "bob", ["staff"])
    runtime = await Runtime.create(load_config(str(config_path)), base_dir=tmp_path)
    try:
        for _ in range(3):  # repeated: the second and third answers come from the caches
            alice = await access_of(runtime, alice_cookie)
            bob = await access_of(runtime, bob_cookie)
            assert alice.error is None and bob.error is None
            assert alice.set_headers["X-Rolegate-User"] == "alice"
            assert bob.set_headers["X-Rolegate-User"] == "bob"
            assert claims_of(alice.set_headers)["sub"] == "alice" and claims_of(bob.set_headers)["sub"] == "bob"
            # The caller's other cookies pass; the session cookie never does.
            assert alice.set_headers["Cookie"] == "theme=dark"
        assert claims_of(alice.set_headers)["perms"] == {"things": ["view"]}

        # A grant to alice alone: her next assertion carries it, bob's does not.
        await runtime.store.put("bindings", "alice-edit", {"user": "alice", "role": "editor", "scope": None})
        await bump(runtime.store, runtime.board, "policy")
        alice = await access_of(runtime, alice_cookie)
        bob = await access_of(runtime, bob_cookie)
        assert claims_of(alice.set_headers)["perms"] == {"things": ["edit", "view"]}
        assert claims_of(bob.set_headers)["perms"] == {"things": ["view"]}

        # A different Cookie header of the same session: its own pass-through cookies.
        session_only = alice_cookie.split(";")[0]
        other = await access_of(runtime, session_only + "; lang=de")
        assert other.set_headers["Cookie"] == "lang=de" and other.set_headers["X-Rolegate-User"] == "alice"

        # Logout: the very next request with the same cookie is no longer signed in.
        session = await runtime.identity.session_from_request(request_with(alice_cookie))
        await runtime.identity.sessions.end(session.key)
        after = await access_of(runtime, alice_cookie)
        assert after.error is not None and after.error.status == 401
        assert (await access_of(runtime, bob_cookie)).set_headers["X-Rolegate-User"] == "bob"
    finally:
        await runtime.close()


async def test_what_is_remembered_never_outranks_a_bearer_token_or_a_second_cookie_header(tmp_path: Path) -> None:
    """check_access remembers a browser session's answer per Cookie header (runtime.access_memo.known); a request
    that also carries a bearer token, or more than one Cookie header, is always worked out in full."""
    from rolegate.tokens.service import MAX_TOKEN_CHARS

    config_path = write_config(tmp_path)
    alice_cookie, _ = await sign_in(config_path, "alice", ["staff"])
    bob_cookie, _ = await sign_in(config_path, "bob", ["staff"])
    runtime = await Runtime.create(load_config(str(config_path)), base_dir=tmp_path)
    try:
        for _ in range(3):
            assert (await access_of(runtime, alice_cookie)).set_headers["X-Rolegate-User"] == "alice"
        assert any(key[0] == (alice_cookie, "") for key in runtime.access_memo.known)

        # The same cookie with a bearer token claiming to be rolegate's (an oversized one, refused as
        # such): the token is judged first (401), not what the cookie's last request found.
        headers = CIMultiDict(
            {
                "Host": "127.0.0.1:1",
                "Cookie": alice_cookie,
                "Authorization": "Bearer " + "a" * (MAX_TOKEN_CHARS + 1),
                "Accept": "application/json",
            }
        )
        forged = await check_access(
            runtime, make_mocked_request("GET", PATH, headers=headers), "GET", "127.0.0.1:1", PATH
        )
        assert forged.error is not None and forged.error.status == 401

        # Two Cookie headers (alice's first, bob's second): never answered from what alice's header found.
        two = CIMultiDict(
            [
                ("Host", "127.0.0.1:1"),
                ("Cookie", alice_cookie),
                ("Cookie", bob_cookie.split(";")[0]),
                ("Accept", "application/json"),
            ]
        )
        before = dict(runtime.access_memo.known)
        both = await check_access(runtime, make_mocked_request("GET", PATH, headers=two), "GET", "127.0.0.1:1", PATH)
        assert both.error is None and "rolegate_session" not in both.set_headers.get("Cookie", "")
        assert runtime.access_memo.known.keys() == before.keys()
    finally:
        await runtime.close()


async def test_long_cookie_headers_work_but_are_not_kept_verbatim(tmp_path: Path) -> None:
    """A Cookie header beyond 2 KiB still signs the user in and passes the app's cookies on, but no cache
    keeps it verbatim: 10,000 entries of 16 KiB headers would be 160 MiB per worker."""

    config_path = write_config(tmp_path)
    alice_cookie, _ = await sign_in(config_path, "alice", ["staff"])
    long_cookie = alice_cookie + "; junk=" + "j" * 3000
    runtime = await Runtime.create(load_config(str(config_path)), base_dir=tmp_path)
    try:
        for _ in range(3):
            result = await access_of(runtime, long_cookie)
            assert result.error is None and result.set_headers["X-Rolegate-User"] == "alice"
            assert result.set_headers["Cookie"] == "theme=dark; junk=" + "j" * 3000
        assert all(len(part) <= 2048 for key in runtime.access_memo.known for part in key[0])
        assert all(len(part) <= 2048 for key in runtime.access_memo.headers for part in key[-1])
        cookie_sessions = runtime.identity._cookie_sessions
        assert all(len(raw) <= 2048 for raw in cookie_sessions._quiet)
    finally:
        await runtime.close()


async def test_a_day_pass_and_a_bearer_token_are_remembered_like_a_session(tmp_path: Path) -> None:
    """Issue 21: after the first full check, a day-pass session and a rolegate bearer token are answered
    from what check_access remembered (no awaited authentication, no assertion minted per request), as a
    browser session is; each one's own answer, never another's."""
    import time

    from rolegate.identity.daypass.issue import issue_pass
    from rolegate.identity.daypass.redeem import claim_device
    from rolegate.identity.daypass.service import daypass_service

    config_path = write_config(tmp_path)
    config = json.loads(config_path.read_text())
    config["scopes"] = {"building": {}}
    config["routes"].append(
        {
            "path": "/site/{building}/**",
            "mode": "enforce",
            "permission": "things:view",
            "scope": "building:{building}",
            "upstream": "app",
        }
    )
    config["daypass"] = {
        "templates": {
            "visit": {"role": "viewer", "scopes": ["building"], "max_lifetime": "24h", "expires": "8h", "devices": 1}
        }
    }
    config_path.write_text(json.dumps(config))
    runtime = await Runtime.create(load_config(str(config_path)), base_dir=tmp_path)
    try:
        now = time.time()
        issued = await issue_pass(
            runtime.store,
            runtime.board,
            runtime.config,
            template="visit",
            scope="building:a",
            name="Sam",
            company="Fixit",
            reason="boiler",
            issuer="test",
            issuer_may_issue=None,
            now=now,
        )
        claimed = await claim_device(runtime.store, issued.code, via="link", client="127.0.0.1", now=now)
        service = daypass_service(runtime.identity)
        value, _ = await service.start_session(claimed.record, 1, now)
        pass_cookie = f"{service.cookie_name}={value}; theme=dark"
        bob_cookie, _ = await sign_in(config_path, "bob", ["staff"])
        bob = await runtime.identity.session_from_request(request_with(bob_cookie))
        token = (await runtime.tokens.service.issue(bob.principal)).access_token  # as the session grant does

        awaited: list[str] = []
        authenticate = runtime.identity.authenticate

        async def counted(request):
            awaited.append(request.path)
            return await authenticate(request)

        runtime.identity.authenticate = counted
        asks = {
            "day pass": ("/site/a/x", {"Cookie": pass_cookie}, f"daypass:{issued.id}"),
            "bearer token": (PATH, {"Authorization": f"Bearer {token}"}, "bob"),
        }
        for kind, (path, credential, user) in asks.items():
            awaited.clear()
            for _ in range(5):
                request = make_mocked_request("GET", path, headers=CIMultiDict({"Host": "127.0.0.1:1", **credential}))
                access = await check_access(runtime, request, "GET", "127.0.0.1:1", path)
                assert access.error is None, (kind, access.error)
                assert access.set_headers["X-Rolegate-User"] == user, kind
            assert len(awaited) == 1, f"{kind}: worked out in full {len(awaited)} times in 5 requests, not once"
            assert access.known is not None, kind  # forward-auth builds its answer from this
    finally:
        await runtime.close()
