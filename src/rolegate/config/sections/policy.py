"""``scopes``, ``permissions``, ``roles``, ``bindings``, ``user_settings``, ``users``: the authorization model."""

from __future__ import annotations

import re
from datetime import date, datetime, time, timezone
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from rolegate.config.sections.objects import ObjectLookup
from rolegate.config.types import Section

PERMISSION = re.compile(r"^[a-z][a-z0-9_\-]*(:[a-z0-9_\-*]+)+$")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
SCOPE = re.compile(r"^[a-z][a-z0-9_\-]*:[^\s:{}]+$")
TYPE = re.compile(r"^[a-z][a-z0-9_\-]*$")
# on_assigned's key for "the assigned object itself" (what a plain list means).
ASSIGNED_ITSELF = "*"

# rolegate's own permissions: always in the catalogue, never need declaring.
ROLEGATE_PERMISSIONS = (
    "rolegate:roles:edit",
    "rolegate:bindings:edit",
    "rolegate:daypass:issue",
    "rolegate:audit:view",
)


# How deep scope types may nest. A scope's chain (it, its parent, ...) is cut at this length,
# and the compiled policy relies on no valid config reaching it (see rolegate.authz.policy).
MAX_SCOPE_DEPTH = 16


class ScopeType(Section):
    parent: str | None = None
    # Which parent each scope of this type belongs to, e.g. {a: acme, b: acme} for buildings in client acme.
    members: dict[str, str] = Field(default_factory=dict)
    description: str = ""
    # Ask the app where an object of this type lies when the object directory does not know it (optional).
    lookup: ObjectLookup | None = None


ALL = "all"


def _moved(message: str) -> Any:
    """A before-validator for a key that old configs used and this model replaced: fail with the way to write it now."""

    def refuse(cls: type, value: Any) -> Any:
        if value is not None:
            raise ValueError(message)
        return value

    return classmethod(refuse)


class Manages(Section):
    """What a role's holders may hand out and take away, at the scopes where they hold it and below.

    ``all`` for an administrator; otherwise the role names, user setting names and permissions (granted on
    one object, "add someone to a task") listed. Nobody hands out rolegate's own permissions beyond what they
    hold at that scope, whatever this says (see rolegate.admin.delegation).
    """

    roles: Literal["all"] | tuple[str, ...] = ()
    settings: Literal["all"] | tuple[str, ...] = ()
    assigns: Literal["all"] | tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.roles or self.settings or self.assigns)


class Role(Section):
    description: str = ""
    permissions: tuple[str, ...] = ()
    inherits: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    # "If enabled in user settings": setting name -> permissions granted only where the user holds this
    # role AND has that setting switched on (at that scope, a parent of it, or everywhere).
    if_setting: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    # "Their" objects: permissions granted only on objects an app assigned to the user (workorder:1 -> bob).
    # A list: on the assigned object itself. A mapping by scope type: at a scope of that type when the user is
    # assigned to it, or to an object lying directly in it (customer: [customers:view] - the customer of an
    # assigned work order); never further up, never a sibling. See docs/admin-api.md "Assignments".
    on_assigned: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    manages: Manages = Manages()
    # Replaced by manages.assigns (delegation by roles); kept only to say so.
    assigns: None = None

    _assigns_moved = field_validator("assigns", mode="before")(
        _moved(
            "assigns moved under manages: write manages: {assigns: [...]}; a role now says which roles, user "
            "settings and object permissions its holders hand out (manages: {roles, settings, assigns})"
        )
    )

    @field_validator("on_assigned", mode="before")
    @classmethod
    def _assigned_list_is_the_object(cls, value: Any) -> Any:
        # A plain list: granted on the assigned object itself, whatever its type.
        if isinstance(value, (list, tuple)):
            return {ASSIGNED_ITSELF: value}
        return value

    @field_validator("on_assigned")
    @classmethod
    def _assigned_types(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        for key in value:
            if key != ASSIGNED_ITSELF and not TYPE.match(key):
                raise ValueError(
                    f"on_assigned: {key!r} is not a scope type name (or give a plain list: "
                    f"the permissions on the assigned object itself)"
                )
        return value

    @classmethod
    def from_stored(cls, value: Any) -> "Role":
        """A role as the admin API stored it; one stored before manages existed has its assigns moved there."""
        if isinstance(value, dict) and "assigns" in value:
            old = value["assigns"]
            value = {k: v for k, v in value.items() if k != "assigns"}
            if old and "manages" not in value:
                value["manages"] = {"assigns": old}
        return cls.model_validate(value)


class UserSetting(Section):
    """A named toggle, switched on per user everywhere or at a scope. It grants nothing by itself."""

    description: str = ""
    # The old model (a setting granted its permissions everywhere, to anyone) - refused with the new way.
    permissions: None = None
    users: None = None

    _permissions_moved = field_validator("permissions", mode="before")(
        _moved(
            "a user setting no longer grants permissions by itself: list them under the roles they are a condition "
            "of, roles.<role>.if_setting.<setting>: [...] (granted only where the user holds that role and has the "
            "setting on there), and switch the setting on per user under users.<name>.settings"
        )
    )
    _users_moved = field_validator("users", mode="before")(
        _moved(
            "who has a setting on moved to the top-level users: section, per scope: "
            'users: {heidi: {settings: {"building:a": [setting]}}} (a plain list means everywhere)'
        )
    )


EVERYWHERE = "*"


def _settings_by_scope(value: Any) -> Any:
    # A plain list means everywhere.
    if isinstance(value, (list, tuple)):
        return {EVERYWHERE: value}
    return value


class UserEntry(Section):
    """Per-user state from config: the user settings switched on, everywhere (``*``) or per scope."""

    settings: dict[str, tuple[str, ...]] = Field(default_factory=dict)

    @field_validator("settings", mode="before")
    @classmethod
    def _list_is_everywhere(cls, value: Any) -> Any:
        return _settings_by_scope(value)

    @field_validator("settings")
    @classmethod
    def _scopes(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        for scope in value:
            if scope != EVERYWHERE and not SCOPE.match(scope):
                raise ValueError(
                    f"{scope!r}: settings are switched on at a scope (type:id, e.g. building:a) "
                    f"or everywhere ({EVERYWHERE!r}, or give a plain list)"
                )
        return value


def _parse_until(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value if value is None or value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, date):
        # A date means "through the end of that day" (UTC).
        return datetime.combine(value, time.max, tzinfo=timezone.utc)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an ISO date or date-time") from None
        if len(value) == 10:
            return datetime.combine(parsed.date(), time.max, tzinfo=timezone.utc)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    raise ValueError("until must be a date (2027-01-31) or date-time")


class Binding(Section):
    """Subject (group, user or day pass) -> role, optionally at a scope, optionally until a time.

    With ``permission`` + ``object`` instead of ``role`` it is an object grant ("if added to a task").
    """

    group: str | None = None
    user: str | None = None
    daypass: str | None = None
    role: str | None = None
    permission: str | None = None
    object: str | None = None
    scope: str | None = None
    until: datetime | None = None

    @field_validator("until", mode="before")
    @classmethod
    def _until(cls, value: Any) -> datetime | None:
        return _parse_until(value)

    @field_validator("scope", "object")
    @classmethod
    def _scope(cls, value: str | None) -> str | None:
        if value is not None and not SCOPE.match(value):
            raise ValueError(f"{value!r} must look like type:id, e.g. building:a")
        return value

    @model_validator(mode="after")
    def _shape(self) -> "Binding":
        subjects = [s for s in (self.group, self.user, self.daypass) if s is not None]
        if len(subjects) != 1:
            raise ValueError("a binding names exactly one subject: group, user or daypass")
        if self.role is None and self.permission is None:
            raise ValueError("a binding needs a role (or a permission with an object, for an object grant)")
        if self.role is not None and self.permission is not None:
            raise ValueError("a binding has either a role or a permission, not both")
        if self.permission is not None and self.object is None:
            raise ValueError("an object grant (permission) needs an object, e.g. object: task:42")
        if self.object is not None and self.role is not None:
            raise ValueError("object goes with permission (an object grant), not with role")
        return self

    @property
    def subject(self) -> tuple[str, str]:
        if self.group is not None:
            return ("group", self.group)
        if self.user is not None:
            return ("user", self.user)
        return ("daypass", self.daypass or "")
