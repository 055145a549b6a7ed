"""``/assignments`` (issue 19 part 3) in-process against the building-safety config and the lab directory:
who is assigned to which object, set idempotently, bounded, audited, by whom may.

On the code before assignments existed every one of these calls was a 404."""

from __future__ import annotations

import pytest

from tests.admin.conftest import API

pytestmark = pytest.mark.lab


async def test_assign_idempotent_audited_and_listed(clients, served):
    alice = await clients("alice")  # admin: manages assigns everywhere
    code, body, _ = await alice.call("PUT", f"{API}/assignments/task:42", json={"users": ["dave", "heidi"]})
    assert code == 200 and body["applied"], body
    assert [u["user"] for u in body["changed"][0]["users"]] == ["dave", "heidi"]
    assert body["changed"][0]["users"][0]["by"] == "alice" and body["changed"][0]["users"][0]["at"]
    store = served.runtime.store
    bumped = await store.counter("policy")

    # The same list again: nothing written, no audit event, no policy bump.
    code, again, _ = await alice.call("PUT", f"{API}/assignments/task:42", json={"users": ["heidi", "dave"]})
    assert code == 200 and not again["applied"] and again["unchanged"] == 1 and again["changed"] == [], again
    assert await store.counter("policy") == bumped
    assert (await store.get("assignments", "task:42")).version == 1

    code, listed, _ = await alice.call("GET", f"{API}/assignments?user=heidi")
    assert code == 200 and [i["object"] for i in listed["items"]] == ["task:42"], listed
    code, one, _ = await alice.call("GET", f"{API}/assignments/task:42")
    assert code == 200 and [u["user"] for u in one["users"]] == ["dave", "heidi"], one

    # Dave stays (keeps when and by whom), heidi goes.
    code, body, _ = await alice.call(
        "PUT",
        f"{API}/assignments",
        json={"items": [{"object": "task:42", "users": ["dave"]}, {"object": "task:77", "users": ["heidi"]}]},
    )
    assert code == 200 and body["applied"] and len(body["changed"]) == 2, body
    code, events, _ = await alice.call("GET", f"{API}/audit?kind=admin_change")
    targets = [e.get("target") for e in events["items"]]
    assert targets.count("assignments/task:42") == 2 and targets.count("assignments/task:77") == 1, targets

    code, body, _ = await alice.call("DELETE", f"{API}/assignments/task:77")
    assert code == 200 and body["applied"], body
    code, listed, _ = await alice.call("GET", f"{API}/assignments")
    assert [i["object"] for i in listed["items"]] == ["task:42"], listed


async def test_bounded_and_validated(clients):
    alice = await clients("alice")
    items = [{"object": f"task:{i}", "users": ["dave"]} for i in range(1001)]
    code, body, _ = await alice.call("PUT", f"{API}/assignments", json={"items": items})
    assert code == 413 and "at most 1000" in body["message"], body
    code, body, _ = await alice.call("PUT", f"{API}/assignments/task:42", json={"users": [f"u{i}" for i in range(101)]})
    assert code == 422, body
    code, body, _ = await alice.call("PUT", f"{API}/assignments/planet:1", json={"users": ["dave"]})
    assert code == 422 and "not declared" in str(body), body
    code, body, _ = await alice.call(
        "PUT",
        f"{API}/assignments",
        json={"items": [{"object": "task:42", "users": ["dave"]}, {"object": "task:42", "users": ["heidi"]}]},
    )
    assert code == 422 and "listed twice" in str(body), body


async def test_who_may_assign(clients):
    heidi, carol = await clients("heidi"), await clients("carol")
    # heidi (a building user) manages nothing: 403, nothing written.
    code, body, _ = await heidi.call("PUT", f"{API}/assignments/task:42", json={"users": ["heidi"]})
    assert code == 403, body
    # carol is responsible of building a: she assigns people to tasks there, not in building b.
    code, body, _ = await carol.call("PUT", f"{API}/assignments/task:42", json={"users": ["heidi"]})
    assert code == 200 and body["applied"], body
    code, body, _ = await carol.call("PUT", f"{API}/assignments/task:77", json={"users": ["heidi"]})
    assert code == 403, body


async def test_an_api_role_with_on_assigned_and_who_may_assign_with_it(clients):
    alice, carol = await clients("alice"), await clients("carol")
    role = {
        "name": "task_worker",
        "description": "works on the tasks assigned to them",
        "on_assigned": {"task": ["controls:perform", "documents:edit"]},
    }
    code, body, _ = await alice.call("POST", f"{API}/roles", json=role)
    assert code == 201, body
    code, body, _ = await alice.call("GET", f"{API}/roles/task_worker")
    assert code == 200 and body["on_assigned"] == {"task": ["controls:perform", "documents:edit"]}, body
    code, body, _ = await alice.call("POST", f"{API}/roles", json={**role, "name": "x", "on_assigned": {"job": []}})
    assert code == 422 and "unknown scope type 'job'" in str(body), body
    # carol manages assigns [controls:perform] at building a: assigning to task 42 there would now also grant
    # documents:edit (task_worker's on_assigned), which she does not manage - refused, nothing written.
    code, body, _ = await carol.call("PUT", f"{API}/assignments/task:42", json={"users": ["heidi"]})
    assert code == 403 and "documents:edit" in body["message"], body
    code, body, _ = await alice.call("PUT", f"{API}/assignments/task:42", json={"users": ["heidi"]})
    assert code == 200 and body["applied"], body
    # heidi's own page says what she is assigned to, where it lies and what it gives her there (/me).
    heidi = await clients("heidi")
    code, me, _ = await heidi.call("GET", f"{API}/me")
    assert code == 200 and [a["object"] for a in me["assignments"]] == ["task:42"], me
    assert me["assignments"][0]["permissions"] == [], "no role of hers grants on assigned tasks yet"
    code, body, _ = await alice.call("POST", f"{API}/bindings", json={"user": "heidi", "role": "task_worker"})
    assert code == 201, body
    heidi = await clients("heidi")
    code, me, _ = await heidi.call("GET", f"{API}/me")
    [mine] = me["assignments"]
    assert mine["lies_in"] == "building:a" and mine["by"] == "alice" and mine["at"], mine
    assert mine["permissions"] == ["controls:perform", "documents:edit"], mine
    code, detail, _ = await alice.call("GET", f"{API}/users/heidi")
    assert code == 200 and detail["assignments"] == me["assignments"], detail
    async with heidi.http.get(f"{heidi.base}/.rolegate/admin/me", headers={"Accept": "text/html"}) as resp:
        page = await resp.text()
    assert (
        resp.status == 200 and "Assigned to you" in page and "<code>task:42</code> in <code>building:a</code>" in page
    )


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"items": None},
        {"items": [None]},
        {"items": [{"object": "task:42"}]},
        {"items": [{"object": "task:42", "users": "heidi"}]},
        {"items": [{"object": "task", "users": ["heidi"]}]},
        {"items": [{"object": "task:42", "users": ["not a name"]}]},
        {"items": [{"object": "task:42", "users": [None]}]},
        {"items": [{"object": "task:42", "users": ["heidi"], "extra": 1}]},
    ],
)
async def test_a_malformed_bulk_assignment_is_a_4xx(clients, body):
    alice = await clients("alice")
    code, answer, _ = await alice.call("PUT", f"{API}/assignments", json=body)
    assert 400 <= code < 500 and answer["message"], (code, answer)
    assert (await alice.call("GET", f"{API}/assignments"))[1]["items"] == []
