"""The signed retention checkpoint: where the kept part of the chain starts after pruning.

Pruning deletes the oldest events; the checkpoint records the seq and hash of the last deleted one,
signed with HMAC-SHA256, so ``verify`` can still prove the kept events link back to a point rolegate
vouched for. Stored as the JSON document ``audit/checkpoint`` in the Store.

The key is ``audit.checkpoint_secret`` when set, else derived from ``session.secret``. An attacker
who can write the database but does not hold that secret cannot move the checkpoint without
``verify`` noticing.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

NAMESPACE = "audit"
KEY = "checkpoint"
_DOMAIN = b"rolegate-audit-checkpoint-v1"
_DERIVE = b"rolegate/audit/checkpoint/v1"


def derive_key(secret: str | bytes) -> bytes:
    """A checkpoint key of its own from a configured secret (so it never equals the session key)."""
    raw = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(raw, _DERIVE, hashlib.sha256).digest()


def checkpoint_key(config: Any) -> bytes | None:
    """The key for this config: ``audit.checkpoint_secret``, else from ``session.secret``, else None."""
    audit = getattr(config, "audit", None)
    secret = getattr(audit, "checkpoint_secret", None)
    if secret is None and getattr(config, "session", None) is not None:
        secret = config.session.secret
    if secret is None:
        return None
    return derive_key(secret.get_secret_value() if hasattr(secret, "get_secret_value") else secret)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The last pruned event: ``seq``, its ``hash`` and ``ts``; ``pruned_at`` is when."""

    seq: int
    hash: str
    ts: float
    pruned_at: float
    sig: str = ""

    def _message(self) -> bytes:
        return b"|".join(
            (
                _DOMAIN,
                b"%d" % self.seq,
                self.hash.encode("ascii", "replace"),
                b"%.6f" % self.ts,
                b"%.6f" % self.pruned_at,
            )
        )

    def signed(self, key: bytes) -> Checkpoint:
        sig = hmac.new(key, self._message(), hashlib.sha256).hexdigest()
        return Checkpoint(self.seq, self.hash, self.ts, self.pruned_at, sig)

    def valid(self, key: bytes) -> bool:
        expected = hmac.new(key, self._message(), hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, self.sig)

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "hash": self.hash, "ts": self.ts, "pruned_at": self.pruned_at, "sig": self.sig}

    @classmethod
    def from_json(cls, value: Any) -> Checkpoint:
        """Parse a stored checkpoint; ValueError when its shape is wrong (itself a sign of tampering)."""
        if not isinstance(value, dict):
            raise ValueError("the checkpoint is not a JSON object")
        try:
            seq, hash_, sig = value["seq"], value["hash"], value["sig"]
            ts, pruned_at = float(value["ts"]), float(value["pruned_at"])
        except (KeyError, TypeError, ValueError):
            raise ValueError("the checkpoint lacks seq, hash, ts, pruned_at or sig") from None
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
            raise ValueError("the checkpoint's seq is not a positive integer")
        if not isinstance(hash_, str) or not isinstance(sig, str):
            raise ValueError("the checkpoint's hash or sig is not text")
        return cls(seq, hash_, ts, pruned_at, sig)
