"""The tamper-evident audit trail: event builders, the hash chain, the batched writer, verify, query."""

from rolegate.audit.chain import chain_hash
from rolegate.audit.checkpoint import Checkpoint, checkpoint_key
from rolegate.audit.events import (
    KINDS,
    SCHEMA_VERSION,
    AuditEvent,
    admin_change_event,
    daypass_event,
    decision_event,
    request_event,
    signin_event,
    signout_event,
    sync_event,
)
from rolegate.audit.log import AuditLog, AuditUnavailable
from rolegate.audit.query import AuditFilters, parse_time, query_events
from rolegate.audit.retention import PruneResult, prune, prune_expired
from rolegate.audit.verify import CannotVerify, Problem, VerifyReport, verify_chain

__all__ = [
    "KINDS",
    "SCHEMA_VERSION",
    "AuditEvent",
    "AuditFilters",
    "AuditLog",
    "AuditUnavailable",
    "CannotVerify",
    "Checkpoint",
    "Problem",
    "PruneResult",
    "VerifyReport",
    "admin_change_event",
    "chain_hash",
    "checkpoint_key",
    "daypass_event",
    "decision_event",
    "parse_time",
    "prune",
    "prune_expired",
    "query_events",
    "request_event",
    "signin_event",
    "signout_event",
    "sync_event",
    "verify_chain",
]
