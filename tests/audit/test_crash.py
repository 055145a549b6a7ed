"""kill -9 in the middle of durable writes: every acknowledged event survives and the chain verifies."""

from __future__ import annotations

import json
import sys

import pytest

from rolegate.audit import verify_chain
from rolegate.store.sqlite import SQLiteStore

from tests.audit.crash import CHILD, missing_acknowledged, missing_by_body_field, run_and_kill


@pytest.mark.parametrize("round_", range(3))
async def test_acknowledged_events_survive_sigkill(tmp_path, round_) -> None:
    db = tmp_path / "crash.db"
    jsonl = tmp_path / "crash.jsonl"
    acked = run_and_kill([sys.executable, str(CHILD), str(db), "16", str(jsonl)], acks=300 + 100 * round_)
    assert len(acked) >= 300 + 100 * round_
    assert missing_acknowledged(db, acked) == []
    assert missing_by_body_field(db, "id", [event_id for _, event_id in acked], kind="request") == []
    store = SQLiteStore(f"sqlite:///{db}")
    await store.open()
    try:
        report = await verify_chain(store, None)
        assert report.ok, report.problem
        assert report.last_seq >= max(seq for seq, _ in acked)
    finally:
        await store.close()
    # Every acknowledged event is in the fsynced JSONL copy too (a torn last line is allowed).
    copied = set()
    for line in jsonl.read_text().splitlines():
        try:
            copied.add(json.loads(line)["event"]["id"])
        except ValueError:
            pass
    assert {event_id for _, event_id in acked} <= copied


async def test_two_worker_processes_share_one_chain_through_sigkill(tmp_path) -> None:
    """Like two rolegate workers: both append to one database; the chain never forks."""
    import asyncio

    db = tmp_path / "shared.db"
    argv = [sys.executable, str(CHILD), str(db), "8"]
    loop = asyncio.get_running_loop()
    first, second = await asyncio.gather(
        loop.run_in_executor(None, lambda: run_and_kill(argv, acks=200)),
        loop.run_in_executor(None, lambda: run_and_kill(argv, acks=200)),
    )
    acked = first + second
    assert len({seq for seq, _ in acked}) == len(acked)  # no seq handed out twice
    assert missing_acknowledged(db, acked) == []
    store = SQLiteStore(f"sqlite:///{db}")
    await store.open()
    try:
        report = await verify_chain(store, None)
        assert report.ok, report.problem
    finally:
        await store.close()
