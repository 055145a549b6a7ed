"""Every promise of the seeds, one row each, kept through ``rolegate serve`` by the people the seeds name.

Each row quotes its seed line, signs in through the lab's IdP as the person the seed names, drives the
admin API as they would (a change of rights), then the proxy as the person affected: their next request
shows the change, nothing more (issue 18: "the seeds' people do their jobs through rolegate").

People (the lab directory, deploy/lab/README.md): alice admin (bs-admins, admins), carol responsible of
building a, dave risk assessor, heidi building user; bob and trent technicians, olivia office, frank sales,
grace and judy regional managers, walter subcontractor coordinator - none of them holds a building-safety
role. Tasks 42 and 77 lie in buildings a and b (config/examples/building-safety.yaml).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.admin.conftest import API, JSON, Client, sign_in

pytestmark = pytest.mark.lab

BS, FS = "building-safety.yaml", "field-service.yaml"


@dataclass(frozen=True)
class Promise:
    seed: str  # the seed's own words
    config: str  # the example config that keeps it
    check: Callable[["People"], Awaitable[None]]

    def __str__(self) -> str:
        return self.check.__name__


class People:
    """Signed-in sessions of the lab's people against one running rolegate (opened on first use)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.clients: dict[str, Client] = {}

    async def __call__(self, username: str) -> Client:
        if username not in self.clients:
            self.clients[username] = await sign_in(self.base, username)
        return self.clients[username]

    async def close(self) -> None:
        for client in self.clients.values():
            await client.http.close()


async def proxy(client: Client, method: str, path: str) -> tuple[int, Any]:
    """The person's request through the proxy: status and JSON body (or text)."""
    async with client.http.request(method, client.base + path, headers=JSON, allow_redirects=False) as resp:
        try:
            return resp.status, await resp.json(content_type=None)
        except ValueError:
            return resp.status, await resp.text()


async def status(client: Client, method: str, path: str) -> int:
    """200 when the request passed to the backend (whatever 2xx it answered), else rolegate's status."""
    code = (await proxy(client, method, path))[0]
    return 200 if 200 <= code < 300 else code


PROMISES: list[Promise] = []


def promise(seed: str, config: str = BS) -> Callable[[Callable[[People], Awaitable[None]]], Any]:
    def register(check: Callable[[People], Awaitable[None]]) -> Any:
        PROMISES.append(Promise(seed, config, check))
        return check

    return register


# -- seed 001: building safety ---------------------------------------------------------------------------------


@promise(
    "| Change risk assessment and control scheme | ➖ | ✅ | ➖ | ➖ | -- the admin appoints a risk assessor "
    '("Add/delete/change user roles and rights | ✅" for Admin), per building ("user roles are defined per '
    'building")'
)
async def admin_appoints_a_risk_assessor_at_building_a(people: People) -> None:
    alice, grace = await people("alice"), await people("grace")
    assert await status(grace, "PUT", "/buildings/a/risk-assessment") == 403
    code, body, _ = await alice.call(
        "POST", f"{API}/bindings", json={"user": "grace", "role": "risk_assessor", "scope": "building:a"}
    )
    assert code == 201, body
    assert await status(grace, "PUT", "/buildings/a/risk-assessment") == 200, "her next request passes"
    assert await status(grace, "PUT", "/buildings/b/risk-assessment") == 403, "at building a only"


@promise("| View dashboards | If added to client | ➖ | ➖ | ➖ |")
async def admin_adds_an_admin_to_client_acme_and_its_dashboards_open(people: People) -> None:
    alice, olivia = await people("alice"), await people("olivia")
    assert await status(olivia, "GET", "/clients/acme/dashboards") == 403
    code, body, _ = await alice.call(
        "POST", f"{API}/bindings", json={"user": "olivia", "role": "client_admin", "scope": "client:acme"}
    )
    assert code == 201, body
    assert await status(olivia, "GET", "/clients/acme/dashboards") == 200
    assert await status(olivia, "GET", "/clients/globex/dashboards") == 403, "added to acme, not to globex"
    assert await status(olivia, "GET", "/buildings/a/sensors/s1") == 200, "an admin in acme's buildings"


@promise(
    '| Add/delete/change user roles and rights | ✅ | ➖ | ✅ | ➖ | -- "A single user can have different '
    'permissions for each location."'
)
async def responsible_makes_someone_responsible_at_their_building_only(people: People) -> None:
    carol, judy = await people("carol"), await people("judy")
    assert await status(judy, "POST", "/buildings/a/controls/c1/activate") == 403
    appoint = {"user": "judy", "role": "responsible", "scope": "building:a"}
    code, body, _ = await carol.call("POST", f"{API}/bindings", json=appoint)
    assert code == 201, body
    assert await status(judy, "POST", "/buildings/a/controls/c1/activate") == 200
    assert await status(judy, "POST", "/buildings/b/controls/c1/activate") == 403
    code, body, _ = await carol.call("POST", f"{API}/bindings", json={**appoint, "scope": "building:b"})
    assert code == 403 and "building:b" in body["message"], body
    code, body, _ = await carol.call("POST", f"{API}/bindings", json={**appoint, "role": "admin"})
    assert code == 403 and "admin" in body["message"], "a responsible cannot hand out admin"
    assert await status(judy, "GET", "/buildings/a/sensors/s1") == 403


@promise("| Add documents | ✅ | ✅ | If enabled in user settings | If enabled in user settings |")
async def responsible_switches_add_documents_and_it_is_add_only_at_that_building(people: People) -> None:
    carol, heidi = await people("carol"), await people("heidi")
    assert await status(heidi, "POST", "/buildings/a/documents") == 403
    code, body, _ = await carol.call(
        "PUT",
        f"{API}/user-settings/heidi",
        json={"settings": ["documents_add"], "scope": "building:a"},
        headers={"If-Match": '"v0"'},
    )
    assert code == 200, body
    assert await status(heidi, "POST", "/buildings/a/documents") == 200, "heidi adds at a"
    assert await status(heidi, "POST", "/buildings/b/documents") == 403, "not at b"
    assert await status(heidi, "PUT", "/buildings/a/documents/d1") == 403, "add is not change"
    assert await status(heidi, "DELETE", "/buildings/a/documents/d1") == 403, "add is not delete"
    code, body, _ = await carol.call(
        "PUT",
        f"{API}/user-settings/heidi",
        json={"settings": ["documents_add"], "scope": "building:b"},
        headers={"If-Match": '"v1"'},
    )
    assert code == 403 and "building:b" in body["message"], body
    # explain names role + setting + who switched it on and when.
    code, why, _ = await carol.call(
        "POST", f"{API}/explain", json={"user": "heidi", "permission": "documents:add", "scope": "building:a"}
    )
    assert code == 200 and why["allowed"], why
    reason = next(r for r in why["reasons"] if "documents_add" in r)
    assert "role user" in reason and "switched on by carol at 20" in reason, reason


@promise(
    "| View documents | ✅ | ✅ | ✅ | If enabled in user settings | -- the condition is inside the User "
    "column: a setting switched on for someone without the role grants nothing"
)
async def a_setting_on_without_the_role_gives_nothing(people: People) -> None:
    alice, bob = await people("alice"), await people("bob")
    code, body, _ = await alice.call(
        "PUT",
        f"{API}/user-settings/bob",
        json={"settings": ["documents_view", "documents_add", "documents_edit"]},
        headers={"If-Match": '"v0"'},
    )
    assert code == 200, body
    assert body["preview"]["changes"] == [], "nobody gains anything"
    for method, path in (
        ("GET", "/buildings/a/documents/d1"),
        ("POST", "/buildings/a/documents"),
        ("PUT", "/buildings/b/documents/d1"),
    ):
        assert await status(bob, method, path) == 403, (method, path)


@promise(
    "| Manage vacancy in rooms | ✅ | If enabled in user settings | If enabled in user settings | "
    "If enabled in user settings |"
)
async def responsible_switches_vacancy_for_a_risk_assessor_at_their_building(people: People) -> None:
    carol, dave = await people("carol"), await people("dave")
    assert await status(dave, "PUT", "/buildings/a/rooms/r1/vacancy") == 403
    code, body, _ = await carol.call(
        "PUT",
        f"{API}/user-settings/dave",
        json={"settings": ["vacancy"], "scope": "building:a"},
        headers={"If-Match": '"v0"'},
    )
    assert code == 200, body
    assert await status(dave, "PUT", "/buildings/a/rooms/r1/vacancy") == 200
    assert await status(dave, "PUT", "/buildings/b/rooms/r1/vacancy") == 403


@promise(
    "| Perform control measures | If added to a task | If added to a task | If added to a task | If added to "
    'a task | -- "Yes, you can assign users to specific tasks via task settings."'
)
async def responsible_adds_someone_to_a_task_in_their_building(people: People) -> None:
    carol, heidi = await people("carol"), await people("heidi")
    assert await status(heidi, "POST", "/tasks/42/controls/c1/perform") == 403
    code, body, _ = await carol.call(
        "POST", f"{API}/grants", json={"user": "heidi", "permission": "controls:perform", "object": "task:42"}
    )
    assert code == 201 and body["resource"]["scope"] == "building:a", body
    assert await status(heidi, "POST", "/tasks/42/controls/c1/perform") == 200, "heidi performs on task 42"
    assert await status(heidi, "POST", "/tasks/77/controls/c1/perform") == 403, "task 42 only"


@promise(
    "| Perform control measures | If added to a task | ... | -- a task in another building is not the "
    'responsible\'s to assign ("user roles are defined per building")'
)
async def responsible_cannot_assign_a_task_of_another_building(people: People) -> None:
    carol, trent = await people("carol"), await people("trent")
    for grant in ({"object": "task:77"}, {"object": "task:77", "scope": "building:a"}):
        code, body, _ = await carol.call(
            "POST", f"{API}/grants", json={"user": "trent", "permission": "controls:perform", **grant}
        )
        assert code == 403 and "building:b" in body["message"], body
    assert await status(trent, "POST", "/tasks/77/controls/c1/perform") == 403
    # A task that lies nowhere known is refused, with the reason, whatever is held.
    code, body, _ = await carol.call(
        "POST", f"{API}/grants", json={"user": "trent", "permission": "controls:perform", "object": "task:99"}
    )
    assert code == 403 and "task:99 lies in no known building" in body["message"], body
    alice = await people("alice")
    code, why, _ = await alice.call(
        "POST", f"{API}/explain", json={"user": "trent", "method": "POST", "url": "/tasks/99/controls/c1/perform"}
    )
    assert not why["allowed"] and any("task:99 lies in no known building" in r for r in why["reasons"]), why


# -- seed 000: field service -------------------------------------------------------------------------------------


@promise(
    "An installation company gives technicians access only to their work orders and customer data in the app "
    "but not to price lists or invoices. -- \"When you update a user's role in OutSmart, their permissions "
    'change immediately — no re-login or manual update is required."',
    FS,
)
async def administrator_binds_a_technician_who_sees_prices_hidden_at_his_next_request(people: People) -> None:
    alice, walter = await people("alice"), await people("walter")
    assert await status(walter, "GET", "/workorders/1") == 403
    code, body, _ = await alice.call("POST", f"{API}/bindings", json={"user": "walter", "role": "technician"})
    assert code == 201, body
    # "their work orders": a technician reaches the work orders assigned to him (issue 19), none before.
    assert await status(walter, "GET", "/workorders/1") == 403
    code, body, _ = await alice.call("PUT", f"{API}/assignments/workorder:1", json={"users": ["bob", "walter"]})
    assert code == 200 and body["applied"], body
    assert await status(walter, "GET", "/workorders/2") == 403, "trent's, not his"
    code, order = await proxy(walter, "GET", "/workorders/1")
    assert code == 200 and order["id"] == "1", order
    assert "price" not in order and all("price" not in line for line in order["lines"]), order
    assert await status(walter, "GET", "/invoices/1001") == 403
    assert await status(walter, "GET", "/pricelists") == 403


@promise(
    "Yes. OutSmart allows you to create custom roles tailored to your organisation [...] each with a precisely "
    "defined set of permissions.",
    FS,
)
async def administrator_defines_a_role_with_business_permissions_and_binds_it(people: People) -> None:
    alice, trent = await people("alice"), await people("trent")
    role = {
        "name": "field_engineer",
        "description": "Field engineer",
        "permissions": ["workorders:view", "planning:view"],
    }
    code, body, _ = await alice.call("POST", f"{API}/roles", json=role)
    assert code == 201, body
    code, body, _ = await alice.call(
        "POST", f"{API}/bindings", json={"user": "trent", "role": "field_engineer", "scope": "customer:c100"}
    )
    assert code == 201, body
    assert await status(trent, "GET", "/customers/c100/workorders/1") == 200


@promise(
    "| Compliance | No audit trail of who changed what | All changes logged per user — full audit trail available |", FS
)
async def every_change_is_in_the_audit_trail_with_who_made_it(people: People) -> None:
    alice = await people("alice")
    code, body, _ = await alice.call("POST", f"{API}/bindings", json={"user": "judy", "role": "dispatcher"})
    assert code == 201, body
    code, events, _ = await alice.call("GET", f"{API}/audit?kind=admin_change")
    assert code == 200
    assert any(e["user"] == "alice" and (e.get("after") or {}).get("user") == "judy" for e in events["items"]), events


@promise(
    "| Admin settings | Any user can accidentally change system configuration | Admin functions restricted to "
    "designated administrators only |",
    FS,
)
async def nobody_but_administrators_administers(people: People) -> None:
    olivia = await people("olivia")
    code, body, _ = await olivia.call("POST", f"{API}/bindings", json={"user": "olivia", "role": "finance"})
    assert code == 403, body
    assert await status(olivia, "PUT", "/settings/x") == 403


@promise("The sales department can create quotations but may not adjust the planning.", FS)
async def sales_create_quotations_but_never_change_the_planning(people: People) -> None:
    frank = await people("frank")
    assert await status(frank, "POST", "/quotations") == 200
    assert await status(frank, "PUT", "/planning/week-3") == 403


@promise("a regional manager can see only the customers and jobs within their territory", FS)
async def a_regional_manager_sees_their_region_only(people: People) -> None:
    grace = await people("grace")
    assert await status(grace, "GET", "/regions/north/workorders/x") == 200
    assert await status(grace, "GET", "/regions/south/workorders/x") == 403


@promise(
    "a regional manager can see only the customers and jobs within their territory -- jobs by id, as the app "
    "names them (issue 19: the app registered where each work order lies)",
    FS,
)
async def a_regional_manager_reaches_their_regions_work_orders_by_id(people: People) -> None:
    grace = await people("grace")
    code, order = await proxy(grace, "GET", "/workorders/1")
    assert code == 200 and order["id"] == "1" and "price" in order, "north (c100), prices shown (pricing:view)"
    assert await status(grace, "GET", "/workorders/4") == 200, "north (c101)"
    assert await status(grace, "GET", "/workorders/2") == 403, "south (c200)"
    assert await status(grace, "GET", "/workorders/3") == 403, "south (c201)"
    assert await status(grace, "GET", "/workorders/99") == 403, "unknown to the app: refused"
    alice = await people("alice")
    code, why, _ = await alice.call(
        "POST", f"{API}/explain", json={"user": "grace", "method": "GET", "url": "/workorders/99"}
    )
    assert code == 200 and why["reasons"] == ["deny: workorder:99 is not registered in the object directory"], why


@pytest.mark.parametrize("row", PROMISES, ids=str)
async def test_seed_promise(row: Promise, servers) -> None:
    proc = servers.get(row.config)
    people = People(proc.url)
    try:
        await row.check(people)
    except AssertionError as exc:
        raise AssertionError(f"seed: {row.seed}\n{exc}") from exc
    finally:
        await people.close()
