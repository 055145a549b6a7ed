"""``directory``: LDAP / Active Directory sync."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import Field, SecretStr, field_validator

from rolegate.config.types import Duration, Section, Share


class DirectoryUsers(Section):
    base: str
    filter: str = "(objectClass=inetOrgPerson)"
    username: str = "uid"
    attributes: dict[str, str] = Field(default_factory=lambda: {"email": "mail", "name": "cn"})
    # Users matching this filter are disabled (OpenLDAP has no standard flag; AD uses userAccountControl).
    disabled_filter: str | None = None


class DirectoryGroups(Section):
    base: str
    filter: str = "(objectClass=groupOfNames)"
    name: str = "cn"
    member: str | None = None  # the preset's default when absent


class DirectoryConfig(Section):
    url: str
    bind_dn: str | None = None
    bind_password: SecretStr | None = None
    preset: Literal["openldap", "active_directory"] = "openldap"
    users: DirectoryUsers
    groups: DirectoryGroups
    start_tls: bool = False
    ca_file: str | None = None
    timeout: Duration = timedelta(seconds=10)
    page_size: int = Field(default=500, ge=1, le=100000)
    interval: Duration = timedelta(seconds=30)
    full_interval: Duration = timedelta(hours=1)
    max_deletions: Share = 0.1
    # Directory attribute holding scope membership, e.g. {building: "rolegateBuilding"}.
    scope_attributes: dict[str, str] = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("ldap://", "ldaps://")):
            raise ValueError("directory.url must be ldap:// or ldaps://")
        return value
