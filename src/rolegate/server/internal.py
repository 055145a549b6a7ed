"""The internal listener: /healthz (alive), /readyz (able to serve), /metrics (Prometheus)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client import multiprocess

from rolegate.server.audit_health import with_audit


def build_internal_app(
    readiness: Callable[[], dict[str, Any]],
    collectors: Iterable[Any] = (),
    database_answered: Callable[[], float | None] | None = None,
) -> web.Application:
    """``readiness()`` returns {"ready": bool, "checks": {...}}; it must be cheap. ``collectors``: the
    master's own Prometheus collectors (objects with ``collect()``), e.g. the worker supervisor's.
    ``database_answered()``: when (monotonic) the master's probe last sent a query the database answered
    (None: never); with it, writes found unavailable stay so until the probe has seen the database after."""
    # When /readyz last found that writes cannot be recorded (monotonic), while it holds that answer.
    held: dict[str, float | None] = {"since": None}

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        # The audit check is read from every process's metrics: an audit that cannot be written is not ready.
        state = readiness()
        serving = bool(state.get("ready"))  # False: no worker, stopping, or past storage.max_staleness
        state = with_audit(state)
        checks = state.get("checks", {})
        writes_down = checks.get("storage", {}).get("database") == "unavailable" or "store" in checks.get(
            "audit", {}
        ).get("targets", {})
        if database_answered is not None:
            # Two signals, from different processes at different moments: the audit's gauge can lose a
            # failing process's share (a worker that died, a label between two values) while the probe has
            # not looked yet. Once writes were found unavailable, only the probe seeing the database answer
            # a query sent after that ends it: no flap back to 200 in the middle of an outage.
            if writes_down:
                held["since"] = time.monotonic()
            elif held["since"] is not None:
                answered = database_answered()
                if answered is not None and answered > held["since"]:
                    held["since"] = None
                else:
                    writes_down = True
                    checks.setdefault("storage", {})["writes"] = "held until the probe sees the database answer"
        if writes_down:
            # Writes cannot be recorded (their audit events go to the database), so every write is refused;
            # a load balancer cannot route by method, so the whole instance says not ready, within one
            # probe of the database going away (or at the first audit batch it refused). Reads already
            # admitted are still decided from the last known state for storage.max_staleness.
            state["ready"] = False
            # Not serving at all already says why (unavailable, or waiting_for_storage at the start).
            state["status"] = "writes_unavailable" if serving else state.get("status", "unavailable")
        return web.Response(
            status=200 if state.get("ready") else 503, text=json.dumps(state), content_type="application/json"
        )

    async def metrics(request: web.Request) -> web.Response:
        registry = CollectorRegistry()
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # (unannotated upstream)
        else:  # pragma: no cover - single process embedding
            registry.register(REGISTRY)
        for collector in collectors:
            registry.register(collector)
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app
