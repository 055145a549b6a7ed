"""A private OpenLDAP slapd for tests and the quickstart (never the system one)."""
from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

from .errors import LabError
from .ports import port_open
from .process import LabProcess

SLAPD = "/usr/sbin/slapd"
MODULE_PATH = "/usr/lib/ldap"
SCHEMA_DIR = Path("/etc/ldap/schema")
BASE_SCHEMAS = ("core", "cosine", "nis", "inetorgperson")
LAB_DIR = Path(__file__).resolve().parent.parent
COMPANY_LDIF = LAB_DIR / "company.ldif"

BASE_DN = "dc=example,dc=com"
ADMIN_DN = f"cn=admin,{BASE_DN}"
ADMIN_PASSWORD = "admin-secret"
SERVICE_DN = f"cn=rolegate,ou=services,{BASE_DN}"
SERVICE_PASSWORD = "rolegate-sync"
DEMO_PASSWORD = "demo"


def ssha(password: str) -> str:
    """An ``{SSHA}`` userPassword value, as slappasswd would make."""
    salt = os.urandom(8)
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


def ldif_schema_to_conf(text: str) -> str:
    """Turn a cn=config schema LDIF (olcAttributeTypes/olcObjectClasses) into slapd.conf syntax.

    Lets callers hand in either form; slapd.conf only ``include``s the .schema form.
    """
    unfolded = re.sub(r"\r?\n[ \t]", "", text)
    out: list[str] = []
    keywords = {
        "olcattributetypes": "attributetype",
        "olcobjectclasses": "objectclass",
        "olcobjectidentifier": "objectidentifier",
        "olcldapsyntaxes": "ldapsyntax",
    }
    for line in unfolded.splitlines():
        key, sep, value = line.partition(":")
        keyword = keywords.get(key.strip().lower())
        if not sep or keyword is None:
            continue
        if value.startswith(":"):  # base64 value
            value = base64.b64decode(value[1:].strip()).decode()
        value = re.sub(r"^\s*\{\d+\}", "", value).strip()
        out.append(f"{keyword} {value}")
    if not out:
        raise LabError("schema LDIF has no olcAttributeTypes/olcObjectClasses lines")
    return "\n".join(out) + "\n"


def _is_skeleton(record: str, base_dn: str) -> bool:
    match = re.search(r"^dn: (.+)$", record, re.M)
    dn = match.group(1).strip() if match else ""
    return dn == base_dn or dn.startswith("ou=") or dn.endswith(f",ou=services,{base_dn}")


class Slapd(LabProcess):
    """A private slapd on ``ldap://127.0.0.1:<free port>`` with its own config and MDB data dir.

    Suffix ``dc=example,dc=com``; memberOf and refint overlays keep ``memberOf``
    in step with ``groupOfNames`` ``member``. ``seed=True`` loads company.ldif.
    """

    name = "slapd"
    start_timeout = 10.0

    def __init__(
        self,
        workdir: Path,
        *,
        extra_schemas: Iterable[Path] = (),
        seed: bool = True,
        port: int | None = None,
        loglevel: str = "none",
        accesslog: bool = False,
    ) -> None:
        super().__init__(Path(workdir), port=port)
        self.extra_schemas = [Path(p) for p in extra_schemas]
        # The accesslog overlay logs every write to cn=accesslog (readable by the service account),
        # where rolegate's incremental sync finds deletions (directory.accesslog).
        self.accesslog = accesslog
        self.accesslog_dir = self.workdir / "accesslog"
        self.seed = seed
        self.loglevel = loglevel
        self.base_dn = BASE_DN
        self.admin_dn = ADMIN_DN
        self.admin_password = ADMIN_PASSWORD
        self.service_dn = SERVICE_DN
        self.service_password = SERVICE_PASSWORD
        self.data_dir = self.workdir / "data"
        self.conf_path = self.workdir / "slapd.conf"
        self._seeded = False

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    # -- process ---------------------------------------------------------------
    def _command(self) -> list[str]:
        # -d 0 keeps slapd in the foreground (we own its lifetime) with no debug noise
        return [SLAPD, "-h", f"{self.url}/", "-f", str(self.conf_path), "-d", "0"]

    def _is_ready(self) -> bool:
        return port_open(self.port)

    def _before_start(self) -> None:
        if not Path(SLAPD).exists():
            raise LabError(f"{SLAPD} not found: run scripts/setup.sh (installs Debian's slapd)")
        if not self._seeded and self.data_dir.exists():
            shutil.rmtree(self.data_dir)  # a new Slapd object starts from a fresh directory
        if not self._seeded and self.accesslog_dir.exists():
            shutil.rmtree(self.accesslog_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.accesslog:
            self.accesslog_dir.mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(self._config())

    def _after_ready(self) -> None:
        if not self._seeded:  # restarts keep the data they had
            self.ldapadd(self._seed_ldif())
            self._seeded = True

    # -- config ------------------------------------------------------------------
    def _schema_includes(self) -> list[str]:
        lines = [f"include {SCHEMA_DIR / s}.schema" for s in BASE_SCHEMAS]
        for i, schema in enumerate(self.extra_schemas):
            if not schema.is_file():
                raise LabError(f"extra schema {schema} does not exist")
            if schema.suffix.lower() == ".ldif":
                converted = self.workdir / f"extra-{i}-{schema.stem}.schema"
                converted.write_text(ldif_schema_to_conf(schema.read_text()))
                schema = converted
            lines.append(f"include {schema.resolve()}")
        return lines

    def _config(self) -> str:
        rootpw = ssha(self.admin_password)
        return "\n".join(
            [
                *self._schema_includes(),
                f"pidfile {self.workdir / 'slapd.pid'}",
                f"argsfile {self.workdir / 'slapd.args'}",
                f"modulepath {MODULE_PATH}",
                "moduleload back_mdb",
                "moduleload memberof",
                "moduleload refint",
                f"loglevel {self.loglevel}",
                "sizelimit unlimited",
                "",
                *self._accesslog_database(),
                "database mdb",
                "maxsize 8589934592",  # a map size limit, not an allocation: room for the 1M-user bench
                f'suffix "{self.base_dn}"',
                f'rootdn "{self.admin_dn}"',
                f"rootpw {rootpw}",
                f"directory {self.data_dir}",
                "index objectClass eq",
                "index uid,cn,mail eq,sub",
                "index member,memberOf eq",
                "index entryUUID,entryCSN eq",
                "index modifyTimestamp eq",
                # The service account reads everything but passwords (sync); users may
                # bind (auth) and read the tree; anonymous may only bind.
                "access to attrs=userPassword",
                "  by self write",
                "  by anonymous auth",
                "  by * none",
                "access to *",
                f'  by dn.exact="{self.service_dn}" read',
                "  by users read",
                "  by * none",
                "",
                "overlay memberof",
                "memberof-group-oc groupOfNames",
                "memberof-member-ad member",
                "memberof-memberof-ad memberOf",
                "memberof-refint TRUE",
                "",
                "overlay refint",
                "refint_attributes member",
                "",
                *(["overlay accesslog", "logdb cn=accesslog", "logops writes", "logsuccess TRUE",
                   "logpurge 07+00:00 01+00:00", ""] if self.accesslog else []),
            ]
        )

    def _accesslog_database(self) -> list[str]:
        if not self.accesslog:
            return []
        return [
            "moduleload accesslog",
            "database mdb",
            "maxsize 268435456",
            'suffix "cn=accesslog"',
            f"directory {self.accesslog_dir}",
            "index objectClass,reqStart,reqResult eq",
            "access to *",
            f'  by dn.exact="{self.service_dn}" read',
            "  by * none",
            "",
        ]

    def _seed_ldif(self) -> str:
        """company.ldif in full, or only its skeleton (suffix, OUs, service account) when not seeding."""
        records = [r for r in re.split(r"\n\s*\n", COMPANY_LDIF.read_text()) if "dn:" in r]
        if not self.seed:
            records = [r for r in records if _is_skeleton(r, self.base_dn)]
        return "\n\n".join(records) + "\n"

    # -- directory changes -----------------------------------------------------------
    def _tool(self, tool: str, args: list[str], stdin: str | None = None) -> str:
        exe = shutil.which(tool)
        if exe is None:
            raise LabError(f"{tool} not found: run scripts/setup.sh (installs ldap-utils)")
        cmd = [exe, "-x", "-H", self.url, "-D", self.admin_dn, "-w", self.admin_password, *args]
        res = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=30)
        if res.returncode != 0:
            raise LabError(f"{tool} failed ({res.returncode}): {res.stderr.strip() or res.stdout.strip()}")
        return res.stdout

    def ldapadd(self, ldif: str) -> None:
        """Add the entries of an LDIF text as the rootdn."""
        self._tool("ldapadd", [], stdin=ldif)

    def ldapmodify(self, ldif: str) -> None:
        """Apply an LDIF change record text (changetype: modify/add/delete/modrdn)."""
        self._tool("ldapmodify", [], stdin=ldif)

    def ldapdelete(self, dn: str, *, recursive: bool = False) -> None:
        """Delete one entry (or a subtree with ``recursive=True``)."""
        self._tool("ldapdelete", ["-r", dn] if recursive else [dn])
