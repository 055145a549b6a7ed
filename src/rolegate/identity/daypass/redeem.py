"""Redemption, without any web framework: find the pass a code names, and claim one device on it.

A device is one redemption that creates a session (browser) or a token family (app); the claim
is a compare-and-set on the pass record, so two phones racing for a one-device pass cannot both win.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rolegate.audit import AuditLog
from rolegate.identity.daypass import codes
from rolegate.identity.daypass.audit import pass_event, record
from rolegate.identity.daypass.record import PassRecord, load_pass, save_pass
from rolegate.store import Store, VersionConflict

Outcome = Literal["ok", "invalid", "expired", "revoked", "used_up"]


@dataclass(slots=True)
class Lookup:
    """What a code names at ``now``: ``outcome`` and, unless invalid, the record and its version."""

    outcome: Outcome
    record: PassRecord | None = None
    version: int = 0


async def look_up(store: Store, code: str, now: float) -> Lookup:
    """The pass of ``code`` and whether it can still be redeemed; never says more than 'invalid' for a
    code that is malformed, unknown or does not match the stored hash."""
    if not codes.well_formed(code):
        return Lookup("invalid")
    found = await load_pass(store, codes.pass_id_of(code))
    if found is None:
        return Lookup("invalid")
    rec, version = found
    if not codes.code_matches(code, rec.code_hash):
        return Lookup("invalid")
    status = rec.status(now)
    if status != "active":
        return Lookup(status, rec, version)
    if rec.devices_left <= 0:
        return Lookup("used_up", rec, version)
    return Lookup("ok", rec, version)


async def claim_device(store: Store, code: str, *, via: str, client: str | None, now: float) -> Lookup:
    """Count one more device on the pass; ``ok`` with the updated record (its last ``redeemed`` entry is
    this device), or why not."""
    for _attempt in range(8):
        found = await look_up(store, code, now)
        if found.outcome != "ok":
            return found
        rec = found.record
        assert rec is not None
        rec.redeemed.append({"device": len(rec.redeemed) + 1, "at": now, "via": via, "client": client})
        try:
            found.version = await save_pass(store, rec, expected_version=found.version, now=now)
        except VersionConflict:
            continue  # another device (or a revocation) got there first: decide again on fresh state
        return found
    return Lookup("used_up", found.record, found.version)


async def note_expiry(
    store: Store, audit: AuditLog | None, rec: PassRecord, version: int, *, client: str | None, now: float
) -> None:
    """Record a pass's expiry in the audit trail the first time anyone notices it (once per pass)."""
    if rec.expiry_audited or rec.revoked_at is not None:
        return
    rec.expiry_audited = True
    try:
        await save_pass(store, rec, expected_version=version, now=now)
    except VersionConflict:
        return  # someone else is writing it; they (or the next request) will record it
    record(audit, pass_event("expire", rec, user=f"daypass:{rec.id}", client=client, reason="expired", ts=now))
