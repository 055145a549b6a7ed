"""Browser sessions created by redeeming a pass (namespace ``daypass_sessions``).

Key ``<pass id>.<hash(session id)>``: the raw id lives only in the sealed cookie, and all sessions
of a pass share a prefix, so revoking a pass ends them with one prefix scan.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any

from rolegate.store import Store, VersionConflict

NAMESPACE = "daypass_sessions"


def session_key(pass_id: str, session_id: str) -> str:
    digest = hashlib.sha256(b"rolegate/daypass/session\x00" + session_id.encode()).hexdigest()
    return f"{pass_id}.{digest}"


@dataclass(slots=True)
class PassSession:
    key: str
    pass_id: str
    device: int
    created: float
    expires_at: float
    used: bool
    version: int

    @property
    def public_id(self) -> str:
        """An opaque id safe to log and put in assertions (``sid``)."""
        return self.key.rsplit(".", 1)[-1][:32]

    @classmethod
    def from_value(cls, key: str, value: Any, version: int) -> "PassSession | None":
        if not isinstance(value, dict):
            return None
        try:
            return cls(
                key,
                str(value["pass_id"]),
                int(value["device"]),
                float(value["created"]),
                float(value["expires_at"]),
                bool(value.get("used", False)),
                version,
            )
        except (KeyError, TypeError, ValueError):
            return None

    def value(self) -> dict[str, Any]:
        return {
            "pass_id": self.pass_id,
            "device": self.device,
            "created": self.created,
            "expires_at": self.expires_at,
            "used": self.used,
        }


def _store_expiry(expires_at: float, now: float) -> float:
    # The Store forgets in real time; the pass logic runs on the caller's clock (tests move it).
    return time.time() + max(0.0, expires_at - now) + 60.0


async def create_session(
    store: Store, pass_id: str, *, device: int, expires_at: float, now: float
) -> tuple[str, PassSession]:
    """A new session for one device; returns (raw session id for the cookie, session)."""
    session_id = secrets.token_urlsafe(32)
    key = session_key(pass_id, session_id)
    session = PassSession(key, pass_id, device, now, expires_at, False, 0)
    session.version = await store.put(
        NAMESPACE, key, session.value(), expected_version=0, expires_at=_store_expiry(expires_at, now)
    )
    return session_id, session


async def find_session(store: Store, pass_id: str, session_id: str) -> PassSession | None:
    key = session_key(pass_id, session_id)
    found = await store.get(NAMESPACE, key)
    if found is None:
        return None
    session = PassSession.from_value(key, found.value, found.version)
    return session if session is not None and session.pass_id == pass_id else None


async def mark_used(store: Store, session: PassSession, now: float) -> bool:
    """Record the session's first request; False when another worker did it first."""
    session.used = True
    try:
        session.version = await store.put(
            NAMESPACE,
            session.key,
            session.value(),
            expected_version=session.version,
            expires_at=_store_expiry(session.expires_at, now),
        )
    except VersionConflict:
        return False
    return True


async def end_pass_sessions(store: Store, pass_id: str) -> int:
    """Delete every session of a pass; returns how many."""
    ended = 0
    for found in await store.list(NAMESPACE, f"{pass_id}."):
        if await store.delete(NAMESPACE, found.key):
            ended += 1
    return ended
