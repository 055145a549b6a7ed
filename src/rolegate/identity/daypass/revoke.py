"""Revoking a pass: mark it, drop its sessions, and make every worker recompile before its next request."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rolegate.audit import AuditLog
from rolegate.identity.daypass.audit import pass_event, record_durably
from rolegate.identity.daypass.errors import PassNotFound
from rolegate.identity.daypass.record import PassRecord, load_pass, save_pass
from rolegate.identity.daypass.sessions import end_pass_sessions
from rolegate.store import Store, VersionConflict
from rolegate.store.version_board import VersionBoard, bump

if TYPE_CHECKING:
    from rolegate.tokens.service import TokenService


async def revoke_pass(
    store: Store,
    board: VersionBoard | None,
    pass_id: str,
    *,
    by: str,
    now: float,
    reason: str | None = None,
    audit: AuditLog | None = None,
    tokens: "TokenService | None" = None,
) -> tuple[PassRecord, bool]:
    """Revoke ``pass_id``; returns (record, changed). Revoking twice is harmless (changed False).

    ``tokens``: the TokenService, so an app's refresh-token families from this pass end too.
    """
    for _attempt in range(5):
        found = await load_pass(store, pass_id)
        if found is None:
            raise PassNotFound(f"no day pass {pass_id}")
        record, version = found
        if record.revoked_at is not None:
            return record, False
        record.revoked_at = now
        record.revoked_by = by
        try:
            await save_pass(store, record, expected_version=version, now=now)
        except VersionConflict:
            continue  # redeemed or touched meanwhile: read again
        break
    else:
        raise VersionConflict("daypasses", pass_id, None, None)
    # Sessions of the pass are refused by their next request anyway (the pass check); deleting them
    # frees the Store and makes the revocation visible in `daypass list` at once.
    await end_pass_sessions(store, pass_id)
    if tokens is not None:
        await tokens.revoke_user(f"daypass:{pass_id}")
    await record_durably(audit, pass_event("revoke", record, user=by, reason=reason or "revoked", ts=now))
    await bump(store, board, "daypass")
    return record, True
