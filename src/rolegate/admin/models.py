"""The admin API's request and response bodies; the OpenAPI document is generated from these."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

NAME = r"^[A-Za-z0-9][A-Za-z0-9_.@\-]{0,127}$"
SCOPE = r"^[a-z][a-z0-9_\-]*:[^\s:{}]{1,200}$"
PERMISSION = r"^[a-z][a-z0-9_\-]*(:[a-z0-9_\-*]+)+$"


class Body(BaseModel):
    """Requests: unknown fields are errors (a typo must not silently do nothing)."""

    model_config = ConfigDict(extra="forbid")


class Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- errors ------------------------------------------------------------------------------------------


class FieldError(Out):
    field: str
    message: str


class ErrorOut(Out):
    error: str
    message: str
    errors: list[FieldError] | None = None


# -- bindings and object grants ----------------------------------------------------------------------


class BindingIn(Body):
    """Subject (exactly one of group, user) -> role, or -> permission on an object (an object grant)."""

    group: str | None = Field(None, pattern=NAME)
    user: str | None = Field(None, pattern=NAME)
    role: str | None = Field(None, pattern=NAME)
    permission: str | None = Field(None, pattern=PERMISSION)
    object: str | None = Field(None, pattern=SCOPE, description="type:id, e.g. task:42 (object grants)")
    scope: str | None = Field(None, pattern=SCOPE, description="type:id, e.g. building:a; null = everywhere")
    until: datetime | None = Field(None, description="the binding stops granting at this time")
    note: str = Field("", max_length=500)

    @field_validator("until")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("give a time zone, e.g. 2027-01-31T18:00:00Z")
        return value


class BindingOut(Out):
    id: str
    source: Literal["config", "api"]
    readonly: bool
    group: str | None = None
    user: str | None = None
    daypass: str | None = None
    role: str | None = None
    permission: str | None = None
    object: str | None = None
    scope: str | None = None
    until: str | None = None
    note: str = ""
    created_by: str | None = None
    created_at: str | None = None
    version: int = 0


class BindingList(Out):
    items: list[BindingOut]


# -- roles -----------------------------------------------------------------------------------------


class ManagesIn(Body):
    """What holders hand out and take away where they hold the role and below ("all" or names)."""

    roles: Literal["all"] | list[str] = Field(
        default_factory=list, max_length=200, description="roles they bind people to"
    )
    settings: Literal["all"] | list[str] = Field(
        default_factory=list, max_length=200, description="user settings they switch on and off"
    )
    assigns: Literal["all"] | list[str] = Field(
        default_factory=list,
        max_length=500,
        description="permissions they grant on one object (add someone to a task), without holding them",
    )


class RoleIn(Body):
    description: str = Field("", max_length=500)
    permissions: list[str] = Field(default_factory=list, max_length=500)
    inherits: list[str] = Field(default_factory=list, max_length=50)
    deny: list[str] = Field(default_factory=list, max_length=500)
    if_setting: dict[str, list[str]] = Field(
        default_factory=dict,
        max_length=100,
        description="user setting -> permissions granted only where the holder has that setting switched on",
    )
    manages: ManagesIn = Field(default_factory=ManagesIn)
    on_assigned: dict[str, list[str]] | list[str] = Field(
        default_factory=dict,
        description="scope type (or a plain list: the assigned object itself) -> permissions "
        "granted only on objects assigned to the holder (docs/admin-api.md)",
    )
    assigns: None = Field(None, description="moved to manages.assigns", json_schema_extra={"deprecated": True})

    @field_validator("assigns", mode="before")
    @classmethod
    def _moved(cls, value: Any) -> None:
        if value:
            raise ValueError("assigns moved under manages: send manages: {assigns: [...]}")
        return None


class RoleCreate(RoleIn):
    name: str = Field(pattern=NAME)


class RoleOut(Out):
    name: str
    source: Literal["config", "api"]
    readonly: bool
    description: str = ""
    permissions: list[str]
    inherits: list[str]
    deny: list[str]
    if_setting: dict[str, list[str]] = Field(default_factory=dict)
    manages: dict[str, Any] = Field(default_factory=dict, description="roles, settings, assigns: 'all' or names")
    on_assigned: dict[str, list[str]] = Field(
        default_factory=dict, description="scope type ('*': the assigned object itself) -> permissions"
    )
    effective: list[str] = Field(description="what a holder gets: inherited permissions folded in, denies removed")
    conditional: dict[str, list[str]] = Field(
        default_factory=dict,
        description="user setting -> what a holder gets with it on (inherited conditions folded in)",
    )
    version: int = 0


class RoleList(Out):
    items: list[RoleOut]


# -- user settings -----------------------------------------------------------------------------------


class UserSettingsIn(Body):
    """The settings on for one user at one scope (replacing what is on there); other scopes keep theirs."""

    settings: list[str] = Field(max_length=100)
    scope: str | None = Field(None, pattern=SCOPE, description="type:id, e.g. building:a; null = everywhere")


class SettingSwitchOut(Out):
    setting: str
    scope: str | None = Field(description="null: everywhere")
    by: str | None = Field(description="who switched it on (API)")
    at: str | None = Field(description="when")
    until: str | None = Field(None, description="when it ends (an approved access request); null: no end")
    source: Literal["config", "api"]


class UserSettingsOut(Out):
    user: str
    on: list[SettingSwitchOut] = Field(description="every setting switched on for the user, where, by whom, when")
    settings: list[str] = Field(description="switched on everywhere through the API")
    from_config: list[str] = Field(description="switched on in the config file (read-only)")
    available: dict[str, list[str]] = Field(description="every setting and what some role grants with it")
    roles: dict[str, dict[str, list[str]]] = Field(
        default_factory=dict,
        description="setting -> permission -> the roles that grant it with "
        "the setting on (a setting alone grants nothing)",
    )
    version: int = 0


# -- scope membership ("an app registers its tasks") --------------------------------------------------


class ScopeMemberIn(Body):
    parent: str = Field(pattern=SCOPE, description="the scope it lies in, e.g. building:a for task:42")


class ScopeMemberOut(Out):
    scope: str
    parent: str | None
    source: Literal["config", "api"]
    readonly: bool
    version: int = 0
    by: str | None = None
    at: str | None = None
    overridden_by_api: bool = False


class ScopeMemberList(Out):
    items: list[ScopeMemberOut]


class ScopeMemberQuery(Body):
    type: str | None = Field(None, max_length=100, description="only scopes of this type, e.g. task")


# -- preview ------------------------------------------------------------------------------------------


class PermissionChange(Out):
    user: str
    scope: str | None
    gains: list[str]
    loses: list[str]


class PreviewOut(Out):
    dry_run: bool = True
    summary: str
    changes: list[PermissionChange]
    users_considered: int
    notes: list[str] = Field(default_factory=list)


class PreviewIn(Body):
    target: Literal["bindings", "roles", "user_settings"]
    action: Literal["create", "update", "delete"]
    id: str | None = Field(None, max_length=200, description="binding id, role name or username")
    value: dict[str, Any] | None = Field(None, description="the body the create/update would send")


# -- who has what ------------------------------------------------------------------------------------


class ScopeHoldings(Out):
    scope: str | None = Field(description="null: everywhere")
    roles: list[str]
    permissions: list[str]
    until: str | None = Field(description="the earliest time one of these grants ends (null: no end)")
    granted_by: list[str]


class ObjectGrantOut(Out):
    permission: str
    object: str
    scope: str | None
    until: str | None


class AssignedOut(Out):
    object: str = Field(description="an object an app (or a manager) assigned the user to, e.g. workorder:1")
    lies_in: str | None = Field(description="where the object directory places it; null: nowhere")
    by: str | None
    at: str | None
    permissions: list[str] = Field(
        description="what roles granting on assigned objects (on_assigned) give the user on it now"
    )


class MeOut(Out):
    user: str
    name: str = ""
    email: str = ""
    auth: str
    daypass: str | None = None
    groups: list[str]
    signed_in_until: str | None = Field(description="when this session, token or day pass ends")
    scopes: list[ScopeHoldings]
    object_grants: list[ObjectGrantOut]
    settings: list[str] = Field(description="names of the user settings switched on, somewhere")
    settings_on: list[SettingSwitchOut] = Field(default_factory=list, description="each, with where, by whom, when")
    assignments: list[AssignedOut] = Field(
        default_factory=list, description="objects assigned to the user (at most 200, sorted)"
    )
    admin: dict[str, list[str | None]] = Field(
        description="rolegate permission -> scopes where held (null: everywhere)"
    )
    policy_version: int


class UserOut(Out):
    username: str
    name: str | None = None
    email: str | None = None
    disabled: bool = False
    groups: list[str]
    source: Literal["directory", "signins"]


class UserList(Out):
    items: list[UserOut]
    source: Literal["directory", "signins"]


class UserDetail(UserOut):
    scopes: list[ScopeHoldings]
    object_grants: list[ObjectGrantOut]
    settings: list[str] = Field(description="names of the user settings switched on, somewhere")
    settings_on: list[SettingSwitchOut] = Field(default_factory=list, description="each, with where, by whom, when")
    assignments: list[AssignedOut] = Field(
        default_factory=list, description="objects assigned to the user (at most 200, sorted)"
    )


class GroupOut(Out):
    name: str
    members: list[str]


class GroupList(Out):
    items: list[GroupOut]
    source: Literal["directory", "signins"]


# -- explain, matrix, audit, sync ------------------------------------------------------------------------


class ExplainIn(Body):
    user: str | None = Field(None, pattern=NAME, description="default: yourself")
    groups: list[str] | None = Field(None, max_length=200, description="what-if: stand in for the directory")
    permission: str | None = Field(None, pattern=PERMISSION)
    scope: str | None = Field(None, pattern=SCOPE)
    object: str | None = Field(None, pattern=SCOPE)
    method: str | None = Field(None, pattern=r"^[A-Za-z]{1,16}$")
    url: str | None = Field(None, max_length=2000, description="a path (or URL) on the proxy")


class ExplainOut(Out):
    allowed: bool
    outcome: str
    permission: str | None
    scope: str | None
    object: str | None
    mode: str | None
    route: dict[str, Any] | None
    user: str
    groups: list[str]
    daypass: str | None
    roles: list[str]
    reasons: list[str]
    notes: list[str]
    policy_version: int


class MatrixQuery(Body):
    format: Literal["json", "md", "csv", "html"] = "json"
    roles: str | None = Field(None, max_length=2000, description="comma-separated role names")
    scope: str | None = Field(None, pattern=SCOPE)


class MatrixOut(Out):
    roles: list[str]
    notes: list[str]
    rows: list[dict[str, Any]]


class AuditQuery(Body):
    user: str | None = Field(None, max_length=200)
    kind: Literal["decision", "request", "admin_change", "daypass", "sync", "signin", "signout"] | None = None
    decision: Literal["allow", "deny", "would-deny"] | None = None
    path_prefix: str | None = Field(None, max_length=500)
    since: str | None = Field(None, max_length=64, description="ISO time, epoch seconds or an age (24h)")
    until: str | None = Field(None, max_length=64)
    after_seq: int = Field(0, ge=0, le=2**62)
    limit: int = Field(100, ge=1, le=1000)


class AuditOut(Out):
    items: list[dict[str, Any]]


class SyncStatusOut(Out):
    configured: bool
    snapshot: dict[str, Any] | None
    recent: list[dict[str, Any]]


class ListQuery(Body):
    q: str | None = Field(None, max_length=200, description="substring of the name")
    limit: int = Field(200, ge=1, le=5000)


class BindingQuery(Body):
    scope: str | None = Field(None, max_length=300)
    group: str | None = Field(None, max_length=200)
    user: str | None = Field(None, max_length=200)
    role: str | None = Field(None, max_length=200)


class DryRun(Body):
    dry_run: Literal["0", "1", "true", "false"] | None = None

    @property
    def on(self) -> bool:
        return self.dry_run in ("1", "true")


_ID = re.compile(r"^[A-Za-z0-9_.@:\-]{1,200}$")


def valid_id(value: str) -> bool:
    return bool(_ID.match(value))
