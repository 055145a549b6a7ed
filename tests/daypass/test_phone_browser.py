"""A phone-sized headless Chromium redeems a pass: the confirmation page renders on its own (no external
assets), the button uses the pass, and the browser lands on the building's work orders without prices."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.daypass.conftest import Served

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


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium not installed")
async def test_redeem_on_a_phone(served: Served, tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    issued = await served.issue()
    requests: list[str] = []
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            context = await browser.new_context(
                viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True, has_touch=True
            )
            page = await context.new_page()
            page.on("request", lambda r: requests.append(r.url))
            response = await page.goto(issued.link)
            assert response is not None and response.status == 200
            button = page.locator("#use-pass")
            await button.wait_for(state="visible", timeout=10_000)
            box = await button.bounding_box()
            # Big enough to tap, inside the phone's width: no horizontal scrolling.
            assert box is not None and box["height"] >= 44 and box["x"] >= 0 and box["x"] + box["width"] <= 390
            assert await page.evaluate("document.documentElement.scrollWidth") <= 390
            text = await page.inner_text("main")
            assert "Jan de Vries" in text and "building:a" in text and "carol" in text
            await page.screenshot(path=str(tmp_path / "daypass-confirm.png"), full_page=True)
            # Nothing but the page itself was fetched (no fonts, scripts or trackers that could see the code).
            assert requests == [issued.link]

            await button.tap()
            await page.wait_for_url(f"{served.url}/workorders?building=a", timeout=10_000)
            body = json.loads(await page.inner_text("body"))
            assert body["headers"]["X-Rolegate-User"] == f"daypass:{issued.id}"
            assert all("price" not in order for order in body["workorders"])
            await page.screenshot(path=str(tmp_path / "daypass-landed.png"))

            # Reopening the link on the same phone: still one device, a way back in.
            await page.goto(issued.link)
            assert "active on this device" in await page.inner_text("main")
            await page.screenshot(path=str(tmp_path / "daypass-reopened.png"))
        finally:
            await browser.close()
    record = [e for e in await served.audit_events() if e["action"] == "redeem"]
    assert len(record) == 1
    assert (tmp_path / "daypass-confirm.png").stat().st_size > 1000
