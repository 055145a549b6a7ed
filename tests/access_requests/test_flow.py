"""Issue 22 through the API and the proxy (rolegate in-process, the lab's directory, IdP and backend; seed 001's
building-safety config with an ``access_requests`` section): the 403 page for a signed-in person, a request
routed to the people who may grant it there (a real webhook receiver checks every HMAC; aiosmtpd takes the
mail), approve with a preview, the grant ending by itself, deny, expiry, the per-user rate limit, and who
may not answer. People: heidi (building user), carol (responsible of a), ruth (responsible of b), dave
(risk assessor: manages no roles), alice (admin), ivan (disabled)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from tests.access_requests.conftest import HookReceiver, Mailbox, access_requests_section, start_with
from tests.admin.conftest import API, HTML, JSON, Client, sign_in
from rolegate_lab import idp_login, lab_client_session

pytestmark = pytest.mark.lab

DOCS_A, DOCS_B = "/buildings/a/documents", "/buildings/b/documents"


@pytest.fixture
async def world(lab_idp, lab_slapd, lab_backend, rolegate_url, tmp_path, hooks: HookReceiver, mailbox: Mailbox):
    served = await start_with(
        rolegate_url,
        lab_idp,
        lab_slapd,
        lab_backend.url,
        tmp_path,
        access_requests_section(hooks.url, mailbox.port, rate="3/h"),
    )
    opened: list[Client] = []

    async def login(username: str) -> Client:
        client = await sign_in(served.url, username)
        opened.append(client)
        return client

    yield served, login
    for c in opened:
        await c.http.close()
    from rolegate.admin.request_notify import DELIVERIES

    await DELIVERIES.wait(5)
    await served.server.close()
    await served.runtime.close()


async def through(client: Client, method: str, path: str, accept: dict[str, str] = JSON) -> tuple[int, Any]:
    async with client.http.request(method, client.base + path, headers=accept, allow_redirects=False) as resp:
        text = await resp.text()
        try:
            return resp.status, json.loads(text)
        except ValueError:
            return resp.status, text


async def ask(client: Client, scope: str = "building:a", duration: str = "2h") -> tuple[int, Any]:
    status, body, _ = await client.call(
        "POST",
        f"{API}/access-requests",
        {
            "permission": "documents:add",
            "scope": scope,
            "reason": "upload the fire drill report",
            "duration": duration,
            "method": "POST",
            "path": f"/buildings/{scope.split(':')[1]}/documents",
        },
    )
    return status, body


async def test_403_page_of_a_signed_in_person(world) -> None:
    served, login = world
    heidi = await login("heidi")
    status, page = await through(heidi, "POST", DOCS_A, HTML)
    assert status == 403
    for text in (
        "Heidi Hendriks",
        "(heidi)",
        'href="/.rolegate/logout"',
        "Sign in as someone else",
        "Add documents in Building A",
        "Carol Claes can grant it.",
        "Request access",
        "Reference:",
    ):
        assert text in page, (text, page)
    # Whom to ask is the closest approver only: never who else holds what.
    assert "alice" not in page.lower() and "ruth" not in page.lower() and "dave" not in page.lower()
    assert (
        "/.rolegate/admin/requests/new?permission=documents%3Aadd&amp;method=POST&amp;path=%2Fbuildings%2Fa"
        "%2Fdocuments&amp;scope=building%3Aa" in page
    )

    status, body = await through(heidi, "POST", DOCS_A, JSON)  # the same, as fields
    assert status == 403 and body["error"] == "forbidden" and body["reference"]
    assert body["signed_in_as"] == {"user": "heidi", "name": "Heidi Hendriks"}
    assert body["sign_out"] == "/.rolegate/logout"
    assert body["tried"] == {
        "permission": "documents:add",
        "scope": "building:a",
        "what": "Add documents in Building A",
        "method": "POST",
        "path": DOCS_A,
    }
    offer = body["request_access"]
    assert offer["url"] == "/.rolegate/api/v1/access-requests" and offer["max_duration"] == "8h"
    assert offer["approvers"] == [{"user": "carol", "name": "Carol Claes", "scope": "building:a"}]
    assert offer["body"] == {"permission": "documents:add", "scope": "building:a"}

    # dave may add documents (risk assessor) but is refused sensors: only the admin can grant that.
    dave = await login("dave")
    status, body = await through(dave, "GET", "/buildings/a/sensors/1", JSON)
    assert status == 403 and body["tried"]["what"] == "Manage sensors in Building A"
    assert [a["user"] for a in body["request_access"]["approvers"]] == ["alice"]

    # Nobody signed in: nothing about the policy (a browser is sent to sign in, an API gets 401).
    async with lab_client_session() as anonymous:
        async with anonymous.post(served.url + DOCS_A, headers=JSON, allow_redirects=False) as resp:
            assert resp.status == 401
            assert "documents" not in await resp.text()
    # A path no route matches: refused before anyone is identified, the plain page.
    status, body = await through(heidi, "GET", "/nowhere/at/all", JSON)
    assert status == 403 and set(body) == {"error", "message", "reference"}


@pytest.fixture
async def plain(lab_idp, lab_slapd, lab_backend, rolegate_url, tmp_path):
    """The same rolegate without an access_requests section (the feature off)."""
    served = await start_with(rolegate_url, lab_idp, lab_slapd, lab_backend.url, tmp_path, None)
    yield served
    await served.server.close()
    await served.runtime.close()


async def test_disabled_account_page_has_its_sign_out_link(plain) -> None:
    served = plain
    async with lab_client_session() as http:
        async with http.get(
            f"{served.url}/.rolegate/login", params={"rd": "/"}, headers=HTML, allow_redirects=False
        ) as resp:
            location = resp.headers["Location"]
        callback = await idp_login(http, location, "ivan", "demo")
        async with http.get(callback.url, headers=HTML, allow_redirects=False) as resp:
            assert resp.status == 302
        async with http.get(served.url + "/buildings/a/dashboard", headers=HTML, allow_redirects=False) as resp:
            page = await resp.text()
            assert resp.status == 403 and "Your account is disabled" in page
            assert '<a href="/.rolegate/logout" id="sign-out">Sign out</a>' in page
        async with http.get(served.url + "/buildings/a/dashboard", headers=JSON, allow_redirects=False) as resp:
            body = await resp.json()
            assert (
                resp.status == 403 and body["error"] == "account_disabled" and body["sign_out"] == "/.rolegate/logout"
            )
            assert "request_access" not in body and "tried" not in body


async def test_request_approve_expire_and_who_may_not(world, hooks: HookReceiver, mailbox: Mailbox) -> None:
    served, login = world
    heidi, carol, dave, ruth = [await login(u) for u in ("heidi", "carol", "dave", "ruth")]
    assert (await through(heidi, "POST", DOCS_A))[0] == 403

    status, body = await ask(heidi)
    assert status == 201 and body["created"] is True
    request = body["request"]
    assert request["status"] == "pending" and request["what"] == "Add documents in Building A"
    assert request["duration"] == 7200
    assert [(a["user"], a["scope"]) for a in request["approvers"]] == [("carol", "building:a"), ("alice", None)]
    rid = request["id"]

    # The webhook: signed (the receiver refused nothing), retried after a 503, one delivery id for both tries.
    created = (await hooks.wait_for("access_request.created"))[0]
    assert not hooks.refused
    assert [e for d, e in hooks.attempts if d == created["_delivery"]] == ["access_request.created"] * 2
    assert created["request"]["id"] == rid and created["notified"] == ["carol"]
    assert created["review_url"] == f"{served.url}/.rolegate/admin/requests/{rid}"
    assert "email" not in created["request"]
    # The mail goes to the closest approver, not to every administrator.
    mail = (await mailbox.wait_for("carol@example.com"))[0]
    assert "Heidi Hendriks" in mail["Subject"] and "Add documents in Building A" in mail["Subject"]
    assert f"/.rolegate/admin/requests/{rid}" in mail.get_payload() and "fire drill" in mail.get_payload()
    assert not mailbox.to("alice@example.com")

    # Asking again while it is open answers the same request.
    status, again = await ask(heidi)
    assert status == 200 and again["created"] is False and again["request"]["id"] == rid

    # dave manages no role that gives it at a: he does not see it, cannot open it, cannot answer it.
    status, listing, _ = await dave.call("GET", f"{API}/access-requests")
    assert status == 200 and listing["to_review"] == []
    assert (await dave.call("GET", f"{API}/access-requests/{rid}"))[0] == 403
    status, refused, _ = await dave.call("POST", f"{API}/access-requests/{rid}/approve", {})
    assert (
        status == 403 and "no role you hold at building:a manages a role that gives documents:add" in refused["message"]
    )
    assert (await dave.call("POST", f"{API}/access-requests/{rid}/deny", {"reason": "no"}))[0] == 403
    assert (await ruth.call("POST", f"{API}/access-requests/{rid}/approve", {}))[0] == 403  # building b's
    assert (await heidi.call("POST", f"{API}/access-requests/{rid}/approve", {}))[0] == 403  # her own

    # carol sees it, with what she may grant (the least role first) and the preview of approving.
    status, listing, _ = await carol.call("GET", f"{API}/access-requests")
    assert [r["id"] for r in listing["to_review"]] == [rid]
    assert [p["role"] for p in listing["to_review"][0]["plans"]] == ["user", "responsible"]
    assert listing["to_review"][0]["plans"][0]["settings"] == ["documents_add"]
    status, dry, _ = await carol.call("POST", f"{API}/access-requests/{rid}/approve?dry_run=1", {})
    assert status == 200 and dry["applied"] is False and dry["plan"]["role"] == "user"
    assert {"user": "heidi", "scope": "building:a", "gains": ["documents:add"], "loses": []} in dry["preview"][
        "changes"
    ]
    assert (await through(heidi, "POST", DOCS_A))[0] == 403  # a preview changes nothing
    # Longer than asked is refused; shorter is the approver's call.
    assert (await carol.call("POST", f"{API}/access-requests/{rid}/approve", {"duration": "3h"}))[0] == 422
    status, done, _ = await carol.call("POST", f"{API}/access-requests/{rid}/approve", {"duration": "6s"})
    assert status == 200 and done["applied"] is True, done
    until = done["until"]
    assert done["request"]["status"] == "approved" and done["request"]["grant"]["settings"] == ["documents_add"]

    # heidi's next request passes; /me shows the access with its time left.
    assert (await through(heidi, "POST", DOCS_A))[0] == 201  # the backend's answer: it passed
    status, me, _ = await heidi.call("GET", f"{API}/me")
    assert [t["what"] for t in me["temporary_access"]] == ["Add documents in Building A"]
    assert 0 < me["temporary_access"][0]["seconds_left"] <= 6 and me["temporary_access"][0]["until"] == until
    assert me["pending_requests"] == []
    assert (await hooks.wait_for("access_request.approved"))[0]["request"]["grant"]["until"] == until
    assert "Access granted" in (await mailbox.wait_for("heidi@example.com"))[0]["Subject"]
    # Answered once: a second answer is a conflict.
    assert (await carol.call("POST", f"{API}/access-requests/{rid}/deny", {"reason": "late"}))[0] == 409

    # After the until it is refused again, by itself.
    from rolegate.admin.requests import timestamp

    await asyncio.sleep(max(0.0, timestamp(until) - time.time()) + 0.5)
    assert (await through(heidi, "POST", DOCS_A))[0] == 403
    status, me, _ = await heidi.call("GET", f"{API}/me")
    assert me["temporary_access"] == []

    # A request for building b goes to ruth (and alice), never to carol.
    mails_to_carol = len(mailbox.to("carol@example.com"))
    status, body = await ask(heidi, "building:b")
    assert status == 201
    rid_b = body["request"]["id"]
    assert [a["user"] for a in body["request"]["approvers"]] == ["ruth", "alice"]
    event = [e for e in await hooks.wait_for("access_request.created", 2) if e["request"]["id"] == rid_b][0]
    assert event["notified"] == ["ruth"] and "carol" not in json.dumps(event)
    await mailbox.wait_for("ruth@example.com")
    assert len(mailbox.to("carol@example.com")) == mails_to_carol
    status, listing, _ = await carol.call("GET", f"{API}/access-requests")
    assert rid_b not in [r["id"] for r in listing["to_review"]]
    assert (await carol.call("GET", f"{API}/access-requests/{rid_b}"))[0] == 403
    assert (await carol.call("POST", f"{API}/access-requests/{rid_b}/approve", {}))[0] == 403

    # ruth denies it, saying why; heidi is told.
    status, denied, _ = await ruth.call("POST", f"{API}/access-requests/{rid_b}/deny", {"reason": "not your building"})
    assert status == 200 and denied["status"] == "denied" and denied["answer"] == "not your building"
    assert (await hooks.wait_for("access_request.denied"))[0]["request"]["decided_by"] == "ruth"
    assert (await through(heidi, "POST", DOCS_B))[0] == 403

    # Every step is in the audit trail.
    events = await served.runtime.store.audit_find(kinds=("admin_change",), prefixes={"target": "access_requests/"})
    actions = [(json.loads(r["body"])["action"], json.loads(r["body"])["user"]) for r in events]
    assert actions == [("request", "heidi"), ("approve", "carol"), ("request", "heidi"), ("deny", "ruth")]
    grants = await served.runtime.store.audit_find(kinds=("admin_change",), equals={"user": "carol"})
    targets = [json.loads(r["body"])["target"] for r in grants]
    assert any(t.startswith("bindings/") for t in targets) and "user_settings/heidi" in targets


async def test_expiry_rate_limit_and_bad_input(world, hooks: HookReceiver) -> None:
    served, login = world
    heidi, carol = await login("heidi"), await login("carol")
    status, body = await ask(heidi)
    rid = body["request"]["id"]
    # Nobody answered within expire_after: (moved into the past here) it expires at the next look.
    store = served.runtime.store
    record = await store.get("access_requests", rid)
    await store.put("access_requests", rid, {**record.value, "expires_at": "2000-01-01T00:00:00+00:00"})
    status, listing, _ = await carol.call("GET", f"{API}/access-requests")
    assert listing["to_review"] == []
    status, got, _ = await heidi.call("GET", f"{API}/access-requests/{rid}")
    assert got["status"] == "expired"
    assert (await carol.call("POST", f"{API}/access-requests/{rid}/approve", {}))[0] in (403, 409)
    await hooks.wait_for("access_request.expired")
    expired = await store.audit_find(kinds=("admin_change",), equals={"action": "expire"})
    assert len(expired) == 1

    # Bad input: a clear 422 naming the field, never a 500.
    for bad, field in (
        ({"duration": "9h"}, "duration"),
        ({"duration": "soon"}, "duration"),
        ({"duration": 1e96}, "duration"),  # timedelta's OverflowError was a 500 (found by tests/admin/test_fuzz.py)
        ({"duration": "99999999999999999999d"}, "duration"),
        ({"permission": "nothing:here"}, "permission"),
        ({"scope": "planet:mars"}, "scope"),
        ({"reason": "   "}, "reason"),
        ({"extra": 1}, "extra"),
    ):
        payload = {"permission": "documents:add", "scope": "building:a", "reason": "x", "duration": "1h", **bad}
        status, answer, _ = await heidi.call("POST", f"{API}/access-requests", payload)
        assert status == 422 and field in json.dumps(answer["errors"]), (bad, status, answer)
    # Something heidi may do already, or something nobody can grant: 409.
    status, answer, _ = await heidi.call(
        "POST",
        f"{API}/access-requests",
        {"permission": "dashboard:view", "scope": "building:a", "reason": "x", "duration": "1h"},
    )
    assert status == 409 and "already" in answer["message"]

    # Per user: rate 3/h (the expired one counted); the fourth is 429; carol still may ask.
    assert (await ask(heidi, "building:b"))[0] == 201
    status, answer, _ = await heidi.call(
        "POST",
        f"{API}/access-requests",
        {"permission": "documents:edit", "scope": "building:a", "reason": "x", "duration": "1h"},
    )
    assert status == 201
    status, answer, _ = await heidi.call(
        "POST",
        f"{API}/access-requests",
        {"permission": "logbook:download", "scope": "building:a", "reason": "x", "duration": "1h"},
    )
    assert status == 429 and answer["error"] == "too_many_requests"
    status, answer, _ = await carol.call(
        "POST",
        f"{API}/access-requests",
        {"permission": "sensors:manage", "scope": "building:a", "reason": "x", "duration": "1h"},
    )
    assert status == 201 and [a["user"] for a in answer["request"]["approvers"]] == ["alice"]
    # Without the CSRF token a cookie session cannot ask (or answer).
    status, _, _ = await heidi.call(
        "POST",
        f"{API}/access-requests",
        {"permission": "qrcodes:edit", "scope": "building:a", "reason": "x", "duration": "1h"},
        csrf=False,
    )
    assert status == 403


async def test_off_without_the_section(plain) -> None:
    served = plain
    heidi = await sign_in(served.url, "heidi")
    try:
        status, page = await through(heidi, "POST", DOCS_A, HTML)
        assert status == 403 and "Heidi Hendriks" in page and "You tried to:" in page
        assert "Request access" not in page and "can grant it" not in page
        status, body = await through(heidi, "POST", DOCS_A, JSON)
        assert "request_access" not in body and body["tried"]["what"] == "Add documents in Building a"
        status, answer, _ = await heidi.call(
            "POST",
            f"{API}/access-requests",
            {"permission": "documents:add", "scope": "building:a", "reason": "x", "duration": "1h"},
        )
        assert status == 404
        status, me, _ = await heidi.call("GET", f"{API}/me")
        assert me["pending_requests"] == [] and me["temporary_access"] == []
    finally:
        await heidi.http.close()
