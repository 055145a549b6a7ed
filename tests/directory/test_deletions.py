"""Deletions seen by the incremental sync on OpenLDAP: a deleted account is gone within one interval.

Issue 28: an incremental sync reads what changed since its watermark, and a deleted entry changes
nothing it could read, so a deleted account kept its access until the next full sync (default 1 h).
Now each incremental run also finds what left: from the accesslog overlay when ``directory.accesslog``
names it, by listing every id when not. Both ways are run here on the lab's real slapd.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from rolegate.directory import DirectorySync, load_snapshot
from rolegate.directory.connection import connection
from rolegate.directory.presets import resolve_schema

from .conftest import group_dn, user_dn

pytestmark = pytest.mark.lab
WAIT = 60.0  # bound on waiting for the sync loop's next run (it runs every second here)


@pytest.fixture(params=["accesslog", "id listing"])
def how(request) -> str:
    return request.param


def config_of(config_for, slapd, how: str, **changes):
    if how == "accesslog":
        changes["accesslog"] = "cn=accesslog"
    return config_for(slapd, **changes)


async def next_run_after(sync: DirectorySync, moment: float) -> None:
    """Wait until a sync run that began after ``moment`` has finished (bounded)."""
    deadline = time.monotonic() + WAIT
    while sync.status.last_success is None or sync.status.last_success <= moment:
        assert time.monotonic() < deadline, f"no sync run finished within {WAIT}s: {sync.status.as_dict()}"
        await asyncio.sleep(0.05)


async def test_a_deleted_user_is_gone_after_one_interval(make_slapd, config_for, store, how) -> None:
    """The sync loop as `serve` runs it: incremental every interval, the next full sync an hour away."""
    slapd = make_slapd(accesslog=how == "accesslog")
    sync = DirectorySync(
        config_of(config_for, slapd, how, interval="1s", full_interval="1h", max_deletions="50%"), store
    )
    await sync.start()
    try:
        await next_run_after(sync, 0)
        first_full = sync.status.last_full
        assert sync.snapshot.user("frank") is not None and "sales" in sync.snapshot.user("frank").groups
        deleted_at = time.time()
        slapd.ldapdelete(user_dn("frank"))
        await next_run_after(sync, deleted_at)
        assert sync.status.last_full == first_full  # it was an incremental run that saw it
        assert sync.snapshot.user("frank") is None
        assert (await load_snapshot(store)).user("frank") is None  # what every worker reads
        sales = next(g for g in sync.snapshot.groups.values() if g.name == "sales")
        assert all(sync.snapshot.users[u].username != "frank" for u in sales.member_users)
        assert sync.status.state == "ok"
    finally:
        await sync.stop()


async def test_moves_out_of_scope_deleted_groups_and_a_full_sync_agrees(make_slapd, config_for, store, how) -> None:
    slapd = make_slapd(accesslog=how == "accesslog")
    sync = DirectorySync(config_of(config_for, slapd, how, max_deletions="50%"), store)
    assert (await sync.sync_now(full=True)).ok
    bob = sync.snapshot.user("bob")
    assert bob.groups == {"technicians", "staff"}
    # The watermark's safety overlap covers the seed's last second; step past it first.
    await asyncio.sleep(3.1)
    slapd.ldapmodify(f"dn: {user_dn('olivia')}\nchangetype: modify\nreplace: title\ntitle: Office lead\n")
    assert (await sync.sync_now(full=False)).ok

    # judy moves out of ou=people; the technicians group (bob's way into staff) is deleted.
    slapd.ldapmodify(
        f"dn: {user_dn('judy')}\nchangetype: modrdn\nnewrdn: uid=judy\ndeleteoldrdn: 1\n"
        f"newsuperior: ou=services,{slapd.base_dn}\n"
    )
    slapd.ldapdelete(group_dn("technicians"))
    result = await sync.sync_now(full=False)
    assert result.ok and not result.full, result.error
    snap = sync.snapshot
    assert snap.user("judy") is None
    assert snap.user("bob").groups == set()  # technicians is gone, and staff only held bob through it
    assert "technicians" not in {g.name for g in snap.groups.values()}
    assert [c.username for c in result.diff.users_removed] == ["judy"]
    assert [g.name for g in result.diff.groups_removed] == ["technicians"]
    assert result.entries_read < 10  # still an incremental read
    assert (await load_snapshot(store)).user("judy") is None

    full = await sync.sync_now(full=True)
    assert full.ok and full.diff.empty, full.diff.as_dict()


async def test_departures_cost_what_changed_with_the_accesslog(make_slapd, config_for) -> None:
    """With the accesslog the departures are the writes since the watermark, not the whole directory;
    without it (or when it cannot be read) every id is listed."""
    from rolegate.directory.departures import read_departures

    slapd = make_slapd(accesslog=True)
    with_log = config_for(slapd, accesslog="cn=accesslog")
    since = time.strftime("%Y%m%d%H%M%SZ", time.gmtime(time.time() - 1))
    slapd.ldapdelete(user_dn("frank"))
    with connection(with_log) as conn:
        found = read_departures(conn, resolve_schema(with_log), since, 100)
        assert found.method == "accesslog" and found.listed is None and len(found.changed) == 1
        listed = read_departures(conn, resolve_schema(config_for(slapd)), since, 100)
        assert listed.method == "id listing" and len(listed.listed) > 20 and not listed.changed
        wrong = config_for(slapd, accesslog="cn=nolog")
        assert read_departures(conn, resolve_schema(wrong), since, 100).method == "id listing"


async def test_the_deletion_guard_holds_incremental_deletions(make_slapd, config_for, store, how) -> None:
    slapd = make_slapd(accesslog=how == "accesslog")
    sync = DirectorySync(config_of(config_for, slapd, how), store)  # max_deletions 10%: 1 of 15
    assert (await sync.sync_now(full=True)).ok
    for name in ("grace", "frank"):
        slapd.ldapdelete(user_dn(name))
    dry = await sync.sync_now(full=False, dry_run=True)
    assert dry.refused and not dry.applied
    assert [c.username for c in dry.diff.users_removed] == ["frank", "grace"]
    refused = await sync.sync_now(full=False)
    assert refused.refused and not refused.applied and refused.pending_deletions == 2
    assert refused.refusal == (
        "the sync would remove or disable 2 of 15 users (removed: frank, grace); max_deletions allows 1"
    )
    assert sync.status.state == "refused" and sync.snapshot.user("frank") is not None
    assert (await load_snapshot(store)).user("frank") is not None  # nothing applied
    # Refused again next interval (the watermark did not move), until someone forces it.
    assert (await sync.sync_now(full=False)).refused
    forced = await sync.sync_now(full=False, force=True)
    assert forced.applied and sync.snapshot.user("frank") is None and sync.status.state == "ok"
