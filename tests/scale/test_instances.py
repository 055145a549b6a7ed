"""Many rolegate instances on one PostgreSQL database and one Redis: one state, one directory syncer.

Every instance is a real ``rolegate serve`` (master + workers) on its own port. Instances get their
own version board (see tests/scale/fleet.py), so whatever one learns from another went through
PostgreSQL / Redis, as between machines. Measured propagation times are printed and appended to
tests/scale/.figures.log.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request

import jwt
import pytest

from rolegate.config.sections.storage import StorageConfig
from rolegate.store import open_store
from rolegate.store.version_board import bump
from rolegate_lab import lab_client_session
from tests.scale.fleet import (REDIS_URL, Fleet, directory_section, kill_tree, poll_until, readyz, report,
                               sign_in, status_of)

pytestmark = [pytest.mark.lab, pytest.mark.slow]

CONTRACT_SECONDS = 1.0  # "changes take effect on the next request ... on every instance" (< 1 s)


async def admin_store(fleet: Fleet):
    """The test acting as the admin API / another tool: a Store on the shared backend."""
    return await open_store(StorageConfig(url=fleet.db_url, cache_url=REDIS_URL, cache_prefix=fleet.prefix))


async def time_until_everywhere(http, fleet: Fleet, path: str, cookie: str, expected: int,
                                timeout: float = 5.0) -> list[float]:
    """Poll every instance concurrently; seconds until each answered ``expected`` (inf: never)."""

    async def one(url: str) -> float:
        async def check() -> bool:
            return await status_of(http, url + path, cookie) == expected

        ok, took = await poll_until(check, timeout)
        return took if ok else float("inf")

    return list(await asyncio.gather(*(one(u) for u in fleet.urls)))


def fmt(times: list[float]) -> str:
    return ", ".join(f"i{i}={t * 1000:.0f} ms" for i, t in enumerate(times))


async def test_three_instances_share_sessions_and_see_revocations_within_a_second(make_fleet, make_idp,
                                                                                    lab_backend):
    fleet = make_fleet(3, workers=1)
    idp = make_idp([fleet.client()])
    fleet.start([fleet.config(i, idp, lab_backend.url) for i in range(3)])
    store = await admin_store(fleet)
    try:
        async with lab_client_session() as browser_a, lab_client_session() as browser_h, \
                lab_client_session() as probe:
            # Sign in on one instance, use the session on all of them (same session.secret, shared store).
            alice = await sign_in(browser_a, fleet.urls[0], "alice")
            heidi = await sign_in(browser_h, fleet.urls[1], "heidi")
            for url in fleet.urls:
                assert await status_of(probe, url + "/api/notes/1", alice) == 200
                assert await status_of(probe, url + "/api/notes/1", alice, "POST", data=b"x") == 200
                assert await status_of(probe, url + "/api/notes/1", heidi) == 403

            # A grant written to the Store (as the admin API does) reaches every instance.
            await store.put("bindings", "heidi-reader", {"user": "heidi", "role": "reader", "scope": None})
            await bump(store, None, "policy")
            granted = await time_until_everywhere(probe, fleet, "/api/notes/1", heidi, 200)
            report(f"grant (binding + policy bump) -> 200 on every instance: {fmt(granted)}")
            assert max(granted) <= CONTRACT_SECONDS, fmt(granted)

            # Revoked: the binding deleted, the counter bumped; refused everywhere within a second.
            await store.delete("bindings", "heidi-reader")
            await bump(store, None, "policy")
            revoked = await time_until_everywhere(probe, fleet, "/api/notes/1", heidi, 403)
            report(f"binding revoked -> 403 on every instance: {fmt(revoked)}")
            assert max(revoked) <= CONTRACT_SECONDS, fmt(revoked)
            for url in fleet.urls:  # and it stays refused
                assert await status_of(probe, url + "/api/notes/1", heidi) == 403

            # Logout on instance 2 ends the session on 0 and 1 as well.
            async with browser_a.get(fleet.urls[2] + "/.rolegate/logout", headers={"Cookie": alice},
                                     allow_redirects=False) as resp:
                assert resp.status == 302
            logged_out = await time_until_everywhere(probe, fleet, "/api/notes/1", alice, 401)
            report(f"logout on instance 2 -> 401 on every instance: {fmt(logged_out)}")
            assert max(logged_out) <= CONTRACT_SECONDS, fmt(logged_out)
            for url in fleet.urls:
                assert await status_of(probe, url + "/api/notes/1", alice, "POST", data=b"x") == 401
    finally:
        await store.close()

    # The writes that passed are in the one shared audit chain, whichever instance took them.
    store = await admin_store(fleet)
    try:
        rows = await store.audit_find(kinds=("decision",), equals={"user": "alice", "method": "POST"})
    finally:
        await store.close()
    assert len(rows) == 3, [r["body"] for r in rows]


async def test_signing_keys_are_created_once_and_published_by_every_instance(make_fleet, make_idp, lab_backend):
    fleet = make_fleet(2, workers=2)
    idp = make_idp([fleet.client()])
    fleet.start([fleet.config(i, idp, lab_backend.url) for i in range(2)])  # both start on an empty store

    def kids(url: str) -> list[str]:
        with urllib.request.urlopen(url + "/.well-known/jwks.json", timeout=5) as resp:
            return sorted(k["kid"] for k in json.load(resp)["keys"])

    first = [kids(u) for u in fleet.urls]
    assert first[0] and first[0] == first[1], first

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
    # four workers needs a new key; exactly one creates it, every other reads the winner's.
    store = await admin_store(fleet)
    try:
        for record in await store.list("keys"):
            await store.delete("keys", record.key)
        await bump(store, None, "keys")
    finally:
        await store.close()

    async def rotated() -> bool:
        now = [kids(u) for u in fleet.urls]
        return now[0] == now[1] and bool(now[0]) and not set(now[0]) & set(first[0])

    # Every worker of both instances is asked (the kernel spreads connections over workers).
    ok, took = await poll_until(rotated, 10)
    assert ok, ([kids(u) for u in fleet.urls], first)
    for _ in range(10):
        assert kids(fleet.urls[0]) == kids(fleet.urls[1])
    report(f"key rotation: every instance publishes the new kid {took * 1000:.0f} ms after the keys bump; "
           f"creations per kid: {sorted(creations().values())}")
    assert all(n == 1 for n in creations().values()), creations()
    assert set(kids(fleet.urls[0])) <= set(creations())  # the published kid is the one key created

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


async def test_one_instance_syncs_the_directory_and_another_takes_over_when_it_dies(make_fleet, make_idp,
                                                                                      lab_backend, fresh_slapd):
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
    assert ok, states
    leader = next(i for i, s in states.items() if s.get("leader"))
    report(f"directory: instance {leader} leads after start ({took:.1f} s); states: "
           + "; ".join(f"i{i}={s.get('state')}" for i, s in states.items()))
    # Stays one: watch it for a few more seconds (the standbys retry the lock every 2 s).
    for _ in range(10):
        await asyncio.sleep(0.3)
        assert sum(bool(s.get("leader")) for s in leaders(fleet, alive).values()) == 1

    async with lab_client_session() as browser_h, lab_client_session() as browser_a, \
            lab_client_session() as probe:
        others = [i for i in alive if i != leader]
        heidi = await sign_in(browser_h, fleet.urls[others[0]], "heidi")
        alice = await sign_in(browser_a, fleet.urls[others[1]], "alice")
        for i in alive:
            assert await status_of(probe, fleet.urls[i] + "/api/notes/1", heidi) == 403
            assert await status_of(probe, fleet.urls[i] + "/api/notes/1", alice) == 200

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
        assert ok, states
        new_leader = next(i for i, s in states.items() if s.get("leader"))

        # A directory change is applied by the new leader and reaches every surviving instance.
        changed_at = time.monotonic()
        fresh_slapd.ldapmodify("dn: cn=finance,ou=groups,dc=example,dc=com\nchangetype: modify\nadd: member\n"
                               "member: uid=heidi,ou=people,dc=example,dc=com\n")

        async def heidi_reads_everywhere() -> bool:
            return all([await status_of(probe, fleet.urls[i] + "/api/notes/1", heidi) == 200 for i in alive])

        ok, applied = await poll_until(heidi_reads_everywhere, 30, 0.1)
        assert ok, (leaders(fleet, alive), fleet.log()[-4000:])
        report(f"directory: leader i{leader} SIGKILLed; i{new_leader} took over and synced "
               f"{takeover:.1f} s later; a group change reached every instance {applied:.1f} s after the LDAP write")
        assert sum(bool(s.get("leader")) for s in leaders(fleet, alive).values()) == 1
        assert time.monotonic() - changed_at < 30


def daypass_sections(fleet: Fleet, i: int, idp, backend_url: str, expires: str) -> dict:
    config = fleet.config(i, idp, backend_url)
    config["scopes"] = {"building": {"description": "a building"}}
    config["roles"]["subcontractor"] = {"permissions": ["notes:view"]}
    config["routes"] = [{"path": "/buildings/{building}/notes", "methods": ["GET"], "permission": "notes:view",
                         "scope": "building:{building}", "upstream": "app"}]
    config["daypass"] = {"templates": {"sub": {"role": "subcontractor", "scopes": ["building"], "max_lifetime": "1h",
                                               "expires": expires, "devices": 1, "require": ["name"],
                                               "landing": "/buildings/{building}/notes"}}}
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
    async with http.post(link, data={"csrf": token}, headers={"Accept": "text/html", "Origin": origin},
                         allow_redirects=False) as resp:
        await resp.read()
        return resp.status


async def test_day_pass_redeemed_on_one_instance_works_on_all_and_ends_everywhere(make_fleet, make_idp, lab_backend,
                                                                                     tmp_path):
    import re

    fleet = make_fleet(3, workers=1)
    idp = make_idp([fleet.client()])
    fleet.start([daypass_sections(fleet, i, idp, lab_backend.url, "8s") for i in range(3)])

    def issue() -> tuple[str, str]:
        out = rolegate_cli("daypass", "issue", "-c", str(fleet.procs[0].config_path), "--template", "sub",
                           "--scope", "building:a", "--name", "Jan", "--out", str(tmp_path))
        return re.search(r"Link: (\S+)", out).group(1), re.search(r"Day pass ([0-9a-f]{16}) issued", out).group(1)

    link, pass_id = issue()
    async with lab_client_session() as phone, lab_client_session() as probe:
        status = await redeem_on(phone, link, fleet.urls[0])
        assert status == 303, "rolegate serve mounts /.rolegate/pass/{code}"
        cookie = "; ".join(f"{c.key}={c.value}" for c in phone.cookie_jar)
        # Redeemed on instance 0, used on all of them. The CLI issued the pass as another machine would:
        # every instance learns of it through the store (the ``daypass`` counter) within a second.
        usable = await time_until_everywhere(probe, fleet, "/buildings/a/notes", cookie, 200)
        report(f"day pass issued (CLI) and redeemed on i0 -> 200 on every instance: {fmt(usable)}")
        assert max(usable) <= CONTRACT_SECONDS, fmt(usable)
        for url in fleet.urls:
            assert await status_of(probe, url + "/buildings/a/notes", cookie) == 200
            assert await status_of(probe, url + "/buildings/b/notes", cookie) == 403

        # Revoked with the CLI (against instance 2's config): refused everywhere within a second.
        rolegate_cli("daypass", "revoke", "-c", str(fleet.procs[2].config_path), pass_id, "--reason", "done")
        revoked = await time_until_everywhere(probe, fleet, "/buildings/a/notes", cookie, 401)
        report(f"day pass revoked -> 401 on every instance: {fmt(revoked)}")
        assert max(revoked) <= CONTRACT_SECONDS, fmt(revoked)

    # A second pass simply expires (template: 8 s): it stops working on every instance by itself.
    link, pass_id = issue()
    async with lab_client_session() as phone, lab_client_session() as probe:
        # This time the link is opened on instance 1 (the code is in the shared store).
        assert await redeem_on(phone, link.replace(fleet.urls[0], fleet.urls[1]), fleet.urls[1]) == 303
        cookie = "; ".join(f"{c.key}={c.value}" for c in phone.cookie_jar)
        usable = await time_until_everywhere(probe, fleet, "/buildings/a/notes", cookie, 200)
        assert max(usable) <= CONTRACT_SECONDS, fmt(usable)
        expired = await time_until_everywhere(probe, fleet, "/buildings/a/notes", cookie, 401, timeout=30)
        report(f"day pass (8 s) expired -> 401 on every instance after: {fmt(expired)} from redemption")
        assert max(expired) < 30
