"""The lab itself: slapd seed, example backend, and the IdP's code flow through its login form."""

from __future__ import annotations

import base64
import hashlib
import secrets
from urllib.parse import urlencode

import aiohttp
import jwt
import ldap3
import pytest

from rolegate_lab import (
    DEFAULT_AUDIENCE,
    Backend,
    IdP,
    LabError,
    LoginFailed,
    Slapd,
    demo_users,
    idp_login,
    idp_logout,
    lab_client_session,
)

pytestmark = pytest.mark.lab
BASE = "dc=example,dc=com"


def _ldap(slapd: Slapd) -> ldap3.Connection:
    return ldap3.Connection(slapd.url, slapd.service_dn, slapd.service_password, auto_bind=True)


# -- slapd ---------------------------------------------------------------------------
def test_seeded_users_and_groups_are_readable_by_the_service_account(lab_slapd: Slapd) -> None:
    conn = _ldap(lab_slapd)
    conn.search(f"ou=people,{BASE}", "(objectClass=inetOrgPerson)", attributes=["uid", "mail", "entryUUID"])
    uids = {e.uid.value for e in conn.entries}
    assert {u.uid for u in demo_users()} == uids
    assert all(e.entryUUID.value for e in conn.entries)
    conn.search(f"ou=groups,{BASE}", "(objectClass=groupOfNames)", attributes=["cn"])
    groups = {e.cn.value for e in conn.entries}
    assert {"staff", "admins", "technicians", "bs-responsible-a", "subcontractor-coordinators"} <= groups


def test_memberof_and_nested_group(lab_slapd: Slapd) -> None:
    conn = _ldap(lab_slapd)
    conn.search(f"ou=people,{BASE}", "(uid=bob)", attributes=["memberOf"])
    assert conn.entries[0].memberOf.values == [f"cn=technicians,ou=groups,{BASE}"]
    conn.search(f"cn=staff,ou=groups,{BASE}", "(objectClass=*)", search_scope=ldap3.BASE, attributes=["member"])
    assert f"cn=technicians,ou=groups,{BASE}" in conn.entries[0].member.values
    conn.search(f"cn=technicians,ou=groups,{BASE}", "(objectClass=*)", search_scope=ldap3.BASE, attributes=["memberOf"])
    assert conn.entries[0].memberOf.values == [f"cn=staff,ou=groups,{BASE}"]


def test_disabled_user_is_marked_but_can_bind(lab_slapd: Slapd) -> None:
    conn = _ldap(lab_slapd)
    conn.search(f"ou=people,{BASE}", "(employeeType=disabled)", attributes=["uid"])
    assert [e.uid.value for e in conn.entries] == ["ivan"]
    assert ldap3.Connection(lab_slapd.url, f"uid=ivan,ou=people,{BASE}", "demo").bind()
    assert not ldap3.Connection(lab_slapd.url, f"uid=ivan,ou=people,{BASE}", "wrong").bind()


def test_service_account_cannot_read_passwords(lab_slapd: Slapd) -> None:
    conn = _ldap(lab_slapd)
    conn.search(f"ou=people,{BASE}", "(uid=alice)", attributes=["userPassword"])
    assert not conn.response[0]["raw_attributes"].get("userPassword")


def test_fresh_slapd_changes_kill_and_restart(fresh_slapd: Slapd) -> None:
    fresh_slapd.ldapmodify(
        f"dn: cn=finance,ou=groups,{BASE}\nchangetype: modify\nadd: member\nmember: uid=bob,ou=people,{BASE}\n"
    )
    fresh_slapd.ldapdelete(f"uid=trent,ou=people,{BASE}")
    fresh_slapd.kill()
    assert not fresh_slapd.running
    fresh_slapd.restart()
    conn = _ldap(fresh_slapd)
    conn.search(f"ou=people,{BASE}", "(uid=bob)", attributes=["memberOf"])
    assert f"cn=finance,ou=groups,{BASE}" in conn.entries[0].memberOf.values
    conn.search(f"cn=technicians,ou=groups,{BASE}", "(objectClass=*)", search_scope=ldap3.BASE, attributes=["member"])
    assert f"uid=trent,ou=people,{BASE}" not in conn.entries[0].member.values  # refint


def test_empty_slapd_and_clear_errors(make_slapd) -> None:  # type: ignore[no-untyped-def]
    empty = make_slapd(seed=False)
    conn = _ldap(empty)
    conn.search(f"ou=people,{BASE}", "(objectClass=*)", search_scope=ldap3.LEVEL)
    assert conn.entries == []
    with pytest.raises(LabError, match="No such object"):
        empty.ldapadd(f"dn: uid=x,ou=nowhere,{BASE}\nobjectClass: inetOrgPerson\nuid: x\ncn: x\nsn: x\n")


# -- backend ----------------------------------------------------------------------------
async def test_backend_echo_and_data(lab_backend: Backend) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{lab_backend.url}/any/path?x=1", data=b"abc", headers={"X-Rolegate-User": "bob"}) as r:
            body = await r.json()
        assert body["method"] == "POST" and body["path"] == "/any/path" and body["query"] == {"x": "1"}
        assert body["headers"]["X-Rolegate-User"] == "bob" and body["body_bytes"] == 3
        async with http.get(f"{lab_backend.url}/invoices/1001") as r:
            invoice = await r.json()
        assert invoice["amount"] and invoice["hourly_rate"] and all("price" in line for line in invoice["lines"])
        async with http.get(f"{lab_backend.url}/status/503") as r:
            assert r.status == 503
        async with http.get(f"{lab_backend.url}/download?size=abc") as r:
            assert r.status == 400 and "size" in (await r.json())["error"]


async def test_backend_streams(lab_backend: Backend) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{lab_backend.url}/download?size=300000") as r:
            data = await r.read()
        assert len(data) == 300000 and data[:3] == b"\x00\x01\x02" and data[256] == 0
        payload = secrets.token_bytes(200_000)
        async with http.post(f"{lab_backend.url}/upload", data=payload) as r:
            assert (await r.json())["sha256"] == hashlib.sha256(payload).hexdigest()
        async with http.get(f"{lab_backend.url}/sse?count=3&interval=0.01") as r:
            assert r.headers["Content-Type"].startswith("text/event-stream")
            events = [line async for line in r.content if line.startswith(b"data:")]
        assert len(events) == 3
        async with http.get(f"{lab_backend.url}/chunked?count=4") as r:
            assert r.headers.get("Transfer-Encoding") == "chunked" and (await r.text()).count("chunk") == 4
        async with http.ws_connect(f"{lab_backend.url}/ws") as ws:
            await ws.send_str("hello")
            assert (await ws.receive_str()) == "hello"
            await ws.send_bytes(b"\x00\xff")
            assert (await ws.receive_bytes()) == b"\x00\xff"
            await ws.send_str("close:4001")
            await ws.receive()
            assert ws.close_code == 4001


# -- IdP ----------------------------------------------------------------------------------
def _authorize_url(idp: IdP, **extra: str) -> tuple[str, str]:
    client = idp.client()
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    params = {
        "client_id": client["client_id"],
        "response_type": "code",
        "redirect_uri": client["redirect_uris"][0],
        "scope": "openid profile email groups offline_access",
        "state": secrets.token_urlsafe(8),
        "nonce": "n-1",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **extra,
    }
    return f"{idp.discovery['authorization_endpoint']}?{urlencode(params)}", verifier


async def _token(idp: IdP, **form: str) -> dict:
    client = idp.client()
    basic = (
        aiohttp.encode_basic_auth(client["client_id"], client["client_secret"])
        if hasattr(aiohttp, "encode_basic_auth")
        else aiohttp.BasicAuth(client["client_id"], client["client_secret"]).encode()
    )
    async with aiohttp.ClientSession() as http:
        async with http.post(idp.discovery["token_endpoint"], data=form, headers={"Authorization": basic}) as r:
            body = await r.json()
            assert r.status == 200, body
            return body


def _verify(idp: IdP, token: str, audience: str) -> dict:
    key = jwt.PyJWKClient(idp.jwks_uri).get_signing_key_from_jwt(token)
    return jwt.decode(token, key.key, algorithms=["ES256", "RS256"], audience=audience, issuer=idp.issuer)


def test_discovery(lab_idp: IdP) -> None:
    doc = lab_idp.discovery
    assert doc["issuer"] == lab_idp.url
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert {"ES256", "RS256"} <= set(doc["id_token_signing_alg_values_supported"])
    assert {"openid", "profile", "email", "groups", "offline_access"} <= set(doc["scopes_supported"])
    assert doc["backchannel_logout_supported"] and doc["end_session_endpoint"]


async def test_code_flow_with_pkce_tokens_and_refresh(lab_idp: IdP) -> None:
    url, verifier = _authorize_url(lab_idp)
    async with lab_client_session() as http:
        redirect = await idp_login(http, url, "bob", "demo")
    assert redirect.code and redirect.url.startswith(lab_idp.client()["redirect_uris"][0])
    tokens = await _token(
        lab_idp,
        grant_type="authorization_code",
        code=redirect.code,
        redirect_uri=lab_idp.client()["redirect_uris"][0],
        code_verifier=verifier,
    )
    assert jwt.get_unverified_header(tokens["id_token"])["alg"] == "ES256"
    id_claims = _verify(lab_idp, tokens["id_token"], "rolegate")
    assert id_claims["sub"] == "bob" and id_claims["preferred_username"] == "bob"
    assert id_claims["email"] == "bob@example.com" and id_claims["name"] == "Bob Bakker"
    assert id_claims["groups"] == ["staff", "technicians"]  # technicians is nested in staff
    assert id_claims["nonce"] == "n-1" and id_claims["sid"]
    at_claims = _verify(lab_idp, tokens["access_token"], DEFAULT_AUDIENCE)
    assert at_claims["sub"] == "bob" and at_claims["client_id"] == "rolegate"
    refreshed = await _token(lab_idp, grant_type="refresh_token", refresh_token=tokens["refresh_token"])
    assert _verify(lab_idp, refreshed["access_token"], DEFAULT_AUDIENCE)["sub"] == "bob"


async def test_wrong_password_and_unknown_user_are_refused(lab_idp: IdP) -> None:
    for user, password in (("bob", "wrong"), ("nobody", "demo"), ("bob", ""), ("*)(uid=*", "demo")):
        url, _ = _authorize_url(lab_idp)
        async with lab_client_session() as http:
            with pytest.raises(LoginFailed) as failed:
                await idp_login(http, url, user, password)
        assert failed.value.status in (200, 400, 401)


async def test_pkce_is_required_and_sso_and_logout(lab_idp: IdP) -> None:
    url, _ = _authorize_url(lab_idp)
    no_pkce = url.replace("code_challenge_method=S256", "").replace("code_challenge=", "x=")
    async with lab_client_session() as http:
        first = await idp_login(http, url, "carol", "demo")
        refused = await idp_login(http, no_pkce, "carol", "demo")
        assert refused.error == "invalid_request"
        again = await idp_login(http, _authorize_url(lab_idp)[0], "ignored", "ignored")  # IdP session: no form
        assert again.code and again.code != first.code
        end = f"{lab_idp.discovery['end_session_endpoint']}?" + urlencode(
            {"client_id": "rolegate", "post_logout_redirect_uri": lab_idp.client()["post_logout_redirect_uris"][0]}
        )
        done = await idp_logout(http, end)
        assert done is not None and done.url.startswith(lab_idp.client()["post_logout_redirect_uris"][0])
        with pytest.raises(LoginFailed):  # signed out: the form is back
            await idp_login(http, _authorize_url(lab_idp)[0], "carol", "wrong")


async def test_rs256_client(make_idp, rolegate_url: str) -> None:  # type: ignore[no-untyped-def]
    from rolegate_lab import rolegate_client

    idp = make_idp([rolegate_client(rolegate_url, "s3cret", id_token_signed_response_alg="RS256")])
    url, verifier = _authorize_url(idp)
    async with lab_client_session() as http:
        redirect = await idp_login(http, url, "alice", "demo")
    tokens = await _token(
        idp,
        grant_type="authorization_code",
        code=redirect.code,
        redirect_uri=idp.client()["redirect_uris"][0],
        code_verifier=verifier,
    )
    assert jwt.get_unverified_header(tokens["id_token"])["alg"] == "RS256"
    assert _verify(idp, tokens["id_token"], "rolegate")["groups"] == ["admins", "bs-admins", "staff"]


async def test_backchannel_logout_reaches_the_client(make_idp) -> None:  # type: ignore[no-untyped-def]
    from aiohttp import web

    from rolegate_lab import free_port, rolegate_client

    received: list[str] = []

    async def backchannel(request: web.Request) -> web.Response:
        received.append((await request.post())["logout_token"])
        return web.Response()

    app = web.Application()
    app.router.add_post("/.rolegate/logout/backchannel", backchannel)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        idp = make_idp([rolegate_client(f"http://127.0.0.1:{port}", "s3cret")])
        url, verifier = _authorize_url(idp)
        async with lab_client_session() as http:
            redirect = await idp_login(http, url, "heidi", "demo")
            tokens = await _token(
                idp,
                grant_type="authorization_code",
                code=redirect.code,
                redirect_uri=idp.client()["redirect_uris"][0],
                code_verifier=verifier,
            )
            end = f"{idp.discovery['end_session_endpoint']}?" + urlencode({"id_token_hint": tokens["id_token"]})
            assert await idp_logout(http, end) is None  # no post-logout URI: the IdP's own page
        assert len(received) == 1
        claims = _verify(idp, received[0], "rolegate")
        sid = _verify(idp, tokens["id_token"], "rolegate")["sid"]
        assert claims["sub"] == "heidi" and claims["sid"] == sid
        assert "http://schemas.openid.net/event/backchannel-logout" in claims["events"]
    finally:
        await runner.cleanup()


def test_lab_starts_everything_and_writes_lab_json(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    from rolegate_lab import Lab

    with Lab(tmp_path, rolegate_url="http://127.0.0.1:1234", client_secret="sekrit") as lab:
        json_path, env_path = lab.write_info()
        info = json.loads(json_path.read_text())
        assert info["oidc"]["client_secret"] == "sekrit"
        assert info["oidc"]["redirect_uri"] == "http://127.0.0.1:1234/.rolegate/callback"
        assert info["oidc"]["issuer"] == lab.idp.url and lab.idp.discovery["issuer"] == lab.idp.url
        assert info["ldap"]["url"] == lab.slapd.url and info["backend"]["url"] == lab.backend.url
        assert "ROLEGATE_OIDC_SECRET=sekrit" in env_path.read_text()
        assert (json_path.stat().st_mode & 0o077) == 0
    assert not (lab.slapd.running or lab.idp.running or lab.backend.running)


def test_extra_schema_in_cn_config_ldif_form(make_slapd, tmp_path) -> None:  # type: ignore[no-untyped-def]
    schema = tmp_path / "lab-test.ldif"
    schema.write_text(
        "dn: cn=labtest,cn=schema,cn=config\nobjectClass: olcSchemaConfig\ncn: labtest\n"
        "olcAttributeTypes: {0}( 1.3.6.1.4.1.99999.1.1 NAME 'labBadge'\n"
        "  EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )\n"
        "olcObjectClasses: {0}( 1.3.6.1.4.1.99999.2.1 NAME 'labPerson' SUP top AUXILIARY MAY labBadge )\n"
    )
    slapd = make_slapd(extra_schemas=[schema])
    slapd.ldapmodify(
        f"dn: uid=bob,ou=people,{BASE}\nchangetype: modify\nadd: objectClass\nobjectClass: labPerson\n"
        "-\nadd: labBadge\nlabBadge: B-42\n"
    )
    conn = _ldap(slapd)
    conn.search(f"ou=people,{BASE}", "(labBadge=b-42)", attributes=["uid"])
    assert [e.uid.value for e in conn.entries] == ["bob"]
    with pytest.raises(LabError, match="does not exist"):
        make_slapd(extra_schemas=[tmp_path / "missing.schema"])
