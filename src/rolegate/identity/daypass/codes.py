"""Redemption codes: 256 random bits in the link; the Store keeps only hashes of them.

The pass id is a one-way function of the code (a different hash label than the stored code hash),
so a redemption finds its record with one key lookup and the id can be shown, logged and audited
without revealing anything that would let someone rebuild the link.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from urllib.parse import urlsplit

PASS_PATH = "/.rolegate/pass/"
# The pass home, where a redeemed pass lands. Never a code: a code is 43 characters (see _CODE), and the
# route for it is registered before /pass/{code}.
PASS_HOME = PASS_PATH + "home"
# token_urlsafe(32): 43 characters of [A-Za-z0-9_-], 256 bits.
_CODE = re.compile(r"^[A-Za-z0-9_-]{43}$")
_PASS_ID = re.compile(r"^[0-9a-f]{16}$")


def new_code() -> str:
    """A fresh redemption code (256 bits)."""
    return secrets.token_urlsafe(32)


def well_formed(code: str) -> bool:
    return bool(_CODE.match(code))


def is_pass_id(value: str) -> bool:
    return bool(_PASS_ID.match(value))


def pass_id_of(code: str) -> str:
    """The public id of the pass a code belongs to (64 bits of a labelled SHA-256)."""
    return hashlib.sha256(b"rolegate/daypass/id\x00" + code.encode()).hexdigest()[:16]


def code_hash(code: str) -> str:
    """What the Store keeps instead of the code."""
    return hashlib.sha256(b"rolegate/daypass/code\x00" + code.encode()).hexdigest()


def code_matches(code: str, stored_hash: object) -> bool:
    """Constant-time comparison of a presented code with the stored hash."""
    if not isinstance(stored_hash, str):
        return False
    return hmac.compare_digest(code_hash(code).encode(), stored_hash.encode())


def link_for(public_url: str, code: str) -> str:
    return f"{public_url.rstrip('/')}{PASS_PATH}{code}"


def code_from_link(value: str) -> str | None:
    """The code inside a redemption link (or a bare code); None when there is none."""
    path = urlsplit(value.strip()).path if "://" in value else value.strip()
    if path.startswith(PASS_PATH):
        path = path[len(PASS_PATH) :]
    path = path.strip("/")
    return path if well_formed(path) else None


def pass_id_from(value: str) -> str | None:
    """A pass id given either as the id itself or as its redemption link / code (CLI ``revoke``)."""
    value = value.strip()
    if is_pass_id(value):
        return value
    code = code_from_link(value)
    return pass_id_of(code) if code is not None else None
