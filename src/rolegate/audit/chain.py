"""The hash chain that links every audit event to the one before it.

``hash = SHA-256(canonical(prev_hash, seq, ts, kind, body))``. The encoding is length-prefixed
(netstring-like) so no two different tuples can encode to the same bytes, and ``ts`` is fixed
6-decimal text so the same instant hashes the same whether a store keeps it as REAL or timestamp.
"""

from __future__ import annotations

import hashlib

from rolegate.store.base import GENESIS

__all__ = ["GENESIS", "CHAIN_DOMAIN", "chain_hash", "canonical"]

# Domain separation: a hash of this chain can never be mistaken for one made for another purpose.
CHAIN_DOMAIN = b"rolegate-audit-chain-v1"


def _field(data: bytes) -> bytes:
    return b"%d:%s," % (len(data), data)


def canonical(prev_hash: str, seq: int, ts: float, kind: str, body: str) -> bytes:
    """The exact bytes that are hashed for one event."""
    return b"".join((
        _field(CHAIN_DOMAIN),
        _field(prev_hash.encode("ascii", "backslashreplace")),
        _field(b"%d" % seq),
        _field(b"%.6f" % ts),
        _field(kind.encode("utf-8", "backslashreplace")),
        _field(body.encode("utf-8", "backslashreplace")),
    ))


def chain_hash(prev_hash: str, seq: int, ts: float, kind: str, body: str) -> str:
    """The hex SHA-256 of one event; this is the ``ChainFn`` handed to ``Store.append_audit``."""
    return hashlib.sha256(canonical(prev_hash, seq, ts, kind, body)).hexdigest()
