"""Issue 19 part 1, lookup on a miss, through ``rolegate serve``: field-service.yaml with work orders looked up at a
real upstream (an aiohttp server in this test) when the object directory does not know them.

grace (regional manager north) reaches a work order the lookup places in the north, is refused one it places in
the south; the answer is cached (one lookup for two requests); a 404, garbage, a parent of the wrong type, a
timeout, a 500 and the upstream down are each a deny with the reason, and counted in
``rolegate_object_lookup_total{type,result}``.

On the code before (no lookup): ``scopes.workorder.lookup`` is refused by the config ("extra keys not allowed").
"""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest
from aiohttp import web

from rolegate_lab import free_port, rolegate_client
from tests.admin.conftest import sign_in
from tests.objects.test_directory_serve import _deny_reasons
from tests.seeds.conftest import serve_config
from tests.support.serve import RolegateProcess

pytestmark = pytest.mark.lab

PLACES = {"1": "customer:c100", "9": "customer:c100", "10": "customer:c200"}


class Directory:
    """The app's lookup endpoint: GET /objects/{id}/where, counting what it is asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.runner: web.AppRunner | None = None
        self.port = free_port()

    async def where(self, request: web.Request) -> web.StreamResponse:
        object_id = request.match_info["id"]
        self.asked.append(object_id)
        if object_id in PLACES:
            return web.json_response({"parent": PLACES[object_id]})
        if object_id == "garbage":
            return web.Response(text="<html>not json</html>", content_type="text/html")
        if object_id == "wrongtype":
            return web.json_response({"parent": "region:north"})
        if object_id == "slow":
            await asyncio.sleep(5)
            return web.json_response({"parent": "customer:c100"})
        if object_id == "broken":
            return web.json_response({"error": "boom"}, status=500)
        return web.json_response({"error": "no such work order"}, status=404)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/objects/{id}/where", self.where)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@pytest.fixture
async def served(tmp_path, make_idp, lab_slapd, lab_backend):
    directory = Directory()
    await directory.start()
    url = f"http://127.0.0.1:{free_port()}"
    idp = make_idp([rolegate_client(url)])
    config = serve_config("field-service.yaml", url, idp, lab_slapd, lab_backend.url, tmp_path)
    config["upstreams"]["directory"] = {"url": f"http://127.0.0.1:{directory.port}"}
    config["scopes"]["workorder"]["lookup"] = {
        "upstream": "directory",
        "path": "/objects/{id}/where",
        "ttl": "60s",
        "negative_ttl": "30s",
        "timeout": "1s",
    }
    proc = RolegateProcess(config, tmp_path)
    proc.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if json.loads(proc.readyz()[1]).get("checks", {}).get("directory", {}).get("users"):
            break
        time.sleep(0.2)
    proc.db = tmp_path / "rolegate.db"
    yield proc, directory
    proc.stop()
    await directory.stop()


async def _status(client, path: str) -> int:
    """200 when the request reached the backend (it has no work order 9 and answers 404 itself), else rolegate's."""
    async with client.http.get(
        client.base + path, headers={"Accept": "application/json"}, allow_redirects=False
    ) as resp:
        body = await resp.json(content_type=None) if "json" in resp.headers.get("Content-Type", "") else {}
        return 200 if isinstance(body, dict) and "header_list" in body else resp.status


async def _metric(proc, result: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(proc.internal_url + "/metrics") as resp:
        text = await resp.text()
    for line in text.splitlines():
        if (
            line.startswith("rolegate_object_lookup_total{")
            and f'result="{result}"' in line
            and 'type="workorder"' in line
        ):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_a_miss_is_looked_up_cached_and_any_failure_is_a_deny_with_the_reason(served):
    proc, directory = served
    grace = await sign_in(proc.url, "grace")
    try:
        assert await _status(grace, "/workorders/9") == 200, "the lookup places it in c100, in the north"
        assert await _status(grace, "/workorders/9") == 200
        assert directory.asked.count("9") == 1, "the answer is kept (ttl): one lookup for both requests"
        assert await _status(grace, "/workorders/10") == 403, "placed in the south"
        async with grace.http.get(grace.base + "/workorders/1", headers={"Accept": "application/json"}) as resp:
            order = await resp.json()
        assert resp.status == 200 and order["price"] == 480.0, "her pricing:view at region:north reaches it too"

        refusals = {
            "404": "the app's lookup does not know it (404)",
            "garbage": 'did not answer {"parent": "customer:<id>"}',
            "wrongtype": 'did not answer {"parent": "customer:<id>"}',
            "slow": "gave no answer within 1s",
            "broken": "answered 500",
        }
        for object_id, why in refusals.items():
            assert await _status(grace, f"/workorders/{object_id}") == 403, object_id
            reasons = await _deny_reasons(proc.db, f"/workorders/{object_id}")
            assert (
                len(reasons) == 1
                and reasons[0].startswith(
                    f"deny: workorder:{object_id} is not registered in the object directory, and "
                )
                and why in reasons[0]
            ), reasons
        assert await _status(grace, "/workorders/404") == 403
        assert directory.asked.count("404") == 1, "a 'no such object' is kept too (negative_ttl)"
        # A failed lookup is never judged at a broader scope: peggy (dispatcher) holds workorders:view everywhere.
        peggy = await sign_in(proc.url, "peggy")
        try:
            assert await _status(peggy, "/workorders/broken") == 403
            assert await _status(peggy, "/workorders/404") == 403
            assert await _status(peggy, "/workorders/9") == 200
        finally:
            await peggy.http.close()

        await directory.stop()  # the app is down
        assert await _status(grace, "/workorders/11") == 403
        reasons = await _deny_reasons(proc.db, "/workorders/11")
        assert "the lookup at http://127.0.0.1:" in reasons[0] and "failed: Client" in reasons[0], reasons
        assert await _status(grace, "/workorders/9") == 200, "what was looked up stays known for its ttl"

        assert await _metric(proc, "found") == 3
        assert await _metric(proc, "cached_found") >= 2
        assert await _metric(proc, "not_found") == 1
        assert await _metric(proc, "error") == 6  # five above, and peggy's "broken" (a failure is not kept)
    finally:
        await grace.http.close()
