"""The subcontractor's day through the proxy: issued by a building's responsible, opened on a phone,
work orders of that building without prices, nothing elsewhere, and the end of it (expiry, revocation).

Real components: rolegate in-process (SQLite Store, audit log, compiled policy, pipeline), the lab backend
as upstream, plain HTTP clients as devices.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import pytest

from rolegate.identity.daypass import (
    InvalidPassRequest,
    IssueRefused,
    active_pass_bindings,
    load_pass,
    pass_status,
    revoke_pass,
)
from rolegate.identity.daypass.codes import new_code
from tests.daypass.conftest import CSRF_FIELD, HTML, JSON, Served, redeem

pytestmark = pytest.mark.lab


def utc(*args: int) -> float:
    return datetime(*args, tzinfo=timezone.utc).timestamp()


def from_backend(body: dict) -> bool:
    """The lab backend echoes the request it received; rolegate's own pages do not."""
    return isinstance(body, dict) and "header_list" in body


async def get_json(http, url: str, headers=JSON) -> tuple[int, dict]:
    async with http.get(url, headers=headers, allow_redirects=False) as resp:
        return resp.status, await resp.json(content_type=None)


async def test_subcontractor_journey(served: Served) -> None:
    issued = await served.issue(scope="building:a")
    assert issued.link == f"{served.url}/.rolegate/pass/{issued.code}"
    assert issued.qr_png.startswith(b"\x89PNG") and "<svg" in issued.qr_svg
    stored = (await load_pass(served.runtime.store, issued.id))[0]
    assert issued.code not in str(stored.to_dict())  # only a hash of the code is kept

    # A mail scanner / link preview fetches the link: the page, never a redemption.
    scanner = served.client()
    for _ in range(3):
        async with scanner.get(issued.link) as resp:
            assert resp.status == 200
            page = await resp.text()
    assert "carol" in page and "building:a" in page and "Jan de Vries" in page
    assert "Europe/Amsterdam" in page and "<script" not in page and "http" not in page.split("<body>")[1]
    assert resp.headers["Referrer-Policy"] == "no-referrer"
    assert (await load_pass(served.runtime.store, issued.id))[0].redeemed == []

    # A confirmation without the page's token (cross-site form, replay) does nothing.
    phone = served.client()
    async with phone.post(issued.link, data={"csrf": "forged"}, headers=HTML, allow_redirects=False) as resp:
        assert resp.status == 403
    async with scanner.post(
        issued.link,
        data={"csrf": CSRF_FIELD.search(page).group(1)},
        headers={"Origin": "https://evil.example"},
        allow_redirects=False,
    ) as resp:
        assert resp.status == 403
    assert (await load_pass(served.runtime.store, issued.id))[0].redeemed == []

    # The phone opens the link and taps the button.
    resp = await redeem(served, phone, issued.link)
    assert resp.status == 303 and resp.headers["Location"] == "/workorders?building=a"

    # Work orders of building a, without prices.
    status, body = await get_json(phone, f"{served.url}/workorders?building=a")
    assert status == 200 and from_backend(body)
    assert body["headers"]["X-Rolegate-User"] == f"daypass:{issued.id}"
    assert "rolegate_pass" not in body["headers"].get("Cookie", "")  # the pass cookie never reaches a backend
    orders = body["workorders"]
    assert orders and all("price" not in o for o in orders)
    assert all("price" not in line for o in orders for line in o["lines"])
    status, body = await get_json(phone, f"{served.url}/buildings/a/documents/logbook")
    assert status == 200 and from_backend(body)

    # Anywhere else: refused by rolegate, the backend never asked.
    for path in ("/workorders?building=b", "/buildings/c/dashboard", "/invoices/1001"):
        status, body = await get_json(phone, served.url + path)
        assert status == 403 and not from_backend(body), path

    # Re-opening the link on the same phone while its session lives is not a second device.
    async with phone.get(issued.link, headers=HTML) as again:
        assert again.status == 200 and "active on this device" in await again.text()
    record = (await load_pass(served.runtime.store, issued.id))[0]
    assert len(record.redeemed) == 1

    # A second phone: the pass is used up.
    other = served.client()
    async with other.get(issued.link, headers=HTML) as resp:
        assert resp.status == 403
        text = await resp.text()
    assert "already used on another device" in text and "site office" in text

    events = await served.audit_events()
    actions = [e["action"] for e in events]
    assert actions[:3] == ["issue", "redeem", "use"], actions
    assert all(e["pass_id"] == issued.id for e in events)
    assert events[0]["user"] == "carol" and events[0]["scope"] == "building:a"
    assert events[0]["holder"] == {"name": "Jan de Vries", "company": "Vries Installaties"}
    assert actions.count("use") == 1  # once per session, not per request


async def test_pass_grants_only_its_template_role(served: Served) -> None:
    """Issued by someone who may see prices, the pass still holds only the template's role at its scope."""
    issued = await served.issue()
    bindings = await active_pass_bindings(served.runtime.store, served.runtime.config, served.clock())
    assert [(b.daypass, b.role, b.scope) for b in bindings] == [(issued.id, "subcontractor", "building:a")]
    assert bindings[0].until.timestamp() == issued.expires_at


async def test_issuer_outside_their_building_or_template_is_refused(served: Served) -> None:
    with pytest.raises(IssueRefused):  # carol is responsible for building a only
        await served.issue(scope="building:b")
    with pytest.raises(IssueRefused):  # no rights at all
        await served.issue(issuer="mallory", groups=["staff"])
    with pytest.raises(IssueRefused):  # the template is for buildings, not a whole client
        await served.issue(scope="client:acme", groups=["responsible-a"])
    with pytest.raises(InvalidPassRequest):
        await served.issue(template="administrator")
    with pytest.raises(InvalidPassRequest):
        await served.issue(name="  ")
    with pytest.raises(InvalidPassRequest):
        await served.issue(scope="building a")
    assert await served.audit_events("issue") == []
    assert await active_pass_bindings(served.runtime.store, served.runtime.config, served.clock()) == []


async def test_expiry_at_the_end_of_the_local_day_across_the_march_dst_change(make_served) -> None:
    # Sun 30 Mar 2025 00:30 CET in Amsterdam; the day has 23 hours and ends at 22:00Z.
    served = await make_served(now=utc(2025, 3, 29, 23, 30))
    issued = await served.issue()
    assert issued.expires_at == utc(2025, 3, 30, 22, 0)
    phone = served.client()
    assert (await redeem(served, phone, issued.link)).status == 303

    served.clock.set(utc(2025, 3, 30, 21, 59, 59))  # 23:59:59 CEST
    status, body = await get_json(phone, f"{served.url}/workorders?building=a")
    assert status == 200 and from_backend(body)

    served.clock.set(utc(2025, 3, 30, 22, 0))  # midnight CEST: over, with no recompile or bump
    async with phone.get(f"{served.url}/workorders?building=a", headers=HTML, allow_redirects=False) as resp:
        text = await resp.text()
        assert resp.status == 401 and "Location" not in resp.headers
    assert "This day pass has expired" in text and "site office" in text and "header_list" not in text
    status, body = await get_json(phone, f"{served.url}/workorders?building=a")
    assert status == 401 and not from_backend(body)
    assert await pass_status(served.runtime.store, issued.id, served.clock()) == "expired"
    # The link itself now says so too, and no new device can redeem it.
    async with served.client().get(issued.link, headers=HTML) as resp:
        assert resp.status == 410 and "expired" in await resp.text()
    assert len(await served.audit_events("expire")) == 1


async def test_binding_until_bites_even_without_the_session_check(make_served) -> None:
    """The policy binding carries the pass's expiry: authz alone refuses after it, on every worker."""
    from rolegate.authz import Identity, decide

    served = await make_served(now=utc(2025, 10, 25, 22, 30))  # 00:30 CEST, the 25-hour day
    issued = await served.issue()
    assert issued.expires_at == utc(2025, 10, 25, 22, 30) + 24 * 3600  # capped by max_lifetime
    policy = await served.runtime.current_policy()
    who = Identity(f"daypass:{issued.id}", (), daypass=issued.id)
    assert decide(policy, who, "workorders:view", "building:a", now=issued.expires_at - 1).allowed
    assert not decide(policy, who, "workorders:view", "building:a", now=issued.expires_at).allowed
    assert not decide(policy, who, "pricing:view", "building:a", now=issued.expires_at - 1).allowed


async def test_revocation_in_the_middle_of_a_session(served: Served) -> None:
    issued = await served.issue()
    phone = served.client()
    assert (await redeem(served, phone, issued.link)).status == 303
    status, body = await get_json(phone, f"{served.url}/workorders?building=a")
    assert status == 200 and from_backend(body)

    record, changed = await revoke_pass(
        served.runtime.store,
        served.runtime.board,
        issued.id,
        by="carol",
        now=served.clock(),
        reason="job cancelled",
        audit=served.runtime.audit,
    )
    assert changed and record.revoked_by == "carol"
    async with phone.get(f"{served.url}/workorders?building=a", headers=HTML, allow_redirects=False) as resp:
        assert resp.status == 401
        text = await resp.text()
    assert "This day pass was revoked" in text and "header_list" not in text
    assert await pass_status(served.runtime.store, issued.id, served.clock()) == "revoked"
    assert await active_pass_bindings(served.runtime.store, served.runtime.config, served.clock()) == []
    async with served.client().get(issued.link, headers=HTML) as resp:
        assert resp.status == 410 and "revoked" in await resp.text()
    revokes = await served.audit_events("revoke")
    assert len(revokes) == 1 and revokes[0]["user"] == "carol" and revokes[0]["reason"] == "job cancelled"


async def test_a_guessed_code_gets_a_clear_page_and_is_rate_limited(make_served) -> None:
    served = await make_served(redeem_rate="5/min")
    await served.issue()
    http = served.client()
    statuses = []
    for _ in range(8):
        async with http.get(f"{served.url}/.rolegate/pass/{new_code()}", headers=HTML) as resp:
            statuses.append(resp.status)
            text = await resp.text()
            if resp.status == 404:
                assert "invalid or has expired" in text and "header_list" not in text
    assert statuses[:5] == [404] * 5 and set(statuses[5:]) == {429}, statuses
    # Malformed codes and POSTs count too, and say nothing more.
    async with http.post(f"{served.url}/.rolegate/pass/x", data={"csrf": "y"}) as resp:
        assert resp.status == 429


async def test_two_devices_racing_for_a_one_device_pass(served: Served) -> None:
    issued = await served.issue()
    phones = [served.client() for _ in range(2)]
    pages = []
    for phone in phones:  # both open the confirmation page first
        async with phone.get(issued.link, headers=HTML) as resp:
            pages.append(CSRF_FIELD.search(await resp.text()).group(1))

    async def tap(phone, token):
        async with phone.post(issued.link, data={"csrf": token}, headers=HTML, allow_redirects=False) as resp:
            return resp.status, await resp.text()

    results = await asyncio.gather(*(tap(p, t) for p, t in zip(phones, pages)))
    statuses = sorted(s for s, _ in results)
    assert statuses == [303, 403], results
    loser = next(p for p, (s, _) in zip(phones, results) if s == 403)
    status, body = await get_json(loser, f"{served.url}/workorders?building=a")
    assert status == 401 and not from_backend(body)  # no pass cookie: anonymous, no session configured for it
    record = (await load_pass(served.runtime.store, issued.id))[0]
    assert len(record.redeemed) == 1


async def test_mobile_app_redeems_through_the_token_endpoint(served: Served) -> None:
    assert served.runtime.tokens is not None, "the token stage is built whenever a session secret is set"
    issued = await served.issue()
    app = served.client()
    async with app.post(
        f"{served.url}/.rolegate/token", data={"grant_type": "urn:rolegate:daypass", "code": issued.code}
    ) as resp:
        assert resp.status == 200, await resp.text()
        grant = await resp.json()
    assert grant["token_type"] == "Bearer" and grant["access_token"]
    record = (await load_pass(served.runtime.store, issued.id))[0]
    assert [d["via"] for d in record.redeemed] == ["token"]
    # The pass was for one device: the app was it.
    async with app.post(
        f"{served.url}/.rolegate/token", data={"grant_type": "urn:rolegate:daypass", "code": issued.code}
    ) as resp:
        assert resp.status == 400 and (await resp.json())["error"] == "invalid_grant"
    async with served.client().get(issued.link, headers=HTML) as resp:
        assert resp.status == 403


async def test_mobile_app_token_reaches_the_building(served: Served) -> None:
    assert served.runtime.tokens is not None, "the token stage is built whenever a session secret is set"
    issued = await served.issue()
    app = served.client()
    async with app.post(
        f"{served.url}/.rolegate/token", data={"grant_type": "urn:rolegate:daypass", "code": issued.code}
    ) as resp:
        token = (await resp.json())["access_token"]
    status, body = await get_json(
        app, f"{served.url}/workorders?building=a", headers={**JSON, "Authorization": f"Bearer {token}"}
    )
    assert status == 200 and from_backend(body)
    # rolegate's own token is its credential, not the backend's: it is not forwarded ...
    assert not [v for k, v in body["header_list"] if k.lower() == "authorization"]
    # ... not even to a public route, where apps send it too; anyone else's bearer token passes there.
    for sent, forwarded in ((f"Bearer {token}", []), ("Bearer the-apps-own", ["Bearer the-apps-own"])):
        status, body = await get_json(app, f"{served.url}/public/x", headers={**JSON, "Authorization": sent})
        assert status == 200 and from_backend(body)
        assert [v for k, v in body["header_list"] if k.lower() == "authorization"] == forwarded


async def test_revoking_a_pass_ends_its_app_tokens(served: Served) -> None:
    assert served.runtime.tokens is not None, "the token stage is built whenever a session secret is set"
    issued = await served.issue()
    app = served.client()
    async with app.post(
        f"{served.url}/.rolegate/token", data={"grant_type": "urn:rolegate:daypass", "code": issued.code}
    ) as resp:
        grant = await resp.json()
    await revoke_pass(
        served.runtime.store,
        served.runtime.board,
        issued.id,
        by="carol",
        now=served.clock(),
        audit=served.runtime.audit,
        tokens=served.runtime.tokens.service,
    )
    async with app.post(
        f"{served.url}/.rolegate/token", data={"grant_type": "refresh_token", "refresh_token": grant["refresh_token"]}
    ) as resp:
        assert resp.status == 400 and (await resp.json())["error"] == "invalid_grant"
