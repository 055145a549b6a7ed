"""Issue 19 parts 1 and 5 through ``rolegate serve`` (2 workers) with the lab: config/examples/field-service.yaml as
shipped (work orders by id: ``scope: "of workorder:{id}"``), the lab directory and IdP, the lab backend.

The backend's ``register_objects`` places the work orders and customers with the app's API key (one bulk upsert,
as the backend does at start with ``--register``); grace (regional manager north) then reaches work order 1
(north) by id and not 3 (south); an unknown work order is refused with the reason; a second identical upsert
changes nothing (no version, no audit event); a work order moved north -> south is refused at the next request
on every worker, over fresh connections.

On the code before (no ``of`` scope): the config is refused ("unknown scope type 'of workorder'"), and with
the plain ``/workorders/**`` route grace was denied work order 1 and a technician allowed any id.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import aiohttp
import pytest

from rolegate.admin.objects import PlacementsOut
from rolegate_lab.backend import placements, register_objects
from tests.admin.conftest import API, sign_in
from tests.objects.served import field_service_served
from tests.support.workers import on_every_worker

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def fs(tmp_path_factory, make_session_idp, lab_slapd, lab_backend):
    with field_service_served(
        tmp_path_factory.mktemp("objects-serve"), make_session_idp, lab_slapd, lab_backend
    ) as proc:
        yield proc


def _rows(db: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


def _placement_events(db: Path) -> list[dict]:
    bodies = [json.loads(b) for (b,) in _rows(db, "SELECT body FROM audit WHERE kind = 'admin_change'")]
    return [b for b in bodies if str(b.get("target", "")).startswith("scope_members/")]


async def _deny_reasons(db: Path, path: str, user: str = "grace") -> list[str]:
    deadline = time.monotonic() + 30  # decisions are written by the audit's writer, a moment later
    while time.monotonic() < deadline:
        for (body,) in reversed(_rows(db, "SELECT body FROM audit WHERE kind = 'decision'")):
            event = json.loads(body)
            if event.get("path") == path and event.get("user") == user and event.get("decision") == "deny":
                return event["reasons"]
        await _sleep(0.2)
    raise AssertionError(f"no deny of {user} {path} in the audit")


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


async def _status(client, path: str) -> int:
    async with client.http.get(
        client.base + path, headers={"Accept": "application/json"}, allow_redirects=False
    ) as resp:
        return resp.status


async def test_grace_reaches_north_work_orders_by_id_once_the_app_registered_them(fs):
    grace = await sign_in(fs.url, "grace")
    try:
        assert await _status(grace, "/workorders/1") == 403, "nothing registered yet: refused, never guessed"
        assert await _deny_reasons(fs.db, "/workorders/1") == [
            "deny: workorder:1 is not registered in the object directory"
        ]

        result = await register_objects(fs.url, fs.app_key)
        changed = {c["scope"]: c["parent"] for c in result["changed"]}
        # Customers lie where the config's seed defaults say already: unchanged; the work orders are placed.
        assert changed == {
            "workorder:1": "customer:c100",
            "workorder:2": "customer:c200",
            "workorder:3": "customer:c201",
            "workorder:4": "customer:c101",
        }, result
        assert result["unchanged"] == 4 and result["applied"] is True
        PlacementsOut.model_validate({k: v for k, v in result.items() if k != "assignments"})  # as OpenAPI says

        assert await _status(grace, "/workorders/1") == 200, "north: her region"
        assert await _status(grace, "/workorders/4") == 200
        assert await _status(grace, "/workorders/3") == 403, "south"
        assert await _status(grace, "/workorders/7") == 403, "unknown"
        assert await _deny_reasons(fs.db, "/workorders/7") == [
            "deny: workorder:7 is not registered in the object directory"
        ]
        peggy = await sign_in(fs.url, "peggy")  # dispatcher, held everywhere: still not an unknown work order
        try:
            assert await _status(peggy, "/workorders/3") == 200
            assert await _status(peggy, "/workorders/7") == 403
            assert await _deny_reasons(fs.db, "/workorders/7", "peggy") == [
                "deny: workorder:7 is not registered in the object directory"
            ]
        finally:
            await peggy.http.close()
    finally:
        await grace.http.close()


async def test_the_same_upsert_twice_changes_nothing(fs):
    await register_objects(fs.url, fs.app_key)
    events = len(_placement_events(fs.db))
    versions = _rows(fs.db, "SELECT key, version FROM kv WHERE namespace = 'scope_members' ORDER BY key")
    counters = _rows(fs.db, "SELECT name, value FROM counters ORDER BY name")
    again = await register_objects(fs.url, fs.app_key)
    assert again["changed"] == [] and again["unchanged"] == len(placements()) and again["applied"] is False
    assert len(_placement_events(fs.db)) == events, "no audit noise"
    assert _rows(fs.db, "SELECT key, version FROM kv WHERE namespace = 'scope_members' ORDER BY key") == versions
    assert _rows(fs.db, "SELECT name, value FROM counters ORDER BY name") == counters, "no policy bump"


async def test_the_upsert_is_bounded_validated_whole_and_atomic(fs):
    headers = {"Authorization": f"Bearer {fs.app_key}", "Accept": "application/json"}
    before = _rows(fs.db, "SELECT key, value, version FROM kv WHERE namespace = 'scope_members' ORDER BY key")
    async with aiohttp.ClientSession() as http:
        too_many = [{"scope": f"workorder:{n}", "parent": "customer:c100"} for n in range(1001)]
        async with http.put(f"{fs.url}{API}/scope-members", json={"items": too_many}, headers=headers) as resp:
            assert resp.status == 413 and "at most 1000" in (await resp.json())["message"]
        mixed = [
            {"scope": "workorder:50", "parent": "customer:c100"},  # valid
            {"scope": "workorder:51", "parent": "region:north"},
        ]  # a work order lies in a customer
        async with http.put(f"{fs.url}{API}/scope-members", json={"items": mixed}, headers=headers) as resp:
            body = await resp.json()
            assert resp.status == 422 and body["errors"][0]["field"] == "items[1].parent", body
        twice = [
            {"scope": "workorder:50", "parent": "customer:c100"},
            {"scope": "workorder:50", "parent": "customer:c200"},
        ]
        async with http.put(f"{fs.url}{API}/scope-members", json={"items": twice}, headers=headers) as resp:
            assert resp.status == 422 and "listed twice" in (await resp.json())["errors"][0]["message"]
        region = [{"scope": "workorder:50", "parent": "customer:c100"}, {"scope": "region:west", "parent": "x:y"}]
        async with http.put(f"{fs.url}{API}/scope-members", json={"items": region}, headers=headers) as resp:
            assert resp.status == 422
    after = _rows(fs.db, "SELECT key, value, version FROM kv WHERE namespace = 'scope_members' ORDER BY key")
    assert after == before, "nothing of a refused call is written"


async def test_a_person_needs_a_managing_role_at_the_parent(fs):
    olivia = await sign_in(fs.url, "olivia")  # office: manages nothing
    try:
        status, body, _ = await olivia.call(
            "PUT", f"{API}/scope-members", json={"items": [{"scope": "workorder:60", "parent": "customer:c100"}]}
        )
        assert status == 403, body
    finally:
        await olivia.http.close()
    alice = await sign_in(fs.url, "alice")  # administrator: manages everything
    try:
        status, body, _ = await alice.call(
            "PUT",
            f"{API}/scope-members?dry_run=1",
            json={"items": [{"scope": "workorder:60", "parent": "customer:c100"}]},
        )
        assert status == 200 and body["applied"] is False and body["changed"][0]["scope"] == "workorder:60", body
    finally:
        await alice.http.close()


async def test_a_work_order_moved_south_is_refused_at_the_next_request_on_every_worker(fs):
    await register_objects(fs.url, fs.app_key)
    grace = await sign_in(fs.url, "grace")
    headers = {"Authorization": f"Bearer {fs.app_key}", "Accept": "application/json"}
    try:
        seen = await on_every_worker(fs, grace.http, "GET", f"{fs.url}/workorders/4")
        assert {status for _, status in seen} == {200}, seen
        async with aiohttp.ClientSession() as http:
            async with http.put(
                f"{fs.url}{API}/scope-members",
                headers=headers,
                json={"items": [{"scope": "workorder:4", "parent": "customer:c200"}]},
            ) as resp:
                body = await resp.json()
                assert resp.status == 200 and body["changed"] == [
                    {
                        "scope": "workorder:4",
                        "parent": "customer:c200",
                        "before": "customer:c101",
                        "version": body["changed"][0]["version"],
                    }
                ], body
        seen = await on_every_worker(fs, grace.http, "GET", f"{fs.url}/workorders/4")
        assert {status for _, status in seen} == {403}, f"moved south: refused at once on every worker: {seen}"
        moved = [e for e in _placement_events(fs.db) if e["target"] == "scope_members/workorder:4"]
        assert moved[-1]["before"]["parent"] == "customer:c101" and moved[-1]["after"]["parent"] == "customer:c200"
        assert moved[-1]["user"] == "app:fieldservice", moved[-1]
    finally:
        await grace.http.close()
        await register_objects(fs.url, fs.app_key)  # back north, for any later test
