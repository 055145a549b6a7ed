"""Access requests against the real lab: a webhook receiver that checks the HMAC, a local SMTP server
(aiosmtpd on 127.0.0.1), and rolegate in-process with seed 001's building-safety config plus an
``access_requests`` section (the lab's slapd as directory, the lab IdP for sign-in, a fresh store)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import urllib.parse
from collections.abc import AsyncIterator
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer

from rolegate.app import build_app
from rolegate.config.loader import load_config_text
from rolegate.directory import DirectorySync
from rolegate.server.runtime import Runtime, RuntimeHolder
from rolegate_lab import free_port
from tests.admin.conftest import Served, admin_config

SECRET = "access-request-webhook-secret-" + "w" * 20
LABELS = {"building:a": "Building A", "building:b": "Building B"}


class HookReceiver:
    """A real HTTP receiver on 127.0.0.1: checks each call's HMAC and freshness, keeps the good ones.

    ``fail_first`` answers the first attempt of each delivery with 503 (so retries are exercised)."""

    def __init__(self, secret: str = SECRET, *, fail_first: bool = False) -> None:
        self.secret = secret.encode()
        self.fail_first = fail_first
        self.events: list[dict[str, Any]] = []
        self.attempts: list[tuple[str, str]] = []  # (delivery id, event)
        self.refused: list[str] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        ts = request.headers.get("X-Rolegate-Timestamp", "")
        sent = request.headers.get("X-Rolegate-Signature", "")
        delivery = request.headers.get("X-Rolegate-Delivery", "")
        event = request.headers.get("X-Rolegate-Event", "")
        good = "sha256=" + hmac.new(self.secret, ts.encode() + b"." + body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(sent, good) or not ts.isdigit() or abs(time.time() - int(ts)) > 300:
            self.refused.append(event)
            return web.Response(status=401)
        first = all(d != delivery for d, _ in self.attempts)
        self.attempts.append((delivery, event))
        if self.fail_first and first:
            return web.Response(status=503)
        payload = json.loads(body)
        assert payload["event"] == event
        self.events.append({**payload, "_delivery": delivery})
        return web.Response(status=204)

    async def start(self) -> "HookReceiver":
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}/hook"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def of(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == event]

    async def wait_for(self, event: str, count: int = 1, timeout: float = 20) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.of(event)) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        found = self.of(event)
        assert len(found) >= count, (event, self.events, self.refused)
        return found


class Mailbox:
    """aiosmtpd on 127.0.0.1: every message it accepted, parsed."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list[Message] = []
        self.port = free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's hook
        message = message_from_bytes(envelope.content)
        message["X-Envelope-To"] = ", ".join(envelope.rcpt_tos)
        self.messages.append(message)
        return "250 OK"

    def to(self, address: str) -> list[Message]:
        return [m for m in self.messages if address in m["X-Envelope-To"]]

    async def wait_for(self, address: str, count: int = 1, timeout: float = 20) -> list[Message]:
        deadline = time.monotonic() + timeout
        while len(self.to(address)) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert len(self.to(address)) >= count, (address, [m["X-Envelope-To"] for m in self.messages])
        return self.to(address)


def access_requests_section(
    hook_url: str | None = None, smtp_port: int | None = None, **overrides: Any
) -> dict[str, Any]:
    notify: dict[str, Any] = {}
    if hook_url:
        notify["webhook"] = {"url": hook_url, "secret": SECRET, "backoff": "0.2s", "max_backoff": "1s", "attempts": 4}
    if smtp_port:
        notify["email"] = {"host": "127.0.0.1", "port": smtp_port, "security": "none", "from": "rolegate@example.com"}
    return {
        "max_duration": "8h",
        "expire_after": "1h",
        "rate": "5/h",
        "labels": dict(LABELS),
        "notify": notify,
        **overrides,
    }


async def start_with(
    url: str, idp: Any, slapd: Any, backend_url: str, tmp: Path, section: dict[str, Any] | None
) -> Served:
    """tests/admin's in-process rolegate (building-safety, lab directory and IdP) with ``access_requests``."""
    config = yaml.safe_load(admin_config(url, idp, slapd, backend_url, tmp))
    if section is not None:
        config["access_requests"] = section
    loaded = load_config_text(yaml.safe_dump(config, sort_keys=False), base_dir=tmp)
    runtime = await Runtime.create(loaded, base_dir=tmp)
    sync = DirectorySync(loaded, runtime.store)
    sync.board = runtime.board
    result = await sync.sync_now(full=True)
    assert result.ok, result.as_dict()
    await runtime.refresh(force=True)
    holder = RuntimeHolder(runtime)
    server = TestServer(build_app(holder), host="127.0.0.1", port=urllib.parse.urlsplit(url).port)
    await server.start_server()
    return Served(url, holder, server)


@pytest.fixture
async def hooks() -> AsyncIterator[HookReceiver]:
    receiver = await HookReceiver(fail_first=True).start()
    yield receiver
    await receiver.stop()


@pytest.fixture
def mailbox() -> Any:
    box = Mailbox()
    box.controller.start()
    yield box
    box.controller.stop()
