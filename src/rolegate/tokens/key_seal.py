"""Signing keys at rest: AES-256-GCM under a key derived (HKDF-SHA256) from a configured secret.

The Store never holds a private key in the clear; whoever reads the database without the secret
learns only public keys. The associated data binds each ciphertext to its store slot and ``kid``,
so a sealed key cannot be moved to another slot and pass for a different key.
"""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_VERSION = b"v1"
_NONCE = 12


class KeySealError(Exception):
    """A sealed key could not be opened (wrong secret, tampered or foreign data)."""


class KeySealer:
    """Seal and open private keys with a key derived from ``secret``."""

    __slots__ = ("_aead",)

    def __init__(self, secret: str | bytes) -> None:
        raw = secret.encode() if isinstance(secret, str) else secret
        if len(raw) < 32:
            raise ValueError("the key-encryption secret must be at least 32 characters")
        derived = HKDF(
            algorithm=hashes.SHA256(),
            length=32,
            salt=b"rolegate/tokens",
            info=b"rolegate signing keys at rest " + _VERSION,
        ).derive(raw)
        self._aead = AESGCM(derived)

    def seal(self, plaintext: bytes, *, context: str) -> str:
        nonce = os.urandom(_NONCE)
        sealed = self._aead.encrypt(nonce, plaintext, _VERSION + b"\x00" + context.encode())
        return _VERSION.decode() + "." + base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")

    def open(self, sealed: str, *, context: str) -> bytes:
        version, _, body = sealed.partition(".")
        if version.encode() != _VERSION or not body:
            raise KeySealError("unknown sealed-key format")
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            return self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], _VERSION + b"\x00" + context.encode())
        except (InvalidTag, ValueError) as exc:
            raise KeySealError("sealed key does not open with this secret") from exc
