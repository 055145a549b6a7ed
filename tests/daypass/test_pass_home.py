"""Issue 25 over HTTP (rolegate in-process, the lab backend, a clock the test moves): a redeemed pass lands
on its home page, which says who it is for, where, for how long (in local time) and links what it opens;
a page outside the pass is the pass-aware 403; an ended pass's home says so.
"""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from tests.daypass.conftest import HTML, JSON, Served, redeem

pytestmark = pytest.mark.lab

AMS = ZoneInfo("Europe/Amsterdam")
# Sunday 6 December 2026, 20:48 in Amsterdam: an end-of-day pass has 3 h 12 min left.
EVENING = datetime(2026, 12, 6, 20, 48, tzinfo=AMS).timestamp()
HOME = "/.rolegate/pass/home"
TEMPLATE = {
    "role": "subcontractor",
    "scopes": ["building"],
    "max_lifetime": "24h",
    "expires": "end_of_day",
    "timezone": "Europe/Amsterdam",
    "devices": 1,
    "require": ["name", "company", "reason"],
}


async def text_of(http, url: str, headers=HTML) -> tuple[int, str, dict]:
    async with http.get(url, headers=headers, allow_redirects=False) as resp:
        return resp.status, await resp.text(), dict(resp.headers)


@pytest.fixture
async def home_served(make_served) -> Served:
    return await make_served(now=EVENING, template=dict(TEMPLATE))  # no landing: the pass home


async def test_redeemed_pass_lands_on_its_home(home_served: Served) -> None:
    served = home_served
    issued = await served.issue(scope="building:a")
    phone = served.client()
    resp = await redeem(served, phone, issued.link)
    assert resp.status == 303 and resp.headers["Location"] == HOME
    # The cookie outlives the pass by 12 h: a holder who comes back later reads "expired", not "no pass".
    assert int(resp.cookies["rolegate_pass"]["max-age"]) == (3 * 60 + 12) * 60 + 12 * 3600

    status, page, headers = await text_of(phone, served.url + HOME)
    assert status == 200, page
    for text in (
        "Jan de Vries, Vries Installaties",
        "building:a",
        "3 h 12 min",
        "Sun 06 Dec 2026, 24:00 (Europe/Amsterdam)",
        "carol",
        "replace sprinkler heads",
        "the site office (+31 20 555 0100)",
    ):
        assert text in page, text
    links = re.findall(r'<a href="([^"]+)">([^<]+)<span', page)
    assert links == [
        ("/workorders?building=a", "Workorders"),
        ("/buildings/a/dashboard", "Dashboard"),
        ("/buildings/a/documents", "Documents"),
    ]
    # Every listed link goes through the proxy to the backend.
    for target, _title in links:
        async with phone.get(served.url + target, headers=JSON, allow_redirects=False) as answer:
            body = await answer.json(content_type=None)
            assert answer.status == 200, (target, body)
            assert body["headers"]["X-Rolegate-User"] == f"daypass:{issued.id}"
    # No external asset; the one inline script is allowed by its hash and nothing else.
    assert "http" not in page.split("<body>")[1]
    script = re.search(r"<script>(.*?)</script>", page, re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    csp = headers["Content-Security-Policy"]
    assert f"script-src 'sha256-{digest}';" in csp and "default-src 'none'" in csp and "unsafe-eval" not in csp
    assert headers["Cache-Control"] == "no-store" and headers["Referrer-Policy"] == "no-referrer"

    # The link again on the same phone: "active on this device", and Continue leads home.
    status, page, _ = await text_of(phone, issued.link)
    assert status == 200 and "active on this device" in page and f'href="{HOME}"' in page

    # At the end of the local day the home says the pass expired, and so does any page of the pass.
    served.clock.set(datetime(2026, 12, 7, 0, 0, 1, tzinfo=AMS).timestamp())
    status, page, _ = await text_of(phone, served.url + HOME)
    assert status == 410 and "Day pass expired" in page and "(+31 20 555 0100)" in page
    status, page, _ = await text_of(phone, served.url + "/buildings/a/dashboard")
    assert "This day pass has expired" in page, (status, page)


async def test_a_page_outside_the_pass_is_the_pass_aware_403(home_served: Served) -> None:
    served = home_served
    issued = await served.issue(scope="building:a")
    phone = served.client()
    await redeem(served, phone, issued.link)
    for outside in ("/invoices/1", "/buildings/b/dashboard", "/no-such-page"):
        status, page, headers = await text_of(phone, served.url + outside)
        assert status == 403, (outside, page)
        assert "Not part of your day pass" in page and f'href="{HOME}"' in page and "Back to your day pass" in page
        assert "/buildings/a/dashboard" in page and "building:a" in page
        assert "Sun 06 Dec 2026, 24:00 (Europe/Amsterdam)" in page
        reference = headers["X-Rolegate-Reference"]
        assert f"Reference: {reference}" in page
        # Nothing about the policy beyond the pass's own coverage: not the permission the page needs.
        for detail in ("invoices:view", "workorders:view", "deny", "Access denied"):
            assert detail not in page, (outside, detail)
    # An API client of the same pass keeps the JSON error.
    async with phone.get(served.url + "/invoices/1", headers=JSON) as resp:
        assert resp.status == 403 and (await resp.json())["error"] == "forbidden"
    # Staff, and browsers without a pass, keep the staff page.
    stranger = served.client()
    status, page, _ = await text_of(stranger, served.url + "/no-such-page")
    assert status == 403 and "Access denied" in page and "day pass" not in page


async def test_the_home_without_a_pass_and_other_methods(home_served: Served) -> None:
    served = home_served
    stranger = served.client()
    status, page, _ = await text_of(stranger, served.url + HOME)
    assert status == 401 and "No day pass on this device" in page and "(+31 20 555 0100)" in page
    # "home" is no code: a POST is refused as a method, not looked up (nor rate limited) as a pass.
    for _ in range(3):
        async with stranger.post(served.url + HOME, data={"csrf": "x"}, headers=HTML, allow_redirects=False) as resp:
            assert resp.status == 405 and resp.headers["Allow"] == "GET, HEAD"


async def test_a_template_landing_is_filled_with_the_pass_scope(make_served) -> None:
    served = await make_served(now=EVENING, template={**TEMPLATE, "landing": "/buildings/{building}/dashboard"})
    issued = await served.issue(scope="building:a")
    phone = served.client()
    resp = await redeem(served, phone, issued.link)
    assert resp.status == 303 and resp.headers["Location"] == "/buildings/a/dashboard"


# -- times as people read them ------------------------------------------------------------------------


def test_times_in_words_with_the_zone_named() -> None:
    from rolegate.display_time import duration_text, local_text, time_html

    midnight = datetime(2026, 12, 7, 0, 0, tzinfo=AMS).timestamp()
    assert local_text(midnight, "Europe/Amsterdam", until=True) == "Sun 06 Dec 2026, 24:00 (Europe/Amsterdam)"
    assert local_text("2026-12-06T23:00:00+00:00", "Europe/Amsterdam", until=True) == (
        "Sun 06 Dec 2026, 24:00 (Europe/Amsterdam)"
    )
    assert local_text(midnight, "Europe/Amsterdam") == "Mon 07 Dec 2026, 00:00 (Europe/Amsterdam)"
    assert local_text(midnight + 5, "UTC", seconds=True, named=False) == "Sun 06 Dec 2026, 23:00:05"
    assert time_html(None, "UTC", empty="no end") == "no end"
    assert time_html("2026-12-06T23:00:00Z", "Europe/Amsterdam", until=True) == (
        '<time datetime="2026-12-06T23:00:00Z">Sun 06 Dec 2026, 24:00 (Europe/Amsterdam)</time>'
    )
    assert [duration_text(s) for s in (11_520, 720, 59, 90_000, -5)] == [
        "3 h 12 min",
        "12 min",
        "less than a minute",
        "1 d 1 h",
        "less than a minute",
    ]


async def test_display_zone(home_served: Served) -> None:
    from rolegate.display_time import display_zone

    config = home_served.runtime.config
    assert display_zone(config) == "Europe/Amsterdam"  # the zone the day-pass templates share
    assert display_zone(config.model_copy(update={"daypass": None})) == "UTC"
    server = config.server.model_copy(update={"timezone": "America/New_York"})
    assert display_zone(config.model_copy(update={"server": server})) == "America/New_York"
