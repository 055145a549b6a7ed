"""``rolegate audit verify|query|prune`` and ``query_events`` over a real store."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import sqlite3
from pathlib import Path

import pytest
import yaml

from rolegate.audit import AuditFilters, AuditLog, decision_event, parse_time, query_events, request_event
from rolegate.cli import main
from rolegate.store.sqlite import SQLiteStore

from tests.audit.samples import one_of_each


def write_config(tmp_path: Path, **audit: object) -> Path:
    config = {
        "server": {"listen": "127.0.0.1:0", "public_url": "http://127.0.0.1:8080", "workers": 1},
        "storage": {"url": "sqlite:///data/rolegate.db"},  # relative to the config file
        "session": {"secret": "s" * 40},
        "upstreams": {"app": {"url": "http://127.0.0.1:9"}},
        "routes": [{"path": "/**", "mode": "public", "upstream": "app"}],
        "audit": {"sinks": ["store"], **audit},
    }
    path = tmp_path / "rolegate.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


async def seed(db: Path, events) -> None:
    store = SQLiteStore(f"sqlite:///{db}")
    await store.open()
    log = AuditLog(store)
    log.start()
    for event in events:
        log.emit(event)
    await log.close()
    await store.close()


def sample_events():
    return one_of_each() + [
        decision_event(decision="deny", user="tom", method="DELETE", path="/buildings/b/documents/9", ts=1000.0),
        request_event(user="tom", method="POST", path="/buildings/b/x", status=500, ts=2000.0),
        decision_event(decision="allow", user="=cmd|' /C calc'!A0", method="GET", path="/%_literal"),
    ]


@pytest.fixture
async def configured(tmp_path):
    path = write_config(tmp_path)
    db = tmp_path / "data" / "rolegate.db"
    db.parent.mkdir()
    await seed(db, sample_events())
    return path, db


def run(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out


async def test_query_events_filters(configured) -> None:
    _, db = configured
    store = SQLiteStore(f"sqlite:///{db}")
    await store.open()
    try:

        async def ids(**filters):
            return [(e["kind"], e.get("decision")) for e in await query_events(store, AuditFilters(**filters))]

        assert await ids(user="tom", kind="decision") == [
            ("decision", "deny"),
            ("decision", "would-deny"),
            ("decision", "deny"),
        ]
        assert await ids(decision="deny") == [("decision", "deny"), ("decision", "deny")]
        assert await ids(path_prefix="/buildings/b/") == [("decision", "deny"), ("request", None)]
        assert await ids(path_prefix="/%_") == [("decision", "allow")]  # LIKE wildcards match literally
        assert await ids(path_prefix="/%") == [("decision", "allow")]
        assert await ids(kind="admin_change") == [("admin_change", None)]
        assert await ids(since=1500.0, until=2500.0) == [("request", None)]
        assert len(await ids(limit=2)) == 2
        newest = await query_events(store, AuditFilters(limit=1, newest_first=True))
        assert newest[0]["seq"] == 13
        page = await query_events(store, AuditFilters(after_seq=11))
        assert [e["seq"] for e in page] == [12, 13]
        with pytest.raises(ValueError):
            await query_events(store, AuditFilters(kind="nope"))
    finally:
        await store.close()


async def test_query_survives_an_edited_unparseable_body(configured) -> None:
    _, db = configured
    raw = sqlite3.connect(db, isolation_level=None)
    raw.execute("UPDATE audit SET body='not json' WHERE seq=2")
    raw.close()
    store = SQLiteStore(f"sqlite:///{db}")
    await store.open()
    try:
        events = await query_events(store, AuditFilters())
        assert events[1]["unparseable_body"] == "not json"
        assert len(await query_events(store, AuditFilters(user="tom"))) == 3  # seq 2 no longer says tom
    finally:
        await store.close()


def test_cli_query_jsonl_and_csv(configured, capsys) -> None:
    path, _ = configured
    code, out = run(capsys, "audit", "query", "-c", str(path), "--user", "tom", "--decision", "deny")
    assert code == 0
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["path"] for e in events] == ["/invoices/7", "/buildings/b/documents/9"]
    assert all(e["v"] == 1 and e["kind"] == "decision" and e["time"].endswith("Z") for e in events)

    code, out = run(capsys, "audit", "query", "-c", str(path), "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and len(rows) == 13
    assert rows[0]["decision"] == "allow" and rows[0]["user"] == "alice"
    assert rows[-1]["user"].startswith("'=")  # a formula is defused for spreadsheets
    assert json.loads(rows[4]["details"])["target"] == "role:technician"


def test_cli_query_time_filters_and_bad_input(configured, capsys) -> None:
    path, _ = configured
    code, out = run(
        capsys,
        "audit",
        "query",
        "-c",
        str(path),
        "--since",
        "1970-01-01T00:20:00Z",
        "--until",
        "1970-01-01T00:40:00+00:00",
    )
    assert code == 0 and [json.loads(x)["status"] for x in out.splitlines()] == [500]
    code, out = run(capsys, "audit", "query", "-c", str(path), "--since", "1h")
    assert code == 0 and len(out.splitlines()) == 11
    assert main(["audit", "query", "-c", str(path), "--since", "last tuesday"]) == 2
    assert main(["audit", "query", "-c", str(path), "--kind", "bogus"]) == 2
    assert main(["audit", "query", "-c", str(path), "--limit", "0"]) == 2
    assert parse_time("1000") == 1000.0 and parse_time("2m", now=500.0) == 380.0


def test_cli_verify_ok_then_tampered(configured, capsys) -> None:
    path, db = configured
    code, out = run(capsys, "audit", "verify", "-c", str(path))
    assert code == 0 and "OK: 13 events" in out
    raw = sqlite3.connect(db, isolation_level=None)
    raw.execute("UPDATE audit SET body=replace(body, 'deny', 'allow') WHERE seq=2")
    raw.close()
    code, out = run(capsys, "audit", "verify", "-c", str(path))
    assert code == 1 and "TAMPERED: seq 2:" in out
    code, out = run(capsys, "audit", "verify", "-c", str(path), "--json")
    assert code == 1 and json.loads(out)["problem"]["seq"] == 2


def test_cli_prune_then_verify_then_tamper_checkpoint(configured, capsys) -> None:
    path, db = configured
    # seq 1 was stamped now: only a leading run of old events is pruned, so here none.
    code, out = run(capsys, "audit", "prune", "-c", str(path), "--older-than", "1970-01-01T00:10:00Z")
    assert code == 0 and "nothing pruned" in out  # seq 1 is young, so the leading run is empty
    code, out = run(capsys, "audit", "prune", "-c", str(path), "--older-than", str(4_000_000_000))
    assert code == 0 and "pruned 12 events; signed checkpoint at seq 13" in out
    code, out = run(capsys, "audit", "verify", "-c", str(path))
    assert code == 0 and "checkpoint seq 13" in out
    raw = sqlite3.connect(db, isolation_level=None)
    raw.execute("UPDATE kv SET value=replace(value, '\"seq\":13', '\"seq\":12') WHERE namespace='audit'")
    raw.close()
    code, out = run(capsys, "audit", "verify", "-c", str(path))
    assert code == 1 and "checkpoint:" in out and "signature" in out


def test_cli_verify_needs_the_checkpoint_key(tmp_path, capsys) -> None:
    path = write_config(tmp_path, checkpoint_secret="c" * 40)
    code, out = run(capsys, "audit", "prune", "-c", str(path), "--older-than", "1h")
    assert code == 0  # empty log: nothing to prune
    config = yaml.safe_load(path.read_text())
    config["audit"]["retention"] = "400d"
    path.write_text(yaml.safe_dump(config))
    code, out = run(capsys, "audit", "prune", "-c", str(path))
    assert code == 0 and "nothing pruned" in out


def test_config_rejects_a_chain_without_the_store(tmp_path, capsys) -> None:
    path = write_config(tmp_path, sinks=["stdout"])
    with pytest.raises(SystemExit) as exited:
        main(["check", "-c", str(path)])
    assert exited.value.code == 2
    assert "store sink" in capsys.readouterr().err


def test_cli_verify_compares_with_the_jsonl_copy(tmp_path, capsys) -> None:
    path = write_config(tmp_path, sinks=["store", "jsonl:logs/audit.jsonl"])
    from rolegate.config import load_config

    config = load_config(str(path))
    db = tmp_path / "data" / "rolegate.db"

    async def seed_with_copy() -> None:
        store = SQLiteStore(f"sqlite:///{db}")
        await store.open()
        log = AuditLog.from_config(store, config, base_dir=tmp_path)
        log.start()
        for event in sample_events():
            await log.emit_durable(event)
        await log.close()
        await store.close()

    asyncio.run(seed_with_copy())
    code, out = run(capsys, "audit", "verify", "-c", str(path))
    assert code == 0 and "matches the store" in out
    # Cut the last two events off the end: the chain alone still looks intact.
    raw = sqlite3.connect(db, isolation_level=None)
    raw.execute("DELETE FROM audit WHERE seq>=12")
    raw.close()
    code, out = run(capsys, "audit", "verify", "-c", str(path))
    assert code == 1 and "seq 13" in out and "cut off the end" in out
