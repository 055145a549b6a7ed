"""Seed a provisioned, stopped Samba AD DC offline: OUs, service accounts, users, groups.

Run by the *system* python (``/usr/bin/python3 -I``: isolated, so ``import samba`` is not the test helper
beside this file), which carries Debian's samba bindings; the
project's virtualenv does not. ``tests/directory/samba.py`` runs it once per session on the template
DC and passes what to create as JSON on stdin:

    {"ous": [dn, ...],
     "services": [{"name", "password", "tombstones": bool}, ...],   # in CN=Users
     "users": [{"dn", "name", "display", "mail", "uac"}, ...],
     "groups": [{"dn", "name", "members": [dn, ...]}, ...]}        # in order: members exist before

Offline through SamDB is about twice as fast as over LDAP and needs no running DC. A service account
with ``tombstones`` gets List Contents + Read Property on CN=Deleted Objects, which is how an AD admin
lets a non-admin account see deleted objects (Microsoft KB 892806); the others cannot see them.
"""

import json
import sys

from samba import sd_utils
from samba.auth import system_session
from samba.param import LoadParm
from samba.samdb import SamDB


def main() -> None:
    conf = sys.argv[1]
    spec = json.load(sys.stdin)
    lp = LoadParm()
    lp.load(conf)
    db = SamDB(url=lp.samdb_url(), lp=lp, session_info=system_session())
    base = str(db.get_default_basedn())
    for dn in spec["ous"]:
        db.add({"dn": dn, "objectClass": "organizationalUnit"})
    sd = sd_utils.SDUtils(db)
    for service in spec["services"]:
        db.newuser(service["name"], service["password"], setpassword=True)
        if service.get("tombstones"):
            sid = db.search(base=f"CN={service['name']},CN=Users,{base}", attrs=["objectSid"])[0]["objectSid"][0]
            sid_text = str(db.schema_format_value("objectSid", sid), "utf-8")
            sd.dacl_add_ace(f"CN=Deleted Objects,{base}", f"(A;;LCRP;;;{sid_text})")
    db.transaction_start()
    try:
        for user in spec["users"]:
            db.add(
                {
                    "dn": user["dn"],
                    "objectClass": "user",
                    "sAMAccountName": user["name"],
                    "displayName": user["display"],
                    "mail": user["mail"],
                    "userPrincipalName": f"{user['name']}@{lp.get('realm').lower()}",
                    "userAccountControl": str(user["uac"]),
                }
            )
        for group in spec["groups"]:
            entry = {"dn": group["dn"], "objectClass": "group", "sAMAccountName": group["name"]}
            if group["members"]:
                entry["member"] = group["members"]
            db.add(entry)
    except BaseException:
        db.transaction_cancel()
        raise
    db.transaction_commit()
    print(f"seeded {len(spec['users'])} users, {len(spec['groups'])} groups", flush=True)


if __name__ == "__main__":
    main()
