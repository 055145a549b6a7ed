"""The synchronous answer (``authenticate_now``) never differs from the awaited one (``authenticate``).

A signed-in browser's request is answered from memory while nothing can have changed: same Cookie
header, no session revoked since, before the session's next last-seen write, refresh or expiry.
Everything else is PENDING and goes through ``authenticate``. These tests drive both on a real
IdentityStage (SQLite store) and check they agree, including right after a logout and across the
quiet window's end.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from rolegate.config import load_config
from rolegate.identity.authenticator import PENDING
from rolegate.identity.stage import IdentityStage
from rolegate.store import open_store
from tests.server.test_access_cache import sign_in, write_config


def request(cookie: str | None = None, authorization: str | None = None):
    headers = CIMultiDict({"Host": "127.0.0.1:1"})
    if cookie is not None:
        headers["Cookie"] = cookie
    if authorization is not None:
        headers["Authorization"] = authorization
    return make_mocked_request("GET", "/api/things", headers=headers)


async def both(stage: IdentityStage, req):
    """(authenticate_now, authenticate) for one request; an awaited error is returned, not raised."""
    now = stage.authenticate_now(req)
    try:
        awaited = await stage.authenticate(req)
    except Exception as exc:  # noqa: BLE001 - compared below
        awaited = exc
    return now, awaited


@pytest.fixture
async def stage(tmp_path: Path):
    config_path = write_config(tmp_path)
    raw = json.loads(config_path.read_text())
    raw["session"]["idle_timeout"] = "10m"  # shorter than the cookie's hour, so idleness is what ends it
    config_path.write_text(json.dumps(raw))
    config = load_config(str(config_path))
    store = await open_store(config.storage, base_dir=tmp_path)
    stage = IdentityStage(config, base_dir=tmp_path, store=store)
    stage.config_path = config_path  # for sign_in below
    try:
        yield stage
    finally:
        await stage.close()
        await store.close()


async def test_now_agrees_with_awaited_answer(stage: IdentityStage) -> None:
    cookie, _ = await sign_in(stage.config_path, "alice", ["staff"])
    # Before the stage is open, nothing is answered from memory.
    assert stage.authenticate_now(request(cookie)) is PENDING
    assert (await stage.authenticate(request(cookie))).username == "alice"

    now, awaited = await both(stage, request(cookie))
    assert now is awaited  # the same cached principal, from memory
    assert now.username == "alice"

    # No credential: None from both. A bearer token or a foreign cookie: never answered from memory
    # as a sign-in.
    assert await both(stage, request()) == (None, None)
    now, awaited = await both(stage, request(authorization="Bearer not-a-token"))
    assert now is PENDING and isinstance(awaited, Exception)
    session_part = cookie.split(";")[0]
    for bad in ("rolegate_session=garbage", session_part[:-4] + "AAAA", "theme=dark"):
        now, awaited = await both(stage, request(bad))
        assert now in (None, PENDING) and awaited is None, bad


async def test_logout_is_seen_by_the_next_synchronous_answer(stage: IdentityStage) -> None:
    cookie, _ = await sign_in(stage.config_path, "alice", ["staff"])
    await stage.authenticate(request(cookie))
    assert stage.authenticate_now(request(cookie)).username == "alice"

    session = await stage.session_from_request(request(cookie))
    await stage.sessions.end(session.key)

    assert stage.authenticate_now(request(cookie)) is PENDING
    assert await stage.authenticate(request(cookie)) is None
    assert stage.authenticate_now(request(cookie)) in (None, PENDING)


async def test_the_quiet_window_ends_at_the_next_last_seen_write(stage: IdentityStage, monkeypatch) -> None:
    cookie, _ = await sign_in(stage.config_path, "alice", ["staff"])
    await stage.authenticate(request(cookie))
    session = await stage.session_from_request(request(cookie))
    touch_at = stage.sessions.touch_at(session)
    assert stage.authenticate_now(request(cookie)) is not PENDING

    monkeypatch.setattr(time, "time", lambda: touch_at + 1)
    # Due for its last-seen write: only the awaited path does that (and writes the Store).
    assert stage.authenticate_now(request(cookie)) is PENDING
    assert (await stage.authenticate(request(cookie))).username == "alice"
    record = await stage.store.get("sessions", session.key)
    assert record.value["seen"] >= touch_at

    # Past the session's lifetime: neither answer signs anyone in.
    monkeypatch.setattr(time, "time", lambda: float(session.data["expires"]) + 1)
    now, awaited = await both(stage, request(cookie))
    assert now in (None, PENDING) and awaited is None


async def test_idle_sessions_are_never_answered_from_memory(stage: IdentityStage, monkeypatch) -> None:
    cookie, _ = await sign_in(stage.config_path, "alice", ["staff"])
    await stage.authenticate(request(cookie))
    assert stage.authenticate_now(request(cookie)) is not PENDING
    idle = stage.sessions.idle_timeout
    assert idle == 600
    start = time.time()
    monkeypatch.setattr(time, "time", lambda: start + idle + 1)
    now, awaited = await both(stage, request(cookie))
    assert now is PENDING and awaited is None
