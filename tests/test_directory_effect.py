"""The directory drives access through the real server: `rolegate serve` with the lab's slapd, IdP and
backend, the directory sync running in the master.

A user the directory marks disabled is refused even though the IdP says yes; a membership removed or an
account disabled in LDAP bites at the next request after the sync that sees it, open sessions included,
with no re-login.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from rolegate_lab import idp_login, lab_client_session, rolegate_client
from tests.support.serve import RolegateProcess
from tests.support.workers import on_every_worker

pytestmark = pytest.mark.lab

HTML = {"Accept": "text/html"}
JSON = {"Accept": "application/json"}


def config_for(url: str, idp, slapd, backend_url: str, tmp) -> dict:
    port = int(url.rsplit(":", 1)[1])
    return {
        "server": {"listen": f"127.0.0.1:{port}", "public_url": url, "internal_listen": "127.0.0.1:0", "workers": 2},
        "storage": {"url": f"sqlite:///{tmp}/rolegate.db"},
        "oidc": {
            "issuer": idp.issuer,
            "client_id": "rolegate",
            "client_secret": idp.client()["client_secret"],
            "scopes": ["openid", "profile", "email", "groups"],
            "algorithms": ["ES256", "RS256"],
        },
        "session": {"secret": "directory-effect-session-secret-" + "d" * 32},
        "directory": {
            "url": slapd.url,
            "bind_dn": slapd.service_dn,
            "bind_password": slapd.service_password,
            "users": {"base": f"ou=people,{slapd.base_dn}", "disabled_filter": "(employeeType=disabled)"},
            "groups": {"base": f"ou=groups,{slapd.base_dn}"},
            "interval": "1s",
            "full_interval": "5s",
        },
        "permissions": ["workorders:view"],
        "roles": {"technician": {"permissions": ["workorders:view"]}},
        # staff contains the technicians group: bob is in staff only through the nesting.
        "bindings": [{"group": "staff", "role": "technician"}],
        "upstreams": {"app": {"url": backend_url}},
        "routes": [{"path": "/workorders/**", "permission": "workorders:view", "upstream": "app"}],
    }


@pytest.fixture
def served(tmp_path, make_idp, fresh_slapd, lab_backend):
    from rolegate_lab import free_port

    url = f"http://127.0.0.1:{free_port()}"
    idp = make_idp([rolegate_client(url)], slapd=fresh_slapd)
    proc = RolegateProcess(config_for(url, idp, fresh_slapd, lab_backend.url, tmp_path), tmp_path)
    proc.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # wait for the first full sync
        status, body = proc.readyz()
        if json.loads(body).get("checks", {}).get("directory", {}).get("users"):
            break
        time.sleep(0.2)
    yield proc, fresh_slapd
    proc.stop()


async def signed_in(base: str, username: str):
    http = lab_client_session()
    async with http.get(f"{base}/.rolegate/login", params={"rd": "/"}, headers=HTML, allow_redirects=False) as resp:
        location = resp.headers["Location"]
    callback = await idp_login(http, location, username, "demo")
    async with http.get(callback.url, headers=HTML, allow_redirects=False) as resp:
        assert resp.status == 302
    return http


async def status(http, url: str) -> tuple[int, str]:
    async with http.get(url, headers=JSON) as resp:
        return resp.status, await resp.text()


async def until(http, url: str, expected: int, timeout: float = 20.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        code, _ = await status(http, url)
        if code == expected or time.monotonic() > deadline:
            return code
        await asyncio.sleep(0.2)


async def test_disabled_user_is_refused_though_the_idp_says_yes(served):
    proc, _ = served
    http = await signed_in(proc.url, "ivan")  # the IdP lets ivan sign in ...
    try:
        code, body = await status(http, proc.url + "/workorders/1")
        assert code == 403 and json.loads(body)["error"] == "account_disabled"  # ... rolegate does not
    finally:
        await http.close()


async def test_nested_membership_grants_and_its_removal_bites_at_the_next_request(served):
    proc, slapd = served
    http = await signed_in(proc.url, "bob")
    try:
        assert (await status(http, proc.url + "/workorders/1"))[0] == 200  # staff via technicians
        slapd.ldapmodify(
            f"dn: cn=technicians,ou=groups,{slapd.base_dn}\nchangetype: modify\n"
            f"delete: member\nmember: uid=bob,ou=people,{slapd.base_dn}\n"
        )
        # Same session, no re-login: refused once the sync has seen it.
        assert await until(http, proc.url + "/workorders/1", 403) == 403
        # Every worker, each on connections of its own (one keep-alive connection reaches one worker).
        seen = await on_every_worker(proc, http, "GET", proc.url + "/workorders/1", headers=JSON)
        assert {code for _, code in seen} == {403}, seen
    finally:
        await http.close()


async def test_the_workers_map_one_shared_snapshot_file(served, tmp_path):
    """Issue 24: the workers read the directory from files in the runtime directory — a base and a top per version
    — each mapping them, and map the next version's top over the same base after a change (the change biting at
    the next request, as above)."""
    proc, slapd = served
    http = await signed_in(proc.url, "bob")
    try:
        assert (await status(http, proc.url + "/workorders/1"))[0] == 200
        (base,) = tmp_path.glob("run/rolegate-*/directory/snapshot-base-*.map")
        (first,) = (p for p in tmp_path.glob("run/rolegate-*/directory/snapshot-*.map") if p != base)
        assert first.stat().st_mode & 0o777 == 0o600 and base.stat().st_mode & 0o777 == 0o600
        inode = base.stat().st_ino

        def mapping(path) -> list[int]:
            return [pid for pid in proc.worker_pids() if str(path) in Path(f"/proc/{pid}/maps").read_text()]

        await on_every_worker(proc, http, "GET", proc.url + "/workorders/1", headers=JSON)
        assert len(proc.worker_pids()) == 2
        assert sorted(mapping(first)) == sorted(mapping(base)) == sorted(proc.worker_pids())
        slapd.ldapmodify(
            f"dn: uid=bob,ou=people,{slapd.base_dn}\nchangetype: modify\nreplace: mail\nmail: bob@new.example.com\n"
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and first.exists():
            await on_every_worker(proc, http, "GET", proc.url + "/workorders/1", headers=JSON)
            await asyncio.sleep(0.2)
        (second,) = (p for p in tmp_path.glob("run/rolegate-*/directory/snapshot-*.map") if p != base)
        assert second != first  # the next version's top; the first one removed
        assert base.stat().st_ino == inode  # over the same base, not built again
        await on_every_worker(proc, http, "GET", proc.url + "/workorders/1", headers=JSON)
        assert sorted(mapping(second)) == sorted(mapping(base)) == sorted(proc.worker_pids())
    finally:
        await http.close()


async def test_disabling_an_account_ends_its_open_session(served):
    proc, slapd = served
    http = await signed_in(proc.url, "trent")
    try:
        assert (await status(http, proc.url + "/workorders/2"))[0] == 200
        slapd.ldapmodify(
            f"dn: uid=trent,ou=people,{slapd.base_dn}\nchangetype: modify\n"
            f"replace: employeeType\nemployeeType: disabled\n"
        )
        assert await until(http, proc.url + "/workorders/2", 403) == 403
        code, body = await status(http, proc.url + "/workorders/2")
        assert code == 403 and json.loads(body)["error"] == "account_disabled"
        assert json.loads(body)["sign_out"] == "/.rolegate/logout"
        # The browser gets a page that says so and a way out (sign out, sign in as someone else).
        async with http.get(proc.url + "/workorders/2", headers=HTML) as resp:
            page = await resp.text()
        assert resp.status == 403 and "Your account is disabled" in page
        assert '<a href="/.rolegate/logout" id="sign-out">Sign out</a>' in page
    finally:
        await http.close()
    with urllib.request.urlopen(proc.internal_url + "/readyz", timeout=5) as resp:
        assert json.loads(resp.read())["checks"]["directory"]["state"] == "ok"


async def test_a_reloaded_directory_section_applies_to_every_user_without_a_restart(served):
    proc, slapd = served
    http = await signed_in(proc.url, "bob")
    try:
        assert (await status(http, proc.url + "/workorders/1"))[0] == 200
        # Nothing changes in LDAP; only the config's idea of who is disabled. The sync restarts
        # under the new section and its first (full) sync applies it to bob's unchanged entry.
        config = yaml.safe_load(proc.config_path.read_text())
        config["directory"]["users"]["disabled_filter"] = "(|(employeeType=disabled)(uid=bob))"
        proc.write_config(config)
        proc.signal(signal.SIGHUP)
        assert await until(http, proc.url + "/workorders/1", 403) == 403
        code, body = await status(http, proc.url + "/workorders/1")
        assert code == 403 and json.loads(body)["error"] == "account_disabled"
    finally:
        await http.close()
    assert proc.wait_for_log("directory sync restarted with the reloaded settings"), proc.log()
    with urllib.request.urlopen(proc.internal_url + "/readyz", timeout=5) as resp:
        assert json.loads(resp.read())["checks"]["directory"]["state"] == "ok"


async def test_a_person_signs_in_in_a_real_browser_and_uses_the_backend(served, tmp_path):
    """Chromium: the protected URL sends the browser to the IdP's form and back; the backend answers."""
    from playwright.async_api import async_playwright

    proc, _ = served
    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        try:
            page = await browser.new_page()
            page.set_default_timeout(15000)
            await page.goto(proc.url + "/workorders/1")
            await page.fill("input[name=login]", "bob")
            await page.fill("input[name=password]", "demo")
            await page.click("button[type=submit], input[type=submit]")
            await page.wait_for_url(proc.url + "/workorders/1")
            await page.screenshot(path=str(tmp_path / "workorder.png"))
            body = json.loads(await page.inner_text("body"))
            assert body["id"] == "1" and body["headers"]["X-Rolegate-User"] == "bob"
            assert "X-Rolegate-Assertion" in body["headers"]
            cookies = await page.context.cookies()
            session = next(c for c in cookies if c["name"] == "rolegate_session")
            assert session["httpOnly"] and session["sameSite"] == "Lax"
        finally:
            await browser.close()
