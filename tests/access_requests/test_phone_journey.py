"""Issue 22 end to end, in real Chromium at phone size, through `rolegate serve` with the lab (slapd synced by
the master, the company IdP, the example backend) and seed 001's building-safety config plus an
``access_requests`` section whose webhook posts to a real local receiver that checks every HMAC.

heidi is refused adding documents in building a (the 403 page: who she is, what she tried in words, whom to
ask), taps "Request access" and asks for 2 hours; carol, the responsible of a, gets the webhook, opens the
request on her phone, sees what approving changes, shortens it and approves; heidi's next request passes;
after the `until` it is refused again; dave (no manage right at a) cannot open or approve it (403); a
request for building b never reaches carol. Each screenshot (in the test's tmp dir) is taken with the text
it shows checked.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import pytest
import yaml

from rolegate_lab import free_port, rolegate_client
from tests.access_requests.conftest import HookReceiver, access_requests_section
from tests.admin.conftest import admin_config
from tests.support.serve import RolegateProcess

pytestmark = pytest.mark.lab

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
GRANTED = 20  # seconds: what carol shortens heidi's two hours to, so the test can wait it out


@pytest.fixture
async def receiver():
    hooks = await HookReceiver().start()
    yield hooks
    await hooks.stop()


@pytest.fixture
def served(make_idp, lab_slapd, lab_backend, receiver: HookReceiver, tmp_path: Path):
    url = f"http://127.0.0.1:{free_port()}"
    idp = make_idp([rolegate_client(url)])
    # The building-safety config pointed at the lab (tests/admin's), as `rolegate serve` runs it.
    config = yaml.safe_load(admin_config(url, idp, lab_slapd, lab_backend.url, tmp_path))
    config["server"]["internal_listen"] = "127.0.0.1:0"
    config["access_requests"] = access_requests_section(receiver.url)
    proc = RolegateProcess(config, tmp_path / "rolegate").start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the first full directory sync, so groups are known
        if json.loads(proc.readyz()[1]).get("checks", {}).get("directory", {}).get("users"):
            break
        time.sleep(0.2)
    yield proc
    proc.stop()


async def text_of(page) -> str:
    return await page.inner_text("body")


async def shot(page, path: Path, *expected: str) -> str:
    """A full-page screenshot, taken once the page shows every ``expected`` text; that text is returned."""
    text = await text_of(page)
    for wanted in expected:
        assert wanted.lower() in text.lower(), (path.name, wanted, text)
    await page.screenshot(path=str(path), full_page=True)
    path.with_suffix(".txt").write_text(text)  # what the screenshot shows, beside it
    assert path.stat().st_size > 5000
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390, path.name  # no sideways scrolling
    return text


async def phone_of(browser, base: str, username: str, start: str):
    """A phone signed in as ``username`` (the IdP's form), on ``start``."""
    context = await browser.new_context(**PHONE)
    page = await context.new_page()
    page.set_default_timeout(20_000)
    await page.goto(base + start)
    await page.fill("input[name=login]", username)
    await page.fill("input[name=password]", "demo")
    await page.click("button[type=submit], input[type=submit]")
    await page.wait_for_url(re.compile(re.escape(base) + r"/.*"))
    await page.wait_for_load_state()
    return context, page


async def post_from(page, base: str, path: str) -> int:
    """The browser submits a form (a navigation, as an app's "Add document" button would): its status."""
    await page.goto(base + "/buildings/a/dashboard")  # a page of the app heidi may open
    async with page.expect_navigation() as navigation:
        await page.evaluate(
            """path => { const f = document.createElement('form'); f.method = 'post';
                                         f.action = path; document.body.appendChild(f); f.submit(); }""",
            path,
        )
    response = await navigation.value
    assert response is not None
    return response.status


async def csrf_of(context, base: str) -> str:
    response = await context.request.get(base + "/.rolegate/api/v1/me")
    assert response.status == 200
    return response.headers["x-rolegate-csrf"]


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium not installed")
async def test_request_access_from_a_phone(served: RolegateProcess, receiver: HookReceiver, tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    base = served.url
    shots = tmp_path / "screenshots"
    shots.mkdir()
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            # -- heidi is refused adding documents in building a: the 403 page -----------------------------------
            heidi_ctx, heidi = await phone_of(browser, base, "heidi", "/.rolegate/admin/me")
            assert await post_from(heidi, base, "/buildings/a/documents") == 403
            refused = await shot(
                heidi,
                shots / "403.png",
                "Access denied",
                "Signed in as Heidi Hendriks (heidi)",
                "Sign out",
                "Sign in as someone else",
                "You tried to: Add documents in Building A",
                "Carol Claes can grant it.",
                "Request access",
                "Reference:",
            )
            assert "alice" not in refused.lower() and "ruth" not in refused.lower()
            box = await heidi.locator("#request-access").bounding_box()
            assert box is not None and box["height"] >= 40 and box["x"] + box["width"] <= 390

            # -- "Request access": why, for how long (2 h) --------------------------------------------------------
            async with heidi.expect_navigation():
                await heidi.locator("#request-access").tap()
            assert "/.rolegate/admin/requests/new?" in heidi.url
            await heidi.fill("textarea[name=reason]", "upload the fire drill report")
            await heidi.select_option("select[name=duration]", "2h")
            await shot(
                heidi,
                shots / "request.png",
                "Request access",
                "Add documents in Building A",
                "Your request goes to Carol Claes.",
                "Why do you need it?",
                "For how long?",
                "2 h",
            )
            async with heidi.expect_navigation():
                await heidi.locator("#send").tap()
            rid = re.search(r"/requests/(r_[A-Za-z0-9]+)\?sent=1$", heidi.url).group(1)  # type: ignore[union-attr]
            await shot(
                heidi,
                shots / "request-sent.png",
                "Sent.",
                "Add documents in Building A",
                "for 2 h",
                "upload the fire drill report",
                "waiting for an answer",
            )

            # -- carol gets the webhook (HMAC checked by the receiver) ---------------------------------------------
            created = (await receiver.wait_for("access_request.created"))[0]
            assert not receiver.refused
            assert created["request"]["id"] == rid and created["notified"] == ["carol"]
            assert (
                created["request"]["what"] == "Add documents in Building A" and created["request"]["duration"] == 7200
            )
            review = created["review_url"]
            assert review == f"{base}/.rolegate/admin/requests/{rid}"

            # -- dave (no manage right at a) cannot open it, nor approve it -----------------------------------------
            dave_ctx, dave = await phone_of(browser, base, "dave", "/.rolegate/admin/requests")
            assert rid not in await text_of(dave)
            opened = await dave.goto(review)
            assert opened is not None and opened.status == 403
            token = await csrf_of(dave_ctx, base)
            answer = await dave_ctx.request.post(
                f"{review}/approve", form={"csrf": token, "role": "user"}, headers={"Origin": base}, max_redirects=0
            )
            assert answer.status == 403
            answer = await dave_ctx.request.post(
                f"{base}/.rolegate/api/v1/access-requests/{rid}/approve",
                data="{}",
                headers={"Content-Type": "application/json", "X-Rolegate-CSRF": token, "Origin": base},
            )
            assert answer.status == 403

            # -- carol opens the link on her phone: who asks, what, why, and what approving changes -------------------
            carol_ctx, carol = await phone_of(browser, base, "carol", review.removeprefix(base))
            assert carol.url == review
            await shot(
                carol,
                shots / "review.png",
                "Heidi Hendriks",
                "Add documents in Building A",
                "for 2 h",
                "upload the fire drill report",
                "If you approve",
                "heidi",
                "building:a",
                "+ documents:add",
                "heidi gets role user at building:a with documents_add on, for 2 h",
                "Approve: user for 2 h",
                "Deny",
            )
            # She shortens it (the test waits it out) and looks at the preview again, then approves.
            await carol.fill("#recompute input[name=duration]", f"{GRANTED}s")
            async with carol.expect_navigation():
                await carol.locator("#recompute button").tap()
            await shot(
                carol,
                shots / "review-shortened.png",
                "+ documents:add",
                f"for {GRANTED} s",
                f"Approve: user for {GRANTED} s",
            )
            async with carol.expect_navigation():
                await carol.locator("#approve-button").tap()
            approved = await shot(
                carol,
                shots / "approved.png",
                "Approved.",
                "Approved by carol",
                "role user",
                "at building:a",
                "with documents_add on",
                "left",
            )
            assert re.search(r"until \w{3} \d\d \w{3} \d{4}, \d\d:\d\d \([A-Za-z_/]+\)", approved), approved
            event = (await receiver.wait_for("access_request.approved"))[0]
            until = event["request"]["grant"]["until"]

            # -- heidi's next request passes; My access shows it with the time left --------------------------------
            assert await post_from(heidi, base, "/buildings/a/documents") == 201
            await heidi.goto(base + "/.rolegate/admin/me")
            await shot(heidi, shots / "my-access.png", "Temporary access", "Add documents in Building A", "left")

            # -- after the until it is refused again, by itself --------------------------------------------------
            from rolegate.admin.requests import timestamp

            await asyncio.sleep(max(0.0, timestamp(until) - time.time()) + 1)
            assert await post_from(heidi, base, "/buildings/a/documents") == 403

            # -- a request for building b never reaches carol ----------------------------------------------------
            assert await post_from(heidi, base, "/buildings/b/documents") == 403
            assert "Ruth Ruiz can grant it." in await text_of(heidi)
            async with heidi.expect_navigation():
                await heidi.locator("#request-access").tap()
            await heidi.fill("textarea[name=reason]", "building b's report too")
            async with heidi.expect_navigation():
                await heidi.locator("#send").tap()
            rid_b = re.search(r"/requests/(r_[A-Za-z0-9]+)\?sent=1$", heidi.url).group(1)  # type: ignore[union-attr]
            created_b = [e for e in await receiver.wait_for("access_request.created", 2) if e["request"]["id"] == rid_b]
            assert created_b and created_b[0]["notified"] == ["ruth"]
            assert [a["user"] for a in created_b[0]["request"]["approvers"]] == ["ruth", "alice"]
            await carol.goto(base + "/.rolegate/admin/requests")
            listing = await text_of(carol)
            assert "building b's report" not in listing and "Building B" not in listing
            opened = await carol.goto(f"{base}/.rolegate/admin/requests/{rid_b}")
            assert opened is not None and opened.status == 403
            for context in (heidi_ctx, dave_ctx, carol_ctx):
                await context.close()
        finally:
            await browser.close()
    assert not receiver.refused
