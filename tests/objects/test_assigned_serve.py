"""Issue 19 parts 3-5 through ``rolegate serve`` (2 workers) with the lab: config/examples/field-service.yaml as
shipped, the lab directory and IdP, the lab backend, which registers its work orders and who works on each
(``register_objects``: placements, then ``PUT /assignments`` with the app's API key, as it does at start).

bob (technician) reaches his work orders (1 and 3) and the customers they lie in, not trent's (2) - refused with
the reason; an assignment removed is refused at the next request on every worker; the work order list is
allowed to whoever holds workorders:view somewhere, and the lab backend filters it with the assertion's
``where`` claim (verified against rolegate's JWKS): bob sees his, grace the north's, peggy all.

On the code before: the technician role granted every work order to every technician (bob read trent's), the
list showed everything to everyone allowed, and a regional manager was refused the list.
"""

from __future__ import annotations

import json

import aiohttp
import pytest

from rolegate_lab.backend import register_objects
from tests.admin.conftest import API, sign_in
from tests.objects.test_directory_serve import _deny_reasons, _rows, _status
from tests.objects.served import field_service_served
from tests.support.workers import on_every_worker

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def fs(tmp_path_factory, make_session_idp, lab_slapd, lab_backend):
    with field_service_served(
        tmp_path_factory.mktemp("assigned-serve"), make_session_idp, lab_slapd, lab_backend
    ) as proc:
        yield proc


async def _list(client) -> tuple[int, list[str]]:
    async with client.http.get(
        client.base + "/workorders", headers={"Accept": "application/json"}, allow_redirects=False
    ) as resp:
        body = await resp.json(content_type=None) if resp.status == 200 else None
        return resp.status, sorted(o["id"] for o in body["workorders"]) if body else []


async def _assign(fs, obj: str, users: list[str]) -> dict:
    headers = {"Authorization": f"Bearer {fs.app_key}", "Accept": "application/json"}
    async with aiohttp.ClientSession() as http:
        async with http.put(f"{fs.url}{API}/assignments/{obj}", json={"users": users}, headers=headers) as resp:
            body = await resp.json()
            assert resp.status == 200, body
            return body


async def test_bob_reaches_his_work_orders_and_their_customers_only(fs):
    result = await register_objects(fs.url, fs.app_key)
    assigned = {c["object"]: [u["user"] for u in c["users"]] for c in result["assignments"]["changed"]}
    assert assigned == {"workorder:1": ["bob"], "workorder:2": ["trent"], "workorder:3": ["bob"]}, result
    bob = await sign_in(fs.url, "bob")
    try:
        async with bob.http.get(fs.url + "/workorders/1", headers={"Accept": "application/json"}) as resp:
            order = await resp.json()
            assert resp.status == 200 and order["id"] == "1" and "price" not in order, order
        assert await _status(bob, "/workorders/3") == 200, "his too (in the south: no matter)"
        assert await _status(bob, "/workorders/2") == 403, "trent's"
        reasons = await _deny_reasons(fs.db, "/workorders/2", "bob")
        assert any(
            "role technician grants workorders:view only at a workorder assigned to the user" in r
            and "workorder:2 is neither" in r
            for r in reasons
        ), reasons
        assert await _status(bob, "/workorders/4") == 403, "nobody's"
        assert await _status(bob, "/customers/c100/contacts") == 200, "the customer of his work order 1"
        assert await _status(bob, "/customers/c201/contacts") == 200, "the customer of his work order 3"
        assert await _status(bob, "/customers/c200/contacts") == 403, "trent's customer"
        assert await _status(bob, "/customers/c100/workorders/2") == 403, "not every work order of his customer"
        assert await _status(bob, "/regions/north/workorders/1") == 403, "not the region"
        assert await _status(bob, "/invoices/1001") == 403
    finally:
        await bob.http.close()
    alice = await sign_in(fs.url, "alice")
    try:
        code, why, _ = await alice.call(
            "POST", f"{API}/explain", json={"user": "bob", "method": "GET", "url": "/workorders/1"}
        )
        assert code == 200 and why["allowed"], why
        assert any("bob is assigned to workorder:1 (by app:fieldservice, at " in r for r in why["reasons"]), why
    finally:
        await alice.http.close()


async def test_the_list_is_filtered_by_the_backend_with_the_where_claim(fs):
    await register_objects(fs.url, fs.app_key)
    for user, expected in (
        ("bob", ["1", "3"]),
        ("trent", ["2"]),
        ("grace", ["1", "4"]),
        ("peggy", ["1", "2", "3", "4"]),
    ):
        client = await sign_in(fs.url, user)
        try:
            assert await _list(client) == (200, expected), user
        finally:
            await client.http.close()
    for user, expected in (
        ("bob", ["c100", "c201"]),
        ("grace", ["c100", "c101"]),
        ("peggy", ["c100", "c101", "c200", "c201"]),
    ):
        client = await sign_in(fs.url, user)
        try:
            async with client.http.get(fs.url + "/customers", headers={"Accept": "application/json"}) as resp:
                assert resp.status == 200, user
                assert sorted(c["id"] for c in (await resp.json())["customers"]) == expected, user
        finally:
            await client.http.close()
    walter = await sign_in(fs.url, "walter")  # staff only: workorders:view nowhere
    try:
        assert (await _list(walter))[0] == 403
    finally:
        await walter.http.close()


async def test_an_assignment_removed_is_refused_at_the_next_request_on_every_worker(fs):
    await register_objects(fs.url, fs.app_key)
    bob = await sign_in(fs.url, "bob")
    try:
        seen = await on_every_worker(fs, bob.http, "GET", f"{fs.url}/workorders/1")
        assert {status for _, status in seen} == {200}, seen
        body = await _assign(fs, "workorder:1", [])
        assert body["applied"] and body["changed"][0]["users"] == [], body
        seen = await on_every_worker(fs, bob.http, "GET", f"{fs.url}/workorders/1")
        assert {status for _, status in seen} == {403}, f"unassigned: refused at once on every worker: {seen}"
        seen = await on_every_worker(fs, bob.http, "GET", f"{fs.url}/workorders")
        assert {status for _, status in seen} == {200}, "still his work order 3"
        assert await _list(bob) == (200, ["3"])
        events = [json.loads(b) for (b,) in _rows(fs.db, "SELECT body FROM audit WHERE kind = 'admin_change'")]
        removed = [e for e in events if e.get("target") == "assignments/workorder:1"]
        assert removed[-1]["user"] == "app:fieldservice" and removed[-1]["after"] == {"users": []}, removed[-1]
        await _assign(fs, "workorder:1", ["bob"])
        seen = await on_every_worker(fs, bob.http, "GET", f"{fs.url}/workorders/1")
        assert {status for _, status in seen} == {200}, f"assigned again: allowed at once on every worker: {seen}"
    finally:
        await bob.http.close()
        await register_objects(fs.url, fs.app_key)
