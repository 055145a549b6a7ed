"""Cookie values that are both signed and encrypted: AES-256-GCM under a key derived from ``session.secret``.

Each purpose (session cookie, login state) gets its own HKDF-derived key, and the cookie name is bound
as associated data, so a value cannot be moved from one cookie to another.
"""

from __future__ import annotations

import base64
import json
import os
import time
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from rolegate.limits import SEALED_OPENED
from rolegate.memo import BoundedCache

_VERSION = b"\x01"
_NONCE_BYTES = 12
# A sealed cookie never needs to be larger than this; longer input is refused before decrypting.
MAX_SEALED_LENGTH = 3800


def derive_key(secret: str, purpose: str) -> bytes:
    """A 256-bit key for one purpose, derived from the configured secret with HKDF-SHA256."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"rolegate/identity/v1", info=purpose.encode()).derive(
        secret.encode()
    )


class CookieSealer:
    """Seal/unseal small JSON payloads with an expiry; tampered, foreign or expired values unseal to None."""

    __slots__ = ("_aead", "_purpose", "_opened")

    def __init__(self, secret: str, purpose: str) -> None:
        self._aead = AESGCM(derive_key(secret, purpose))
        self._purpose = purpose.encode()
        # Cookies already opened and still valid: a browser sends the same value on every request,
        # and decrypting it each time is a measurable share of an authenticated request.
        self._opened: BoundedCache[tuple[str, str], tuple[dict[str, Any], int]] = BoundedCache(SEALED_OPENED)

    def seal(self, payload: dict[str, Any], *, name: str, ttl: float) -> str:
        body = json.dumps({"p": payload, "exp": int(time.time() + ttl)}, separators=(",", ":")).encode()
        nonce = os.urandom(_NONCE_BYTES)
        sealed = _VERSION + nonce + self._aead.encrypt(nonce, body, self._aad(name))
        return base64.urlsafe_b64encode(sealed).rstrip(b"=").decode()

    def unseal(self, value: str | None, *, name: str) -> dict[str, Any] | None:
        if not value or len(value) > MAX_SEALED_LENGTH:
            return None
        opened = self._opened.get((name, value))
        if opened is not None:
            if opened[1] >= time.time():
                return opened[0]
            del self._opened[(name, value)]
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        except (ValueError, TypeError):
            return None
        if len(raw) < 1 + _NONCE_BYTES + 16 or raw[:1] != _VERSION:
            return None
        try:
            body = self._aead.decrypt(raw[1 : 1 + _NONCE_BYTES], raw[1 + _NONCE_BYTES :], self._aad(name))
            data = json.loads(body)
        except (InvalidTag, ValueError):
            return None
        if not isinstance(data, dict) or not isinstance(data.get("exp"), int) or data["exp"] < time.time():
            return None
        payload = data.get("p")
        if not isinstance(payload, dict):
            return None
        self._opened.put((name, value), (payload, data["exp"]))
        return payload

    def opened_until(self, value: str, *, name: str) -> float:
        """Until when an already unsealed ``value`` stays valid (0 when it is not among them)."""
        opened = self._opened.get((name, value))
        return float(opened[1]) if opened is not None else 0.0

    def _aad(self, name: str) -> bytes:
        return self._purpose + b"|" + name.encode()

    def seal_text(self, text: str, *, name: str) -> str:
        """Encrypt a secret (e.g. a refresh token) for storage at rest; no expiry of its own."""
        return self.seal({"t": text}, name=name, ttl=10 * 365 * 86400)

    def unseal_text(self, value: str | None, *, name: str) -> str | None:
        payload = self.unseal(value, name=name)
        text = payload.get("t") if payload else None
        return text if isinstance(text, str) else None
