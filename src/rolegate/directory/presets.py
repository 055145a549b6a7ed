"""Presets: the attribute names and conventions of OpenLDAP and Active Directory.

``resolve_schema(config)`` merges a preset with the config's explicit choices into one
``DirectorySchema`` that the reader, the builder and ``lookup_user`` all use.
"""

from __future__ import annotations

from dataclasses import dataclass

from rolegate.config.sections.directory import DirectoryConfig

# AD's userAccountControl flag ACCOUNTDISABLE.
AD_ACCOUNT_DISABLED = 0x2


@dataclass(frozen=True, slots=True)
class DirectorySchema:
    """Everything the sync needs to know about where things live and what they are called."""

    preset: str
    users_base: str
    users_filter: str
    groups_base: str
    groups_filter: str
    id_attribute: str  # entryUUID / objectGUID: survives renames and moves
    id_is_guid: bool  # objectGUID is 16 raw bytes, formatted as a GUID string
    username_attribute: str
    attribute_map: dict[str, str]  # field name -> directory attribute (email, name, ...)
    scope_attributes: dict[str, str]  # scope type -> directory attribute
    disabled_filter: str | None
    uac_attribute: str | None  # userAccountControl when the preset has it
    member_of_attribute: str | None
    group_name_attribute: str
    dn_member_attributes: tuple[str, ...]  # values are DNs (member, uniqueMember)
    uid_member_attributes: tuple[str, ...]  # values are usernames (memberUid)
    change_attribute: str  # modifyTimestamp / uSNChanged / whenChanged
    change_is_integer: bool  # uSNChanged counts; the others are generalized time
    accesslog: str | None = None  # OpenLDAP's accesslog database: where incremental syncs find deletions

    def user_attributes(self) -> list[str]:
        """The attributes to request for a user entry."""
        names = {
            self.id_attribute,
            self.username_attribute,
            self.change_attribute,
            *self.attribute_map.values(),
            *self.scope_attributes.values(),
        }
        if self.uac_attribute:
            names.add(self.uac_attribute)
        if self.member_of_attribute:
            names.add(self.member_of_attribute)
        return sorted(names)

    def group_attributes(self) -> list[str]:
        """The attributes to request for a group entry."""
        return sorted(
            {
                self.id_attribute,
                self.group_name_attribute,
                self.change_attribute,
                *self.dn_member_attributes,
                *self.uid_member_attributes,
            }
        )


_UID_MEMBER_ATTRIBUTES = {"memberuid"}


def resolve_schema(config: DirectoryConfig) -> DirectorySchema:
    """The effective schema: the preset's defaults overridden by what the config names."""
    users, groups = config.users, config.groups
    if config.preset == "active_directory":
        defaults = dict(
            users_filter="(&(objectCategory=person)(objectClass=user))",
            groups_filter="(objectClass=group)",
            id_attribute="objectGUID",
            username="sAMAccountName",
            attributes={"email": "mail", "name": "displayName"},
            uac="userAccountControl",
            members=("member",),
            change="uSNChanged",
        )
    else:
        defaults = dict(
            users_filter="(objectClass=inetOrgPerson)",
            groups_filter="(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames)(objectClass=posixGroup))",
            id_attribute="entryUUID",
            username="uid",
            attributes={"email": "mail", "name": "cn"},
            uac=None,
            members=("member", "uniqueMember", "memberUid"),
            change="modifyTimestamp",
        )
    members: tuple[str, ...] = (groups.member,) if groups.member else defaults["members"]  # type: ignore[assignment]
    id_attribute = users.id or str(defaults["id_attribute"])
    change = config.change_attribute or str(defaults["change"])
    return DirectorySchema(
        preset=config.preset,
        users_base=users.base,
        users_filter=users.filter or str(defaults["users_filter"]),
        groups_base=groups.base,
        groups_filter=groups.filter or str(defaults["groups_filter"]),
        id_attribute=id_attribute,
        id_is_guid=id_attribute.lower() == "objectguid",
        username_attribute=users.username or str(defaults["username"]),
        attribute_map=dict(users.attributes if users.attributes is not None else defaults["attributes"]),  # type: ignore[arg-type]
        scope_attributes=dict(config.scope_attributes),
        disabled_filter=users.disabled_filter,
        uac_attribute=defaults["uac"],  # type: ignore[arg-type]
        member_of_attribute=users.member_of,
        group_name_attribute=groups.name,
        dn_member_attributes=tuple(m for m in members if m.lower() not in _UID_MEMBER_ATTRIBUTES),
        uid_member_attributes=tuple(m for m in members if m.lower() in _UID_MEMBER_ATTRIBUTES),
        change_attribute=change,
        change_is_integer=change.lower() == "usnchanged",
        accesslog=config.accesslog,
    )
