"""Signing keys: sealed at rest, RFC 7638 kids, rotation exactly once, JWKS publication window."""

from __future__ import annotations

import asyncio
import json

import pytest

from rolegate.store.sqlite import SQLiteStore
from rolegate.tokens import InvalidToken, KeyRing, TokenVerifier, thumbprint
from rolegate.tokens.key_seal import KeySealer, KeySealError
from rolegate.tokens.keys import NAMESPACE

from .conftest import ISSUER, SECRET, make_ring

WEEK = 7 * 86400


def test_thumbprint_rfc8037_example() -> None:
    # RFC 8037 Appendix A.3: the thumbprint of the example Ed25519 public key.
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
    assert thumbprint(jwk) == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


@pytest.mark.parametrize("alg,kty", [("EdDSA", "OKP"), ("ES256", "EC")])
async def test_keys_are_generated_sealed_and_published(store, clock, alg, kty) -> None:
    ring = make_ring(store, clock, algorithm=alg)
    await ring.sync()
    key = ring.signing_key
    assert key.alg == alg and key.kid == thumbprint(key.jwk)
    jwks = json.loads(ring.jwks_body())
    assert [k["kid"] for k in jwks["keys"]] == [key.kid]
    assert jwks["keys"][0]["kty"] == kty and "d" not in jwks["keys"][0]
    # At rest: no private key material in the clear.
    (record,) = await store.list(NAMESPACE)
    text = json.dumps(record.value)
    assert '"d"' not in text and "PRIVATE" not in text and record.value["sealed"].startswith("v1.")


async def test_wrong_secret_cannot_open_or_replace_keys(store, clock) -> None:
    await make_ring(store, clock).sync()
    other = make_ring(store, clock, secret="x" * 48)
    with pytest.raises(RuntimeError, match="cannot be opened"):
        await other.sync()
    (record,) = await store.list(NAMESPACE)
    with pytest.raises(KeySealError):
        KeySealer("x" * 48).open(record.value["sealed"], context=f"{record.key}/{record.value['kid']}")
    # A sealed key moved to another slot does not open either (the slot is authenticated data).
    with pytest.raises(KeySealError):
        KeySealer(SECRET).open(record.value["sealed"], context="elsewhere/kid")


async def test_two_workers_racing_a_rotation_make_one_key(db_url, clock, board) -> None:
    # Two workers = two Store connections to one SQLite file, each with its own ring.
    stores = [SQLiteStore(db_url) for _ in range(4)]
    for s in stores:
        await s.open()
    try:
        rings = [make_ring(s, clock, board) for s in stores]
        for _round in range(3):
            await asyncio.gather(*(ring.sync() for ring in rings))
            assert len({ring.signing_key.kid for ring in rings}) == 1
            clock.advance(WEEK)
        names = [r.key for r in await stores[0].list(NAMESPACE)]
        # One key per period (plus a prepublished next one near a boundary), each created by one winner:
        # the counter is bumped once per created key, never by a loser of the race.
        assert len(names) == len(set(names)) in (3, 4)
        assert await stores[0].counter("keys") == len(names)
    finally:
        for s in stores:
            await s.close()


async def test_a_rotation_by_one_worker_is_seen_by_another(store, clock, board) -> None:
    first, second = make_ring(store, clock, board), make_ring(store, clock, board)
    await first.sync()
    await second.sync()
    assert first.signing_key.kid == second.signing_key.kid
    clock.advance(WEEK)
    await first.sync()
    await second.sync()
    assert first.signing_key.kid == second.signing_key.kid


async def test_rotation_keeps_old_tokens_valid_until_expiry_then_drops_the_key(store, clock, board) -> None:
    lifetime = 300.0
    ring = make_ring(store, clock, board, max_token_lifetime=lifetime, skew=60)
    verifier = TokenVerifier(ring, ISSUER, leeway=30, clock=clock)
    await ring.sync()
    # Sign with the old key right before the period ends.
    boundary = (int(clock() // WEEK) + 1) * WEEK
    clock.now = boundary - 10
    await ring.sync()
    old = ring.signing_key
    # The next key is already published (prepublish) before it signs anything.
    assert len(json.loads(ring.jwks_body())["keys"]) == 2
    now = int(clock())
    token = old.sign({"iss": ISSUER, "aud": "app", "sub": "u", "iat": now, "nbf": now, "exp": now + 300, "jti": "j"})

    clock.now = boundary + 1
    await ring.sync()
    assert ring.signing_key.kid != old.kid
    assert verifier.verify(token, audience="app", typ="JWT")["sub"] == "u"
    assert old.kid in {k["kid"] for k in json.loads(ring.jwks_body())["keys"]}

    clock.now = old.rotate_at + lifetime + 60 + 1  # every token it signed has expired (plus skew)
    await ring.sync()
    assert old.kid not in {k["kid"] for k in json.loads(ring.jwks_body())["keys"]}
    with pytest.raises(InvalidToken):
        verifier.verify(token, audience="app", typ="JWT")


async def test_algorithm_change_starts_a_new_key_and_keeps_the_old_published(store, clock) -> None:
    eddsa = make_ring(store, clock, algorithm="EdDSA")
    await eddsa.sync()
    es = make_ring(store, clock, algorithm="ES256")
    await es.sync()
    assert es.signing_key.alg == "ES256"
    assert {k["alg"] for k in json.loads(es.jwks_body())["keys"]} == {"EdDSA", "ES256"}


def test_from_config_needs_a_secret() -> None:
    from types import SimpleNamespace

    from rolegate.config.sections.features import TokensConfig
    from rolegate.errors import ConfigError

    with pytest.raises(ConfigError):
        KeyRing.from_config(None, SimpleNamespace(tokens=TokensConfig(), session=None))  # type: ignore[arg-type]


class _Away:
    """The ring's Store during an outage: every call raises StoreUnavailable."""

    def __init__(self, store) -> None:
        self.store, self.away = store, False

    def __getattr__(self, name):
        attr = getattr(self.store, name)
        if not self.away or not callable(attr):
            return attr

        async def unavailable(*args, **kwargs):
            from rolegate.store import StoreUnavailable

            raise StoreUnavailable("PostgreSQL at postgresql://db is unavailable: [Errno 111] Connection refused")

        return unavailable


async def test_a_store_outage_keeps_the_current_key_signing_and_fails_closed_past_its_period(store, clock) -> None:
    """A request during a database outage that found the ring due for a look (its board moved, its next
    check passed) got a 500 from the StoreUnavailable; within the key's period it signs with the key in hand."""
    from rolegate.store import StoreUnavailable

    away = _Away(store)
    ring = make_ring(away, clock)
    await ring.sync()
    kid = ring.signing_key.kid
    away.away = True
    clock.advance(60)
    ring._next_check = clock() - 1  # due for a look, as after a board change
    await ring.sync()  # no error: the current period's key signs on
    assert ring.signing_key.kid == kid
    await ring.sync()  # and the next look waits a moment rather than hitting the Store at every request
    clock.advance(WEEK)  # a new period: no key to sign with but from the Store -> fail closed
    with pytest.raises(StoreUnavailable):
        await ring.sync()
    away.away = False
    await ring.sync()
    assert ring.signing_key.kid != kid
