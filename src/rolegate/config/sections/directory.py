"""``directory``: LDAP / Active Directory sync.

Fields left as ``None`` take the preset's value (see ``rolegate.directory.presets``), so an
Active Directory config need not repeat sAMAccountName, userAccountControl and friends.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from rolegate.config.types import Duration, Section, Share


def _filter(value: str | None) -> str | None:
    # A filter must be one parenthesised expression; an unbalanced one would be rejected by
    # the server at sync time, which is later and louder than it needs to be.
    if value is None:
        return value
    text = value.strip()
    depth = 0
    for ch in text:
        depth += ch == "("
        depth -= ch == ")"
        if depth < 0:
            break
    if not text.startswith("(") or not text.endswith(")") or depth != 0:
        raise ValueError(f"{value!r} is not an LDAP filter; write e.g. (objectClass=inetOrgPerson)")
    return text


def _is_dn(value: str) -> bool:
    # Lazy: every command loads the config, and ldap3 costs ~40 ms (130 modules) that only a directory needs.
    from ldap3.core.exceptions import LDAPInvalidDnError
    from ldap3.utils.dn import parse_dn

    if not value.strip() or value.strip() != value or "\x00" in value:
        return False
    try:
        return bool(parse_dn(value))
    except LDAPInvalidDnError:
        return False


class DirectoryUsers(Section):
    base: str
    filter: str | None = None  # preset: (objectClass=inetOrgPerson) / AD person users
    username: str | None = None  # preset: uid / sAMAccountName
    attributes: dict[str, str] | None = None  # preset: {email: mail, name: cn|displayName}
    # Users matching this filter are disabled (OpenLDAP has no standard flag; AD uses userAccountControl).
    disabled_filter: str | None = None
    id: str | None = None  # stable id attribute; preset: entryUUID / objectGUID
    # Also take memberships from this attribute on user entries (e.g. memberOf), besides group members.
    member_of: str | None = None

    @field_validator("filter", "disabled_filter")
    @classmethod
    def _filters(cls, value: str | None) -> str | None:
        return _filter(value)


class DirectoryGroups(Section):
    base: str
    filter: str | None = None  # preset: groupOfNames|groupOfUniqueNames|posixGroup / (objectClass=group)
    name: str = "cn"
    # One member attribute; default: every one the preset knows (member, uniqueMember, memberUid).
    member: str | None = None

    @field_validator("filter")
    @classmethod
    def _filters(cls, value: str | None) -> str | None:
        return _filter(value)


class DirectoryConfig(Section):
    url: str
    bind_dn: str | None = None
    bind_password: SecretStr | None = None
    preset: Literal["openldap", "active_directory"] = "openldap"
    users: DirectoryUsers
    groups: DirectoryGroups
    start_tls: bool = False
    ca_file: str | None = None
    timeout: Duration = timedelta(seconds=10)  # per-operation receive timeout
    connect_timeout: Duration = timedelta(seconds=5)
    page_size: int = Field(default=500, ge=1, le=100000)
    interval: Duration = timedelta(seconds=30)
    full_interval: Duration = timedelta(hours=1)
    max_deletions: Share = 0.1
    # Attribute whose value marks a change since the last sync; preset: modifyTimestamp / uSNChanged.
    change_attribute: str | None = None
    # Back-off after failed syncs: doubles from 1 s, capped at `interval` (or at this when it is shorter),
    # so the sync is back within one interval of the directory coming back.
    retry_max: Duration = timedelta(minutes=5)
    # Directory attribute holding scope membership, e.g. {building: "rolegateBuilding"}.
    scope_attributes: dict[str, str] = Field(default_factory=dict)
    # OpenLDAP: the accesslog overlay's database (e.g. cn=accesslog). Incremental syncs read deletions
    # and renames from it; without it they list every id to find them (see rolegate.directory.departures).
    accesslog: str | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("ldap://", "ldaps://")):
            raise ValueError("directory.url must be ldap:// or ldaps://")
        return value

    @field_validator("accesslog")
    @classmethod
    def _accesslog(cls, value: str | None) -> str | None:
        if value is not None and not _is_dn(value):
            raise ValueError(f"must be the DN of the accesslog database, e.g. cn=accesslog, not {value!r}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "DirectoryConfig":
        if self.start_tls and self.url.startswith("ldaps://"):
            raise ValueError("start_tls is for ldap:// URLs; ldaps:// is already encrypted")
        if (self.bind_dn is None) != (self.bind_password is None):
            raise ValueError("bind_dn and bind_password go together (or neither, for an anonymous bind)")
        if self.interval.total_seconds() <= 0 or self.full_interval.total_seconds() <= 0:
            raise ValueError("interval and full_interval must be positive")
        if self.accesslog is not None and self.preset == "active_directory":
            raise ValueError(
                "accesslog is OpenLDAP's; Active Directory's deletions are read from its Deleted Objects container"
            )
        return self
