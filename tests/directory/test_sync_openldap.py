"""Directory sync against the lab's real OpenLDAP slapd (company.ldif and generated data)."""

from __future__ import annotations

import asyncio

import pytest

from rolegate.directory import DirectorySync, load_snapshot, service
from rolegate.directory.persist import COUNTER

from .conftest import add_in_chunks, group_dn, group_ldif, user_dn

pytestmark = pytest.mark.lab


async def assert_stored(store, snap) -> None:
    """What workers load is, user for user and group for group, what the master applied."""
    loaded = await load_snapshot(store)
    assert {u.id: (u.dn, u.username, u.email, u.name, u.disabled, u.groups, dict(u.attributes)) for u in loaded} == {
        u.id: (u.dn, u.username, u.email, u.name, u.disabled, u.groups, dict(u.attributes)) for u in snap
    }
    assert {g.id: (g.dn, g.name, g.member_users, g.member_groups, g.unresolved) for g in loaded.groups.values()} == {
        g.id: (g.dn, g.name, g.member_users, g.member_groups, g.unresolved) for g in snap.groups.values()
    }


async def test_full_sync_of_the_company_directory(lab_slapd, config_for, store, audit) -> None:
    sync = DirectorySync(config_for(lab_slapd), store, audit=audit)
    result = await sync.sync_now(full=True)
    assert result.ok and result.applied, result.error
    snap = sync.snapshot
    bob = snap.user("bob")
    assert bob.groups == {"technicians", "staff"}  # nested: technicians is inside staff
    assert bob.email == "bob@example.com" and bob.name == "Bob Bakker" and not bob.disabled
    assert snap.user("ivan").disabled  # employeeType: disabled
    assert snap.user("alice").groups >= {"staff", "admins", "bs-admins"}
    assert snap.user("nobody") is None
    assert len(bob.id) == 36  # entryUUID
    assert sync.status.state == "ok" and sync.status.users == len(snap.users) >= 15
    # workers read what the master applied
    assert await store.counter(COUNTER) == 1
    loaded = await load_snapshot(store)
    assert loaded.user("bob").groups == bob.groups and loaded.user("ivan").disabled
    assert audit.events[0][0] == "directory.sync" and audit.events[0][1]["counts"]["users_added"] == len(snap.users)
    # nothing changed: a second run applies nothing new
    again = await sync.sync_now(full=True)
    assert again.ok and again.diff.empty and await store.counter(COUNTER) == 1


async def test_cycle_rename_and_incremental(fresh_slapd, config_for, store, audit) -> None:
    slapd = fresh_slapd
    sync = DirectorySync(config_for(slapd), store, audit=audit)
    assert (await sync.sync_now(full=True)).ok
    trent_id = sync.snapshot.user("trent").id
    # The seed was written within the last second, inside the watermark's safety overlap; one
    # later change moves the watermark past it so the next run reads only what changes below.
    await asyncio.sleep(3.1)
    slapd.ldapmodify(f"dn: {user_dn('olivia')}\nchangetype: modify\nreplace: title\ntitle: Office lead\n")
    assert (await sync.sync_now(full=False)).ok

    # group A in B in A, and a rename of trent that keeps his entryUUID
    slapd.ldapadd(group_ldif("loop-a", [user_dn("alice")]) + group_ldif("loop-b", [user_dn("bob"), group_dn("loop-a")]))
    slapd.ldapmodify(f"dn: {group_dn('loop-a')}\nchangetype: modify\nadd: member\nmember: {group_dn('loop-b')}\n")
    slapd.ldapmodify(f"dn: {user_dn('trent')}\nchangetype: modrdn\nnewrdn: uid=trent.tromp\ndeleteoldrdn: 1\n")

    result = await sync.sync_now(full=False)
    assert result.ok and not result.full, result.error
    snap = sync.snapshot
    assert snap.user("alice").groups >= {"loop-a", "loop-b"}
    assert snap.user("bob").groups >= {"loop-a", "loop-b", "technicians", "staff"}
    renamed = snap.user("trent.tromp")
    assert renamed is not None and renamed.id == trent_id and snap.user("trent") is None
    assert renamed.groups == {"technicians", "staff"}  # refint rewrote the member value; identity held
    change = next(c for c in result.diff.users_changed if c.id == trent_id)
    assert change.fields["username"] == ("trent", "trent.tromp")
    assert not result.diff.users_removed and not result.diff.users_added
    assert {g.name for g in result.diff.groups_added} == {"loop-a", "loop-b"}
    # incremental read only what changed, not the whole directory
    assert result.entries_read < 10
    await assert_stored(store, snap)

    # a full sync agrees with the incremental one
    full = await sync.sync_now(full=True)
    assert full.ok and full.diff.empty, full.diff.as_dict()
    await assert_stored(store, sync.snapshot)


async def test_deletion_and_disable_found_at_incremental(fresh_slapd, config_for, store) -> None:
    slapd = fresh_slapd
    sync = DirectorySync(config_for(slapd, max_deletions="50%"), store)
    assert (await sync.sync_now(full=True)).ok
    slapd.ldapdelete(user_dn("frank"))
    slapd.ldapmodify(f"dn: {user_dn('heidi')}\nchangetype: modify\nreplace: employeeType\nemployeeType: disabled\n")
    inc = await sync.sync_now(full=False)
    assert inc.ok and sync.snapshot.user("heidi").disabled
    assert [c.username for c in inc.diff.newly_disabled] == ["heidi"]
    # the deletion too (issue 28; see test_deletions.py), not an hour later at the full sync
    assert [c.username for c in inc.diff.users_removed] == ["frank"]
    assert sync.snapshot.user("frank") is None
    assert "sales" in {g.name for g in inc.diff.groups_changed}  # frank left sales with his entry
    await assert_stored(store, sync.snapshot)
    assert (await load_snapshot(store)).user("frank") is None
    full = await sync.sync_now(full=True)
    assert full.ok and full.diff.empty, full.diff.as_dict()


async def test_group_of_5000_members(fresh_slapd, config_for, store) -> None:
    names = [f"crew{i:05d}" for i in range(5000)]
    add_in_chunks(fresh_slapd, names)
    fresh_slapd.ldapadd(group_ldif("crew", [user_dn(n) for n in names]))
    fresh_slapd.ldapmodify(f"dn: {group_dn('staff')}\nchangetype: modify\nadd: member\nmember: {group_dn('crew')}\n")
    sync = DirectorySync(config_for(fresh_slapd, page_size=500), store)
    result = await sync.sync_now(full=True)
    assert result.ok, result.error
    snap = sync.snapshot
    crew = next(g for g in snap.groups.values() if g.name == "crew")
    assert len(crew.member_users) == 5000
    assert snap.user("crew04999").groups == {"crew", "staff"}


async def test_openldap_member_forms_and_odd_data(fresh_slapd, config_for, store) -> None:
    slapd = fresh_slapd
    slapd.ldapadd(
        # no mail, non-UTF-8 photo mapped as an attribute, a posixGroup and a groupOfUniqueNames
        f"dn: uid=odd,{'ou=people,dc=example,dc=com'}\nobjectClass: inetOrgPerson\nuid: odd\ncn: Odd\nsn: O\n"
        "jpegPhoto:: /9j/4AAQSkZJRgABAQ==\n\n"
        + "dn: cn=posix,ou=groups,dc=example,dc=com\nobjectClass: posixGroup\ncn: posix\ngidNumber: 5000\n"
        "memberUid: odd\nmemberUid: ghost\n\n"
        + group_ldif(
            "unique",
            [user_dn("bob") + "#'0101'B", "uid=nobody,dc=nowhere"],
            object_class="groupOfUniqueNames",
            attribute="uniqueMember",
        )
        + group_ldif("dangling", [user_dn("alice"), "uid=deleted,ou=people,dc=example,dc=com"])
    )
    sync = DirectorySync(
        config_for(slapd, users={"attributes": {"email": "mail", "name": "cn", "photo": "jpegPhoto"}}), store
    )
    result = await sync.sync_now(full=True)
    assert result.ok, result.error
    snap = sync.snapshot
    odd = snap.user("odd")
    assert odd.email is None and odd.groups == {"posix"} and "\ufffd" in odd.attributes["photo"][0]
    assert "unique" in snap.user("bob").groups
    assert "dangling" in snap.user("alice").groups
    dangling = next(g for g in snap.groups.values() if g.name == "dangling")
    assert dangling.unresolved == ("uid=deleted,ou=people,dc=example,dc=com",)


async def test_a_user_whose_dn_is_in_mixed_case_is_the_member_a_group_names_in_another_form(
    fresh_slapd, config_for, store
) -> None:
    """The read keys each user by their DN in normal form (the builder's index): a group naming
    ``UID=casey , OU=People,...`` finds the user the server returns as ``uid=Casey,ou=people,...``."""
    slapd = fresh_slapd
    slapd.ldapadd(
        "dn: uid=Casey,ou=people,dc=example,dc=com\nobjectClass: inetOrgPerson\nuid: Casey\ncn: Casey\nsn: C\n\n"
        + group_ldif("case-blind", ["UID=casey , OU=People,dc=example,dc=com"])
    )
    sync = DirectorySync(config_for(slapd), store)
    result = await sync.sync_now(full=True)
    assert result.ok, result.error
    group = next(g for g in sync.snapshot.groups.values() if g.name == "case-blind")
    assert group.unresolved == () and "case-blind" in sync.snapshot.user("casey").groups


async def test_member_of_attribute_as_a_source(lab_slapd, config_for, store) -> None:
    # memberOf (maintained by the lab's overlay) alongside the group side: the same answer.
    config = config_for(lab_slapd, users={"member_of": "memberOf"})
    sync = DirectorySync(config, store)
    assert (await sync.sync_now(full=True)).ok
    assert sync.snapshot.user("bob").groups == {"technicians", "staff"}


async def test_the_audit_of_a_large_sync_lists_the_first_changes_and_counts_all(
    lab_slapd, config_for, store, audit, monkeypatch
) -> None:
    """A first sync of a million users is a million changes: the event lists AUDIT_LIST_LIMIT of each, counts all."""
    monkeypatch.setattr(service, "AUDIT_LIST_LIMIT", 5)
    sync = DirectorySync(config_for(lab_slapd), store, audit=audit)
    result = await sync.sync_now(full=True)
    assert result.ok and len(result.diff.users_added) > 10  # the result itself keeps every change
    (kind, body), *_ = audit.events
    assert kind == "directory.sync" and body["counts"]["users_added"] == len(result.diff.users_added)
    assert body["users_added"][:5] == [c.as_dict() for c in result.diff.users_added[:5]]
    assert body["users_added"][5:] == [{"truncated": len(result.diff.users_added) - 5}]


async def test_an_applied_snapshot_is_out_of_the_collector_s_sight(lab_slapd, config_for, store) -> None:
    """A million users' objects left to the cyclic GC cost every later full collection a pass over all of them."""
    import gc

    sync = DirectorySync(config_for(lab_slapd), store)
    try:
        result = await sync.sync_now(full=True)
        assert result.ok and result.applied
        bob = sync.snapshot.user("bob")
        assert gc.is_tracked(bob) and not any(o is bob for o in gc.get_objects())  # frozen: gc.freeze()
        await sync.sync_now(full=True)  # a full run lets the collector see everything again first
        assert not any(o is bob for o in gc.get_objects())
    finally:
        gc.unfreeze()
