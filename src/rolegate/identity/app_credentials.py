"""Machine credentials of the apps configured under ``apps:`` (config/sections/apps.py).

Two kinds, both sent as ``Authorization: Bearer …`` to the admin API only:

* an **API key** rolegate issued (``rolegate apps key create --app NAME``): ``rgk_<id>_<secret>``. The Store
  keeps, under namespace ``app_keys`` and key ``<id>``, the app, who made it and when, and a SHA-256 of the
  secret; never the key. A 256-bit random secret needs no slow hash: nobody can guess it, and the hash
  alone lets nobody in. The check reads the record at every request (this namespace is never cached), so
  a revocation bites at the next request on every worker and instance. Comparison is constant-time.
* a **JWT access token** from the IdP's client-credentials grant (RFC 9068): issuer, signature (the IdP's
  JWKS), expiry, the app's audience, and a ``client_id`` (= ``sub``) naming a configured app.

A credential that is of the app kind but not valid is refused (401), never passed on to be judged as a
user's: an ``rgk_`` token, or an IdP token addressed to an apps audience or naming an app client.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

import jwt

from rolegate.audit import AuditLog
from rolegate.audit.events import admin_change_event
from rolegate.config import Config
from rolegate.errors import ServiceUnavailable
from rolegate.identity.provider_jwt import InvalidProviderToken, ProviderTokens
from rolegate.store.base import Store, StoreUnavailable, VersionConflict

log = logging.getLogger("rolegate.apps")

NAMESPACE = "app_keys"
KEY_PREFIX = "rgk_"
_ID_HEX = 16  # 64 bits: an id, not a secret (it is shown in lists and the audit trail)
_SECRET_BYTES = 32


class AppCredentialRefused(Exception):
    """An app credential that is not (or no longer) valid. The message is for logs: it never holds a secret."""


@dataclass(frozen=True, slots=True)
class AppCaller:
    """An authenticated app: its configured name, how it authenticated and an opaque reference for logs."""

    app: str
    via: str  # "api_key" or "client_credentials"
    ref: str  # the key id, or a hash of the token's jti

    @property
    def username(self) -> str:
        return f"app:{self.app}"


# -- API keys ------------------------------------------------------------------------------------------------


def _hash(secret: str) -> str:
    return hashlib.sha256(b"rolegate-app-key\0" + secret.encode()).hexdigest()


def parse_key(token: str) -> tuple[str, str] | None:
    """(key id, secret) of an ``rgk_`` key, or None when the text is not shaped like one."""
    if not token.startswith(KEY_PREFIX):
        return None
    rest = token[len(KEY_PREFIX) :]
    key_id, sep, secret = rest[:_ID_HEX], rest[_ID_HEX : _ID_HEX + 1], rest[_ID_HEX + 1 :]
    if sep != "_" or len(key_id) != _ID_HEX or any(c not in "0123456789abcdef" for c in key_id) or len(secret) < 32:
        return None
    return key_id, secret


@dataclass(frozen=True, slots=True)
class KeyRecord:
    id: str
    app: str
    label: str
    created_at: float
    created_by: str
    revoked_at: float | None = None
    revoked_by: str | None = None

    @classmethod
    def from_value(cls, key_id: str, value: Any) -> "KeyRecord | None":
        if not isinstance(value, dict) or not isinstance(value.get("app"), str):
            return None
        return cls(
            id=key_id,
            app=value["app"],
            label=str(value.get("label") or ""),
            created_at=float(value.get("created_at") or 0),
            created_by=str(value.get("created_by") or ""),
            revoked_at=value.get("revoked_at"),
            revoked_by=value.get("revoked_by"),
        )

    def public(self) -> dict[str, Any]:
        """What lists and the audit trail show: everything but the hash."""
        return {
            "id": self.id,
            "app": self.app,
            "label": self.label,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "revoked_at": self.revoked_at,
            "revoked_by": self.revoked_by,
        }


async def create_key(
    store: Store, app: str, *, by: str, label: str = "", audit: AuditLog | None = None, now: float | None = None
) -> tuple[str, KeyRecord]:
    """A new key for ``app``: (the key text, shown once; its record). Only the secret's hash is stored."""
    now = time.time() if now is None else now
    while True:
        key_id, secret = secrets.token_hex(_ID_HEX // 2), secrets.token_urlsafe(_SECRET_BYTES)
        record = KeyRecord(id=key_id, app=app, label=label, created_at=now, created_by=by)
        try:
            await store.put(NAMESPACE, key_id, {**record.public(), "hash": _hash(secret)}, expected_version=0)
            break
        except VersionConflict:  # 2**-64: an id already taken; draw another
            continue
    await _audit(audit, by, key_id, "create", None, record.public())
    return f"{KEY_PREFIX}{key_id}_{secret}", record


async def revoke_key(
    store: Store, key_id: str, *, by: str, audit: AuditLog | None = None, now: float | None = None
) -> tuple[KeyRecord, bool] | None:
    """Revoke a key by id: (its record, whether it changed now); None when there is no such key."""
    found = await store.get(NAMESPACE, key_id)
    record = KeyRecord.from_value(key_id, found.value) if found is not None else None
    if found is None or record is None:
        return None
    if record.revoked_at is not None:
        return record, False
    now = time.time() if now is None else now
    value = {**found.value, "revoked_at": now, "revoked_by": by}
    await store.put(NAMESPACE, key_id, value, expected_version=found.version)
    after = KeyRecord.from_value(key_id, value)
    assert after is not None
    await _audit(audit, by, key_id, "revoke", record.public(), after.public())
    return after, True


async def list_keys(store: Store) -> list[KeyRecord]:
    out = [KeyRecord.from_value(r.key, r.value) for r in await store.list(NAMESPACE)]
    return sorted((r for r in out if r is not None), key=lambda r: (r.app, r.created_at, r.id))


async def _audit(audit: AuditLog | None, by: str, key_id: str, action: str, before: Any, after: Any) -> None:
    if audit is None:
        return
    await audit.emit_durable(
        admin_change_event(
            actor=by, target=f"{NAMESPACE}/{key_id}", action=action, before=before, after=after, via="cli"
        )
    )


async def check_key(store: Store, config: Config, token: str) -> AppCaller:
    """The app an ``rgk_`` key belongs to, or AppCredentialRefused (unknown, revoked, wrong secret, app gone)."""
    parsed = parse_key(token)
    if parsed is None:
        raise AppCredentialRefused("malformed API key")
    key_id, secret = parsed
    try:
        found = await store.get(NAMESPACE, key_id)
    except StoreUnavailable as exc:  # fail closed, as 503 (retry later), never as an accepted key
        raise ServiceUnavailable(f"app key store unavailable: {exc}") from None
    stored = found.value.get("hash") if found is not None and isinstance(found.value, dict) else None
    # Compare even when there is no record, so an unknown id costs what a known one does.
    matches = hmac.compare_digest(_hash(secret).encode(), (stored if isinstance(stored, str) else "-" * 64).encode())
    record = KeyRecord.from_value(key_id, found.value) if found is not None else None
    if record is None or not matches:
        raise AppCredentialRefused(f"API key {key_id}: unknown or wrong secret")
    if record.revoked_at is not None:
        raise AppCredentialRefused(f"API key {key_id}: revoked")
    app = config.apps.get(record.app)
    if app is None or not app.api_keys:
        raise AppCredentialRefused(f"API key {key_id}: app {record.app!r} no longer accepts API keys")
    return AppCaller(app=record.app, via="api_key", ref=key_id)


# -- IdP client-credentials tokens ---------------------------------------------------------------------------


def app_audiences(config: Config) -> dict[str, str]:
    """client_id -> the audience its tokens must carry, for every app with a client_id."""
    out: dict[str, str] = {}
    for app in config.apps.values():
        if app.client_id is not None:
            audience = app.audience or config.apps_audience
            if audience is not None:
                out[app.client_id] = audience
    return out


def claims_an_app(config: Config, token: str) -> bool:
    """Whether an IdP JWT presents itself as an app's: addressed to an apps audience, or naming an app's
    client as its own subject. Unverified: it only decides who judges the token (and that judge refuses)."""
    audiences = app_audiences(config)
    if not audiences or config.oidc is None:
        return False
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except (jwt.PyJWTError, RecursionError):
        return False
    if not isinstance(claims, dict):
        return False
    issuer = claims.get("iss")
    if not isinstance(issuer, str) or issuer.rstrip("/") != config.oidc.issuer:
        return False
    aud = claims.get("aud")
    auds = {aud} if isinstance(aud, str) else {a for a in aud if isinstance(a, str)} if isinstance(aud, list) else set()
    if auds & set(audiences.values()):
        return True
    client = claims.get("client_id")
    return isinstance(client, str) and client in audiences and claims.get("sub") == client


async def check_client_token(provider_tokens: ProviderTokens | None, config: Config, token: str) -> AppCaller:
    """The app whose client-credentials token this is, or AppCredentialRefused."""
    audiences = app_audiences(config)
    try:
        client = jwt.decode(token, options={"verify_signature": False}).get("client_id")
    except (jwt.PyJWTError, RecursionError, AttributeError):
        raise AppCredentialRefused("unreadable access token") from None
    if not isinstance(client, str) or client not in audiences:
        raise AppCredentialRefused(f"access token of client {str(client)[:64]!r}, which is no configured app")
    if provider_tokens is None:
        raise AppCredentialRefused("no IdP configured")
    try:
        claims = await provider_tokens.verify_client_token(token, audiences[client])
    except InvalidProviderToken as exc:
        raise AppCredentialRefused(f"access token of client {client!r}: {exc}") from None
    name = next(n for n, a in config.apps.items() if a.client_id == client)
    jti = claims.get("jti")
    basis = jti if isinstance(jti, str) and jti else token
    return AppCaller(app=name, via="client_credentials", ref="at-" + hashlib.sha256(basis.encode()).hexdigest()[:24])
