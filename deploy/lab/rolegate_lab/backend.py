"""The example backend behind rolegate in the lab: echoes what it received and serves demo data.

Run it alone with ``python -m rolegate_lab.backend --port N``; tests use ``Backend(workdir)``.
Every JSON answer carries ``method``, ``path``, ``raw_path``, ``query``, ``headers`` (first
value per name) and ``header_list`` (every header line in order), so tests can inspect
``X-Rolegate-*`` and ``X-Forwarded-*``.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from .ports import port_open
from .process import LabProcess

LAB_DIR = Path(__file__).resolve().parent.parent

#: /download sends byte i = i % 256; tests can compute the expected digest themselves
DOWNLOAD_PATTERN = bytes(range(256)) * 256  # 64 KiB
MAX_SSE_EVENTS = 100_000
MAX_SLOW_DELAY = 300.0

BUILDINGS: dict[str, dict[str, Any]] = {
    "a": {"id": "a", "name": "Harbour Office A", "customer": "acme", "region": "north"},
    "b": {"id": "b", "name": "Riverside Depot B", "customer": "acme", "region": "south"},
    "c": {"id": "c", "name": "Globex Tower C", "customer": "globex", "region": "north"},
}
CUSTOMERS: list[dict[str, Any]] = [
    {"id": "acme", "name": "Acme Retail BV", "region": "north", "buildings": ["a", "b"]},
    {"id": "globex", "name": "Globex Facilities", "region": "north", "buildings": ["c"]},
    {"id": "initech", "name": "Initech Offices", "region": "south", "buildings": []},
]
WORKORDERS: dict[str, dict[str, Any]] = {
    "1": {"id": "1", "building": "a", "customer": "acme", "technician": "bob", "status": "planned",
          "description": "Annual fire alarm inspection", "price": 480.0,
          "lines": [{"description": "Inspection (4h)", "price": 360.0}, {"description": "Test report", "price": 120.0}]},
    "2": {"id": "2", "building": "b", "customer": "acme", "technician": "trent", "status": "in_progress",
          "description": "Replace emergency lighting batteries", "price": 215.5,
          "lines": [{"description": "Batteries x6", "price": 125.5}, {"description": "Labour (1h)", "price": 90.0}]},
    "3": {"id": "3", "building": "c", "customer": "globex", "technician": "bob", "status": "done",
          "description": "Sprinkler pressure check", "price": 150.0,
          "lines": [{"description": "Pressure check", "price": 150.0}]},
    "4": {"id": "4", "building": "a", "customer": "acme", "technician": None, "status": "open",
          "description": "Door closer adjustment", "price": 95.0,
          "lines": [{"description": "Labour (1h)", "price": 95.0}]},
}
INVOICES: dict[str, dict[str, Any]] = {
    "1001": {"id": "1001", "customer": "acme", "workorder": "1", "amount": 580.8, "hourly_rate": 90.0,
             "currency": "EUR", "lines": [{"description": "Inspection (4h)", "price": 360.0},
                                          {"description": "Test report", "price": 120.0},
                                          {"description": "VAT", "price": 100.8}]},
    "1002": {"id": "1002", "customer": "globex", "workorder": "3", "amount": 181.5, "hourly_rate": 75.0,
             "currency": "EUR", "lines": [{"description": "Pressure check", "price": 150.0},
                                          {"description": "VAT", "price": 31.5}]},
}

# Where the field-service example (config/examples/field-service.yaml) places the same work orders: its customers
# are c100..c201 in regions north and south. The backend registers this at start (register_objects) and answers
# GET /workorders/{id}/scope from it (the lookup rolegate makes for a work order it does not know).
FIELD_SERVICE_CUSTOMERS: dict[str, str] = {"c100": "north", "c101": "north", "c200": "south", "c201": "south"}
FIELD_SERVICE_WORKORDERS: dict[str, str] = {"1": "c100", "2": "c200", "3": "c201", "4": "c101"}
REGISTER_PATH = "/.rolegate/api/v1/scope-members"
ASSIGN_PATH = "/.rolegate/api/v1/assignments"


def assignments() -> list[dict[str, Any]]:
    """Who works on each work order (its technician): what the app marks in rolegate (PUT /assignments), so
    the technician role, which grants on assigned work orders only, reaches his and not a colleague's."""
    return [{"object": f"workorder:{w}", "users": [o["technician"]] if o.get("technician") else []}
            for w, o in WORKORDERS.items()]


def workorder_places(order: Mapping[str, Any]) -> list[str]:
    """A work order's own object and every scope it lies in, nearest first (field-service's names)."""
    customer = FIELD_SERVICE_WORKORDERS.get(order["id"])
    places = [f"workorder:{order['id']}"]
    if customer is not None:
        places += [f"customer:{customer}", f"region:{FIELD_SERVICE_CUSTOMERS[customer]}"]
    return places


def placements() -> list[dict[str, str]]:
    """Every customer and work order of the field-service example, where it lies."""
    return ([{"scope": f"customer:{c}", "parent": f"region:{r}"} for c, r in FIELD_SERVICE_CUSTOMERS.items()]
            + [{"scope": f"workorder:{w}", "parent": f"customer:{c}"} for w, c in FIELD_SERVICE_WORKORDERS.items()])


async def register_objects(rolegate_url: str, key: str, *, attempts: int = 60, delay: float = 0.5) -> dict[str, Any]:
    """Place the work orders and customers in rolegate's object directory, as an app does when it starts:
    one bulk upsert (idempotent: a restart changes nothing) with the app's API key (``rolegate apps key
    create``). Retries while rolegate is not up yet; raises on a refusal (401/403/4xx)."""
    import aiohttp

    headers = {"Authorization": f"Bearer {key}", "Accept": "application/json"}
    last = ""
    async with aiohttp.ClientSession() as http:
        for _ in range(attempts):
            try:
                async with http.put(rolegate_url.rstrip("/") + REGISTER_PATH, json={"items": placements()},
                                    headers=headers) as resp:
                    body = await resp.json(content_type=None)
                    if resp.status == 200:
                        async with http.put(rolegate_url.rstrip("/") + ASSIGN_PATH, json={"items": assignments()},
                                            headers=headers) as assigned:
                            body["assignments"] = await assigned.json(content_type=None)
                            if assigned.status != 200:
                                raise RuntimeError(f"rolegate refused the assignments: {assigned.status} "
                                                   f"{body['assignments']}")
                        return body
                    if resp.status < 500:
                        raise RuntimeError(f"rolegate refused the placements: {resp.status} {body}")
                    last = f"{resp.status} {body}"
            except aiohttp.ClientConnectionError as exc:
                last = str(exc)
            await asyncio.sleep(delay)
    raise RuntimeError(f"could not register the objects with {rolegate_url}: {last}")


def _received(request: web.Request) -> dict[str, Any]:
    return {
        "method": request.method,
        "path": request.path,
        "raw_path": request.raw_path,
        "query": dict(request.query),
        # first value per name; header_list keeps duplicates and order (impersonation tests)
        "headers": {k: request.headers[k] for k in request.headers.keys()},
        "header_list": [[k, v] for k, v in request.headers.items()],
    }


def _json(request: web.Request, data: Mapping[str, Any], status: int = 200) -> web.Response:
    return web.json_response({**data, **_received(request)}, status=status)


def _int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name, str(default))
    try:
        value = int(raw)
    except ValueError:
        raise _bad(f"{name} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise _bad(f"{name} must be between {low} and {high}")
    return value


def _float_param(request: web.Request, name: str, default: float, low: float, high: float) -> float:
    raw = request.query.get(name, str(default))
    try:
        value = float(raw)
    except ValueError:
        raise _bad(f"{name} must be a number, got {raw!r}") from None
    if not low <= value <= high:
        raise _bad(f"{name} must be between {low} and {high}")
    return value


def _bad(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"error": message}), content_type="application/json")


def _not_found(request: web.Request, what: str) -> web.Response:
    return _json(request, {"error": f"{what} not found"}, status=404)


# -- catch-all echo --------------------------------------------------------------
async def echo(request: web.Request) -> web.Response:
    """Answer any method/path with what was received; the body is counted, not kept."""
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
    return _json(request, {"body_bytes": size})


# -- demo data --------------------------------------------------------------------
async def list_workorders(request: web.Request) -> web.Response:
    """Every work order, or, behind rolegate, those its assertion's ``where`` claim names (docs/tokens.md)."""
    orders = list(WORKORDERS.values())
    token = request.headers.get("X-Rolegate-Assertion")
    if token:
        claims = await _verified_assertion(token)
        where = claims.get("where") if claims is not None else {"perm": "workorders:view", "all": False}
        if isinstance(where, dict):
            orders = _visible(where, "workorders:view", orders)
    return _json(request, {"workorders": orders})


_JWKS: dict[str, Any] = {}


async def _verified_assertion(token: str) -> dict[str, Any] | None:
    """The assertion's claims, its signature checked against the JWKS of the rolegate that issued it; None when
    it does not verify. A lab shortcut: the issuer is taken from the token, but only a rolegate on this machine
    (127.0.0.1 / localhost) is trusted, and the audience is not checked (the lab's configs name this backend
    differently). A real backend pins its rolegate and its upstream name: examples/backend_verify.py."""
    import urllib.parse

    import jwt

    try:
        issuer = str(jwt.decode(token, options={"verify_signature": False}).get("iss", ""))
        if urllib.parse.urlsplit(issuer).hostname not in ("127.0.0.1", "localhost"):
            return None
        client = _JWKS.get(issuer)
        if client is None:
            client = _JWKS[issuer] = jwt.PyJWKClient(f"{issuer.rstrip('/')}/.well-known/jwks.json", lifespan=60)
        key = await asyncio.to_thread(client.get_signing_key_from_jwt, token)
        return jwt.decode(token, key.key, algorithms=[key.algorithm_name], issuer=issuer, leeway=30,
                          options={"verify_aud": False, "require": ["exp", "iss", "sub"]})
    except Exception:  # noqa: BLE001 - a token that does not verify filters everything out
        return None


def _visible(where: Mapping[str, Any], permission: str, orders: list[dict[str, Any]],
             places_of: Any = None) -> list[dict[str, Any]]:
    """The items ``where`` names (the same rule as examples/backend_verify.py ``visible``); ``places_of(item)``:
    its own object and the scopes it lies in, nearest first (work orders by default)."""
    places_of = places_of or workorder_places
    if where.get("perm") != permission or where.get("truncated"):
        return []
    if where.get("all") is True:
        return orders
    scopes, assigned = set(where.get("scopes", ())), set(where.get("assigned", ()))
    denied = set(where.get("except", ()))
    out = []
    for order in orders:
        places = places_of(order)
        if places[0] in assigned:
            out.append(order)
            continue
        for place in places:
            if place in denied:
                break
            if place in scopes:
                out.append(order)
                break
    return out


async def get_workorder(request: web.Request) -> web.Response:
    order = WORKORDERS.get(request.match_info["id"])
    return _json(request, order) if order else _not_found(request, "work order")


async def workorder_scope(request: web.Request) -> web.Response:
    """Where a work order lies, for rolegate's lookup: {"parent": "customer:c100"}, 404 when there is none."""
    customer = FIELD_SERVICE_WORKORDERS.get(request.match_info["id"])
    if customer is None:
        return web.json_response({"error": "no such work order"}, status=404)
    return web.json_response({"parent": f"customer:{customer}"})


async def list_customers(request: web.Request) -> web.Response:
    """The customers; behind field-service's list route (a where claim about customers:view), its customers
    (c100..c201), those the claim names."""
    token = request.headers.get("X-Rolegate-Assertion")
    if token:
        claims = await _verified_assertion(token)
        where = claims.get("where") if claims is not None else {"perm": "customers:view", "all": False}
        if isinstance(where, dict) and where.get("perm") == "customers:view":
            customers = [{"id": c, "region": r} for c, r in FIELD_SERVICE_CUSTOMERS.items()]
            return _json(request, {"customers": _visible(where, "customers:view", customers, customer_places)})
    return _json(request, {"customers": CUSTOMERS})


def customer_places(customer: Mapping[str, Any]) -> list[str]:
    return [f"customer:{customer['id']}", f"region:{customer['region']}"]


async def list_invoices(request: web.Request) -> web.Response:
    return _json(request, {"invoices": list(INVOICES.values())})


async def get_invoice(request: web.Request) -> web.Response:
    invoice = INVOICES.get(request.match_info["id"])
    return _json(request, invoice) if invoice else _not_found(request, "invoice")


async def building_dashboard(request: web.Request) -> web.Response:
    building = BUILDINGS.get(request.match_info["b"])
    if building is None:
        return _not_found(request, "building")
    orders = [o["id"] for o in WORKORDERS.values() if o["building"] == building["id"]]
    return _json(request, {"building": building, "open_workorders": orders, "alarms": 0})


async def building_documents(request: web.Request) -> web.Response:
    """Documents of a building; writes are acknowledged (and counted), not stored."""
    b = request.match_info["b"]
    if b not in BUILDINGS:
        return _not_found(request, "building")
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
    documents = [{"id": "logbook", "title": f"Logbook building {b}"},
                 {"id": "evacuation-plan", "title": f"Evacuation plan building {b}"}]
    status = 201 if request.method == "POST" else 200
    return _json(request, {"building": b, "documents": documents, "body_bytes": size,
                           "document": request.match_info.get("tail") or None}, status=status)


# -- streaming ---------------------------------------------------------------------
async def websocket_echo(request: web.Request) -> web.StreamResponse:
    """Echo text and binary frames; ``close:<code>`` closes with that code; ``headers`` sends them."""
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for msg in ws:
        if msg.type == WSMsgType.TEXT:
            if msg.data.startswith("close:"):
                try:
                    code = int(msg.data[6:])
                except ValueError:
                    await ws.send_str("error: close:<code> needs an integer code")
                    continue
                await ws.close(code=code, message=b"closed on request")
                break
            if msg.data == "headers":
                await ws.send_json(_received(request))
            else:
                await ws.send_str(msg.data)
        elif msg.type == WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
    return ws


async def sse(request: web.Request) -> web.StreamResponse:
    """``count`` server-sent events, ``interval`` seconds apart, each flushed on its own."""
    count = _int_param(request, "count", 5, 0, MAX_SSE_EVENTS)
    interval = _float_param(request, "interval", 0.1, 0.0, 60.0)
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                       "X-Echo-User": request.headers.get("X-Rolegate-User", "")})
    await resp.prepare(request)
    for i in range(count):
        await resp.write(f"id: {i}\nevent: tick\ndata: {{\"n\": {i}}}\n\n".encode())
        if interval and i + 1 < count:
            await asyncio.sleep(interval)
    await resp.write_eof()
    return resp


async def chunked(request: web.Request) -> web.StreamResponse:
    """A chunked response of ``count`` lines, one chunk each."""
    count = _int_param(request, "count", 5, 0, 1_000_000)
    resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    for i in range(count):
        await resp.write(f"chunk {i}\n".encode())
    await resp.write_eof()
    return resp


async def download(request: web.Request) -> web.StreamResponse:
    """Stream ``size`` generated bytes (byte i is i % 256) without holding them in memory."""
    size = _int_param(request, "size", 1024, 0, 1 << 40)
    resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    resp.content_length = size
    await resp.prepare(request)
    left = size
    while left > 0:
        piece = DOWNLOAD_PATTERN if left >= len(DOWNLOAD_PATTERN) else DOWNLOAD_PATTERN[:left]
        await resp.write(piece)
        left -= len(piece)
    await resp.write_eof()
    return resp


async def upload(request: web.Request) -> web.Response:
    """Read the body as a stream and answer its size and SHA-256."""
    digest = hashlib.sha256()
    size = 0
    async for chunk in request.content.iter_any():
        digest.update(chunk)
        size += len(chunk)
    return _json(request, {"bytes": size, "sha256": digest.hexdigest()})


async def slow(request: web.Request) -> web.Response:
    delay = _float_param(request, "delay", 1.0, 0.0, MAX_SLOW_DELAY)
    await asyncio.sleep(delay)
    return _json(request, {"delay": delay})


async def status(request: web.Request) -> web.Response:
    raw = request.match_info["code"]
    if not raw.isdigit() or not 200 <= int(raw) <= 599:
        raise _bad("status code must be between 200 and 599")
    code = int(raw)
    if code in (204, 304):
        return web.Response(status=code)
    return _json(request, {"status": code}, status=code)


def make_app() -> web.Application:
    """The example backend as an aiohttp application."""
    app = web.Application()
    r = app.router
    r.add_get("/workorders", list_workorders)
    r.add_get("/workorders/{id}", get_workorder)
    r.add_get("/workorders/{id}/scope", workorder_scope)
    r.add_get("/customers", list_customers)
    r.add_get("/invoices", list_invoices)
    r.add_get("/invoices/{id}", get_invoice)
    r.add_get("/buildings/{b}/dashboard", building_dashboard)
    for method in ("GET", "POST", "PUT", "DELETE"):
        r.add_route(method, "/buildings/{b}/documents", building_documents)
        r.add_route(method, "/buildings/{b}/documents/{tail:.+}", building_documents)
    r.add_get("/ws", websocket_echo)
    r.add_get("/sse", sse)
    r.add_get("/chunked", chunked)
    r.add_get("/download", download)
    r.add_post("/upload", upload)
    r.add_put("/upload", upload)
    r.add_get("/slow", slow)
    r.add_route("*", "/status/{code}", status)
    r.add_route("*", "/{tail:.*}", echo)
    return app


class Backend(LabProcess):
    """The example backend in a subprocess on 127.0.0.1."""

    name = "backend"

    def __init__(self, workdir: Path, *, port: int | None = None, access_log: bool = False,
                 env: dict[str, str] | None = None) -> None:
        super().__init__(Path(workdir), port=port)
        self.access_log = access_log
        # e.g. its app credential for rolegate's admin API (rolegate_lab/app_credential.py)
        self.env = dict(env or {})

    def _command(self) -> list[str]:
        cmd = [sys.executable, "-m", "rolegate_lab.backend", "--port", str(self.port)]
        return cmd + (["--access-log"] if self.access_log else [])

    def _env(self) -> dict[str, str]:
        return {**self.env, "PYTHONPATH": str(LAB_DIR), "PYTHONUNBUFFERED": "1"}

    def _is_ready(self) -> bool:
        return port_open(self.port)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rolegate_lab.backend", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--access-log", action="store_true", help="log every request (slows load tests)")
    parser.add_argument("--register", metavar="ROLEGATE_URL",
                        help="at start, place the field-service work orders and customers in rolegate's object "
                             "directory with the app key in ROLEGATE_APP_KEY (rolegate apps key create --app fieldservice)")
    args = parser.parse_args(argv)
    print(f"example backend on http://{args.host}:{args.port}", flush=True)
    if args.register:
        import os
        key = os.environ.get("ROLEGATE_APP_KEY", "")
        if not key:
            parser.error("--register needs the app's key in ROLEGATE_APP_KEY")
        result = asyncio.run(register_objects(args.register, key))
        print(f"registered with {args.register}: {len(result['changed'])} placed or moved, "
              f"{result['unchanged']} unchanged; {len(result['assignments']['changed'])} assignments changed",
              flush=True)
    if args.access_log:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
        web.run_app(make_app(), host=args.host, port=args.port, print=None)
    else:
        web.run_app(make_app(), host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
