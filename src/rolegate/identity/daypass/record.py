"""The stored day pass (namespace ``daypasses``, key = pass id) and what it means at a given time."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

from rolegate.config import Config
from rolegate.config.sections.policy import Binding
from rolegate.store import Store

log = logging.getLogger("rolegate.daypass")

NAMESPACE = "daypasses"
# Ended passes stay readable this long (``daypass list --all``, support questions), then the Store drops them.
RETAIN_SECONDS = 14 * 86400.0

# What a record says of itself; a pass id may also name no record ("unknown", pass_status).
RecordStatus = Literal["active", "expired", "revoked"]
PassStatus = Literal[RecordStatus, "unknown"]


@dataclass(slots=True)
class PassRecord:
    """One issued pass. ``code_hash`` is all that is kept of the code."""

    id: str
    code_hash: str
    template: str
    role: str
    scope: str
    name: str
    company: str
    reason: str
    issued_by: str
    issued_at: float
    expires_at: float
    devices: int
    # One entry per device that redeemed it: {"device": n, "at": t, "via": "browser"|"token", "client": addr}.
    redeemed: list[dict[str, Any]] = field(default_factory=list)
    revoked_at: float | None = None
    revoked_by: str | None = None
    # Set once the expiry has been recorded in the audit trail.
    expiry_audited: bool = False

    def status(self, now: float) -> RecordStatus:
        if self.revoked_at is not None:
            return "revoked"
        if now >= self.expires_at:
            return "expired"
        return "active"

    @property
    def devices_left(self) -> int:
        return max(0, self.devices - len(self.redeemed))

    @property
    def holder(self) -> dict[str, str]:
        """Who holds the pass, for audit events."""
        return {"name": self.name, "company": self.company}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> "PassRecord | None":
        if not isinstance(data, dict):
            return None
        try:
            known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
            record = cls(**known)
            record.issued_at = float(record.issued_at)
            record.expires_at = float(record.expires_at)
            record.devices = int(record.devices)
            return record
        except (TypeError, ValueError, KeyError):
            return None

    def store_expiry(self, now: float) -> float:
        """When the Store may forget the record, in real time (the pass logic runs on the caller's clock)."""
        return time.time() + max(0.0, self.expires_at - now) + RETAIN_SECONDS

    def binding(self) -> Binding:
        """The policy binding this pass stands for: its template's role at its scope, until its expiry."""
        return Binding(
            daypass=self.id,
            role=self.role,
            scope=self.scope,
            until=datetime.fromtimestamp(self.expires_at, timezone.utc),
        )


async def load_pass(store: Store, pass_id: str) -> tuple[PassRecord, int] | None:
    """The record and its Store version, or None."""
    found = await store.get(NAMESPACE, pass_id)
    if found is None:
        return None
    record = PassRecord.from_dict(found.value)
    if record is None or record.id != pass_id:
        log.error("ignoring malformed day pass record %s", pass_id)
        return None
    return record, found.version


async def save_pass(store: Store, record: PassRecord, *, expected_version: int | None, now: float) -> int:
    return await store.put(
        NAMESPACE, record.id, record.to_dict(), expected_version=expected_version, expires_at=record.store_expiry(now)
    )


async def pass_status(store: Store, pass_id: str, now: float) -> PassStatus:
    """Whether the pass is active, expired, revoked or unknown at ``now`` (the session check)."""
    found = await load_pass(store, pass_id)
    return "unknown" if found is None else found[0].status(now)


async def list_passes(store: Store) -> list[PassRecord]:
    """Every stored pass (active and recently ended), newest first."""
    records = [PassRecord.from_dict(r.value) for r in await store.list(NAMESPACE)]
    return sorted((r for r in records if r is not None), key=lambda r: r.issued_at, reverse=True)


def template_still_grants(config: Config, record: PassRecord) -> bool:
    """A pass grants only what its template grants *now*: a template removed or narrowed since
    issuing (other role, scope type no longer allowed) takes the pass's access with it."""
    daypass = config.daypass
    template = daypass.templates.get(record.template) if daypass is not None else None
    if template is None or template.role != record.role:
        return False
    return record.scope.partition(":")[0] in template.scopes


async def active_pass_bindings(store: Store, config: Config, now: float) -> list[Binding]:
    """The bindings of every pass that is neither revoked nor expired at ``now`` (for compile_policy).

    Each carries ``until`` = the pass's expiry, so a compiled policy stops granting at that instant
    on every worker without a recompile.
    """
    bindings: list[Binding] = []
    for record in await list_passes(store):
        if record.status(now) != "active":
            continue
        if not template_still_grants(config, record):
            log.warning(
                "day pass %s grants nothing: template %r no longer allows role %s at %s",
                record.id,
                record.template,
                record.role,
                record.scope,
            )
            continue
        try:
            bindings.append(record.binding())
        except ValueError as exc:
            log.error("day pass %s grants nothing: %s", record.id, exc)
    return bindings
