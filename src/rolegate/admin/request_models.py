"""Bodies of the access-request endpoints (``/.rolegate/api/v1/access-requests``); OpenAPI comes from these."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from rolegate.admin.models import NAME, PERMISSION, SCOPE, Body, MeOut, Out, PreviewOut
from rolegate.config.types import parse_duration

STATUSES = ("pending", "approved", "denied", "expired")
_PATH = r"^/[^\s\x00-\x1f\x7f]{0,2000}$"


def _duration(value: Any) -> float:
    try:
        seconds = parse_duration(value).total_seconds()
    except ValueError as exc:
        raise ValueError(str(exc)) from None
    if seconds <= 0:
        raise ValueError("give a positive duration, e.g. 2h or 30m")
    return seconds


class AccessRequestIn(Body):
    """Ask for a permission at a scope, for a while. The 403 page's JSON names these fields."""

    permission: str = Field(pattern=PERMISSION, description="what was refused, e.g. documents:add")
    scope: str | None = Field(None, pattern=SCOPE, description="where, e.g. building:a; null = everywhere")
    reason: str = Field(min_length=1, max_length=500, description="why you need it (shown to the approvers)")
    duration: str | float = Field(description="how long, e.g. 2h or seconds; at most access_requests.max_duration")
    method: str | None = Field(None, pattern=r"^[A-Z]{1,16}$", description="the refused request's method")
    path: str | None = Field(None, pattern=_PATH, description="the refused request's path")

    @field_validator("reason")
    @classmethod
    def _reason(cls, value: str) -> str:
        value = " ".join(value.split())
        if not value:
            raise ValueError("say why you need it")
        return value

    @property
    def seconds(self) -> float:
        return _duration(self.duration)

    @field_validator("duration")
    @classmethod
    def _check_duration(cls, value: Any) -> Any:
        _duration(value)
        return value


class ApproveIn(Body):
    """Approve: the least role that gives it (or ``role``, one you manage), for the wished time or less."""

    role: str | None = Field(None, pattern=NAME, description="one of the request's plans you may grant")
    duration: str | float | None = Field(None, description="shorter than wished, e.g. 30m (default: as wished)")
    note: str = Field("", max_length=500)

    @field_validator("duration")
    @classmethod
    def _check_duration(cls, value: Any) -> Any:
        if value is not None:
            _duration(value)
        return value

    @property
    def seconds(self) -> float | None:
        return None if self.duration is None else _duration(self.duration)


class DenyIn(Body):
    reason: str = Field(min_length=1, max_length=500, description="told to the requester")


class ApproverOut(Out):
    user: str
    name: str
    scope: str | None = Field(description="where their power to grant it comes from (null: everywhere)")


class PlanOut(Out):
    role: str
    settings: list[str] = Field(description="user settings switched on with it, until the same time")
    gives: int = Field(description="how many permissions it gives (the least first)")


class GrantOut(Out):
    role: str
    scope: str | None
    settings: list[str]
    until: str
    binding: str | None = None
    seconds_left: int = 0


class AccessRequestOut(Out):
    id: str
    user: str
    name: str = ""
    permission: str
    scope: str | None
    what: str = Field(description="in words, e.g. Add documents in Building A")
    method: str | None = None
    path: str | None = None
    reason: str
    duration: int = Field(description="wished, in seconds")
    status: Literal["pending", "approved", "denied", "expired"]
    active: bool = Field(description="approved and its access has not ended yet")
    created_at: str
    expires_at: str = Field(description="a pending request expires unanswered at this time")
    approvers: list[ApproverOut] = Field(description="who may grant it, closest scope first")
    decided_by: str | None = None
    decided_at: str | None = None
    answer: str | None = Field(None, description="the approver's note, or why it was denied")
    grant: GrantOut | None = None
    plans: list[PlanOut] | None = Field(None, description="what you may grant for it (approvers only)")


class AccessRequestList(Out):
    to_review: list[AccessRequestOut] = Field(description="pending requests you may approve")
    mine: list[AccessRequestOut] = Field(description="your own requests, newest first")


class AccessRequestCreated(Out):
    created: bool = Field(description="false: the same request was pending already (answered again)")
    request: AccessRequestOut


class ApprovalOut(Out):
    applied: bool
    request: AccessRequestOut
    plan: PlanOut
    until: str
    preview: PreviewOut


class TemporaryAccessOut(Out):
    request: str
    what: str
    role: str
    scope: str | None
    until: str
    seconds_left: int


class MeWithRequestsOut(MeOut):
    """``GET /me``, with the caller's access requests when the feature is on."""

    pending_requests: list[AccessRequestOut] = Field(default_factory=list, description="your requests still open")
    temporary_access: list[TemporaryAccessOut] = Field(
        default_factory=list, description="access granted on request, with the time left"
    )


__all__ = [
    "STATUSES",
    "AccessRequestCreated",
    "AccessRequestIn",
    "AccessRequestList",
    "AccessRequestOut",
    "ApprovalOut",
    "ApproveIn",
    "DenyIn",
    "MeWithRequestsOut",
    "TemporaryAccessOut",
]
