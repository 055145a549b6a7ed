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
    return b"".join(
        (
            _field(CHAIN_DOMAIN),
            _field(prev_hash.encode("ascii", "backslashreplace")),
            _field(b"%d" % seq),
            _field(b"%.6f" % ts),
            _field(kind.encode("utf-8", "backslashreplace")),
            _field(body.encode("utf-8", "backslashreplace")),
        )
    )


_DOMAIN_FIELD = _field(CHAIN_DOMAIN)


def chain_hash(prev_hash: str, seq: int, ts: float, kind: str, body: str) -> str:
    """The hex SHA-256 of one event; this is the ``ChainFn`` handed to ``Store.append_audit``.

    The same bytes as ``canonical`` (one format instead of five helper calls: this runs per event).
    """
    prev = prev_hash.encode("ascii", "backslashreplace")
    seq_b = b"%d" % seq
    ts_b = b"%.6f" % ts
    kind_b = kind.encode("utf-8", "backslashreplace")
    body_b = body.encode("utf-8", "backslashreplace")
    return hashlib.sha256(
        b"%s%d:%s,%d:%s,%d:%s,%d:%s,%d:%s,"
        % (_DOMAIN_FIELD, len(prev), prev, len(seq_b), seq_b, len(ts_b), ts_b, len(kind_b), kind_b, len(body_b), body_b)
    ).hexdigest()
