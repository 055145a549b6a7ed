"""Token costs per operation: sign and verify (EdDSA, ES256), assertion cache hit, bearer authentication.

    .venv/bin/python bench/bench_tokens.py [--seconds 0.5]

Prints one table row per operation (microseconds per token and tokens per second, one core).
Uses a throwaway SQLite store in a temporary directory; nothing else is touched.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from rolegate.identity.principal import Principal  # noqa: E402
from rolegate.store.sqlite import SQLiteStore  # noqa: E402
from rolegate.tokens import AssertionMinter, KeyRing, TokenService, TokenVerifier  # noqa: E402

ISSUER = "https://safety.example.com"
PERMS = [f"{r}:{a}" for r in ("dashboard", "documents", "controls", "tasks", "risk_assessment")
         for a in ("view", "edit", "add", "perform")]
CALLER = dict(sub="alice", name="Alice Example", email="alice@example.com", roles=["user", "responsible"],
              scope="building:a", perms=frozenset(PERMS), sid="s" * 32, ver=42, aud="app")


def measure(fn: Callable[[], object], seconds: float) -> float:
    """Microseconds per call, over at least ``seconds`` (after a short warm-up)."""
    for _ in range(50):
        fn()
    n, start = 0, time.perf_counter()
    while True:
        for _ in range(100):
            fn()
        n += 100
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return elapsed / n * 1e6


async def ameasure(fn: Callable[[], object], seconds: float) -> float:
    for _ in range(50):
        await fn()
    n, start = 0, time.perf_counter()
    while True:
        for _ in range(100):
            await fn()
        n += 100
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return elapsed / n * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description="rolegate token costs")
    parser.add_argument("--seconds", type=float, default=0.5, help="time per measurement")
    args = parser.parse_args()
    rows: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(f"sqlite:///{tmp}/bench.db")
        await store.open()
        try:
            for alg in ("EdDSA", "ES256"):
                ring = KeyRing(store, secret="b" * 48, algorithm=alg)
                await ring.sync()
                minter = AssertionMinter(ring, ISSUER, 300)
                verifier = TokenVerifier(ring, ISSUER)
                counter = iter(range(10**9))
                # A new sid each call: every mint is a miss (claims + signature).
                rows.append((f"{alg} mint assertion (cache miss, sign)",
                             measure(lambda m=minter, c=counter: m.mint(**{**CALLER, "sid": str(next(c))}),
                                     args.seconds)))
                minter.clear()
                token = minter.mint(**CALLER)
                rows.append((f"{alg} verify assertion", measure(
                    lambda v=verifier, t=token: v.verify(t, audience="app", typ="JWT"), args.seconds)))
            minter.clear()
            minter.mint(**CALLER)
            rows.append(("assertion cache hit (mint)", measure(lambda: minter.mint(**CALLER), args.seconds)))
            rows.append(("assertion cache hit (4 headers)",
                         measure(lambda: minter.assertion_headers(**CALLER), args.seconds)))
            service = TokenService(keyring=ring, store=store, issuer=ISSUER, current_version=lambda: 42)
            grant = await service.issue(Principal(username="alice", groups=frozenset({"staff"}),
                                                  expires_at=time.time() + 3600))
            await service.authenticate(grant.access_token)
            rows.append(("bearer authenticate (ES256, token seen before)",
                         await ameasure(lambda: service.authenticate(grant.access_token), args.seconds)))

            async def first_sight():
                service._principals.clear()
                return await service.authenticate(grant.access_token)

            rows.append(("bearer authenticate (ES256, first sight: verify + store read)",
                         await ameasure(first_sight, args.seconds)))
            size = len(minter.mint(**{**CALLER, "sid": "size"}))
            rows.append((f"(assertion size with {len(PERMS)} perms: {size} bytes)", 0.0))
        finally:
            await store.close()
    width = max(len(name) for name, _ in rows)
    print(f"{'operation':<{width}}  {'us/token':>9}  {'tokens/s':>10}")
    print("-" * (width + 23))
    for name, micros in rows:
        if micros:
            print(f"{name:<{width}}  {micros:9.2f}  {1e6 / micros:10,.0f}")
        else:
            print(name)


if __name__ == "__main__":
    asyncio.run(main())
