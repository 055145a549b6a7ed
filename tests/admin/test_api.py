"""The admin API over real HTTP, signed in through the lab's IdP, directory from the lab's slapd, SQLite store.

Users (seed 001 roles): alice = bs-admins (admin everywhere), carol = responsible at building:a,
heidi = bs-users (user everywhere), bob = technicians (no building role).
"""

from __future__ import annotations

import pytest
import yaml

from tests.admin.conftest import API, JSON

pytestmark = pytest.mark.lab

GROUP_BINDING = {"group": "technicians", "role": "user", "scope": "building:a"}


async def status_of(client, path: str, method: str = "GET") -> int:
    async with client.http.request(method, client.base + path, headers=JSON, allow_redirects=False) as resp:
        await resp.read()
        return resp.status


async def test_binding_crud_with_etags_and_preconditions(clients):
    alice = await clients("alice")
    status, body, headers = await alice.call("POST", f"{API}/bindings", json=GROUP_BINDING)
    assert status == 201, body
    key = body["resource"]["id"]
    assert key == (await alice.call("GET", f"{API}/bindings?group=technicians"))[1]["items"][0]["id"]
    assert body["applied"] is True and headers["ETag"] == '"v1"'
    assert {"user": "bob", "scope": "building:a"}.items() <= body["preview"]["changes"][0].items()

    status, got, headers = await alice.call("GET", f"{API}/bindings/{key}")
    assert status == 200 and got["group"] == "technicians" and got["created_by"] == "alice"
    etag = headers["ETag"]

    changed = {**GROUP_BINDING, "scope": "building:b"}
    status, body, _ = await alice.call("PUT", f"{API}/bindings/{key}", json=changed)
    assert status == 428, "an update without If-Match is refused"
    status, body, _ = await alice.call("PUT", f"{API}/bindings/{key}", json=changed, headers={"If-Match": '"v7"'})
    assert status == 412
    status, body, headers = await alice.call("PUT", f"{API}/bindings/{key}", json=changed, headers={"If-Match": etag})
    assert status == 200, body
    gains = {(c["user"], c["scope"]): (c["gains"], c["loses"]) for c in body["preview"]["changes"]}
    assert "dashboard:view" in gains[("bob", "building:b")][0] and "dashboard:view" in gains[("bob", "building:a")][1]
    new_etag = headers["ETag"]
    assert new_etag != etag
    status, body, _ = await alice.call("DELETE", f"{API}/bindings/{key}", headers={"If-Match": etag})
    assert status == 412, "the old ETag is stale after the update"
    status, body, _ = await alice.call("DELETE", f"{API}/bindings/{key}", headers={"If-Match": new_etag})
    assert status == 200 and body["applied"]
    assert (await alice.call("GET", f"{API}/bindings/{key}"))[0] == 404

    status, body, _ = await alice.call("DELETE", f"{API}/bindings/config-0", headers={"If-Match": '"v0"'})
    assert status == 409 and "config file" in body["message"]


async def test_validation_errors_name_the_field(clients):
    alice = await clients("alice")
    status, body, _ = await alice.call("POST", f"{API}/bindings", json={"group": "staff", "role": "nope"})
    assert status == 422 and body["errors"][0]["field"] == "role"
    status, body, _ = await alice.call(
        "POST", f"{API}/bindings", json={"group": "staff", "role": "user", "scope": "building a"}
    )
    assert status == 422 and [e["field"] for e in body["errors"]] == ["scope"]
    status, body, _ = await alice.call(
        "POST", f"{API}/bindings", json={"group": "staff", "role": "user", "scope": "planet:mars"}
    )
    assert status == 422 and body["errors"][0]["field"] == "scope" and "not declared" in body["errors"][0]["message"]
    status, body, _ = await alice.call("POST", f"{API}/bindings", json={"group": "staff", "role": "user", "colour": 1})
    assert status == 422 and body["errors"][0]["field"] == "colour"
    status, body, _ = await alice.call(
        "POST", f"{API}/roles", json={"name": "viewer", "permissions": ["dashboard:view", "nope:x"]}
    )
    assert status == 422 and body["errors"][0]["field"] == "permissions[1]"
    status, body, _ = await alice.call(
        "POST", f"{API}/bindings", json={"user": "bob", "permission": "controls:perform"}
    )
    assert status == 422 and "object" in [e["field"] for e in body["errors"]]
    async with alice.http.post(
        f"{alice.base}{API}/bindings",
        data=b"[" * 5000 + b"]" * 5000,
        headers={**JSON, "Content-Type": "application/json", "X-Rolegate-CSRF": alice.csrf},
    ) as resp:
        assert resp.status in (400, 422) and "not valid JSON" in await resp.text()  # nested past the limit: no 500


async def test_delegated_admin_manages_their_building_only(clients):
    """Delegation by roles: carol's responsible role (at building:a) manages the roles responsible and user
    there; alice's admin role manages everything (issue 18: "admins cannot administer")."""
    carol = await clients("carol")
    ok = {"user": "bob", "role": "user", "scope": "building:a"}
    status, body, _ = await carol.call("POST", f"{API}/bindings", json=ok)
    assert status == 201, body
    status, body, _ = await carol.call("POST", f"{API}/bindings", json={**ok, "scope": "building:b"})
    assert status == 403 and "building:b" in body["message"]
    status, body, _ = await carol.call("POST", f"{API}/bindings", json={"user": "bob", "role": "user"})
    assert status == 403, "a building's responsible cannot bind globally"
    status, body, _ = await carol.call("POST", f"{API}/bindings", json={**ok, "role": "admin"})
    assert status == 403 and "role admin" in body["message"] and "manages" in body["message"], body
    status, body, _ = await carol.call("POST", f"{API}/bindings", json={**ok, "role": "risk_assessor"})
    assert status == 403 and "risk_assessor" in body["message"]
    status, body, _ = await carol.call("POST", f"{API}/bindings", json={**ok, "user": "heidi", "role": "responsible"})
    assert status == 201, "carol makes heidi a (2nd) responsible of her building"
    status, body, _ = await carol.call("POST", f"{API}/roles", json={"name": "mine", "permissions": ["dashboard:view"]})
    assert status == 403, "carol has no rolegate:roles:edit"
    # alice, admin everywhere, appoints a risk assessor (she need not hold risk_assessment:edit herself).
    alice = await clients("alice")
    status, body, _ = await alice.call(
        "POST", f"{API}/bindings", json={"user": "heidi", "role": "risk_assessor", "scope": "building:a"}
    )
    assert status == 201, body
    # carol cannot remove alice's global binding either
    status, body, _ = await alice.call("POST", f"{API}/bindings", json={"user": "heidi", "role": "responsible"})
    assert status == 201
    key = [b for b in (await alice.call("GET", f"{API}/bindings?user=heidi"))[1]["items"] if b["scope"] is None][0][
        "id"
    ]
    status, body, _ = await carol.call("DELETE", f"{API}/bindings/{key}", headers={"If-Match": '"v1"'})
    assert status == 403


async def test_roles_with_task_settings_assign_people_to_a_task(clients):
    """Seed 001: "you can assign users to specific tasks via task settings". risk_assessor and responsible
    manage controls:perform (manages.assigns): their holders add people to a task where they hold the role,
    without holding the permission themselves (nobody does, by role)."""
    dave, heidi, carol = await clients("dave"), await clients("heidi"), await clients("carol")
    perform = "/tasks/42/controls/7/perform"
    assert (await heidi.call("POST", perform))[0] == 403
    grant = {"user": "heidi", "permission": "controls:perform", "object": "task:42"}
    status, created, headers = await dave.call("POST", f"{API}/grants", json=grant)  # risk assessor, everywhere
    assert status == 201, created
    assert (await heidi.call("POST", perform))[0] == 200, "added to task 42: the next request passes"
    assert (await heidi.call("POST", "/tasks/43/controls/7/perform"))[0] == 403, "task 42 only"
    # manages.assigns covers that permission on objects, nothing else: dave holds documents:edit, may not grant it.
    status, body, _ = await dave.call("POST", f"{API}/grants", json={**grant, "permission": "documents:edit"})
    assert status == 403, body
    # A user role manages nothing: heidi cannot add bob to her task.
    status, body, _ = await heidi.call("POST", f"{API}/grants", json={**grant, "user": "bob"})
    assert status == 403, body
    # carol is responsible at building:a: the tasks lying in a, and the grant is made at building:a.
    status, body, _ = await carol.call("POST", f"{API}/grants", json={**grant, "user": "bob"})
    assert status == 201 and body["resource"]["scope"] == "building:a", body
    status, body, _ = await carol.call("POST", f"{API}/grants", json={**grant, "user": "bob", "object": "task:77"})
    assert status == 403 and "building:b" in body["message"], body
    status, body, _ = await carol.call(
        "POST", f"{API}/grants", json={**grant, "object": "task:77", "scope": "building:a"}
    )
    assert status == 403 and "task:77 lies in building:b" in body["message"], body
    # Whoever may assign it may take it away again.
    status, body, _ = await dave.call(
        "DELETE", f"{API}/bindings/{created['resource']['id']}", headers={"If-Match": headers["ETag"]}
    )
    assert status == 200, body
    assert (await heidi.call("POST", perform))[0] == 403
    # The role shows what it manages.
    alice = await clients("alice")
    status, role, _ = await alice.call("GET", f"{API}/roles/risk_assessor")
    assert role["manages"] == {"assigns": ["controls:perform"]}, role
    status, role, _ = await alice.call("GET", f"{API}/roles/user")
    assert role["conditional"]["documents_add"] == ["documents:add"], role
    # An API role may manage too: no more than its author manages (alice: everything).
    lead = {"name": "task_lead", "permissions": ["tasks:order"], "manages": {"assigns": ["controls:perform"]}}
    status, body, _ = await alice.call("POST", f"{API}/roles", json=lead)
    assert status == 201 and body["resource"]["manages"] == {"assigns": ["controls:perform"]}, body
    status, body, _ = await alice.call(
        "POST", f"{API}/roles", json={**lead, "name": "x", "manages": {"assigns": ["nope:x"]}}
    )
    assert status == 422 and body["errors"][0]["field"] == "manages.assigns[0]", body
    status, body, _ = await alice.call("POST", f"{API}/roles", json={"name": "y", "assigns": ["controls:perform"]})
    assert status == 422 and "manages" in body["errors"][0]["message"], body


async def test_apps_register_their_tasks(clients):
    """Tasks are scopes inside buildings: an app places task 50 in building a, and carol's grant on it works."""
    carol, heidi, alice = await clients("carol"), await clients("heidi"), await clients("alice")
    status, body, _ = await carol.call("PUT", f"{API}/scope-members/task:50", json={"parent": "building:b"})
    assert status == 403 and "building:b" in body["message"], body
    status, body, headers = await carol.call("PUT", f"{API}/scope-members/task:50", json={"parent": "building:a"})
    assert status == 201, body
    status, body, _ = await carol.call("PUT", f"{API}/scope-members/task:50", json={"parent": "client:acme"})
    assert status == 422 and body["errors"][0]["field"] == "parent"
    status, listed, _ = await alice.call("GET", f"{API}/scope-members?type=task")
    found = {i["scope"]: (i["parent"], i["source"]) for i in listed["items"]}
    assert found["task:50"] == ("building:a", "api") and found["task:42"] == ("building:a", "config")
    status, body, _ = await carol.call(
        "POST", f"{API}/grants", json={"user": "heidi", "permission": "controls:perform", "object": "task:50"}
    )
    assert status == 201, body
    assert (await heidi.call("POST", "/tasks/50/controls/1/perform"))[0] == 200
    # Moving it to building b takes carol's grant (made at building:a) away at the next request; carol cannot.
    status, body, _ = await carol.call(
        "PUT", f"{API}/scope-members/task:50", json={"parent": "building:b"}, headers={"If-Match": headers["ETag"]}
    )
    assert status == 403
    status, body, _ = await alice.call(
        "PUT", f"{API}/scope-members/task:50", json={"parent": "building:b"}, headers={"If-Match": headers["ETag"]}
    )
    assert status == 200, body
    assert (await heidi.call("POST", "/tasks/50/controls/1/perform"))[0] == 403


async def test_preview_writes_nothing_and_apply_takes_effect_at_the_next_request(clients):
    alice = await clients("alice")
    bob = await clients("bob")
    assert await status_of(bob, "/buildings/a/dashboard") == 403
    status, body, _ = await alice.call("POST", f"{API}/bindings?dry_run=1", json=GROUP_BINDING)
    assert status == 200 and body["applied"] is False
    users = {c["user"] for c in body["preview"]["changes"]}
    assert users == {"bob", "trent"}, "technicians' members; ivan is disabled and gains nothing"
    status, body, _ = await alice.call(
        "POST", f"{API}/preview", json={"target": "bindings", "action": "create", "value": GROUP_BINDING}
    )
    assert status == 200 and {c["user"] for c in body["preview"]["changes"]} == {"bob", "trent"}
    assert (await alice.call("GET", f"{API}/bindings?group=technicians"))[1]["items"] == []
    assert await status_of(bob, "/buildings/a/dashboard") == 403

    status, body, _ = await alice.call("POST", f"{API}/bindings", json=GROUP_BINDING)
    assert status == 201
    assert await status_of(bob, "/buildings/a/dashboard") == 200
    assert await status_of(bob, "/buildings/b/dashboard") == 403


async def test_roles_crud_and_user_settings(clients):
    alice = await clients("alice")
    heidi = await clients("heidi")
    status, body, headers = await alice.call(
        "POST",
        f"{API}/roles",
        json={"name": "viewer", "description": "sees documents", "permissions": ["documents:view", "tasks:history"]},
    )
    assert status == 201, body
    status, role, headers = await alice.call("GET", f"{API}/roles/viewer")
    assert role["source"] == "api" and role["effective"] == ["documents:view", "tasks:history"]
    status, body, _ = await alice.call(
        "POST", f"{API}/roles", json={"name": "editor", "permissions": ["risk_assessment:edit"]}
    )
    assert status == 201, "business permissions are the role editor's to define (she need not hold them)"
    status, body, _ = await alice.call(
        "PUT", f"{API}/roles/admin", json={"permissions": []}, headers={"If-Match": '"v0"'}
    )
    assert status == 409, "config roles are read-only through the API"
    status, body, _ = await alice.call(
        "POST", f"{API}/bindings", json={"user": "heidi", "role": "viewer", "scope": "building:b"}
    )
    assert status == 201
    assert await status_of(heidi, "/buildings/b/documents/plan.pdf") == 200
    status, body, _ = await alice.call("DELETE", f"{API}/roles/viewer", headers={"If-Match": headers["ETag"]})
    assert status == 409 and "bindings" in body["message"]

    status, body, _ = await alice.call("PUT", f"{API}/user-settings/heidi", json={"settings": ["documents_view"]})
    assert status == 428
    status, body, _ = await alice.call(
        "PUT", f"{API}/user-settings/heidi", json={"settings": ["documents_view", "x"]}, headers={"If-Match": '"v0"'}
    )
    assert status == 422 and body["errors"][0]["field"] == "settings[1]"
    assert await status_of(heidi, "/buildings/a/documents/plan.pdf") == 403
    status, body, headers = await alice.call(
        "PUT", f"{API}/user-settings/heidi", json={"settings": ["documents_view"]}, headers={"If-Match": '"v0"'}
    )
    assert status == 200 and headers["ETag"] == '"v1"'
    assert any("documents:view" in c["gains"] for c in body["preview"]["changes"])
    assert await status_of(heidi, "/buildings/a/documents/plan.pdf") == 200
    assert await status_of(heidi, "/buildings/a/documents/plan.pdf", "DELETE") == 403, "view is not delete"
    status, body, _ = await alice.call(
        "PUT", f"{API}/user-settings/heidi", json={"settings": []}, headers={"If-Match": '"v0"'}
    )
    assert status == 412
    status, got, _ = await alice.call("GET", f"{API}/user-settings/heidi")
    assert got["on"] == [
        {"setting": "documents_view", "scope": None, "by": "alice", "at": got["on"][0]["at"], "source": "api"}
    ], got


async def test_audit_export_me_explain_matrix(clients):
    alice = await clients("alice")
    heidi = await clients("heidi")
    await alice.call("POST", f"{API}/bindings", json=GROUP_BINDING)
    await alice.call("POST", f"{API}/grants", json={"user": "bob", "permission": "tasks:order", "object": "task:42"})

    status, body, _ = await alice.call("GET", f"{API}/audit?kind=admin_change")
    assert status == 200
    change = [e for e in body["items"] if e["after"] and e["after"].get("group") == "technicians"][0]
    assert change["user"] == "alice" and change["before"] is None and change["action"] == "create"
    assert (await heidi.call("GET", f"{API}/audit"))[0] == 403

    status, text, headers = await alice.call("GET", f"{API}/export")
    exported = yaml.safe_load(text)
    assert {"group": "technicians", "role": "user", "scope": "building:a"} in exported["bindings"]
    assert {"group": "bs-admins", "role": "admin"} in exported["bindings"]
    assert set(exported) >= {"roles", "bindings", "user_settings", "users", "permissions", "scopes"}

    status, me, _ = await heidi.call("GET", f"{API}/me")
    assert status == 200 and me["user"] == "heidi" and me["signed_in_until"]
    assert me["scopes"][0]["scope"] is None and me["scopes"][0]["roles"] == ["user"]
    assert me["admin"]["rolegate:bindings:edit"] == []

    status, body, _ = await alice.call(
        "POST", f"{API}/explain", json={"user": "bob", "method": "GET", "url": "/buildings/a/dashboard"}
    )
    assert status == 200 and body["allowed"] and any("technicians" in r for r in body["reasons"])
    status, body, _ = await alice.call(
        "POST", f"{API}/explain", json={"user": "heidi", "permission": "sensors:manage", "scope": "building:a"}
    )
    assert status == 200 and not body["allowed"]
    assert (await heidi.call("POST", f"{API}/explain", json={"user": "alice", "permission": "sensors:manage"}))[
        0
    ] == 403
    status, body, _ = await heidi.call(
        "POST", f"{API}/explain", json={"permission": "dashboard:view", "scope": "building:a"}
    )
    assert status == 200 and body["allowed"], "everyone may explain their own access"

    status, matrix, _ = await alice.call("GET", f"{API}/matrix")
    assert status == 200 and "admin" in matrix["roles"]
    status, md, headers = await alice.call("GET", f"{API}/matrix?format=md&roles=admin,risk_assessor,responsible,user")
    assert status == 200 and md.startswith("| Permission | admin | risk_assessor | responsible | user |")
    assert (await alice.call("GET", f"{API}/matrix?format=pdf"))[0] == 422
    assert (await heidi.call("GET", f"{API}/matrix"))[0] == 403

    status, body, _ = await alice.call("GET", f"{API}/users/bob")
    assert status == 200 and "technicians" in body["groups"]
    assert body["object_grants"] == [{"permission": "tasks:order", "object": "task:42", "scope": None, "until": None}]
    status, body, _ = await alice.call("GET", f"{API}/sync/status")
    assert status == 200 and body["configured"] and body["snapshot"]["users"] >= 15


async def test_writes_from_a_cookie_session_need_the_csrf_token(clients):
    alice = await clients("alice")
    status, body, _ = await alice.call("POST", f"{API}/bindings", json=GROUP_BINDING, csrf=False)
    assert status == 403 and "CSRF" in body["message"]
    status, body, _ = await alice.call(
        "POST", f"{API}/bindings", json=GROUP_BINDING, headers={"Origin": "https://evil.example"}
    )
    assert status == 403
    assert (await alice.call("GET", f"{API}/bindings?group=technicians"))[1]["items"] == []


async def test_anonymous_calls_get_401_and_the_openapi_document_is_public(served):
    import aiohttp

    async with aiohttp.ClientSession() as http:
        async with http.get(f"{served.url}{API}/me", headers=JSON) as resp:
            assert resp.status == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")
        async with http.get(f"{served.url}{API}/openapi.json") as resp:
            doc = await resp.json()
    assert doc["openapi"] == "3.1.0"
    assert {"/.rolegate/api/v1/bindings", "/.rolegate/api/v1/me", "/.rolegate/api/v1/explain"} <= set(doc["paths"])


async def test_day_pass_issue_list_revoke(clients):
    alice = await clients("alice")
    carol = await clients("carol")
    status, body, _ = await carol.call(
        "POST",
        f"{API}/daypasses",
        json={
            "template": "subcontractor",
            "scope": "building:b",
            "name": "Sam",
            "company": "Fixit",
            "reason": "boiler",
        },
    )
    assert status == 403, "carol issues passes for building a only"
    status, issued, _ = await carol.call(
        "POST",
        f"{API}/daypasses",
        json={
            "template": "subcontractor",
            "scope": "building:a",
            "name": "Sam",
            "company": "Fixit",
            "reason": "boiler",
        },
    )
    assert status == 201, issued
    assert issued["link"].startswith(alice.base + "/.rolegate/pass/") and issued["qr_svg"].lstrip().startswith("<svg")
    status, body, _ = await carol.call(
        "POST",
        f"{API}/daypasses",
        json={"template": "subcontractor", "scope": "building:a", "name": "", "company": "Fixit", "reason": "boiler"},
    )
    assert status == 422 and body["errors"][0]["field"] == "name"
    status, listing, _ = await alice.call("GET", f"{API}/daypasses")
    assert [p["id"] for p in listing["items"]] == [issued["id"]] and listing["items"][0]["status"] == "active"
    status, body, _ = await alice.call("DELETE", f"{API}/daypasses/{issued['id']}")
    assert status == 200 and body["status"] == "revoked"


@pytest.mark.parametrize(
    "body, status",
    [
        ({}, 422),
        ({"items": "task:1"}, 422),
        ({"items": [None]}, 422),
        ({"items": [{"scope": "task:1"}]}, 422),
        ({"items": [{"scope": "task", "parent": "building:a"}]}, 422),
        ({"items": [{"scope": "nope:1", "parent": "building:a"}]}, 422),
        ({"items": [{"scope": "client:acme", "parent": "building:a"}]}, 422),
        ({"items": [{"scope": "task:1", "parent": "task:2"}]}, 422),
        ({"items": [{"scope": "task:1", "parent": "building:a"}, {"scope": "task:1", "parent": "building:b"}]}, 422),
        ({"items": [{"scope": "task:1", "parent": "building:a", "extra": 1}]}, 422),
        ({"items": [{"scope": f"task:{i}", "parent": "building:a"} for i in range(1001)]}, 413),
    ],
)
async def test_bulk_placement_refuses_bad_input_with_a_4xx(clients, body, status):
    """Whatever the list holds, a bad one is a 4xx naming what is wrong, never a 500, and nothing is written."""
    alice = await clients("alice")
    got, answer, _ = await alice.call("PUT", f"{API}/scope-members", json=body)
    assert got == status, answer
    assert answer["message"], answer
    listed = (await alice.call("GET", f"{API}/scope-members?type=task"))[1]
    assert {i["source"] for i in listed["items"]} == {"config"}, listed
