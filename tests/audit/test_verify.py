"""Tamper evidence: verify names the first bad event after each kind of tampering done with plain SQL."""

from __future__ import annotations

import json

import pytest

from rolegate.audit import AuditLog, CannotVerify, decision_event, prune, verify_chain
from rolegate.audit.chain import chain_hash

from tests.audit.conftest import KEY


async def fill(store, n: int = 10, *, ts0: float | None = None) -> None:
    log = AuditLog(store, batch_size=4)
    log.start()
    for i in range(n):
        log.emit(
            decision_event(
                decision="deny", user=f"u{i}", method="GET", path=f"/p/{i}", ts=None if ts0 is None else ts0 + i
            )
        )
    await log.close()


async def test_untouched_log_verifies(store) -> None:
    await fill(store)
    report = await verify_chain(store, KEY)
    assert report.ok and (report.checked, report.first_seq, report.last_seq) == (10, 1, 10)


async def test_empty_log_verifies(store) -> None:
    report = await verify_chain(store, None)
    assert report.ok and report.checked == 0 and report.notes


async def test_edited_body_is_named(store, raw) -> None:
    await fill(store)
    body = json.loads(raw.row(5)[3])
    body["decision"] = "allow"
    raw.execute("UPDATE audit SET body=? WHERE seq=5", (json.dumps(body),))
    report = await verify_chain(store, None)
    assert not report.ok and report.problem.seq == 5 and "contents" in report.problem.what
    assert report.checked == 4


@pytest.mark.parametrize("column,value", [("ts", 1.0), ("kind", "signin")])
async def test_edited_ts_or_kind_is_named(store, raw, column, value) -> None:
    await fill(store)
    raw.execute(f"UPDATE audit SET {column}=? WHERE seq=3", (value,))
    report = await verify_chain(store, None)
    assert not report.ok and report.problem.seq == 3


async def test_deleted_row_is_named(store, raw) -> None:
    await fill(store)
    raw.execute("DELETE FROM audit WHERE seq=6")
    report = await verify_chain(store, None)
    assert not report.ok and report.problem.seq == 6 and "missing" in report.problem.what


async def test_deleted_first_row_is_named(store, raw) -> None:
    await fill(store)
    raw.execute("DELETE FROM audit WHERE seq<=2")
    report = await verify_chain(store, None)
    assert not report.ok and report.problem.seq == 1 and "1..2" in report.problem.what


async def test_deleted_and_renumbered_rows_are_named(store, raw) -> None:
    await fill(store)
    raw.execute("DELETE FROM audit WHERE seq=4")
    raw.execute("UPDATE audit SET seq=-(seq-1) WHERE seq>4")
    raw.execute("UPDATE audit SET seq=-seq WHERE seq<0")
    report = await verify_chain(store, None)
    assert not report.ok and report.problem.seq == 4


async def test_inserted_row_is_named(store, raw) -> None:
    await fill(store)
    # Make room at seq 5 and slip in a forged denial-turned-allow with a made-up hash.
    raw.execute("UPDATE audit SET seq=-(seq+1) WHERE seq>=5")
    raw.execute("UPDATE audit SET seq=-seq WHERE seq<0")
    prev = raw.row(4)[5]
    raw.execute("INSERT INTO audit VALUES (5, 123.0, 'decision', '{\"decision\":\"allow\"}', ?, ?)", (prev, "f" * 64))
    report = await verify_chain(store, None)
    assert not report.ok and report.problem.seq == 5


async def test_inserted_row_with_a_correct_own_hash_is_caught_at_the_next_event(store, raw) -> None:
    await fill(store)
    raw.execute("UPDATE audit SET seq=-(seq+1) WHERE seq>=5")
    raw.execute("UPDATE audit SET seq=-seq WHERE seq<0")
    prev = raw.row(4)[5]
    body = '{"decision":"allow"}'
    raw.execute(
        "INSERT INTO audit VALUES (5, 123.0, 'decision', ?, ?, ?)",
        (body, prev, chain_hash(prev, 5, 123.0, "decision", body)),
    )
    report = await verify_chain(store, None)
    assert not report.ok and report.problem.seq == 6


async def test_swapped_rows_are_named(store, raw) -> None:
    await fill(store)
    raw.execute("UPDATE audit SET seq=-1 WHERE seq=7")
    raw.execute("UPDATE audit SET seq=7 WHERE seq=8")
    raw.execute("UPDATE audit SET seq=8 WHERE seq=-1")
    report = await verify_chain(store, None)
    assert not report.ok and report.problem.seq == 7


async def test_swapped_bodies_are_named(store, raw) -> None:
    await fill(store)
    a, b = raw.row(2)[3], raw.row(3)[3]
    raw.execute("UPDATE audit SET body=? WHERE seq=2", (b,))
    raw.execute("UPDATE audit SET body=? WHERE seq=3", (a,))
    report = await verify_chain(store, None)
    assert not report.ok and report.problem.seq == 2


async def test_edited_hash_is_named(store, raw) -> None:
    await fill(store)
    raw.execute("UPDATE audit SET hash=? WHERE seq=4", ("0" * 64,))
    report = await verify_chain(store, None)
    assert not report.ok and report.problem.seq == 4 and "stored hash was edited" in report.problem.what


async def test_edited_last_hash_is_named(store, raw) -> None:
    await fill(store)
    raw.execute("UPDATE audit SET hash=? WHERE seq=10", ("0" * 64,))
    report = await verify_chain(store, None)
    assert not report.ok and report.problem.seq == 10


async def test_malformed_row_is_named_not_crashed(store, raw) -> None:
    await fill(store)
    raw.execute("UPDATE audit SET ts='yesterday' WHERE seq=2")
    report = await verify_chain(store, None)
    assert not report.ok and report.problem.seq == 2


# -- retention -------------------------------------------------------------------------------------


async def test_prune_keeps_a_provable_chain(store, raw) -> None:
    await fill(store, 10, ts0=1000.0)
    result = await prune(store, before_ts=1004.5, key=KEY)
    assert (result.deleted, result.checkpoint_seq) == (4, 5)  # the checkpoint's own event stays
    assert raw.execute("SELECT min(seq), count(*) FROM audit") == [(5, 6)]
    report = await verify_chain(store, KEY)
    assert report.ok and report.checkpoint_seq == 5 and (report.first_seq, report.checked) == (6, 5)
    # Pruning again moves the checkpoint forward, never back.
    assert (await prune(store, before_ts=1002.0, key=KEY)).deleted == 0
    result = await prune(store, before_ts=1007.5, key=KEY)
    assert (result.deleted, result.checkpoint_seq) == (3, 8)
    assert raw.execute("SELECT min(seq), count(*) FROM audit") == [(8, 3)]
    assert (await verify_chain(store, KEY)).ok


async def test_prune_everything_then_keep_writing(store) -> None:
    await fill(store, 4, ts0=1000.0)
    assert (await prune(store, before_ts=2000.0, key=KEY)).deleted == 3
    report = await verify_chain(store, KEY)
    assert report.ok and report.checked == 0 and report.notes
    await fill(store, 3)
    report = await verify_chain(store, KEY)
    assert report.ok and (report.first_seq, report.last_seq) == (5, 7)


async def test_crash_between_checkpoint_and_delete_still_verifies(store) -> None:
    await fill(store, 6, ts0=1000.0)
    await prune(store, before_ts=1003.5, key=KEY)
    # As if the delete had not happened: re-insert nothing, but move the checkpoint forward over kept rows.
    from rolegate.audit.checkpoint import Checkpoint

    row = (await store.audit_rows(after_seq=4, limit=1))[0]
    cp = Checkpoint(row["seq"], row["hash"], row["ts"], 2000.0).signed(KEY)
    await store.put("audit", "checkpoint", cp.to_json())
    assert (await verify_chain(store, KEY)).ok


@pytest.mark.parametrize("field,value", [("seq", 3), ("hash", "a" * 64), ("sig", "0" * 64), ("ts", 1.0)])
async def test_tampered_checkpoint_is_detected(store, raw, field, value) -> None:
    await fill(store, 10, ts0=1000.0)
    await prune(store, before_ts=1004.5, key=KEY)
    doc = json.loads(raw.execute("SELECT value FROM kv WHERE namespace='audit' AND key='checkpoint'")[0][0])
    doc[field] = value
    raw.execute("UPDATE kv SET value=? WHERE namespace='audit' AND key='checkpoint'", (json.dumps(doc),))
    report = await verify_chain(store, KEY)
    assert not report.ok and report.problem.seq is None and "signature" in report.problem.what


async def test_checkpoint_signed_with_another_key_is_rejected(store) -> None:
    await fill(store, 10, ts0=1000.0)
    await prune(store, before_ts=1004.5, key=b"other-key")
    report = await verify_chain(store, KEY)
    assert not report.ok and report.problem.seq is None


async def test_deleted_checkpoint_is_detected(store, raw) -> None:
    await fill(store, 10, ts0=1000.0)
    await prune(store, before_ts=1004.5, key=KEY)
    raw.execute("DELETE FROM kv WHERE namespace='audit' AND key='checkpoint'")
    report = await verify_chain(store, KEY)
    assert not report.ok and report.problem.seq == 1 and "missing" in report.problem.what


@pytest.mark.parametrize("emptied", [True, False])
async def test_deleted_checkpoint_event_is_detected(store, raw, emptied) -> None:
    await fill(store, 10, ts0=1000.0)
    await prune(store, before_ts=1004.5, key=KEY)
    raw.execute("DELETE FROM audit" if emptied else "DELETE FROM audit WHERE seq=5")
    if emptied:
        await fill(store, 3)  # the store restarts the chain at seq 1 from GENESIS
    report = await verify_chain(store, KEY)
    assert not report.ok and report.problem.seq == 5 and "missing" in report.problem.what


async def test_edited_checkpoint_event_is_detected(store, raw) -> None:
    await fill(store, 10, ts0=1000.0)
    await prune(store, before_ts=1004.5, key=KEY)
    raw.execute("UPDATE audit SET body='{}' WHERE seq=5")
    report = await verify_chain(store, KEY)
    assert not report.ok and report.problem.seq == 5


async def test_garbage_checkpoint_is_detected(store, raw) -> None:
    await fill(store, 10, ts0=1000.0)
    await prune(store, before_ts=1004.5, key=KEY)
    raw.execute("UPDATE kv SET value='[1,2]' WHERE namespace='audit' AND key='checkpoint'")
    report = await verify_chain(store, KEY)
    assert not report.ok and report.problem.seq is None


async def test_checkpoint_without_key_cannot_verify(store) -> None:
    await fill(store, 10, ts0=1000.0)
    await prune(store, before_ts=1004.5, key=KEY)
    with pytest.raises(CannotVerify):
        await verify_chain(store, None)
