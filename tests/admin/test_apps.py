"""Apps (issue 19 part 2) through ``rolegate serve``: the field-service backend writes the object directory
with a machine credential, either the lab IdP's client-credentials token (a JWT for the apps audience) or a
rolegate API key made with ``rolegate apps key create``. A wrong, expired, foreign or user's token is 401; a
revoked key is 401 at the next request on every worker; an app is 403 outside the object directory and for
object types it may not write; the key is never in the logs or the Store in clear.

On the code before apps existed, every app credential was a 401 (and an ``apps:`` section was refused).
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import jwt
import pytest

from rolegate_lab import DEFAULT_AUDIENCE, lab_client_session, rolegate_client
from rolegate_lab.idp import app_client, client_credentials_token
from tests.identity.conftest import provider_tokens
from tests.support.serve import RolegateProcess
from tests.support.workers import on_every_worker

pytestmark = pytest.mark.lab

APPS_AUDIENCE = "urn:rolegate:apps"
API = "/.rolegate/api/v1"
SESSION_SECRET = "apps-test-session-secret-" + "y" * 40


def apps_config(
    idp,
    backend_url: str,
    db: Path,
    *,
    workers: int = 2,
    clock_skew: str = "60s",
    username_claim: str = "preferred_username",
) -> dict:
    return {
        "server": {
            "listen": "127.0.0.1:0",
            "public_url": "http://127.0.0.1:8080",
            "internal_listen": "127.0.0.1:0",
            "workers": workers,
        },
        "storage": {"url": f"sqlite:///{db}"},
        "oidc": {
            "issuer": idp.issuer,
            "client_id": "rolegate",
            "client_secret": idp.client()["client_secret"],
            "scopes": ["openid", "profile", "email", "groups"],
            "access_token_audience": [DEFAULT_AUDIENCE],
            "clock_skew": clock_skew,
            "username_claim": username_claim,
        },
        "session": {"secret": SESSION_SECRET},
        "scopes": {
            "region": {},
            "building": {"parent": "region", "members": {"a": "north"}},
            "customer": {"parent": "region"},
            "workorder": {"parent": "building"},
        },
        "permissions": ["workorders:view"],
        "apps_audience": APPS_AUDIENCE,
        "apps": {
            "fieldservice": {
                "description": "the lab's field-service backend",
                "client_id": "fieldservice",
                "api_keys": True,
                "may": {"place": ["workorder"]},
            },
            "hybrid": {"client_id": "hybridapp", "may": {"place": ["workorder"]}},
        },
        "upstreams": {"backend": {"url": backend_url}},
        "routes": [
            {"path": "/workorders/**", "permission": "workorders:view", "upstream": "backend"},
            {"path": "/me-echo/**", "mode": "authenticated", "upstream": "backend"},
        ],
    }


HYBRID_REDIRECT = "http://127.0.0.1:9/callback"


def _idp_clients(url: str = "http://127.0.0.1:9") -> list[dict]:
    # "hybridapp" is an app whose IdP client (misconfigured) also lets users sign in through it
    return [
        rolegate_client(url),
        app_client("fieldservice"),
        app_client("otherapp"),
        app_client(
            "hybridapp",
            grant_types=["client_credentials", "authorization_code"],
            response_types=["code"],
            redirect_uris=[HYBRID_REDIRECT],
        ),
    ]


async def _user_token_via(http, idp, client_id: str, redirect_uri: str, resource: str, username: str = "alice") -> str:
    """A user's JWT access token through ``client_id``'s code flow (PKCE), for ``resource``."""
    import base64
    import hashlib
    import secrets
    import urllib.parse

    from rolegate_lab import idp_login

    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": "openid",
        "state": secrets.token_urlsafe(8),
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "resource": resource,
    }
    callback = await idp_login(
        http,
        idp.discovery["authorization_endpoint"] + "?" + urllib.parse.urlencode(params),
        username,
        "demo",
        callback_prefix=redirect_uri,
    )
    basic = base64.b64encode(f"{client_id}:{idp.client(client_id)['client_secret']}".encode()).decode()
    async with http.post(
        idp.discovery["token_endpoint"],
        headers={"Authorization": f"Basic {basic}"},
        data={
            "grant_type": "authorization_code",
            "code": callback.code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
            "resource": resource,
        },
    ) as resp:
        body = await resp.json()
        assert resp.status == 200, body
        return body["access_token"]


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Accept": "application/json"}


async def _place(http: aiohttp.ClientSession, base: str, token: str, child: str, parent: str) -> tuple[int, dict]:
    async with http.put(f"{base}{API}/scope-members/{child}", json={"parent": parent}, headers=_bearer(token)) as r:
        return r.status, await r.json()


def _cli(config_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rolegate", "apps", "key", *args, "-c", str(config_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _audit_bodies(db: Path) -> list[dict]:
    with sqlite3.connect(db) as conn:
        return [json.loads(b) for (b,) in conn.execute("SELECT body FROM audit WHERE kind = 'admin_change'")]


@pytest.fixture
def apps_idp(make_idp):
    return make_idp(_idp_clients(), extra_resources=[APPS_AUDIENCE])


@pytest.fixture
def served(apps_idp, lab_backend, tmp_path):
    proc = RolegateProcess(apps_config(apps_idp, lab_backend.url, tmp_path / "rolegate.db"), tmp_path)
    proc.start()
    yield proc
    proc.stop()


async def test_client_credentials_token_writes_the_directory_as_the_app(served, apps_idp, tmp_path):
    token = client_credentials_token(apps_idp, "fieldservice", APPS_AUDIENCE)["access_token"]
    async with aiohttp.ClientSession() as http:
        status, body = await _place(http, served.url, token, "workorder:1", "building:a")
        assert status == 201, body  # a bearer credential: no CSRF token needed
        assert body["resource"]["by"] == "app:fieldservice"
        # a type the app may not write: 403 naming the type
        status, body = await _place(http, served.url, token, "customer:c1", "region:north")
        assert status == 403 and "'customer'" in body["message"], body
        # no person's rights: the rest of the admin API is 403
        async with http.get(f"{served.url}{API}/roles", headers=_bearer(token)) as r:
            assert r.status == 403, await r.text()
            assert "is an app" in (await r.json())["message"]
        async with http.post(
            f"{served.url}{API}/bindings", headers=_bearer(token), json={"group": "staff", "role": "x"}
        ) as r:
            assert r.status == 403, await r.text()
        async with http.get(f"{served.url}{API}/me", headers=_bearer(token)) as r:
            assert r.status == 403
        # nor the admin pages (where a form POST would need no CSRF token from a bearer credential)
        for method, path in (("GET", "/"), ("GET", "/me"), ("POST", "/requests")):
            async with http.request(
                method,
                f"{served.url}/.rolegate/admin{path}",
                headers=_bearer(token),
                data={"x": "1"} if method == "POST" else None,
                allow_redirects=False,
            ) as r:
                assert r.status == 403, (method, path, r.status, await r.text())
        async with http.get(f"{served.url}{API}/openapi.json") as r:  # the document says which are open to apps
            paths = (await r.json())["paths"]
        assert paths[f"{API}/scope-members/{{scope}}"]["put"].get("x-rolegate-apps") is True
        assert "x-rolegate-apps" not in paths[f"{API}/roles"]["get"]
    served.stop()
    changes = [b for b in _audit_bodies(tmp_path / "rolegate.db") if b.get("target") == "scope_members/workorder:1"]
    assert [c["user"] for c in changes] == ["app:fieldservice"]


async def test_tokens_that_are_not_the_apps_are_refused(served, apps_idp, lab_backend, make_idp, tmp_path):
    good = client_credentials_token(apps_idp, "fieldservice", APPS_AUDIENCE)["access_token"]
    # the app's own client, but for the users' audience: not an app token
    wrong_audience = client_credentials_token(apps_idp, "fieldservice", DEFAULT_AUDIENCE)["access_token"]
    # another client of the same IdP, for the apps audience: no configured app
    other_client = client_credentials_token(apps_idp, "otherapp", APPS_AUDIENCE)["access_token"]
    async with lab_client_session() as http:
        # a user's token addressed to the apps audience must not pass as an app
        user = (await provider_tokens(http, apps_idp, "http://127.0.0.1:9", username="alice", resource=APPS_AUDIENCE))[
            "access_token"
        ]
        http.cookie_jar.clear()
        # a user's token issued through an app's own client (sub = the user, client_id = the app's): not the app
        hybrid_user = await _user_token_via(http, apps_idp, "hybridapp", HYBRID_REDIRECT, APPS_AUDIENCE)
        http.cookie_jar.clear()
        claims = jwt.decode(hybrid_user, options={"verify_signature": False})
        assert (claims["client_id"], claims["sub"], claims["aud"]) == ("hybridapp", "alice", APPS_AUDIENCE)
        hybrid_app = client_credentials_token(apps_idp, "hybridapp", APPS_AUDIENCE)["access_token"]
        status, body = await _place(http, served.url, hybrid_app, "workorder:5", "building:a")
        assert status == 201 and body["resource"]["by"] == "app:hybrid", body  # the same client as itself passes
        for name, token in (
            ("wrong audience", wrong_audience),
            ("other client", other_client),
            ("user token", user),
            ("user token through the app's client", hybrid_user),
            ("tampered", good[:-4] + ("AAAA" if good[-4:] != "AAAA" else "BBBB")),
        ):
            status, body = await _place(http, served.url, token, "workorder:2", "building:a")
            assert status == 401, (name, status, body)
        status, body = await _place(http, served.url, good, "workorder:2", "building:a")
        assert status == 201, body


async def test_an_expired_app_token_is_refused(make_idp, lab_backend, tmp_path):
    idp = make_idp(_idp_clients(), extra_resources=[APPS_AUDIENCE], ttl={"AccessToken": 1})
    proc = RolegateProcess(
        apps_config(idp, lab_backend.url, tmp_path / "rolegate.db", workers=1, clock_skew="0s"), tmp_path
    )
    with proc:
        response = client_credentials_token(idp, "fieldservice", APPS_AUDIENCE)
        token = response["access_token"]
        exp = jwt.decode(token, options={"verify_signature": False})["exp"]
        for _ in range(100):  # wait (bounded) until the token's own exp has passed
            if time.time() > exp + 1:
                break
            time.sleep(0.1)
        async with aiohttp.ClientSession() as http:
            status, body = await _place(http, proc.url, token, "workorder:3", "building:a")
        assert status == 401, body
        # The worker writes its log line as it answers: wait for it (bounded) rather than read it at once.
        assert proc.wait_for_log("app credential refused", timeout=30), proc.log()
        refused = [line for line in proc.output if "app credential refused" in line]
        assert any("ExpiredSignature" in line or "expired" in line.lower() for line in refused), refused


async def test_api_key_create_use_revoke_on_every_worker(served, tmp_path):
    created = _cli(served.config_path, "create", "--app", "fieldservice", "--label", "lab backend")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("rgk_") and "\n" not in key
    key_id, secret = key[4:20], key[21:]
    async with aiohttp.ClientSession() as http:
        status, body = await _place(http, served.url, key, "workorder:7", "building:a")
        assert status == 201, body
        status, body = await _place(http, served.url, key, "customer:c7", "region:north")
        assert status == 403 and "'customer'" in body["message"]
        # a key with a wrong secret, and a made-up one
        status, _ = await _place(
            http, served.url, key[:-3] + ("xyz" if not key.endswith("xyz") else "abc"), "workorder:8", "building:a"
        )
        assert status == 401
        status, _ = await _place(http, served.url, "rgk_0123456789abcdef_" + "A" * 43, "workorder:8", "building:a")
        assert status == 401
    # accepted on every worker (an app outside the directory: 403, not 401) ...
    seen = await on_every_worker(served, None, "GET", f"{served.url}{API}/roles", headers=_bearer(key))
    assert {status for _, status in seen} == {403}, seen
    listed = _cli(served.config_path, "list")
    assert key_id in listed.stdout and secret not in listed.stdout
    revoked = _cli(served.config_path, "revoke", key_id)
    assert revoked.returncode == 0 and "revoked" in revoked.stdout, revoked.stderr
    # ... and refused at the next request on every worker once revoked
    seen = await on_every_worker(served, None, "GET", f"{served.url}{API}/roles", headers=_bearer(key))
    assert {status for _, status in seen} == {401}, seen
    async with aiohttp.ClientSession() as http:
        status, _ = await _place(http, served.url, key, "workorder:9", "building:a")
        assert status == 401
    served.stop()
    # the key is nowhere in clear: not in the logs, the CLI's lists, the Store's files or the audit trail
    assert secret not in served.log()
    for path in tmp_path.glob("rolegate.db*"):
        assert secret.encode() not in path.read_bytes(), path
    bodies = _audit_bodies(tmp_path / "rolegate.db")
    keys = [b for b in bodies if b.get("target") == f"app_keys/{key_id}"]
    assert [b["action"] for b in keys] == ["create", "revoke"]
    assert secret not in json.dumps(bodies)
    assert [b["user"] for b in bodies if b.get("target") == "scope_members/workorder:7"] == ["app:fieldservice"]


def test_apps_config_errors_name_file_and_line(tmp_path, apps_idp, lab_backend):
    config = apps_config(apps_idp, lab_backend.url, tmp_path / "rolegate.db")
    config["apps"]["fieldservice"]["may"] = {"place": ["invoice", "region"]}
    config["apps"]["nocred"] = {"may": {"place": ["workorder"]}}
    config["apps_audience"] = DEFAULT_AUDIENCE
    proc = RolegateProcess(config, tmp_path)
    out = subprocess.run(
        [sys.executable, "-m", "rolegate", "check", "-c", str(proc.config_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    text = out.stderr
    assert f"{proc.config_path}:" in text
    assert "unknown object type 'invoice'" in text
    assert "'region' has no parent type" in text
    assert "apps.nocred: an app needs a credential" in text
    assert "also in oidc.access_token_audience" in text


async def test_the_lab_backend_credential_from_its_environment(served, apps_idp):
    """What the lab's field-service backend uses at start (deploy/lab/rolegate_lab/app_credential.py)."""
    from rolegate_lab.app_credential import AppCredential

    flow = AppCredential.from_env(
        {
            "ROLEGATE_ADMIN_URL": served.url,
            "ROLEGATE_APP_CLIENT_ID": "fieldservice",
            "ROLEGATE_APP_CLIENT_SECRET": apps_idp.client("fieldservice")["client_secret"],
            "ROLEGATE_APP_TOKEN_URL": apps_idp.discovery["token_endpoint"],
            "ROLEGATE_APP_RESOURCE": APPS_AUDIENCE,
        }
    )
    key = _cli(served.config_path, "create", "--app", "fieldservice").stdout.strip()
    keyed = AppCredential.from_env({"ROLEGATE_ADMIN_URL": served.url, "ROLEGATE_APP_KEY": key})
    assert AppCredential.from_env({"ROLEGATE_APP_KEY": key}) is None  # no admin URL: no credential
    async with aiohttp.ClientSession() as http:
        for i, credential in enumerate((flow, keyed)):
            status, body = await credential.call(
                http, "PUT", f"/scope-members/workorder:{20 + i}", {"parent": "building:a"}
            )
            assert status == 201 and body["resource"]["by"] == "app:fieldservice", (credential.kind, body)


async def test_an_apps_token_is_never_a_user_on_the_proxy(make_idp, lab_backend, tmp_path):
    """With username_claim: sub, the app's client-credentials token for the users' audience would read as a user
    named after the client: rolegate refuses it on proxied routes (an app speaks to the admin API only)."""
    idp = make_idp(_idp_clients(), extra_resources=[APPS_AUDIENCE])
    config = apps_config(idp, lab_backend.url, tmp_path / "rolegate.db", workers=1, username_claim="sub")
    with RolegateProcess(config, tmp_path) as proc:
        app_token = client_credentials_token(idp, "fieldservice", DEFAULT_AUDIENCE)["access_token"]
        foreign = client_credentials_token(idp, "otherapp", DEFAULT_AUDIENCE)["access_token"]
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{proc.url}/me-echo/x", headers=_bearer(app_token)) as r:
                assert r.status == 401, await r.text()
            # the control: a client that is no configured app is still taken as the IdP says (sub = its id)
            async with http.get(f"{proc.url}/me-echo/x", headers=_bearer(foreign)) as r:
                assert r.status == 200, await r.text()
                assert (await r.json())["headers"]["X-Rolegate-User"] == "otherapp"
