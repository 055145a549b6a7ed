"""The whole product as a user meets it: `rolegate serve` (2 workers) in front of the lab's real IdP and
backend, with the building-safety config of seed 001.

Walks every cell of the seed's permission matrix through the proxy, checks the signed assertion the
backend receives with nothing but the JWKS, and that a change of rights bites at the next request.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import urllib.parse
from pathlib import Path

import aiohttp
import jwt
import pytest
import yaml

from rolegate_lab import DEFAULT_AUDIENCE, idp_login, lab_client_session
from tests.authz.building_safety_matrix import ALLOW, NONE, REQUESTS, ROLES, ROWS
from tests.support.serve import RolegateProcess
from tests.support.workers import on_every_worker

# docs/configuration.md: a change made elsewhere reaches every worker through the Store poll (0.5 s); a little margin.
STORE_POLL_BOUND = 0.5 + 0.3

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parent.parent
HTML = {"Accept": "text/html"}
JSON = {"Accept": "application/json"}
# One lab user per seed column (their groups come from the IdP's `groups` claim: no directory here).
USERS = {"admin": "alice", "risk_assessor": "dave", "responsible": "carol", "user": "heidi"}


def building_safety_config(url: str, idp, backend_url: str, tmp: Path, **server) -> dict:
    config = yaml.safe_load((REPO / "config/examples/building-safety.yaml").read_text())
    port = urllib.parse.urlsplit(url).port
    config["server"] = {
        "listen": f"127.0.0.1:{port}",
        "public_url": url,
        "internal_listen": "127.0.0.1:0",
        "workers": 2,
        **server,
    }
    config["storage"] = {"url": f"sqlite:///{tmp}/rolegate.db"}
    config["session"] = {"secret": "end-to-end-session-secret-" + "z" * 32}
    config["oidc"] = {
        "issuer": idp.issuer,
        "client_id": "rolegate",
        "client_secret": idp.client()["client_secret"],
        "scopes": ["openid", "profile", "email", "groups"],
        "algorithms": ["ES256", "RS256"],
        "access_token_audience": [DEFAULT_AUDIENCE],
    }
    for upstream in config["upstreams"].values():
        upstream["url"] = backend_url
    config["audit"] = {"sinks": ["store"], "reads": {"sample": 1.0}}
    return config


@pytest.fixture(scope="module")
def served(tmp_path_factory, lab_idp, lab_backend, rolegate_url):
    tmp = tmp_path_factory.mktemp("e2e")
    proc = RolegateProcess(building_safety_config(rolegate_url, lab_idp, lab_backend.url, tmp), tmp)
    proc.start()
    yield proc
    proc.stop()


async def sign_in(http: aiohttp.ClientSession, base: str, username: str) -> None:
    async with http.get(f"{base}/.rolegate/login", params={"rd": "/"}, headers=HTML, allow_redirects=False) as resp:
        assert resp.status == 302, await resp.text()
        location = resp.headers["Location"]
    callback = await idp_login(http, location, username, "demo")
    async with http.get(callback.url, headers=HTML, allow_redirects=False) as resp:
        assert resp.status == 302, await resp.text()


class Store:
    """The test acts as the admin API would: writes dynamic state to the Store, then bumps the version."""

    def __init__(self, proc: RolegateProcess) -> None:
        self.db = proc.workdir / "rolegate.db"

    def _bump(self, db: sqlite3.Connection, name: str = "policy") -> None:
        db.execute("INSERT INTO counters VALUES (?, 1) ON CONFLICT(name) DO UPDATE SET value=value+1", (name,))

    def put(self, namespace: str, key: str, value: dict) -> None:
        import json

        with sqlite3.connect(self.db) as db:
            db.execute("INSERT OR REPLACE INTO kv VALUES (?,?,?,1,NULL)", (namespace, key, json.dumps(value)))
            self._bump(db)

    def delete(self, namespace: str, key: str) -> None:
        with sqlite3.connect(self.db) as db:
            db.execute("DELETE FROM kv WHERE namespace=? AND key=?", (namespace, key))
            self._bump(db)


async def status_of(http: aiohttp.ClientSession, base: str, method: str, path: str) -> int:
    async with http.request(method, base + path, headers=JSON, allow_redirects=False) as resp:
        await resp.read()
        return resp.status


async def wait_for_status(http, base, method, path, expected, timeout=5.0) -> int:
    """Change propagation is immediate on this machine's workers; the Store poll bounds it to < 1 s."""
    deadline = time.monotonic() + timeout
    while True:
        status = await status_of(http, base, method, path)
        if status == expected or time.monotonic() > deadline:
            return status


async def test_every_cell_of_the_seed_matrix_through_the_proxy(served):
    store = Store(served)
    sessions = {}
    try:
        for role, user in USERS.items():
            sessions[role] = lab_client_session()
            await sign_in(sessions[role], served.url, user)
        failures = []

        async def walk(phase: str, conditional_expected: bool) -> None:
            for row in ROWS:
                method, path = REQUESTS[row.permission]
                for i, role in enumerate(ROLES):
                    cell = row.cells[i]
                    if cell == ALLOW:
                        expected = 200
                    elif cell == NONE:
                        expected = 403
                    else:  # "if enabled in user settings", "if added to a task", "if added to client"
                        expected = 200 if conditional_expected else 403
                    status = await status_of(sessions[role], served.url, method, path)
                    if status in (200, 201):  # the backend answered: the request passed
                        status = 200
                    if status != expected:
                        failures.append(
                            f"{phase}: {role} {method} {path} ({row.permission}, {cell!r}): {status} != {expected}"
                        )

        await walk("conditions unmet", conditional_expected=False)
        # Meet every condition: user settings on, added to task 42, admin added to client acme.
        for user in USERS.values():
            store.put(
                "user_settings",
                user,
                {
                    "settings": [
                        "vacancy",
                        "documents_view",
                        "documents_add",
                        "documents_edit",
                        "logbook",
                        "assets",
                        "qrcodes",
                    ]
                },
            )
            store.put(
                "bindings", f"task42-{user}", {"user": user, "permission": "controls:perform", "object": "task:42"}
            )
        store.put("bindings", "alice-client-acme", {"user": "alice", "role": "client_admin", "scope": "client:acme"})
        await wait_for_status(sessions["admin"], served.url, "GET", "/clients/acme/dashboards", 200)
        await walk("conditions met", conditional_expected=True)
        assert not failures, "\n".join(failures)
    finally:
        for session in sessions.values():
            await session.close()


async def test_backend_verifies_the_assertion_with_the_jwks_alone(served):
    async with lab_client_session() as http:
        await sign_in(http, served.url, "carol")
        headers = {**JSON, "X-Rolegate-Assertion": "forged", "x-rolegate-user": "alice"}
        async with http.get(served.url + "/buildings/a/dashboard", headers=headers) as resp:
            assert resp.status == 200
            seen = (await resp.json())["headers"]
    token = seen["X-Rolegate-Assertion"]
    assert token != "forged" and seen["X-Rolegate-User"] == "carol"
    jwks = jwt.PyJWKClient(served.url + "/.well-known/jwks.json")
    key = jwks.get_signing_key_from_jwt(token)
    claims = jwt.decode(token, key.key, algorithms=["EdDSA", "ES256"], audience="app", issuer=served.url)
    assert claims["sub"] == "carol" and claims["scope"] == "building:a"
    assert "responsible" in claims["roles"]
    assert "view" in claims["perms"]["dashboard"]
    assert isinstance(claims["ver"], int) and claims["exp"] - claims["iat"] <= 600


async def test_a_removed_right_is_denied_at_the_next_request_on_every_worker(served):
    store = Store(served)
    async with lab_client_session() as http:
        await sign_in(http, served.url, "heidi")
        assert await status_of(http, served.url, "GET", "/buildings/b/sensors/s1") == 403
        # Both workers have remembered heidi's refusal before the change.
        seen = await on_every_worker(served, http, "GET", served.url + "/buildings/b/sensors/s1", headers=JSON)
        assert {status for _, status in seen} == {403}
        # A change written to the Store by another process reaches every worker within the Store poll
        # (docs/configuration.md: 0.5 s); from then on, the first request each worker answers sees it ...
        store.put("bindings", "heidi-sensors", {"user": "heidi", "role": "admin", "scope": "building:b"})
        await asyncio.sleep(STORE_POLL_BOUND)
        seen = await on_every_worker(served, http, "GET", served.url + "/buildings/b/sensors/s1", headers=JSON)
        assert {status for _, status in seen} == {200}, seen
        store.delete("bindings", "heidi-sensors")
        await asyncio.sleep(STORE_POLL_BOUND)
        # ... and its removal, with no re-login.
        seen = await on_every_worker(served, http, "GET", served.url + "/buildings/b/sensors/s1", headers=JSON)
        assert {status for _, status in seen} == {403}, seen
        # Responsible of building a only: building b is refused with a reference id and no policy detail.
        async with http.get(served.url + "/buildings/b/settings", headers=JSON) as resp:
            assert resp.status in (403, 405)


async def test_denials_and_writes_reach_the_audit_trail(served):
    async with lab_client_session() as http:
        await sign_in(http, served.url, "heidi")
        assert await status_of(http, served.url, "GET", "/buildings/a/trends") == 403
        assert await status_of(http, served.url, "GET", "/buildings/a/task-order") == 200
    deadline = time.monotonic() + 10
    kinds = set()
    while time.monotonic() < deadline:
        with sqlite3.connect(served.workdir / "rolegate.db") as db:
            rows = db.execute("SELECT kind, body FROM audit").fetchall()
        kinds = {(k, ('"deny"' in b) or ('"decision":"deny"' in b)) for k, b in rows}
        if ("decision", True) in kinds and any(k == "signin" for k, _ in rows):
            break
        time.sleep(0.2)
    assert ("decision", True) in kinds, kinds
    assert any(k == "signin" and '"heidi"' in b for k, b in rows), "sign-ins are audited"
    result = __import__("subprocess").run(
        [__import__("sys").executable, "-m", "rolegate", "audit", "verify", "-c", str(served.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_explain_answers_against_the_live_state(served):
    """Ops ask "why?" of exactly what the proxy enforces: stored bindings count, not only the file."""
    import json as _json
    import subprocess
    import sys

    def explain() -> dict:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "rolegate",
                "explain",
                "-c",
                str(served.config_path),
                "--user",
                "heidi",
                "--groups",
                "bs-users",
                "--method",
                "GET",
                "--url",
                "/buildings/b/trends",
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode in (0, 3), result.stderr
        return _json.loads(result.stdout)

    before = explain()
    assert before["allowed"] is False and before["permission"] == "trends:view"
    Store(served).put("bindings", "heidi-trends", {"user": "heidi", "role": "responsible", "scope": "building:b"})
    after = explain()
    assert after["allowed"] is True
    assert any("heidi-trends" in reason for reason in after["reasons"]), after["reasons"]
    Store(served).delete("bindings", "heidi-trends")
