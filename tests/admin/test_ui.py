"""The admin UI in real headless Chromium, signed in through the lab's SSO (IdP login form, LDAP bind).

alice (bs-admins) maps the directory group ``technicians`` to role ``user`` at ``building:a``, sees the
preview, applies it; bob (a technician) is then let through the proxy to building a's dashboard at his
next request, and /me says so. Screenshots of every page land in $ROLEGATE_SCREENSHOTS (default: tmp).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from playwright.async_api import async_playwright

from tests.admin.conftest import API, JSON, sign_in

pytestmark = pytest.mark.lab

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PHONE = {"width": 390, "height": 844}


async def signed_in_page(context, url: str, username: str):
    """A new page of ``context`` at ``url``, signed in as ``username`` through the IdP's login form."""
    page = await context.new_page()
    page.set_default_timeout(15000)
    await page.goto(url)
    await page.fill("input[name=login]", username)
    await page.fill("input[name=password]", "demo")
    await page.click("button[type=submit], input[type=submit]")
    await page.wait_for_url(url)
    return page


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    path = Path(os.environ.get("ROLEGATE_SCREENSHOTS") or tmp_path / "screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


async def test_ops_maps_a_group_to_a_role_for_one_building(served, shots):
    base = served.url
    bob = await sign_in(base, "bob")
    try:
        async with bob.http.get(f"{base}/buildings/a/dashboard", headers=JSON, allow_redirects=False) as resp:
            assert resp.status == 403, "bob (technicians) has no role at building a yet"

        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            context = await browser.new_context(viewport=PHONE, device_scale_factor=1, is_mobile=True, has_touch=True)
            # Not signed in: the admin page sends the browser to the IdP's login form, then back.
            page = await signed_in_page(context, f"{base}/.rolegate/admin/bindings", "alice")
            await page.screenshot(path=str(shots / "bindings.png"), full_page=True)

            form = page.locator("#new-binding")
            await form.locator("select[name=kind]").select_option("group")
            await form.locator("input[name=subject]").fill("technicians")
            await form.locator("select[name=role]").select_option("user")
            await form.locator("input[name=scope]").fill("building:a")
            await form.locator("button[type=submit]").click()
            await page.wait_for_url("**/admin/bindings/preview")
            preview = page.locator("#preview")
            row = preview.locator("tr", has_text="bob")
            assert "building:a" in await row.inner_text()
            assert "dashboard:view" in await row.inner_text()
            await page.screenshot(path=str(shots / "binding-preview.png"), full_page=True)

            await page.click("#apply")
            await page.wait_for_url("**/admin/bindings?applied=*")
            assert "technicians" in await page.locator("#bindings").inner_text()
            await page.screenshot(path=str(shots / "binding-applied.png"), full_page=True)

            # The affected user's next request: through the proxy, and what /me tells him.
            async with bob.http.get(f"{base}/buildings/a/dashboard", headers=JSON, allow_redirects=False) as resp:
                assert resp.status == 200, await resp.text()
            async with bob.http.get(f"{base}/buildings/b/dashboard", headers=JSON, allow_redirects=False) as resp:
                assert resp.status == 403, "the mapping is for building a only"
            status, me, _ = await bob.call("GET", f"{API}/me")
            at_a = [s for s in me["scopes"] if s["scope"] == "building:a"]
            assert at_a and at_a[0]["roles"] == ["user"] and "dashboard:view" in at_a[0]["permissions"]

            # The other pages, each checked for its content and photographed at phone size.
            await page.goto(f"{base}/.rolegate/admin/matrix?roles=admin,risk_assessor,responsible,user")
            head = await page.locator("#matrix thead").inner_text()
            for role in ("admin", "risk_assessor", "responsible", "user"):
                assert role in head
            assert "If enabled in user settings" in await page.locator("#matrix").inner_text()
            await page.screenshot(path=str(shots / "matrix-phone.png"), full_page=True)

            await page.goto(f"{base}/.rolegate/admin/users/bob?permission=dashboard:view&scope=building:a")
            assert "ALLOWED" in await page.locator("#explain-result").inner_text()
            await page.screenshot(path=str(shots / "user-bob.png"), full_page=True)

            await page.goto(f"{base}/.rolegate/admin/audit?kind=admin_change")
            assert "bindings/" in await page.locator("#audit").inner_text()
            await page.screenshot(path=str(shots / "audit.png"), full_page=True)

            await page.goto(f"{base}/.rolegate/admin/daypasses")
            issue = page.locator("#issue")
            await issue.locator("input[name=scope]").fill("building:a")
            await issue.locator("input[name=name]").fill("Sam Smit")
            await issue.locator("input[name=company]").fill("Fixit BV")
            await issue.locator("input[name=reason]").fill("boiler repair")
            await issue.locator("button[type=submit]").click()
            await page.wait_for_selector("#issued img.qr")
            link = await page.locator("#pass-link").input_value()
            assert link.startswith(f"{base}/.rolegate/pass/")
            assert await page.locator("#issued img.qr").evaluate("img => img.naturalWidth") > 100
            await page.screenshot(path=str(shots / "daypass-issued.png"), full_page=True)

            await page.goto(f"{base}/.rolegate/admin/me")
            await page.screenshot(path=str(shots / "me.png"), full_page=True)

            # Phone-sized: nothing overflows the viewport sideways except inside scroll boxes.
            width = await page.evaluate("document.documentElement.scrollWidth")
            assert width <= PHONE["width"] + 1

            desktop = await browser.new_context(
                viewport={"width": 1280, "height": 900}, storage_state=await context.storage_state()
            )
            dpage = await desktop.new_page()
            await dpage.goto(f"{base}/.rolegate/admin/matrix?roles=admin,risk_assessor,responsible,user")
            await dpage.screenshot(path=str(shots / "matrix-desktop.png"), full_page=True)
            await browser.close()
    finally:
        await bob.http.close()


async def test_a_form_post_without_the_csrf_token_is_refused(served):
    alice = await sign_in(served.url, "alice")
    try:
        data = {"kind": "group", "subject": "technicians", "role": "user", "scope": "building:a"}
        async with alice.http.post(
            f"{served.url}/.rolegate/admin/bindings/apply",
            data=data,
            headers={"Accept": "text/html"},
            allow_redirects=False,
        ) as resp:
            assert resp.status == 403
        async with alice.http.post(
            f"{served.url}/.rolegate/admin/bindings/apply",
            data={**data, "csrf": alice.csrf},
            headers={"Origin": "https://evil.example"},
            allow_redirects=False,
        ) as resp:
            assert resp.status == 403
        status, body, _ = await alice.call("GET", f"{API}/bindings?group=technicians")
        assert body["items"] == []
        for form, path in (
            ({"setting": "vacancy", "version": "0", "confirm": "1"}, "users/heidi/settings"),
            ({"permission": "controls:perform", "object": "task:1", "confirm": "1"}, "users/heidi/grants"),
        ):
            async with alice.http.post(
                f"{served.url}/.rolegate/admin/{path}",
                data=form,
                headers={"Accept": "text/html"},
                allow_redirects=False,
            ) as resp:
                assert resp.status == 403, path
        status, body, _ = await alice.call("GET", f"{API}/user-settings/heidi")
        assert body["settings"] == []
    finally:
        await alice.http.close()


async def test_pickers_offer_exactly_what_the_signed_in_person_manages(served):
    """Issue 18: the admin UI offers what the signed-in person may do - carol (responsible at building:a) sees
    the roles she manages, her building as the only place, and settings and tasks there."""
    import re

    carol = await sign_in(served.url, "carol")
    try:
        async with carol.http.get(f"{served.url}/.rolegate/admin/bindings", headers={"Accept": "text/html"}) as resp:
            assert resp.status == 200
            text = await resp.text()
        form = text[text.index('id="new-binding"') :]
        form = form[: form.index("</form>")]
        assert (
            re.findall(r'<select name="role">(.*?)</select>', form)[0]
            == '<option value="user">user</option><option value="responsible">responsible</option>'
        )
        assert '<select name="scope"><option value="building:a">building:a</option></select>' in form
        async with carol.http.get(f"{served.url}/.rolegate/admin/users/heidi", headers={"Accept": "text/html"}) as resp:
            assert resp.status == 200
            text = await resp.text()
        settings = text[text.index('id="settings"') :]
        settings = settings[: settings.index("</form>")]
        assert 'name="scope" value="building:a"' in settings and 'value="documents_add"' in settings
        grant = text[text.index('id="grant"') :]
        grant = grant[: grant.index("</form>")]
        assert '<select name="permission"><option value="controls:perform">controls:perform</option></select>' in grant
        assert '<option value="task:42">' in grant and '<option value="task:77">' not in grant
    finally:
        await carol.http.close()


async def test_unauthenticated_browser_is_sent_to_sign_in_and_pages_are_locked_down(served):
    import aiohttp

    async with aiohttp.ClientSession() as http:
        async with http.get(
            f"{served.url}/.rolegate/admin/matrix", headers={"Accept": "text/html"}, allow_redirects=False
        ) as resp:
            assert resp.status == 302
            assert "/.rolegate/login" in resp.headers["Location"]
    alice = await sign_in(served.url, "alice")
    try:
        async with alice.http.get(f"{served.url}/.rolegate/admin/matrix") as resp:
            csp = resp.headers["Content-Security-Policy"]
            text = await resp.text()
        assert "default-src 'none'" in csp and "script-src 'self'" in csp
        assert "http://" not in text.replace(served.url, "") and "https://" not in text, "no external assets"
    finally:
        await alice.http.close()


async def test_ops_switch_a_user_setting_and_add_a_user_to_a_task(served, shots):
    """Seed 001's two per-user conditions from the user page: "if enabled in user settings" and "if added
    to a task", each through a preview; heidi's next requests through the proxy show the effect."""
    base = served.url
    heidi = await sign_in(base, "heidi")
    vacancy, perform = "/buildings/a/rooms/1/vacancy", "/tasks/42/controls/7/perform"
    try:
        assert (await heidi.call("POST", vacancy))[0] == 403
        assert (await heidi.call("POST", perform))[0] == 403
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            context = await browser.new_context(viewport={"width": 1280, "height": 900})
            page = await signed_in_page(context, f"{base}/.rolegate/admin/users/heidi", "alice")

            settings = page.locator("#settings")
            await settings.locator("input[value=vacancy]").check()
            await settings.locator("button[type=submit]").click()
            await page.wait_for_url("**/admin/users/heidi/settings")
            row = page.locator("#preview tr", has_text="heidi")
            assert "vacancy:manage" in await row.inner_text()
            await page.screenshot(path=str(shots / "user-settings-preview.png"), full_page=True)
            await page.click("#apply")
            await page.wait_for_url("**/admin/users/heidi?done=*")
            assert await page.locator("#settings input[value=vacancy]").is_checked()
            assert (await heidi.call("POST", vacancy))[0] == 200, "switched on: the next request passes"

            grant = page.locator("#grant")
            await grant.locator("select[name=permission]").select_option("controls:perform")
            await grant.locator("input[name=object]").fill("task:42")
            await grant.locator("button[type=submit]").click()
            await page.wait_for_url("**/admin/users/heidi/grants")
            await page.screenshot(path=str(shots / "user-grant-preview.png"), full_page=True)
            await page.click("#apply")
            await page.wait_for_url("**/admin/users/heidi?done=*")
            assert "task:42" in await page.locator("#grants").inner_text()
            await page.screenshot(path=str(shots / "user-after.png"), full_page=True)
            assert (await heidi.call("POST", perform))[0] == 200, "added to task 42"
            assert (await heidi.call("POST", "/tasks/43/controls/7/perform"))[0] == 403

            # Switching the setting off again takes it away at the next request.
            await page.locator("#settings input[value=vacancy]").uncheck()
            await page.locator("#settings button[type=submit]").click()
            await page.wait_for_url("**/admin/users/heidi/settings")
            assert "vacancy:manage" in await page.locator("#preview").inner_text()
            await page.click("#apply")
            await page.wait_for_url("**/admin/users/heidi?done=*")
            assert (await heidi.call("POST", vacancy))[0] == 403
            await browser.close()
    finally:
        await heidi.http.close()
