"""Day passes (docs/daypass.md): issue, redeem on a phone, expire by themselves, revoke.

A pass is a one-time link (and QR code) from a config template; it stands for one policy binding
``{daypass: <id>, role: <template role>, scope: <scope>, until: <expiry>}`` and never grants more.
"""

from rolegate.identity.daypass.codes import code_from_link, link_for, pass_id_from
from rolegate.identity.daypass.endpoints import TokenRedeemer, add_daypass_routes, daypass_token_redeemer
from rolegate.identity.daypass.errors import InvalidPassRequest, IssueRefused, PassEnded, PassNotFound
from rolegate.identity.daypass.expiry import end_of_local_day, pass_expiry
from rolegate.identity.daypass.issue import ISSUE_PERMISSION, IssuedPass, issue_pass
from rolegate.identity.daypass.principal import DaypassPrincipal
from rolegate.identity.daypass.record import (
    NAMESPACE,
    PassRecord,
    PassStatus,
    active_pass_bindings,
    list_passes,
    load_pass,
    pass_status,
)
from rolegate.identity.daypass.revoke import revoke_pass
from rolegate.identity.daypass.service import DaypassService, daypass_service

__all__ = [
    "ISSUE_PERMISSION",
    "NAMESPACE",
    "DaypassPrincipal",
    "DaypassService",
    "InvalidPassRequest",
    "IssueRefused",
    "IssuedPass",
    "PassEnded",
    "PassNotFound",
    "PassRecord",
    "PassStatus",
    "TokenRedeemer",
    "active_pass_bindings",
    "add_daypass_routes",
    "code_from_link",
    "daypass_service",
    "daypass_token_redeemer",
    "end_of_local_day",
    "issue_pass",
    "link_for",
    "list_passes",
    "load_pass",
    "pass_expiry",
    "pass_id_from",
    "pass_status",
    "revoke_pass",
]
