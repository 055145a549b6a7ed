"""Many rolegate instances on one PostgreSQL database and one Redis: one state, one directory syncer.

Every instance is a real ``rolegate serve`` (master + workers) on its own port. Instances get their
own version board (see tests/scale/fleet.py), so whatever one learns from another went through
PostgreSQL / Redis, as between machines. These tests leave both servers running, so they use the
machine's (a database and a key prefix of their own); figures are printed (``pytest -s``).

"Changes take effect at the next request on every worker" (docs/configuration.md; other instances' changes arrive
through the Store poll, 0.5 s): after a change the test waits that bound and then asserts the FIRST
request each worker of each instance answers, on fresh connections traced to the worker (nothing
polled in between, which would let a worker answer stale once and still pass).
"""

from __future__ import annotations

import asyncio
import json
import time

import jwt
import pytest

from rolegate.config.sections.storage import StorageConfig
from rolegate.directory import load_snapshot
from rolegate.identity.daypass.record import load_pass
from rolegate.store import open_store
from rolegate.store.version_board import bump
from rolegate_lab import lab_client_session
from tests.scale.fleet import (
    JSON,
    STORE_POLL_BOUND,
    Fleet,
    bodies_on_every_worker,
    directory_section,
    kill_tree,
    poll_until,
    readyz,
    report,
    sign_in,
    status_of,
)
from tests.support.workers import on_every_worker

pytestmark = [pytest.mark.lab, pytest.mark.slow]


async def admin_store(fleet: Fleet):
    """The test acting as the admin API / another tool: a Store on the shared backend."""
    return await open_store(StorageConfig(url=fleet.db_url, cache_url=fleet.redis_url, cache_prefix=fleet.prefix))


async def every_worker(
    fleet: Fleet, path: str, cookie: str, method: str = "GET", instances: list[int] | None = None
) -> dict[int, list[tuple[int, int]]]:
    """Per instance: (worker pid, status) of ``method path`` on fresh connections until each of its workers
    answered twice. Each worker's first entry is the first request it answered since the caller's last."""
    seen = {}
    for i in range(fleet.count) if instances is None else instances:
        seen[i] = await on_every_worker(
            fleet.procs[i], None, method, fleet.urls[i] + path, headers={**JSON, "Cookie": cookie}
        )
    return seen


def only(seen: dict[int, list[tuple[int, int]]], expected: int) -> bool:
    return all(status == expected for answers in seen.values() for _, status in answers)


def fmt(seen: dict[int, list[tuple[int, int]]]) -> str:
    return "; ".join(f"i{i}: " + " ".join(f"{pid}->{status}" for pid, status in answers) for i, answers in seen.items())


async def test_three_instances_share_sessions_and_see_revocations_at_the_next_request(
    make_fleet, make_idp, lab_backend
):
    fleet = make_fleet(3, workers=1)
    idp = make_idp([fleet.client()])
    fleet.start([fleet.config(i, idp, lab_backend.url) for i in range(3)])
    store = await admin_store(fleet)
    try:
        async with lab_client_session() as browser_a, lab_client_session() as browser_h, lab_client_session() as probe:
            # Sign in on one instance, use the session on all of them (same session.secret, shared store).
            alice = await sign_in(browser_a, fleet.urls[0], "alice")
            heidi = await sign_in(browser_h, fleet.urls[1], "heidi")
            for url in fleet.urls:
                assert await status_of(probe, url + "/api/notes/1", alice) == 200
                assert await status_of(probe, url + "/api/notes/1", alice, "POST", data=b"x") == 200
            # Every worker has remembered heidi's refusal (and alice's session) before the changes.
            before = await every_worker(fleet, "/api/notes/1", heidi)
            assert only(before, 403), fmt(before)

            # A grant written to the Store (as the admin API does) applies from the first request after the
            # Store poll on every instance.
            await store.put("bindings", "heidi-reader", {"user": "heidi", "role": "reader", "scope": None})
            await bump(store, None, "policy")
            await asyncio.sleep(STORE_POLL_BOUND)
            granted = await every_worker(fleet, "/api/notes/1", heidi)
            report(f"grant (binding + policy bump), first requests {STORE_POLL_BOUND:.1f} s later: {fmt(granted)}")
            assert only(granted, 200), fmt(granted)

            # Revoked: the binding deleted, the counter bumped; the first request after the poll is refused.
            await store.delete("bindings", "heidi-reader")
            await bump(store, None, "policy")
            await asyncio.sleep(STORE_POLL_BOUND)
            revoked = await every_worker(fleet, "/api/notes/1", heidi)
            report(f"binding revoked, first requests {STORE_POLL_BOUND:.1f} s later: {fmt(revoked)}")
            assert only(revoked, 403), fmt(revoked)

            # Logout on instance 2 ends the session on 0 and 1 as well, from their next request.
            async with browser_a.get(
                fleet.urls[2] + "/.rolegate/logout", headers={"Cookie": alice}, allow_redirects=False
            ) as resp:
                assert resp.status == 302
            await asyncio.sleep(STORE_POLL_BOUND)
            logged_out = await every_worker(fleet, "/api/notes/1", alice)
            report(f"logout on instance 2, first requests {STORE_POLL_BOUND:.1f} s later: {fmt(logged_out)}")
            assert only(logged_out, 401), fmt(logged_out)
            posts = await every_worker(fleet, "/api/notes/1", alice, "POST")
            assert only(posts, 401), fmt(posts)
    finally:
        await store.close()

    # The writes that passed are in the one shared audit chain, whichever instance took them.
    store = await admin_store(fleet)
    try:
        rows = await store.audit_find(kinds=("decision",), equals={"user": "alice", "method": "POST"})
    finally:
        await store.close()
    assert len(rows) == 3, [r["body"] for r in rows]


def kid_sets(seen: list[tuple[int, int, bytes]]) -> set[tuple[str, ...]]:
    assert all(status == 200 for _, status, _ in seen), [(pid, status) for pid, status, _ in seen]
    return {tuple(sorted(k["kid"] for k in json.loads(body)["keys"])) for _, _, body in seen}


async def test_signing_keys_are_created_once_and_published_by_every_worker(make_fleet, make_idp, lab_backend):
    fleet = make_fleet(2, workers=2)
    idp = make_idp([fleet.client()])
    fleet.start([fleet.config(i, idp, lab_backend.url) for i in range(2)])  # both start on an empty store

    async def published() -> dict[int, set[tuple[str, ...]]]:
        """Per instance, the kid sets its workers published (each worker asked on fresh connections)."""
        return {
            i: kid_sets(await bodies_on_every_worker(p, fleet.urls[i] + "/.well-known/jwks.json"))
            for i, p in enumerate(fleet.procs)
        }

    first = await published()
    assert first[0] == first[1] and len(first[0]) == 1 and next(iter(first[0])), first
    first_kids = set(next(iter(first[0])))

    def creations() -> dict[str, int]:
        counts: dict[str, int] = {}
        for proc in fleet.procs:
            for line in proc.output:
                if "created signing key" in line:
                    kid = line.rsplit("kid=", 1)[1].strip()
                    counts[kid] = counts.get(kid, 0) + 1
        return counts

    assert creations() and all(n == 1 for n in creations().values()), creations()

    # Force a rotation: the keys in force are retired from the Store and the fleet told so. Each of the
    # four workers needs a new key; exactly one creates it, every other reads the winner's. The ``keys``
    # counter travels like every change (the Store poll): the first JWKS each worker serves after that
    # bound is the new one.
    store = await admin_store(fleet)
    try:
        for record in await store.list("keys"):
            await store.delete("keys", record.key)
        await bump(store, None, "keys")
    finally:
        await store.close()
    await asyncio.sleep(STORE_POLL_BOUND)
    now = await published()
    report(
        f"key rotation: JWKS of every worker {STORE_POLL_BOUND:.1f} s after the keys bump: {now} "
        f"(before: {first}); creations per kid: {sorted(creations().values())}"
    )
    assert now[0] == now[1] and len(now[0]) == 1, now
    new_kids = set(next(iter(now[0])))
    assert new_kids and not new_kids & first_kids, (now, first)
    assert all(n == 1 for n in creations().values()), creations()
    assert new_kids <= set(creations())  # the published kid is the one key created

    # A token minted by one instance verifies with the other instance's JWKS.
    async with lab_client_session() as browser:
        cookie = await sign_in(browser, fleet.urls[0], "alice")
        async with browser.get(fleet.urls[0] + "/api/notes/1", headers={"Cookie": cookie}) as resp:
            assert resp.status == 200
            token = (await resp.json())["headers"]["X-Rolegate-Assertion"]
    key = jwt.PyJWKClient(fleet.urls[1] + "/.well-known/jwks.json").get_signing_key_from_jwt(token)
    claims = jwt.decode(token, key.key, algorithms=["EdDSA", "ES256"], audience="app", issuer=fleet.urls[0])
    assert claims["sub"] == "alice"


def leaders(fleet: Fleet, alive: list[int]) -> dict[int, dict]:
    states = {}
    for i in alive:
        status, body = readyz(fleet.procs[i])
        states[i] = body.get("checks", {}).get("directory", {})
    return states


async def test_one_instance_syncs_the_directory_and_another_takes_over_when_it_dies(
    make_fleet, make_idp, lab_backend, fresh_slapd
):
    fleet = make_fleet(3, workers=1)
    idp = make_idp([fleet.client()])
    configs = []
    for i in range(3):
        config = fleet.config(i, idp, lab_backend.url, directory=directory_section(fresh_slapd))
        config["bindings"] = [{"group": "admins", "role": "writer"}, {"group": "finance", "role": "reader"}]
        configs.append(config)
    fleet.start(configs)
    alive = [0, 1, 2]

    async def one_leader_synced() -> bool:
        states = leaders(fleet, alive)
        held = [i for i, s in states.items() if s.get("leader")]
        return len(held) == 1 and states[held[0]].get("state") == "ok"

    ok, took = await poll_until(one_leader_synced, 30, 0.2)
    states = leaders(fleet, alive)
    assert ok, f"no single synced leader {took:.0f} s after start: {states}"
    leader = next(i for i, s in states.items() if s.get("leader"))
    report(
        f"directory: instance {leader} leads after start ({took:.1f} s); states: "
        + "; ".join(f"i{i}={s.get('state')}" for i, s in states.items())
    )
    # Stays one: watch it for a few more seconds (the standbys retry the lock every 2 s).
    for _ in range(10):
        await asyncio.sleep(0.3)
        states = leaders(fleet, alive)
        assert sum(bool(s.get("leader")) for s in states.values()) == 1, states

    async with lab_client_session() as browser_h, lab_client_session() as browser_a:
        others = [i for i in alive if i != leader]
        heidi = await sign_in(browser_h, fleet.urls[others[0]], "heidi")
        alice = await sign_in(browser_a, fleet.urls[others[1]], "alice")
        # Every instance (and worker) has decided, and remembered, heidi's refusal before the change.
        before = await every_worker(fleet, "/api/notes/1", heidi, instances=alive)
        assert only(before, 403), fmt(before)
        assert only(await every_worker(fleet, "/api/notes/1", alice, instances=alive), 200)

        # The syncing instance vanishes: master and workers SIGKILLed.
        killed_at = time.monotonic()
        kill_tree(fleet.procs[leader])
        alive = others

        async def taken_over() -> bool:
            states = leaders(fleet, alive)
            held = [i for i, s in states.items() if s.get("leader")]
            return len(held) == 1 and states[held[0]].get("state") == "ok"

        ok, _ = await poll_until(taken_over, 30, 0.1)
        takeover = time.monotonic() - killed_at
        states = leaders(fleet, alive)
        assert ok, f"no survivor took the directory sync over within {takeover:.0f} s: {states}"
        new_leader = next(i for i, s in states.items() if s.get("leader"))

        # A directory change is applied by the new leader. The test watches the Store (not rolegate) for the
        # sync that commits it; from then on the Store poll bound applies, and the first request each
        # surviving instance answers after it must see heidi in finance.
        fresh_slapd.ldapmodify(
            "dn: cn=finance,ou=groups,dc=example,dc=com\nchangetype: modify\nadd: member\n"
            "member: uid=heidi,ou=people,dc=example,dc=com\n"
        )
        store = await admin_store(fleet)
        try:

            async def committed() -> bool:
                snapshot = await load_snapshot(store)
                user = snapshot.user("heidi") if snapshot is not None else None
                return user is not None and "finance" in user.groups

            ok, applied = await poll_until(committed, 30, 0.1)
        finally:
            await store.close()
        states = leaders(fleet, alive)
        assert ok, f"the group change never reached the Store's directory snapshot in 30 s: {states}"
        await asyncio.sleep(STORE_POLL_BOUND)
        after = await every_worker(fleet, "/api/notes/1", heidi, instances=alive)
        report(
            f"directory: leader i{leader} SIGKILLed; i{new_leader} took over and synced {takeover:.1f} s "
            f"later; a group change was committed {applied:.1f} s after the LDAP write; first requests "
            f"{STORE_POLL_BOUND:.1f} s after the commit: {fmt(after)}"
        )
        assert only(after, 200), fmt(after)
        # The lock stayed with the new leader alone, and its sync is healthy.
        states = leaders(fleet, alive)
        assert [i for i, s in states.items() if s.get("leader")] == [new_leader], states
        assert states[new_leader].get("state") == "ok", states


def daypass_sections(fleet: Fleet, i: int, idp, backend_url: str, expires: str) -> dict:
    config = fleet.config(i, idp, backend_url)
    config["scopes"] = {"building": {"description": "a building"}}
    config["roles"]["subcontractor"] = {"permissions": ["notes:view"]}
    config["routes"] = [
        {
            "path": "/buildings/{building}/notes",
            "methods": ["GET"],
            "permission": "notes:view",
            "scope": "building:{building}",
            "upstream": "app",
        }
    ]
    config["daypass"] = {
        "templates": {
            "sub": {
                "role": "subcontractor",
                "scopes": ["building"],
                "max_lifetime": "1h",
                "expires": expires,
                "devices": 1,
                "require": ["name"],
                "landing": "/buildings/{building}/notes",
            }
        }
    }
    return config


def rolegate_cli(*args: str) -> str:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "rolegate", *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


async def redeem_on(http, link: str, origin: str) -> int:
    import re

    async with http.get(link, headers={"Accept": "text/html"}) as page:
        if page.status == 404:
            return 404
        assert page.status == 200, await page.text()
        token = re.search(r'name="csrf" value="([^"]+)"', await page.text()).group(1)
    async with http.post(
        link, data={"csrf": token}, headers={"Accept": "text/html", "Origin": origin}, allow_redirects=False
    ) as resp:
        await resp.read()
        return resp.status


async def test_day_pass_redeemed_on_one_instance_works_on_all_and_ends_everywhere(
    make_fleet, make_idp, lab_backend, tmp_path
):
    import re

    fleet = make_fleet(3, workers=1)
    idp = make_idp([fleet.client()])
    fleet.start([daypass_sections(fleet, i, idp, lab_backend.url, "12s") for i in range(3)])

    def issue() -> tuple[str, str]:
        out = rolegate_cli(
            "daypass",
            "issue",
            "-c",
            str(fleet.procs[0].config_path),
            "--template",
            "sub",
            "--scope",
            "building:a",
            "--name",
            "Jan",
            "--out",
            str(tmp_path),
        )
        return re.search(r"Link: (\S+)", out).group(1), re.search(r"Day pass ([0-9a-f]{16}) issued", out).group(1)

    link, pass_id = issue()
    async with lab_client_session() as phone:
        status = await redeem_on(phone, link, fleet.urls[0])
        assert status == 303, "rolegate serve mounts /.rolegate/pass/{code}"
        cookie = "; ".join(f"{c.key}={c.value}" for c in phone.cookie_jar)
        # Redeemed on instance 0, used on all of them. The CLI issued the pass as another machine would:
        # every instance learns of it through the store (the ``daypass`` counter) within the Store poll.
        await asyncio.sleep(STORE_POLL_BOUND)
        usable = await every_worker(fleet, "/buildings/a/notes", cookie)
        report(
            f"day pass issued (CLI) and redeemed on i0, first requests {STORE_POLL_BOUND:.1f} s later: {fmt(usable)}"
        )
        assert only(usable, 200), fmt(usable)
        elsewhere = await every_worker(fleet, "/buildings/b/notes", cookie)
        assert only(elsewhere, 403), fmt(elsewhere)

        # Revoked with the CLI (against instance 2's config): the first request after the poll is refused.
        rolegate_cli("daypass", "revoke", "-c", str(fleet.procs[2].config_path), pass_id, "--reason", "done")
        await asyncio.sleep(STORE_POLL_BOUND)
        revoked = await every_worker(fleet, "/buildings/a/notes", cookie)
        report(f"day pass revoked (CLI), first requests {STORE_POLL_BOUND:.1f} s later: {fmt(revoked)}")
        assert only(revoked, 401), fmt(revoked)

    # A second pass simply expires (template: 12 s): "expiry bites at the next request on every worker".
    link, pass_id = issue()
    store = await admin_store(fleet)
    try:
        expires_at = (await load_pass(store, pass_id))[0].expires_at
    finally:
        await store.close()
    async with lab_client_session() as phone:
        # This time the link is opened on instance 1 (the code is in the shared store).
        assert await redeem_on(phone, link.replace(fleet.urls[0], fleet.urls[1]), fleet.urls[1]) == 303
        cookie = "; ".join(f"{c.key}={c.value}" for c in phone.cookie_jar)
        await asyncio.sleep(STORE_POLL_BOUND)
        usable = await every_worker(fleet, "/buildings/a/notes", cookie)
        assert only(usable, 200), fmt(usable)
        # Used again shortly before the end, so every worker has it fresh in memory at the expiry (skipped
        # only if this machine was too slow to get here 1.5 s before it: the check below still runs).
        await asyncio.sleep(max(0.0, expires_at - 2.0 - time.time()))
        if time.time() < expires_at - 1.5:
            late = await every_worker(fleet, "/buildings/a/notes", cookie)
            assert only(late, 200), fmt(late)
        await asyncio.sleep(max(0.0, expires_at - time.time()) + 0.05)
        expired = await every_worker(fleet, "/buildings/a/notes", cookie)
        report(f"day pass expired: first requests after its expiry: {fmt(expired)}")
        assert only(expired, 401), fmt(expired)
