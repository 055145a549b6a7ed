"""Who is who in the seeded directory (company.ldif), read from the LDIF itself."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from .slapd import COMPANY_LDIF, DEMO_PASSWORD


@dataclass(frozen=True)
class DemoUser:
    uid: str
    name: str
    title: str
    disabled: bool
    groups: tuple[str, ...] = field(default=())  # direct memberships only
    password: str = DEMO_PASSWORD


def _records(path: Path) -> list[dict[str, list[str]]]:
    records = []
    for chunk in re.split(r"\n\s*\n", path.read_text()):
        rec: dict[str, list[str]] = {}
        for line in chunk.splitlines():
            if line.startswith("#") or ":" not in line:
                continue
            key, _, value = line.partition(":")
            rec.setdefault(key.strip().lower(), []).append(value.strip())
        if "dn" in rec:
            records.append(rec)
    return records


def demo_users(path: Path = COMPANY_LDIF) -> list[DemoUser]:
    """The seeded people with their direct groups, in LDIF order."""
    records = _records(path)
    groups: dict[str, list[str]] = {}
    for rec in records:
        if "groupofnames" in (v.lower() for v in rec.get("objectclass", [])):
            for member in rec.get("member", []):
                groups.setdefault(member.lower(), []).append(rec["cn"][0])
    users = []
    for rec in records:
        if "uid" not in rec:
            continue
        users.append(DemoUser(
            uid=rec["uid"][0],
            name=rec.get("cn", [""])[0],
            title=rec.get("title", [""])[0],
            disabled=rec.get("employeetype", [""])[0] == "disabled",
            groups=tuple(groups.get(rec["dn"][0].lower(), [])),
        ))
    return users
