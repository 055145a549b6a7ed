"""The pipeline's last line: an outage no part on the way expected is a 503 with Retry-After, never a 500.

Found by the scale fault test (a PostgreSQL stop within storage.max_staleness): the signing-key ring, due for a
look, met StoreUnavailable and the request got a 500 with a traceback. The ring now rides it out
(tests/tokens/test_keys.py); this holds every other part that could meet it.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

from aiohttp import web

from rolegate.server import pipeline
from rolegate.store import StoreUnavailable


async def test_store_unavailable_on_the_request_path_is_a_503_with_retry_after(aiohttp_client, monkeypatch, caplog):
    async def outage(*args, **kwargs):
        raise StoreUnavailable("PostgreSQL at postgresql://postgres@db:5432/rolegate is unavailable: refused")

    monkeypatch.setattr(pipeline, "check_access", outage)
    holder = SimpleNamespace(runtime=SimpleNamespace(max_header_size=16384))
    handle = pipeline.Pipeline(holder)

    async def catch_all(request: web.Request) -> web.StreamResponse:
        return await handle(request)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", catch_all)
    client = await aiohttp_client(app)
    with caplog.at_level(logging.INFO):
        resp = await client.get("/api/notes/1", headers={"Accept": "application/json"})
        body = await resp.json()
    assert resp.status == 503, body
    assert resp.headers["Retry-After"] == "5" and resp.headers["X-Rolegate-Reference"]
    assert body.get("error") == "unavailable" or "unavailable" in str(body), body
    assert "Traceback" not in caplog.text and "-> 500" not in caplog.text, caplog.text
    assert "is unavailable" in caplog.text  # the cause, in one line, under the reference
