"""Issue 25 end to end: a subcontractor's first minute, in real Chromium at phone size, through
`rolegate serve` running the quickstart's config (config/examples/lab.yaml) in front of the lab (slapd,
the company IdP, the example backend).

alice issues a pass from the admin UI (its end shown in local time, not UTC); a second browser context,
the subcontractor's phone, opens the link, confirms and lands on the pass home (200), follows every link
it lists (each 200 from the backend, as the pass), opens a page outside the pass (the pass-aware 403 and
its way back); a pass with a short lifetime is waited out (the home then says "expired"). Each
screenshot (in the test's tmp dir) is taken with the text it shows checked.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import pytest
import yaml

from rolegate.identity.daypass import end_of_local_day
from rolegate_lab import free_port
from tests.support.serve import RolegateProcess

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}
HOME = "/.rolegate/pass/home"
SHORT = 30  # seconds: the short template's lifetime
LOCAL_MIDNIGHT = re.compile(
    r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun) \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
    r"\d{4}, 24:00 \(Europe/Amsterdam\)$"
)


@pytest.fixture
def lab_rolegate(lab_idp, lab_slapd, lab_backend, rolegate_url, tmp_path):
    """`rolegate serve -c` the quickstart's lab.yaml (plus a short-lived template), with the lab's variables."""
    config = yaml.safe_load((REPO / "config/examples/lab.yaml").read_text())
    templates = config["daypass"]["templates"]
    templates["short"] = {**templates["subcontractor"], "expires": f"{SHORT}s", "max_lifetime": "1m"}
    data = tmp_path / "data"
    data.mkdir()
    env = {
        "ROLEGATE_LISTEN": rolegate_url.removeprefix("http://"),
        "ROLEGATE_PUBLIC_URL": rolegate_url,
        "ROLEGATE_INTERNAL_LISTEN": f"127.0.0.1:{free_port()}",
        "ROLEGATE_DATA": str(data),
        "ROLEGATE_SESSION_SECRET": "lab-phone-journey-" + "s" * 40,
        "ROLEGATE_OIDC_ISSUER": lab_idp.issuer,
        "ROLEGATE_OIDC_SECRET": lab_idp.client()["client_secret"],
        "LAB_LDAP_URL": lab_slapd.url,
        "LDAP_PASSWORD": lab_slapd.service_password,
        "LAB_BACKEND_URL": lab_backend.url,
    }
    proc = RolegateProcess(config, tmp_path / "rolegate", env=env).start()
    yield proc
    proc.stop()


async def main_text(page) -> str:
    return await page.inner_text("main")


async def shot(page, path: Path, *expected: str) -> str:
    """A full-page screenshot, taken once the page shows every ``expected`` text; that text is returned."""
    text = await main_text(page)
    for wanted in expected:  # as shown: labels are upper-cased by the page's style
        assert wanted.lower() in text.lower(), (path.name, wanted, text)
    await page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 5000
    return text


async def issue_from_admin_ui(page, base: str, template: str, name: str) -> tuple[str, str]:
    """alice's admin page: issue a pass; (its link, the end the page shows)."""
    await page.goto(f"{base}/.rolegate/admin/daypasses")
    form = page.locator("#issue")
    await form.locator("select[name=template]").select_option(template)
    await form.locator("input[name=scope]").fill("building:a")
    await form.locator("input[name=name]").fill(name)
    await form.locator("input[name=company]").fill("Fixit BV")
    await form.locator("input[name=reason]").fill("boiler repair")
    await form.locator("button[type=submit]").click()
    await page.wait_for_selector("#issued img.qr")
    until = re.search(r"until (.+?)\.\s", await page.inner_text("#issued"))
    assert until is not None
    return await page.locator("#pass-link").input_value(), until.group(1)


async def redeem_on_phone(browser, link: str, base: str, requests: list[str]):
    """A new phone: open the link, tap "Use this pass on this device"; (page, the landing's response)."""
    phone = await browser.new_context(**PHONE)
    page = await phone.new_page()
    page.set_default_timeout(20_000)
    page.on("request", lambda r: requests.append(r.url))
    confirm = await page.goto(link)
    assert confirm is not None and confirm.status == 200
    button = page.locator("#use-pass")
    async with page.expect_response(lambda r: r.url == base + HOME) as landed:
        await button.tap()
    response = await landed.value
    await page.wait_for_url(base + HOME)
    await page.wait_for_load_state()
    return page, response


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium not installed")
async def test_subcontractor_first_minute_on_a_phone(lab_rolegate, tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    base = lab_rolegate.url
    # The lab's passes end at local midnight: never start the journey in its last minutes.
    left = end_of_local_day(time.time(), "Europe/Amsterdam") - time.time()
    if left < 180:
        await asyncio.sleep(left + 1)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    requests: list[str] = []
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            # -- alice issues the pass from the admin UI, on her phone ---------------------------------------
            admin = await browser.new_context(**PHONE)
            page = await admin.new_page()
            page.set_default_timeout(20_000)
            await page.goto(f"{base}/.rolegate/admin/daypasses")
            await page.fill("input[name=login]", "alice")
            await page.fill("input[name=password]", "demo")
            await page.click("button[type=submit], input[type=submit]")
            await page.wait_for_url(f"{base}/.rolegate/admin/daypasses")
            link, until = await issue_from_admin_ui(page, base, "subcontractor", "Sam Smit")
            assert LOCAL_MIDNIGHT.match(until), until  # the pass's own words, not 2026-12-06T23:00:00+00:00
            issued = await shot(page, shots / "admin-issued.png", "Sam Smit", "building:a", until)
            assert "+00:00" not in issued
            await page.goto(f"{base}/.rolegate/admin/daypasses")
            listed = await shot(page, shots / "admin-passes.png", "Sam Smit", until)
            assert not re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d", listed), listed

            # -- the subcontractor's phone: open the link, confirm, land on the pass home ------------------------
            phone, landed = await redeem_on_phone(browser, link, base, requests)
            assert landed.status == 200 and phone.url == base + HOME
            home = await shot(
                phone,
                shots / "pass-home.png",
                "Your day pass",
                "Sam Smit, Fixit BV",
                "building:a",
                f"until {until}",
                "+31 20 555 0100",
                "Building dashboard",
                "Building documents",
            )
            assert re.search(r"Valid for\s+((\d+ h )?\d+ min|less than a minute)", home, re.I), home
            assert await phone.evaluate("document.documentElement.scrollWidth") <= 390
            hrefs = await phone.locator("#pass-links a").evaluate_all("links => links.map(a => a.getAttribute('href'))")
            assert hrefs == ["/buildings/a/dashboard", "/buildings/a/documents"]
            for box in [await a.bounding_box() for a in await phone.locator("#pass-links a").all()]:
                assert box is not None and box["height"] >= 44 and box["x"] + box["width"] <= 390

            # -- each listed link: 200 from the backend, as the pass --------------------------------------------
            for i, href in enumerate(hrefs):
                async with phone.expect_response(lambda r, href=href: r.url == base + href) as opened:
                    await phone.locator(f'#pass-links a[href="{href}"]').tap()
                assert (await opened.value).status == 200, href
                await phone.wait_for_load_state()
                body = json.loads(await phone.inner_text("body"))
                assert body["headers"]["X-Rolegate-User"].startswith("daypass:"), body
                building = body["building"]
                assert (building if isinstance(building, str) else building["id"]) == "a", body
                await phone.screenshot(path=str(shots / f"link-{i}.png"))
                await phone.goto(base + HOME)

            # -- a page outside the pass: the pass-aware 403, and the way back -------------------------------------
            refused = await phone.goto(base + "/invoices")
            assert refused is not None and refused.status == 403
            text = await shot(
                phone,
                shots / "pass-403.png",
                "Not part of your day pass",
                "building:a",
                "Back to your day pass",
                "Building dashboard",
                "Reference:",
            )
            assert "Access denied" not in text and "invoices" not in text
            async with phone.expect_response(lambda r: r.url == base + HOME) as back:
                await phone.locator("#pass-home").tap()
            assert (await back.value).status == 200
            assert "Your day pass" in await main_text(phone)

            # Nothing but rolegate was ever fetched by the phone (no fonts, scripts or trackers).
            assert requests and all(url.startswith(base + "/") for url in requests), requests

            # -- a short pass, waited out: its home then says it expired -------------------------------------------
            short_link, _ = await issue_from_admin_ui(page, base, "short", "Kim Kort")
            short, landed = await redeem_on_phone(browser, short_link, base, [])
            assert landed.status == 200
            await shot(short, shots / "short-home.png", "Kim Kort", "Valid for")
            # The countdown reloads the page once the time is up; the server then answers "expired".
            deadline = time.monotonic() + SHORT + 60
            while "Day pass expired" not in (await main_text(short)) and time.monotonic() < deadline:
                await asyncio.sleep(1)
            assert "Day pass expired" in await main_text(short)
            response = await short.reload()  # and without JavaScript: the server says so too
            assert response is not None and response.status == 410
            await shot(short, shots / "short-expired.png", "Day pass expired", "+31 20 555 0100")
        finally:
            await browser.close()
