"""The ``where`` claim (issue 19 part 4): on a route without a scope the assertion says where the caller holds
the route's permission - scopes, assigned objects, capped with a flag - and a backend filters its list with it.

On the code before, no assertion carried ``where``: ``GET /workorders`` could only be all or nothing."""

from __future__ import annotations

import time
from types import SimpleNamespace

import jwt

from rolegate.authz import Identity, compile_policy
from rolegate.authz.stored import Assigned
from rolegate.authz.where import MAX_ENTRIES, where_for_route, where_held
from rolegate.tokens import AssertionMinter
from tests.authz.policies import make_config

from .conftest import ISSUER
from .test_backend_verify import load_example, rolegate  # noqa: F401 - the real JWKS server fixture

CONFIG = make_config(
    permissions=["workorders:view", "customers:view", "invoices:view"],
    roles={
        "technician": {"on_assigned": {"workorder": ["workorders:view"], "customer": ["customers:view"]}},
        "regional_manager": {"permissions": ["workorders:view", "customers:view"]},
        "blocked": {"deny": ["workorders:view"]},
        "office": {"permissions": ["workorders:view"]},
    },
    bindings=[
        {"group": "technicians", "role": "technician"},
        {"group": "north", "role": "regional_manager", "scope": "region:north"},
        {"user": "grace", "role": "blocked", "scope": "customer:c101"},
        {"group": "office", "role": "office"},
    ],
    scopes={
        "region": {},
        "customer": {"parent": "region", "members": {"c100": "north", "c101": "north", "c200": "south"}},
        "workorder": {"parent": "customer"},
    },
)
PLACED = {"workorder:1": "customer:c100", "workorder:2": "customer:c100", "workorder:3": "customer:c200"}
BOB, GRACE, OLIVIA = Identity("bob", ["technicians"]), Identity("grace", ["north"]), Identity("olivia", ["office"])
NOW = time.time()


def policy(assigned=None):
    return compile_policy(
        CONFIG,
        scope_parents=PLACED,
        assignments=assigned
        if assigned is not None
        else {"workorder:1": [Assigned("bob", "app:fieldservice")], "workorder:3": ["bob"], "workorder:2": ["trent"]},
    )


def test_where_names_scopes_and_assigned_objects():
    p = policy()
    assert where_held(p, BOB, "workorders:view", NOW) == {
        "perm": "workorders:view",
        "all": False,
        "scopes": [],
        "assigned": ["workorder:1", "workorder:3"],
    }
    # customers:view reaches the customers his work orders lie in, not the work orders themselves.
    assert where_held(p, BOB, "customers:view", NOW)["assigned"] == ["customer:c100", "customer:c200"]
    assert where_held(p, GRACE, "workorders:view", NOW) == {
        "perm": "workorders:view",
        "all": False,
        "scopes": ["region:north"],
        "assigned": [],
        "except": ["customer:c101"],
    }
    assert where_held(p, OLIVIA, "workorders:view", NOW) == {
        "perm": "workorders:view",
        "all": True,
        "scopes": [],
        "assigned": [],
    }
    assert (
        where_held(p, BOB, "invoices:view", NOW)["scopes"] == []
        and not where_held(p, BOB, "invoices:view", NOW)["assigned"]
    )
    # Only on a route without a scope that needs a permission.
    route = SimpleNamespace(permission="workorders:view", mode="enforce")
    assert where_for_route(p, BOB, route, None, NOW)["assigned"] == ["workorder:1", "workorder:3"]
    assert where_for_route(p, BOB, route, "workorder:1", NOW) is None
    assert where_for_route(p, BOB, SimpleNamespace(permission=None, mode="authenticated"), None, NOW) is None


def test_capped_with_a_flag():
    p = policy({f"workorder:{i}": ["bob"] for i in range(MAX_ENTRIES + 50)})
    claim = where_held(p, BOB, "workorders:view", NOW)
    assert claim["truncated"] is True and len(claim["assigned"]) == MAX_ENTRIES
    small = where_held(p, BOB, "workorders:view", NOW, max_bytes=100)
    assert small["truncated"] is True and sum(map(len, small["assigned"])) <= 100


def test_minter_carries_it_and_keys_the_cache_on_it(keyring, clock):
    minter = AssertionMinter(keyring, ISSUER, 300, clock=clock)
    caller = dict(
        sub="bob",
        name="Bob",
        email="bob@example.com",
        roles=["technician"],
        scope="",
        perms=[],
        sid="s1",
        ver=3,
        aud="app",
    )
    p = policy()
    views = minter.mint(**caller, where=where_held(p, BOB, "workorders:view", NOW))
    customers = minter.mint(**caller, where=where_held(p, BOB, "customers:view", NOW))
    assert views != customers  # same session, scope, version, audience: the claim's permission keys it
    assert minter.mint(**caller, where=where_held(p, BOB, "workorders:view", NOW)) == views
    # The claim changed without a version bump: never served from the cache.
    fewer = minter.mint(**caller, where=where_held(policy({"workorder:1": ["bob"]}), BOB, "workorders:view", NOW))
    assert fewer != views
    claims = jwt.decode(fewer, options={"verify_signature": False})
    assert claims["where"]["assigned"] == ["workorder:1"]
    assert "where" not in jwt.decode(minter.mint(**caller), options={"verify_signature": False})


async def test_the_example_backend_filters_the_list(rolegate, aiohttp_client):
    issuer, _ring, minter = rolegate
    example = load_example()
    client = await aiohttp_client(example.make_app(example.AssertionVerifier(issuer, "app")))
    p = policy()
    base = dict(name="x", email="", roles=[], scope="", perms=[], sid="", ver=1, aud="app")

    async def shown(who, identity, claim=None):
        where = claim if claim is not None else where_held(p, identity, "workorders:view", time.time())
        resp = await client.get("/workorders", headers=minter.assertion_headers(sub=who, where=where, **base))
        return resp.status, [w["id"] for w in await resp.json()] if resp.status == 200 else None

    assert await shown("bob", BOB) == (200, ["1", "3"])  # his, not trent's (2)
    assert await shown("grace", GRACE) == (200, ["1", "2"])  # the north's
    assert await shown("olivia", OLIVIA) == (200, ["1", "2", "3"])
    assert await shown("trent", Identity("trent", [])) == (200, [])
    truncated = {"perm": "workorders:view", "all": False, "scopes": [], "assigned": [], "truncated": True}
    assert (await shown("bob", BOB, truncated))[0] == 503  # never guesses from a cut list
    other = {"perm": "customers:view", "all": True, "scopes": [], "assigned": []}
    assert await shown("bob", BOB, other) == (200, [])  # a claim about another permission shows nothing


def test_assertion_stays_within_one_header():
    """The cap keeps the whole assertion inside one 8 KiB header, whatever the caller is assigned to."""
    p = policy({f"workorder:{'x' * 180}{i}": ["bob"] for i in range(500)})
    claim = where_held(p, BOB, "workorders:view", NOW)
    assert claim["truncated"] and len(str(claim)) < 4096


def test_a_full_where_claim_still_mints(keyring, clock):
    """The cap is what keeps the assertion mintable: 500 long assignments still give one header."""
    p = policy({f"workorder:{'x' * 180}{i}": ["bob"] for i in range(500)})
    minter = AssertionMinter(keyring, ISSUER, 300, clock=clock)
    token = minter.mint(
        sub="bob",
        name="Bob",
        email="bob@example.com",
        roles=["technician"],
        scope="",
        perms=[f"p{i}:view" for i in range(100)],
        sid="s",
        ver=1,
        aud="app",
        where=where_held(p, BOB, "workorders:view", NOW),
    )
    assert len(token) < 8 * 1024
