"""Day-pass audit events (issue, redeem, use, expire, revoke): one helper so every caller records the same shape."""

from __future__ import annotations

import logging

from rolegate.audit import AuditEvent, AuditLog, daypass_event
from rolegate.audit.events import DaypassAction
from rolegate.identity.daypass.record import PassRecord

log = logging.getLogger("rolegate.daypass")


def pass_event(
    action: DaypassAction,
    record: PassRecord,
    *,
    user: str | None,
    reason: str | None = None,
    client: str | None = None,
    method: str | None = None,
    path: str | None = None,
    ts: float | None = None,
) -> AuditEvent:
    return daypass_event(
        action=action,
        pass_id=record.id,
        user=user,
        template=record.template,
        scope=record.scope,
        holder=record.holder,
        reason=reason if reason is not None else record.reason,
        expires_at=record.expires_at,
        method=method,
        path=path,
        client=client,
        ts=ts,
    )


async def record_durably(audit: AuditLog | None, event: AuditEvent) -> None:
    """For changes (issue, redeem, revoke): acknowledged only once the event is committed."""
    if audit is not None:
        await audit.emit_durable(event)


def record(audit: AuditLog | None, event: AuditEvent) -> None:
    """For observations on the request path (use, expire): never blocks the request."""
    if audit is None:
        return
    try:
        audit.emit(event)
    except Exception as exc:  # noqa: BLE001 - a full queue must not turn a use into an error page
        log.warning("day pass event not recorded: %s", exc)
