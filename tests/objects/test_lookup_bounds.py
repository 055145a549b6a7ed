"""The object lookup's bounds, against a real upstream (an aiohttp server): concurrent misses on one object share
one lookup, ``max_entries`` bounds the answers kept, ``concurrency`` the lookups at a time (a request waiting for a
slot past ``timeout`` is refused, never allowed)."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from rolegate.authz.explain import Requirement
from rolegate.config import load_config_text
from rolegate.server.object_lookup import ObjectLookups

CONFIG = """
server: {{listen: "127.0.0.1:0", public_url: "http://127.0.0.1:8080"}}
upstreams: {{app: {{url: "http://127.0.0.1:{port}"}}}}
permissions: [x:view]
roles: {{r: {{permissions: [x:view]}}}}
scopes:
  site: {{}}
  job: {{parent: site, lookup: {{upstream: app, path: "/jobs/{{id}}/site", ttl: 60s, max_entries: {entries},
                                 concurrency: {concurrency}, timeout: 1s}}}}
routes: []
"""


@pytest.fixture
async def upstream(unused_tcp_port):
    asked: list[str] = []

    async def where(request: web.Request) -> web.Response:
        asked.append(request.match_info["id"])
        await asyncio.sleep(
            float(request.query.get("delay", "0")) or (3 if request.match_info["id"] == "slow" else 0.2)
        )
        return web.json_response({"parent": "site:s1"})

    app = web.Application()
    app.router.add_get("/jobs/{id}/site", where)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", unused_tcp_port).start()
    yield unused_tcp_port, asked
    await runner.cleanup()


def _lookups(port: int, entries: int = 100, concurrency: int = 4) -> ObjectLookups:
    config = load_config_text(CONFIG.format(port=port, entries=entries, concurrency=concurrency))
    lookups = ObjectLookups.from_config(config)
    assert lookups is not None
    return lookups


def _req(obj: str) -> Requirement:
    return Requirement("enforce", "x:view", obj, None, None, True)


async def test_concurrent_misses_on_one_object_share_one_lookup(upstream):
    port, asked = upstream
    lookups = _lookups(port)
    try:
        answers = await asyncio.gather(*(lookups.place(_req("job:1")) for _ in range(10)))
        assert {a.parent for a in answers} == {"site:s1"} and asked == ["1"]
    finally:
        await lookups.close()


async def test_max_entries_bounds_what_is_kept(upstream):
    port, asked = upstream
    lookups = _lookups(port, entries=4)
    try:
        for n in range(10):
            await lookups.place(_req(f"job:{n}"))
        assert len(lookups.types["job"].cache) <= 4
        await lookups.place(_req("job:9"))
        assert asked.count("9") == 1, "the newest answers are kept"
    finally:
        await lookups.close()


async def test_a_request_waiting_for_a_slot_past_the_timeout_is_refused(upstream):
    port, asked = upstream
    lookups = _lookups(port, concurrency=1)
    try:
        slow, other = await asyncio.gather(lookups.place(_req("job:slow")), lookups.place(_req("job:2")))
        assert slow.parent is None and "gave no answer within 1s" in slow.problem
        assert other.parent is None and "gave no answer within 1s" in other.problem, "it never got the slot"
        # Both deadlines are 1 s from the start: when the slow lookup's ends it frees the slot, and on a loaded
        # machine the waiting one may take it in the moment before its own ends (and be cut off at once).
        assert asked[0] == "slow" and asked[1:] in ([], ["2"]), asked
    finally:
        await lookups.close()


async def test_an_object_of_a_type_without_lookup_is_left_to_the_decision(upstream):
    port, _ = upstream
    lookups = _lookups(port)
    try:
        req = _req("site:s9")
        assert await lookups.place(req) is req
    finally:
        await lookups.close()
