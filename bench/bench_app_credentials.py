"""What checking an app's credential costs per admin-API call (apps:, issue 19 part 2).

    .venv/bin/python bench/bench_app_credentials.py [--n 3000]

Rows: an API key (``rgk_…``) checked against the SQLite Store (one read of ``app_keys/<id>``, a SHA-256 and a
constant-time compare; never cached, so a revocation bites at the next request), the same with an unknown
key, and an IdP client-credentials JWT (ES256 signature with the key cached, claims, audience, sub = client_id).
Medians in microseconds, and the ratio to the API key. In-process: no HTTP, no worker hops.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import jwt  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

from rolegate.identity.app_credentials import AppCredentialRefused, check_client_token, check_key, create_key  # noqa: E402
from rolegate.identity.provider_jwt import ProviderTokens  # noqa: E402
from rolegate.store.sqlite import SQLiteStore  # noqa: E402

ISSUER = "http://127.0.0.1:1"
AUDIENCE = "urn:rolegate:apps"


class _Keys:
    def __init__(self, public_jwk: jwt.PyJWK) -> None:
        self.key = public_jwk

    async def key_for(self, kid):
        return self.key


async def _median(n: int, call) -> float:
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e6


async def main(n: int) -> None:
    app = SimpleNamespace(api_keys=True, client_id="fieldservice", audience=None, may=None)
    config = SimpleNamespace(apps={"fieldservice": app}, apps_audience=AUDIENCE,
                             oidc=SimpleNamespace(issuer=ISSUER))
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(f"sqlite:///{tmp}/bench.db")
        await store.open()
        try:
            key, _ = await create_key(store, "fieldservice", by="bench")
            unknown = "rgk_0123456789abcdef_" + "A" * 43

            async def good_key():
                await check_key(store, config, key)

            async def bad_key():
                try:
                    await check_key(store, config, unknown)
                except AppCredentialRefused:
                    pass

            private = ec.generate_private_key(ec.SECP256R1())
            public = jwt.PyJWK.from_dict({**jwt.algorithms.ECAlgorithm.to_jwk(private.public_key(), as_dict=True),
                                          "alg": "ES256", "kid": "k1"})
            now = int(time.time())
            token = jwt.encode({"iss": ISSUER, "sub": "fieldservice", "client_id": "fieldservice", "aud": AUDIENCE,
                                "iat": now, "exp": now + 3600, "jti": "j1"}, private, algorithm="ES256",
                               headers={"kid": "k1", "typ": "at+jwt"})
            tokens = ProviderTokens(issuer=ISSUER, client_id="rolegate", algorithms=("ES256",), leeway=60,
                                    keys=_Keys(public))

            async def client_token():
                await check_client_token(tokens, config, token)

            for call in (good_key, bad_key, client_token):  # warm up
                await _median(50, call)
            rows = [("API key (SQLite Store read + SHA-256)", await _median(n, good_key)),
                    ("unknown API key (refused)", await _median(n, bad_key)),
                    ("IdP client-credentials JWT (ES256)", await _median(n, client_token))]
        finally:
            await store.close()
    base = rows[0][1]
    print(f"{'credential check':<42} {'median µs':>10} {'ratio':>7}")
    for name, us in rows:
        print(f"{name:<42} {us:>10.1f} {us / base:>6.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000)
    asyncio.run(main(parser.parse_args().n))
